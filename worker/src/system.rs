//! Facts about the machine reported at registration: host name, CPU model, GPU models and memory.

use std::process::{Command, Stdio};

/// A GPU as `nvidia-smi` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    pub index: usize,
    pub name: String,
    pub memory_bytes: u64,
}

/// The host name, from the kernel.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

/// The CPU model name from /proc/cpuinfo.
pub fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, value)| value.trim().to_owned())
}

/// GPU models and memory from `nvidia-smi`; empty when it is absent or fails (libtorch gives
/// neither the model name nor the memory size).
pub fn gpu_info() -> Vec<GpuInfo> {
    let output = Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,name,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match output {
        Ok(output) if output.status.success() => {
            parse_nvidia_smi(&String::from_utf8_lossy(&output.stdout))
        }
        _ => Vec::new(),
    }
}

/// Memory of one GPU as `nvidia-smi` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuMemory {
    pub index: u32,
    pub used_bytes: u64,
    pub total_bytes: u64,
}

/// Memory in use and capacity of every GPU, from `nvidia-smi`; empty when it is absent or fails.
/// Blocks for as long as `nvidia-smi` runs (tens of milliseconds): call it off the async threads.
pub fn gpu_memory() -> Vec<GpuMemory> {
    let output = Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,memory.used,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match output {
        Ok(output) if output.status.success() => {
            parse_gpu_memory(&String::from_utf8_lossy(&output.stdout))
        }
        _ => Vec::new(),
    }
}

/// Parses `index, used MiB, total MiB` lines; malformed lines are skipped.
pub fn parse_gpu_memory(text: &str) -> Vec<GpuMemory> {
    const MIB: u64 = 1024 * 1024;
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(',').map(str::trim);
            let index = fields.next()?.parse().ok()?;
            let used: u64 = fields.next()?.parse().ok()?;
            let total: u64 = fields.next()?.parse().ok()?;
            Some(GpuMemory {
                index,
                used_bytes: used.saturating_mul(MIB),
                total_bytes: total.saturating_mul(MIB),
            })
        })
        .collect()
}

/// Parses `index, name, memory MiB` lines.
pub fn parse_nvidia_smi(text: &str) -> Vec<GpuInfo> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(',').map(str::trim);
            let index = fields.next()?.parse().ok()?;
            let name = fields.next()?.to_owned();
            let mib: u64 = fields.next()?.parse().ok()?;
            Some(GpuInfo {
                index,
                name,
                memory_bytes: mib.saturating_mul(1024 * 1024),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvidia_smi_lines() {
        let text = "0, NVIDIA H100 80GB HBM3, 81559\n1, NVIDIA H100 80GB HBM3, 81559\nbad line\n";
        let gpus = parse_nvidia_smi(text);
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[1].index, 1);
        assert_eq!(gpus[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(gpus[0].memory_bytes, 81559 * 1024 * 1024);
    }

    #[test]
    fn nvidia_smi_memory_lines() {
        let text = "0, 1234, 81559\n1, [N/A], 81559\n2, 0, 40960\n";
        let gpus = parse_gpu_memory(text);
        assert_eq!(
            gpus,
            vec![
                GpuMemory {
                    index: 0,
                    used_bytes: 1234 * 1024 * 1024,
                    total_bytes: 81559 * 1024 * 1024,
                },
                GpuMemory {
                    index: 2,
                    used_bytes: 0,
                    total_bytes: 40960 * 1024 * 1024,
                },
            ]
        );
    }

    #[test]
    fn cpu_facts_are_readable_here() {
        assert!(hostname().is_some());
        assert!(cpu_model().is_some_and(|model| !model.is_empty()));
    }
}
