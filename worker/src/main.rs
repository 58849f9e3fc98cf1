//! `nat-worker`: the NAT training daemon. See the library (`nat_worker`) for how it works.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use nat_worker::config::{available_cores, WorkerArgs};
use nat_worker::runner::{datasets_present, RunnerConfig, TorchRunner};
use nat_worker::{daemon, system, telemetry};

/// Exit status for bad configuration (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;
/// Exit status when the coordinator rejects the worker's credentials (sysexits EX_NOPERM): a
/// supervisor should not restart it until the token or certificate is fixed.
const EX_NOPERM: u8 = 77;

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == "doctor")
    {
        return nat_worker::doctor::main();
    }
    let args = WorkerArgs::parse();
    if let Err(error) = telemetry::init(args.log_format) {
        eprintln!("nat-worker: cannot set up logging: {error}");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let visible_gpus = if args.devices.trim() == "cpu" {
        0
    } else {
        nat_train::cuda_device_count()
    };
    let config = match args.resolve(visible_gpus, available_cores(), home, system::hostname()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("nat-worker: {error}");
            return ExitCode::from(EX_USAGE);
        }
    };
    nat_train::set_threads(config.threads);
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            nat_telemetry::report_error(error.as_ref(), "nat-worker failed");
            eprintln!("nat-worker: {error:#}");
            match error.downcast_ref::<daemon::DaemonError>() {
                Some(daemon::DaemonError::Rejected(_)) => ExitCode::from(EX_NOPERM),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn serve(config: nat_worker::config::WorkerConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("nat-worker-rt")
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        if let Some(address) = config.metrics_listen {
            telemetry::serve_metrics(address).await?;
        }
        let signals = daemon::shutdown_signals()?;
        let data_dir = config.data_dir.clone();
        let datasets = tokio::task::spawn_blocking(move || datasets_present(&data_dir)).await?;
        for dataset in &datasets {
            tracing::info!(
                dataset = %dataset.name,
                shape = %dataset.shape,
                format = %dataset.format,
                train = dataset.train_examples,
                test = dataset.test_examples,
                "dataset found"
            );
        }
        let capabilities = daemon::capabilities(&config, &datasets);
        let data_dir = config.data_dir.clone();
        let checkpoint_dir = config.checkpoint_dir.clone();
        let make_runner = move |_slot: usize, device| {
            TorchRunner::new(RunnerConfig {
                device,
                data_dir: data_dir.clone(),
                checkpoint_dir: checkpoint_dir.clone(),
            })
        };
        daemon::run(config, capabilities, make_runner, signals).await?;
        Ok(())
    })
}
