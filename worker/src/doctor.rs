//! `nat-worker doctor`: what this worker runs on — the libtorch it loaded (path and version), the
//! CUDA runtime and NVIDIA driver, the devices — proved by one small matrix product per device.
//!
//! It also says how the worker would reach its coordinators: the URLs, whether TLS is on (and
//! what it trusts, whether a client certificate is sent) and whether a token is set (never its
//! value), from the same flags and `NAT_…` variables as the worker; files that cannot be read and
//! URLs that do not go with the flags are failed checks. It opens no connection.
//!
//! Exit status 0 when every check passes, 1 otherwise (the report says which failed). Run it after
//! an install (`PREFIX/bin/nat-worker doctor`) or in a container (`podman run … nat-worker doctor`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use tch::{Device, Kind, Tensor};

use crate::system;

/// The oldest NVIDIA driver branch that runs the CUDA 13 runtime of the PyTorch 2.13.0 wheels
/// (NVIDIA's CUDA compatibility guide: CUDA 13.x needs driver 580 or newer; 580.65.06 shipped with
/// CUDA 13.0).
pub const MIN_DRIVER_CUDA13: DriverVersion = DriverVersion {
    major: 580,
    minor: 0,
};

/// An NVIDIA kernel driver version such as `580.65.06` (the patch level is not compared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DriverVersion {
    /// The branch, e.g. 580.
    pub major: u32,
    /// The release within the branch, e.g. 65.
    pub minor: u32,
}

impl std::fmt::Display for DriverVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:02}", self.major, self.minor)
    }
}

/// What the wheel's `version.py` says about the libtorch build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TorchBuild {
    /// `__version__`, e.g. `2.13.0+cu130`.
    pub version: Option<String>,
    /// The CUDA version it was built for, e.g. `13.0`; `None` for a CPU build.
    pub cuda: Option<String>,
}

/// One line of the report and whether it is a failed check.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    key: &'static str,
    value: String,
    failed: bool,
}

/// `nat-worker doctor`'s flags: the coordinator URLs and the connection flags, as the worker
/// takes them (and from the same environment variables).
#[derive(Debug, Parser)]
#[command(
    name = "nat-worker doctor",
    bin_name = "nat-worker doctor",
    about = "Check libtorch, the devices, and how the worker would connect (no connection is made)"
)]
pub struct DoctorArgs {
    /// Coordinator gRPC URL(s), comma-separated, as for the worker.
    #[arg(
        long,
        env = "NAT_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub coordinator: String,

    /// TLS and the bearer token, as for the worker.
    #[command(flatten)]
    pub connect: nat_client::ConnectArgs,
}

/// Runs the checks, prints the report on stdout and returns the exit status. The arguments are
/// the process's, after `doctor`.
pub fn main() -> ExitCode {
    let args = DoctorArgs::parse_from(std::env::args_os().skip(1));
    let mut lines = report();
    lines.extend(connection_lines(&args));
    let width = lines
        .iter()
        .map(|line| line.key.len() + 1)
        .max()
        .unwrap_or(0);
    for line in &lines {
        let mark = if line.failed { "  <- FAILED" } else { "" };
        println!("{:width$}  {}{mark}", format!("{}:", line.key), line.value);
    }
    if lines.iter().any(|line| line.failed) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn report() -> Vec<Line> {
    let mut lines = Vec::new();
    let mut push = |key, value: String, failed| lines.push(Line { key, value, failed });
    push("nat-worker", env!("CARGO_PKG_VERSION").to_owned(), false);

    // Touch libtorch before reading the maps, so its libraries are certainly mapped.
    let cpu_check = matmul_check(Device::Cpu);
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let libtorch = loaded_library(&maps, "libtorch_cpu.so");
    push(
        "libtorch",
        display_path(libtorch.as_deref(), "not found in /proc/self/maps"),
        libtorch.is_none(),
    );
    let build = libtorch
        .as_deref()
        .and_then(Path::parent)
        .and_then(read_torch_build)
        .unwrap_or_default();
    push(
        "libtorch version",
        build.version.clone().unwrap_or_else(|| {
            "unknown (no version.py beside the library: install with `make install`)".to_owned()
        }),
        false,
    );
    let cuda_backend = loaded_library(&maps, "libtorch_cuda.so");
    push(
        "CUDA backend",
        match &cuda_backend {
            Some(path) => format!("loaded ({})", path.display()),
            None => "not loaded (CPU only)".to_owned(),
        },
        false,
    );
    let cudart = loaded_library(&maps, "libcudart.so");
    let runtime_version = cuda_runtime_version();
    push(
        "CUDA runtime",
        format!(
            "{}; built for CUDA {}{}",
            display_path(cudart.as_deref(), "libcudart not loaded"),
            build.cuda.as_deref().unwrap_or("(none)"),
            runtime_version
                .map(|v| format!("; libtorch reports {}.{}", v / 1000, (v % 1000) / 10))
                .unwrap_or_default(),
        ),
        false,
    );
    let driver = std::fs::read_to_string("/proc/driver/nvidia/version")
        .ok()
        .and_then(|text| parse_driver_version(&text));
    let needs_cuda13 = build.cuda.as_deref().is_some_and(|c| c.starts_with("13."));
    let (driver_text, driver_failed) = match driver {
        Some(version) if needs_cuda13 && version < MIN_DRIVER_CUDA13 => (
            format!(
                "{version}: too old for CUDA 13, needs {} or newer",
                MIN_DRIVER_CUDA13.major
            ),
            true,
        ),
        Some(version) => (version.to_string(), false),
        None => (
            format!(
                "none (no /proc/driver/nvidia/version); GPUs need driver {} or newer",
                MIN_DRIVER_CUDA13.major
            ),
            false,
        ),
    };
    push("NVIDIA driver", driver_text, driver_failed);
    push(
        "cpu",
        format!(
            "{} intra-op threads; 64x64 matmul {}",
            tch::get_num_threads(),
            check_text(&cpu_check)
        ),
        cpu_check.is_err(),
    );
    let gpus = system::gpu_info();
    let visible = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
    if visible == 0 {
        push("cuda devices", "none visible to libtorch".to_owned(), false);
    }
    for index in 0..visible {
        let check = matmul_check(Device::Cuda(index));
        let name = gpus
            .iter()
            .find(|gpu| gpu.index == index)
            .map(|gpu| format!("{} ({} MiB)", gpu.name, gpu.memory_bytes / (1024 * 1024)))
            .unwrap_or_else(|| "(nvidia-smi gave no name)".to_owned());
        push(
            "cuda device",
            format!("cuda:{index} {name}; matmul {}", check_text(&check)),
            check.is_err(),
        );
    }
    if visible > 0 {
        push(
            "cuDNN",
            if tch::Cuda::cudnn_is_available() {
                "available".to_owned()
            } else {
                "not available".to_owned()
            },
            false,
        );
    }
    lines
}

/// How the worker would connect: the URLs, TLS, the token (never its value); a connection flag
/// or URL the worker would refuse is a failed line.
fn connection_lines(args: &DoctorArgs) -> Vec<Line> {
    let mut lines = vec![Line {
        key: "coordinator",
        value: args.coordinator.clone(),
        failed: false,
    }];
    let mut fail = |key, value: String| {
        lines.push(Line {
            key,
            value,
            failed: true,
        });
    };
    let options = match args.connect.resolve() {
        Ok(options) => options,
        Err(error) => {
            fail("connection", error.to_string());
            return lines;
        }
    };
    let urls = match nat_client::parse_urls(&args.coordinator) {
        Ok(urls) => urls,
        Err(error) => {
            fail("coordinator", error.to_string());
            return lines;
        }
    };
    for url in &urls {
        if let Err(error) = nat_client::endpoint(url, &options) {
            fail("coordinator", error.to_string());
        }
    }
    let https = urls
        .iter()
        .filter(|url| url.to_ascii_lowercase().starts_with("https://"))
        .count();
    let tls = if https == 0 {
        "off (http://: plaintext)".to_owned()
    } else if https == urls.len() {
        format!("on; {}", options.tls_summary())
    } else {
        format!(
            "on for {https} of {} URLs; {}",
            urls.len(),
            options.tls_summary()
        )
    };
    lines.push(Line {
        key: "tls",
        value: tls,
        failed: false,
    });
    lines.push(Line {
        key: "token",
        value: options.token_summary(),
        failed: false,
    });
    for warning in options.warnings() {
        lines.push(Line {
            key: "warning",
            value: warning.clone(),
            failed: false,
        });
    }
    lines
}

/// The path of the first mapped file named `name` or `name.*` (a soname with a version suffix) in
/// a `/proc/<pid>/maps` text.
pub fn loaded_library(maps: &str, name: &str) -> Option<PathBuf> {
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(Path::new)
        .find(|path| {
            path.file_name()
                .and_then(|file| file.to_str())
                .is_some_and(|file| {
                    file == name
                        || file
                            .strip_prefix(name)
                            .is_some_and(|rest| rest.starts_with('.'))
                })
        })
        .map(Path::to_path_buf)
}

/// Reads the torch wheel's `version.py`: `torch-version.py` beside the libraries (an install made
/// by `make install` or an image), else `../version.py` (the wheel's own layout in a venv).
pub fn read_torch_build(lib_dir: &Path) -> Option<TorchBuild> {
    [
        lib_dir.join("torch-version.py"),
        lib_dir.join("../version.py"),
    ]
    .iter()
    .find_map(|path| std::fs::read_to_string(path).ok())
    .map(|text| parse_torch_version(&text))
}

/// Parses `__version__ = '…'` and `cuda: Optional[str] = '…'` (or `cuda = None`) from a torch
/// `version.py`.
pub fn parse_torch_version(text: &str) -> TorchBuild {
    let value = |key: &str| -> Option<String> {
        text.lines().find_map(|line| {
            let (left, right) = line.split_once('=')?;
            let left = left.split(':').next()?.trim();
            if left != key {
                return None;
            }
            let right = right.trim();
            let quoted = right
                .strip_prefix('\'')
                .and_then(|r| r.strip_suffix('\''))
                .or_else(|| right.strip_prefix('"').and_then(|r| r.strip_suffix('"')))?;
            Some(quoted.to_owned())
        })
    };
    TorchBuild {
        version: value("__version__"),
        cuda: value("cuda"),
    }
}

/// The driver version in `/proc/driver/nvidia/version` (`NVRM version: NVIDIA UNIX x86_64 Kernel
/// Module  580.65.06  …`, or `… Open Kernel Module for x86_64  580.95.05  …`).
pub fn parse_driver_version(text: &str) -> Option<DriverVersion> {
    let line = text
        .lines()
        .find(|line| line.starts_with("NVRM version:"))?;
    line.split_whitespace().find_map(|word| {
        let mut parts = word.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(DriverVersion { major, minor })
    })
}

/// The CUDA runtime version libtorch was built with (e.g. 13000), when its CUDA backend is loaded.
fn cuda_runtime_version() -> Option<i64> {
    if !tch::utils::has_cuda() {
        return None;
    }
    // Asking a libtorch without CUDA hooks throws; tch turns that into a panic.
    std::panic::catch_unwind(tch::utils::version_cudart).ok()
}

/// A 64×64 matrix of ones times itself sums to 64³ on a working device.
fn matmul_check(device: Device) -> Result<(), String> {
    let run = || -> Result<f64, tch::TchError> {
        let ones = Tensor::f_ones([64, 64], (Kind::Float, device))?;
        ones.f_matmul(&ones)?
            .f_sum(Kind::Float)?
            .f_to_device(Device::Cpu)?
            .f_double_value(&[])
    };
    match run() {
        Ok(sum) if sum == 64.0 * 64.0 * 64.0 => Ok(()),
        Ok(sum) => Err(format!("wrong result {sum}")),
        Err(error) => Err(error.to_string()),
    }
}

fn check_text(check: &Result<(), String>) -> String {
    match check {
        Ok(()) => "ok".to_owned(),
        Err(reason) => format!("failed: {reason}"),
    }
}

fn display_path(path: Option<&Path>, missing: &str) -> String {
    path.map(|p| p.display().to_string())
        .unwrap_or_else(|| missing.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
7f00 r--p 00000000 08:01 1 /opt/nat/lib/nat-orchestrator/libtorch_cpu.so
7f01 r--p 00000000 08:01 2 /opt/nat/lib/nat-orchestrator/libcudart.so.13
7f02 rw-p 00000000 00:00 0
7f03 r--p 00000000 08:01 3 /opt/nat/lib/nat-orchestrator/libtorch_cpu.so.bak-old
7f04 r--p 00000000 08:01 4 /usr/lib/x86_64-linux-gnu/libc.so.6
";

    #[test]
    fn finds_mapped_libraries_by_name_and_soname() {
        assert_eq!(
            loaded_library(MAPS, "libtorch_cpu.so"),
            Some(PathBuf::from(
                "/opt/nat/lib/nat-orchestrator/libtorch_cpu.so"
            ))
        );
        assert_eq!(
            loaded_library(MAPS, "libcudart.so"),
            Some(PathBuf::from(
                "/opt/nat/lib/nat-orchestrator/libcudart.so.13"
            ))
        );
        assert_eq!(loaded_library(MAPS, "libtorch_cuda.so"), None);
        assert_eq!(
            loaded_library(MAPS, "libc.so"),
            Some(PathBuf::from("/usr/lib/x86_64-linux-gnu/libc.so.6"))
        );
    }

    #[test]
    fn parses_the_wheel_version_file() {
        let text = "from typing import Optional\n__version__ = '2.13.0+cu130'\ndebug = False\n\
                    cuda: Optional[str] = '13.0'\nhip: Optional[str] = None\n";
        assert_eq!(
            parse_torch_version(text),
            TorchBuild {
                version: Some("2.13.0+cu130".to_owned()),
                cuda: Some("13.0".to_owned()),
            }
        );
        let cpu = parse_torch_version("__version__ = \"2.13.0+cpu\"\ncuda: Optional[str] = None\n");
        assert_eq!(cpu.version.as_deref(), Some("2.13.0+cpu"));
        assert_eq!(cpu.cuda, None);
    }

    #[test]
    fn reads_the_version_file_of_an_install_or_a_wheel() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("torch/lib");
        std::fs::create_dir_all(&lib).unwrap();
        assert_eq!(read_torch_build(&lib), None);
        std::fs::write(
            dir.path().join("torch/version.py"),
            "__version__ = '2.13.0'\n",
        )
        .unwrap();
        assert_eq!(
            read_torch_build(&lib).and_then(|b| b.version).as_deref(),
            Some("2.13.0")
        );
        std::fs::write(lib.join("torch-version.py"), "__version__ = '9.9.9'\n").unwrap();
        assert_eq!(
            read_torch_build(&lib).and_then(|b| b.version).as_deref(),
            Some("9.9.9")
        );
    }

    #[test]
    fn parses_proprietary_and_open_driver_versions() {
        let proprietary = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  Sun Jul 27 07:09:21 UTC 2025\nGCC version:  gcc version 12.2.0\n";
        let open = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  575.57.08  Release Build  (dvs-builder@U16-I3-B13-4-1)\n";
        assert_eq!(
            parse_driver_version(proprietary),
            Some(DriverVersion {
                major: 580,
                minor: 65
            })
        );
        let old = parse_driver_version(open).unwrap();
        assert_eq!(old.major, 575);
        assert!(old < MIN_DRIVER_CUDA13);
        assert!(parse_driver_version(proprietary).unwrap() >= MIN_DRIVER_CUDA13);
        assert_eq!(parse_driver_version("GCC version: 12.2\n"), None);
    }

    #[test]
    fn the_connection_report_shows_tls_and_the_token_but_never_its_value() {
        // Built here rather than parsed, so that this process's NAT_ variables play no part.
        let mut args = DoctorArgs {
            coordinator: "http://127.0.0.1:50051".to_owned(),
            connect: nat_client::ConnectArgs {
                token: Some("s3cret".to_owned()),
                ..nat_client::ConnectArgs::default()
            },
        };
        let lines = connection_lines(&args);
        let text = format!("{lines:?}");
        assert!(!text.contains("s3cret"), "{text}");
        let value = |key| {
            lines
                .iter()
                .find(|line| line.key == key)
                .map(|line| line.value.clone())
                .unwrap()
        };
        assert_eq!(value("tls"), "off (http://: plaintext)");
        assert_eq!(value("token"), "set (from --token / NAT_TOKEN)");
        assert!(lines.iter().all(|line| !line.failed), "{lines:?}");

        args.coordinator = "https://a:1,http://b:2".to_owned();
        args.connect = nat_client::ConnectArgs {
            ca_cert: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..nat_client::ConnectArgs::default()
        };
        let lines = connection_lines(&args);
        let failed: Vec<&Line> = lines.iter().filter(|line| line.failed).collect();
        assert_eq!(failed.len(), 1, "{lines:?}");
        assert!(
            failed[0].value.starts_with("--ca-cert: cannot read"),
            "{lines:?}"
        );

        args.connect = nat_client::ConnectArgs::default();
        let lines = connection_lines(&args);
        assert!(
            lines
                .iter()
                .any(|line| line.key == "tls" && line.value.starts_with("on for 1 of 2 URLs")),
            "{lines:?}"
        );
        assert_eq!(
            lines.iter().find(|line| line.key == "token").unwrap().value,
            "none (calls are sent without a token)"
        );
    }

    #[test]
    fn the_cpu_matmul_check_passes_here() {
        assert_eq!(matmul_check(Device::Cpu), Ok(()));
    }
}
