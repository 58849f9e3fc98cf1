//! Training throughput of a preset's evaluation network in tch (used by
//! `bench/tch-vs-pytorch/run.sh` and `bench/gpu-check.sh`).
//!
//! `--mode steps`: times `--steps` SGD steps (after `--warmup`) on real images of `--dataset`
//! and prints one JSON line with images/s. `--mode train-eval`: runs `nat_train::train_eval` for
//! one epoch on the device and prints its report.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use nat_arch::Dataset;
use nat_train::model::{count_params, Network, NetworkConfig};
use nat_train::{Budget, TrainSpec};
use tch::nn::{OptimizerConfig, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, env = "NAT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value = "fashion-mnist")]
    dataset: String,
    /// cpu | cuda | cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long, default_value = "darts-v2")]
    genotype: String,
    #[arg(long, default_value_t = 8)]
    channels: i64,
    #[arg(long, default_value_t = 5)]
    layers: i64,
    #[arg(long, default_value_t = 64)]
    batch: i64,
    #[arg(long, default_value_t = 30)]
    steps: usize,
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// steps | train-eval
    #[arg(long, default_value = "steps")]
    mode: String,
}

fn device(name: &str) -> Result<Device> {
    Ok(match name {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:") {
            Some(n) => Device::Cuda(n.parse().context("--device cuda:N")?),
            None => bail!("--device: expected cpu, cuda or cuda:N, got {other}"),
        },
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    nat_train::set_threads(args.threads);
    let device = device(&args.device)?;
    if device != Device::Cpu && !nat_train::cuda_available() {
        bail!(
            "--device {}: libtorch's CUDA backend is not available",
            args.device
        );
    }
    let dataset = Dataset::from_name(&args.dataset).context("--dataset: unknown dataset")?;
    let data_dir = args.data_dir.clone().unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default())
            .join(".cache/nat-orchestrator/data")
    });
    let genotype = nat_arch::presets::get(&args.genotype)
        .context("--genotype: unknown preset")?
        .genotype();
    let data = nat_train::load_dataset(&data_dir, dataset, device, 0.1, 0)?;

    if args.mode == "train-eval" {
        let budget = Budget {
            epochs: 1,
            batch_size: args.batch as u32,
            learning_rate: 0.05,
            lr_min: 0.001,
            momentum: 0.9,
            weight_decay: 3e-4,
            grad_clip: 5.0,
            init_channels: args.channels as u32,
            layers: args.layers as u32,
            max_train_examples: (args.batch as usize * (args.steps + args.warmup)) as u32,
            max_eval_examples: 2000,
            validation_fraction: 0.1,
            cutout: 0,
            label_smoothing: 0.0,
            auxiliary_weight: 0.0,
            drop_path_prob: 0.0,
            max_wall_seconds: 0.0,
        };
        let stop = AtomicBool::new(false);
        let spec = TrainSpec {
            genotype: &genotype,
            budget: &budget,
            seed: 0,
            split: nat_train::EvalSplit::Validation,
        };
        let report = nat_train::train_eval(&spec, &data, device, &stop, &mut |_| {})?;
        println!(
            "{{\"impl\":\"tch\",\"mode\":\"train-eval\",\"device\":\"{}\",\"accuracy\":{:.4},\"images_per_second\":{:.1},\"params\":{},\"wall_seconds\":{:.2}}}",
            args.device, report.accuracy, report.images_per_second, report.params, report.wall_seconds
        );
        return Ok(());
    }

    tch::manual_seed(0);
    let vs = VarStore::new(device);
    let config = NetworkConfig::for_dataset(dataset, args.channels, args.layers, false);
    let net = Network::new(&vs.root(), &genotype, &config)?;
    let params = count_params(&vs, "net");
    let mut opt = tch::nn::Sgd {
        momentum: 0.9,
        dampening: 0.0,
        wd: 3e-4,
        nesterov: false,
    }
    .build(&vs, 0.05)?;
    let n = data.train.len();
    let mut timed = 0.0;
    for step in 0..args.warmup + args.steps {
        let start = (step as i64 * args.batch) % (n - args.batch);
        let (x, y) = data.train.slice(start, args.batch, device)?;
        let t0 = Instant::now();
        let logits = net.forward(&x, true, 0.0)?.logits;
        let loss = logits.f_cross_entropy_loss::<Tensor>(&y, None, Reduction::Mean, -100, 0.0)?;
        opt.zero_grad();
        loss.backward();
        opt.step();
        // Wait for the device so the timing is real.
        let _ = loss.to_kind(Kind::Float).double_value(&[]);
        if step >= args.warmup {
            timed += t0.elapsed().as_secs_f64();
        }
    }
    let images = (args.steps as i64 * args.batch) as f64;
    println!(
        "{{\"impl\":\"tch\",\"device\":\"{}\",\"threads\":{},\"dataset\":\"{}\",\"genotype\":\"{}\",\"channels\":{},\"layers\":{},\"batch\":{},\"steps\":{},\"params\":{},\"images_per_second\":{:.1}}}",
        args.device, args.threads, dataset, args.genotype, args.channels, args.layers, args.batch, args.steps, params, images / timed
    );
    Ok(())
}
