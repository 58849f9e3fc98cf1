//! Command-line and environment configuration of the worker daemon.
//!
//! Every flag is also a `NAT_…` environment variable (clap's `env`). [`WorkerArgs`] is what the
//! user typed; [`WorkerArgs::resolve`] validates it and turns it into a [`WorkerConfig`] once the
//! number of visible GPUs is known (the caller asks libtorch; tests pass a number).

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;

/// Errors in the worker's configuration. Each names the flag at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--devices: {0}")]
    Devices(String),
    #[error("--threads: must be at least 1")]
    Threads,
    #[error("--coordinator: {0}")]
    Coordinator(String),
    #[error("--name: must not be empty and at most 128 characters")]
    Name,
    #[error("--data-dir: could not determine a default (set NAT_DATA_DIR or HOME)")]
    DataDir,
    #[error("--metrics-listen: `{0}` is not an address (expected e.g. 0.0.0.0:9464, or `off`)")]
    MetricsListen(String),
    #[error("--{flag}: must be greater than zero")]
    ZeroDuration { flag: &'static str },
    /// A connection flag (`--ca-cert`, `--cert`/`--key`, `--token`, `--token-file`, …) or a
    /// coordinator URL that does not go with them; the message names the flag.
    #[error("{0}")]
    Connect(String),
}

/// How log lines are written (`text` or `json`), shared with the coordinator.
pub use nat_telemetry::LogFormat;

/// The `--devices` flag as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// Every visible GPU, or the CPU when there is none.
    Auto,
    /// One slot on the CPU.
    Cpu,
    /// One slot per listed GPU index (`cuda:0,cuda:1`).
    Cuda(Vec<usize>),
}

impl FromStr for DeviceSpec {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        match text {
            "auto" => return Ok(DeviceSpec::Auto),
            "cpu" => return Ok(DeviceSpec::Cpu),
            "" => {
                return Err(ConfigError::Devices(
                    "empty; expected auto, cpu or cuda:0,cuda:1,…".into(),
                ))
            }
            _ => {}
        }
        let mut indices = Vec::new();
        for item in text.split(',').map(str::trim) {
            let index = item
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| {
                    ConfigError::Devices(format!(
                        "`{item}` is not a device; expected auto, cpu or cuda:N[,cuda:M…]"
                    ))
                })?;
            if indices.contains(&index) {
                return Err(ConfigError::Devices(format!(
                    "cuda:{index} is listed twice"
                )));
            }
            indices.push(index);
        }
        Ok(DeviceSpec::Cuda(indices))
    }
}

/// A device one task slot trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotDevice {
    Cpu,
    Cuda(usize),
}

impl SlotDevice {
    /// `cpu` or `cuda:N`, as sent to the coordinator.
    pub fn name(self) -> String {
        match self {
            SlotDevice::Cpu => "cpu".to_owned(),
            SlotDevice::Cuda(index) => format!("cuda:{index}"),
        }
    }
}

impl std::fmt::Display for SlotDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// Parse a duration such as `500ms`, `3s`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(split) => text.split_at(split),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 500ms, 3s, 2m)"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit `{other}` in `{text}` (ms, s, m, h)")),
    };
    if !seconds.is_finite() || !(0.0..=1.0e9).contains(&seconds) {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Where `/metrics` is served unless `--metrics-listen` says otherwise (deploy/prometheus scrapes
/// every worker host on port 9464).
pub const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:9464";

/// `--metrics-listen` as typed: `None` for empty or `off`.
pub fn parse_metrics_listen(text: &str) -> Result<Option<SocketAddr>, ConfigError> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| ConfigError::MetricsListen(text.to_owned()))
}

/// What `nat-worker --help` adds after the flags: how credentials are used and what a rejection
/// does.
const AFTER_HELP: &str = "\
Connecting securely: an https:// coordinator is reached over TLS (--ca-cert names the CA to \
trust; --cert/--key add a client certificate for mutual TLS), and every call carries the \
--token / --token-file bearer token (a token of role `worker`, made by an admin with \
`natctl token create --role worker`). The token file is read once, at start.

Rejected credentials: when the coordinator answers UNAUTHENTICATED (missing, wrong, expired or \
revoked token) or PERMISSION_DENIED (a role other than worker, or a worker id that belongs to \
another credential) to any call, registration included, the worker does not retry: it takes no \
new task, cancels the tasks in hand (the coordinator re-leases them when their leases lapse), and \
exits with status 77, saying which call was refused and why.

Exit status: 0 after a drain (SIGTERM/SIGINT), 64 for a bad flag, 77 for rejected credentials, 1 \
for any other failure.";

/// `nat-worker`: leases NAT training tasks from a coordinator and runs them with libtorch.
#[derive(Debug, Clone, Parser)]
#[command(name = "nat-worker", version, about, after_help = AFTER_HELP)]
pub struct WorkerArgs {
    /// gRPC URL of the coordinator; several, comma-separated (`URL1,URL2`), are used in order:
    /// when one cannot be reached the worker moves on to the next.
    #[arg(
        long,
        env = "NAT_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub coordinator: String,

    /// Devices to train on: `auto` (every visible GPU, else the CPU), `cpu`, or `cuda:0,cuda:1,…`.
    /// One task slot per GPU; one slot on the CPU.
    #[arg(long, env = "NAT_DEVICES", default_value = "auto")]
    pub devices: String,

    /// Folder holding the datasets: the built-in `digits/`, `mnist/`, `fashion-mnist/`,
    /// `cifar10/`, and any image folder or packed dataset (docs/DATASETS.md).
    /// Default: $NAT_DATA_DIR, else ~/.cache/nat-orchestrator/data.
    #[arg(long, env = "NAT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Intra-op threads for CPU training. Default: the cores this process may really use
    /// (affinity and cgroup quota).
    #[arg(long, env = "NAT_THREADS")]
    pub threads: Option<usize>,

    /// Name shown by the coordinator. Default: the host name.
    #[arg(long, env = "NAT_WORKER_NAME")]
    pub name: Option<String>,

    /// Folder for `final_eval` checkpoints. Default: <data-dir>/../checkpoints.
    #[arg(long, env = "NAT_CHECKPOINT_DIR")]
    pub checkpoint_dir: Option<PathBuf>,

    /// Log line format.
    #[arg(long, env = "NAT_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Address of the HTTP listener serving Prometheus `/metrics` and `/healthz`; empty or
    /// `off` disables it.
    #[arg(long, env = "NAT_METRICS_LISTEN", default_value = DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: String,

    /// On SIGTERM/SIGINT, how long to let in-hand tasks finish before handing them back
    /// (e.g. `30s`, `5m`).
    #[arg(long, env = "NAT_DRAIN_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Longest wait between reconnection attempts when the coordinator is away.
    #[arg(long, env = "NAT_MAX_BACKOFF", default_value = "30s", value_parser = parse_duration)]
    pub max_backoff: Duration,

    /// How long one LeaseTask long-poll may wait at the coordinator.
    #[arg(long, env = "NAT_LEASE_WAIT", default_value = "5s", value_parser = parse_duration)]
    pub lease_wait: Duration,

    /// How long to keep retrying the report of a finished task while the coordinator is away.
    #[arg(long, env = "NAT_REPORT_GIVE_UP", default_value = "30m", value_parser = parse_duration)]
    pub report_give_up: Duration,

    /// TLS and the bearer token, for every coordinator URL.
    #[command(flatten)]
    pub connect: nat_client::ConnectArgs,
}

/// Validated configuration of a running worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The coordinators' gRPC URLs, in order (at least one): the worker fails over to the next
    /// when one cannot be reached.
    pub coordinators: Vec<String>,
    pub slots: Vec<SlotDevice>,
    pub data_dir: PathBuf,
    pub checkpoint_dir: PathBuf,
    pub threads: usize,
    pub cpu_cores: usize,
    pub name: String,
    pub log_format: LogFormat,
    /// `/metrics` and `/healthz` listener; `None` when disabled.
    pub metrics_listen: Option<SocketAddr>,
    pub drain_timeout: Duration,
    pub max_backoff: Duration,
    pub lease_wait: Duration,
    pub report_give_up: Duration,
    /// TLS settings and the bearer token (files read once, here).
    pub connect: nat_client::ConnectOptions,
}

impl WorkerArgs {
    /// Validate the arguments. `visible_gpus` is the number of CUDA devices libtorch sees;
    /// `home` and `nat_data_dir` come from the environment (passed in so tests need no env).
    pub fn resolve(
        &self,
        visible_gpus: usize,
        available_cores: usize,
        home: Option<PathBuf>,
        hostname: Option<String>,
    ) -> Result<WorkerConfig, ConfigError> {
        let mut coordinators = Vec::new();
        for url in self.coordinator.split(',').map(str::trim) {
            if url.is_empty() {
                return Err(ConfigError::Coordinator(
                    "empty URL in the comma-separated list".into(),
                ));
            }
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Coordinator(format!(
                    "`{url}` must start with http:// or https://"
                )));
            }
            coordinators.push(url.to_owned());
        }
        let connect = self
            .connect
            .resolve()
            .map_err(|e| ConfigError::Connect(e.to_string()))?;
        for url in &coordinators {
            // An http:// URL with a TLS flag, a malformed URL: refused now, not at first use.
            nat_client::endpoint(url, &connect).map_err(|e| ConfigError::Connect(e.to_string()))?;
        }
        let slots = resolve_slots(&self.devices.parse()?, visible_gpus)?;
        let threads = match self.threads {
            Some(0) => return Err(ConfigError::Threads),
            Some(n) => n,
            None => available_cores.max(1),
        };
        let data_dir = match (&self.data_dir, &home) {
            (Some(dir), _) => dir.clone(),
            (None, Some(home)) => home.join(".cache/nat-orchestrator/data"),
            (None, None) => return Err(ConfigError::DataDir),
        };
        let checkpoint_dir = match &self.checkpoint_dir {
            Some(dir) => dir.clone(),
            None => data_dir
                .parent()
                .map(|parent| parent.join("checkpoints"))
                .unwrap_or_else(|| data_dir.join("checkpoints")),
        };
        let name = self
            .name
            .clone()
            .or(hostname)
            .unwrap_or_else(|| "nat-worker".to_owned());
        if name.trim().is_empty() || name.len() > 128 {
            return Err(ConfigError::Name);
        }
        let metrics_listen = parse_metrics_listen(&self.metrics_listen)?;
        for (flag, value) in [
            ("drain-timeout", self.drain_timeout),
            ("max-backoff", self.max_backoff),
            ("lease-wait", self.lease_wait),
            ("report-give-up", self.report_give_up),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroDuration { flag });
            }
        }
        Ok(WorkerConfig {
            coordinators,
            slots,
            data_dir,
            checkpoint_dir,
            threads,
            cpu_cores: available_cores.max(1),
            name,
            log_format: self.log_format,
            metrics_listen,
            drain_timeout: self.drain_timeout,
            max_backoff: self.max_backoff,
            lease_wait: self.lease_wait,
            report_give_up: self.report_give_up,
            connect,
        })
    }
}

/// One slot per requested GPU, or one CPU slot.
pub fn resolve_slots(
    spec: &DeviceSpec,
    visible_gpus: usize,
) -> Result<Vec<SlotDevice>, ConfigError> {
    match spec {
        DeviceSpec::Cpu => Ok(vec![SlotDevice::Cpu]),
        DeviceSpec::Auto if visible_gpus == 0 => Ok(vec![SlotDevice::Cpu]),
        DeviceSpec::Auto => Ok((0..visible_gpus).map(SlotDevice::Cuda).collect()),
        DeviceSpec::Cuda(indices) => indices
            .iter()
            .map(|&index| {
                if index < visible_gpus {
                    Ok(SlotDevice::Cuda(index))
                } else {
                    Err(ConfigError::Devices(format!(
                        "cuda:{index} requested but libtorch sees {visible_gpus} GPU(s)"
                    )))
                }
            })
            .collect(),
    }
}

/// Cores this process may really use: CPU affinity and the cgroup CPU quota are honoured by
/// `available_parallelism` on Linux.
pub fn available_cores() -> usize {
    std::thread::available_parallelism()
        .map(NonZeroUsize::get)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> WorkerArgs {
        let mut argv = vec!["nat-worker"];
        argv.extend_from_slice(extra);
        WorkerArgs::try_parse_from(argv).unwrap()
    }

    #[test]
    fn devices_parse() {
        assert_eq!("auto".parse::<DeviceSpec>(), Ok(DeviceSpec::Auto));
        assert_eq!("cpu".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
        assert_eq!(
            "cuda:0, cuda:3".parse::<DeviceSpec>(),
            Ok(DeviceSpec::Cuda(vec![0, 3]))
        );
        for bad in ["", "gpu", "cuda:", "cuda:x", "cuda:0,cuda:0", "cpu,cuda:0"] {
            let error = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(error.to_string().starts_with("--devices"), "{bad}: {error}");
        }
    }

    #[test]
    fn slots_follow_visible_gpus() {
        assert_eq!(
            resolve_slots(&DeviceSpec::Auto, 0).unwrap(),
            vec![SlotDevice::Cpu]
        );
        assert_eq!(
            resolve_slots(&DeviceSpec::Auto, 2).unwrap(),
            vec![SlotDevice::Cuda(0), SlotDevice::Cuda(1)]
        );
        assert_eq!(
            resolve_slots(&DeviceSpec::Cpu, 4).unwrap(),
            vec![SlotDevice::Cpu]
        );
        assert!(resolve_slots(&DeviceSpec::Cuda(vec![1]), 1).is_err());
        assert_eq!(
            resolve_slots(&DeviceSpec::Cuda(vec![1]), 2).unwrap(),
            vec![SlotDevice::Cuda(1)]
        );
    }

    #[test]
    fn resolve_defaults() {
        // Clap also reads NAT_DATA_DIR / NAT_CHECKPOINT_DIR from the environment (the Makefile
        // exports NAT_DATA_DIR); clear them so this test checks the built-in defaults only.
        let mut parsed = args(&[]);
        parsed.data_dir = None;
        parsed.checkpoint_dir = None;
        let config = parsed
            .resolve(0, 3, Some("/home/u".into()), Some("box".into()))
            .unwrap();
        assert_eq!(config.threads, 3);
        assert_eq!(config.slots, vec![SlotDevice::Cpu]);
        assert_eq!(
            config.data_dir,
            PathBuf::from("/home/u/.cache/nat-orchestrator/data")
        );
        assert_eq!(
            config.checkpoint_dir,
            PathBuf::from("/home/u/.cache/nat-orchestrator/checkpoints")
        );
        assert_eq!(config.name, "box");
    }

    #[test]
    fn resolve_rejects_bad_values_naming_the_flag() {
        let cases: [(&[&str], &str); 12] = [
            (&["--ca-cert", "/nonexistent/ca.pem"], "--ca-cert"),
            (
                &["--coordinator", "http://a:1", "--tls-server-name", "a"],
                "--coordinator",
            ),
            (&["--token", "two words"], "--token"),
            (&["--metrics-listen", "nowhere"], "--metrics-listen"),
            (&["--metrics-listen", "127.0.0.1"], "--metrics-listen"),
            (&["--threads", "0"], "--threads"),
            (&["--coordinator", "127.0.0.1:1"], "--coordinator"),
            (&["--coordinator", "http://a:1,b:2"], "--coordinator"),
            (&["--coordinator", "http://a:1,"], "--coordinator"),
            (&["--devices", "cuda:0"], "--devices"),
            (&["--name", " "], "--name"),
            (&["--drain-timeout", "0s"], "--drain-timeout"),
        ];
        for (argv, flag) in cases {
            let error = args(argv)
                .resolve(0, 2, Some("/h".into()), None)
                .unwrap_err();
            assert!(error.to_string().starts_with(flag), "{argv:?}: {error}");
        }
    }

    #[test]
    fn metrics_listen_defaults_to_the_deploy_port_and_can_be_disabled() {
        let mut parsed = args(&[]);
        parsed.metrics_listen = DEFAULT_METRICS_LISTEN.to_owned();
        let config = parsed.resolve(0, 1, Some("/h".into()), None).unwrap();
        assert_eq!(config.metrics_listen, Some("0.0.0.0:9464".parse().unwrap()));
        for off in ["", " ", "off", "OFF"] {
            assert_eq!(parse_metrics_listen(off), Ok(None), "{off:?}");
        }
        assert_eq!(
            parse_metrics_listen("127.0.0.1:0"),
            Ok(Some("127.0.0.1:0".parse().unwrap()))
        );
        assert_eq!(
            parse_metrics_listen("[::1]:9464"),
            Ok(Some("[::1]:9464".parse().unwrap()))
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
