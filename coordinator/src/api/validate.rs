//! Validation of what workers send: capabilities, datasets, lease tokens.

use nat_proto::v1;
use std::time::Duration;

use nat_store::Capabilities;

use crate::error::ApiError;
use crate::state::check_len;

/// Most devices a worker may declare.
const MAX_DEVICES: usize = 64;
/// Most datasets (and dataset infos) a worker may declare.
const MAX_DATASETS: usize = 64;

/// The datasets of a registration, validated and trimmed (empty = unknown).
pub fn datasets_from_proto(caps: Option<&v1::WorkerCapabilities>) -> Result<Vec<String>, ApiError> {
    let Some(caps) = caps else {
        return Ok(Vec::new());
    };
    if caps.datasets.len() > MAX_DATASETS {
        return Err(ApiError::invalid(
            "capabilities.datasets",
            format!("at most {MAX_DATASETS} datasets"),
        ));
    }
    let mut out = Vec::with_capacity(caps.datasets.len());
    for (i, d) in caps.datasets.iter().enumerate() {
        let field = format!("capabilities.datasets[{i}]");
        check_len(&field, d, 200)?;
        let d = d.trim();
        if d.is_empty() {
            return Err(ApiError::invalid(field, "is empty"));
        }
        out.push(d.to_string());
    }
    Ok(out)
}

/// The dataset infos of a registration, validated: each a valid name (built in or
/// `[a-z0-9][a-z0-9._-]{0,63}`) that is also in `datasets`, at most once, with a valid shape.
/// Errors name `capabilities.dataset_infos[i].<field>`.
pub fn dataset_infos_from_proto(
    caps: Option<&v1::WorkerCapabilities>,
    datasets: &[String],
) -> Result<Vec<nat_schema::DatasetInfo>, ApiError> {
    let Some(caps) = caps else {
        return Ok(Vec::new());
    };
    if caps.dataset_infos.len() > MAX_DATASETS {
        return Err(ApiError::invalid(
            "capabilities.dataset_infos",
            format!("at most {MAX_DATASETS} dataset infos"),
        ));
    }
    let mut out: Vec<nat_schema::DatasetInfo> = Vec::with_capacity(caps.dataset_infos.len());
    for (i, info) in caps.dataset_infos.iter().enumerate() {
        let field = format!("capabilities.dataset_infos[{i}]");
        let info = nat_schema::DatasetInfo::from_proto(&field, info)?;
        if !datasets.contains(&info.name) {
            return Err(ApiError::invalid(
                format!("{field}.name"),
                format!(
                    "{:?} is not in capabilities.datasets (an info describes a dataset the \
                     worker lists)",
                    info.name
                ),
            ));
        }
        if out.iter().any(|o| o.name == info.name) {
            return Err(ApiError::invalid(
                format!("{field}.name"),
                format!("{:?} is described twice", info.name),
            ));
        }
        out.push(info);
    }
    Ok(out)
}

/// Store capabilities of a registration, validated.
pub fn capabilities_from_proto(
    caps: Option<&v1::WorkerCapabilities>,
) -> Result<Capabilities, ApiError> {
    let caps = caps.ok_or_else(|| ApiError::invalid("capabilities", "is required"))?;
    if caps.devices.len() > MAX_DEVICES {
        return Err(ApiError::invalid(
            "capabilities.devices",
            format!("at most {MAX_DEVICES} devices"),
        ));
    }
    if !(1..=64).contains(&caps.slots) {
        return Err(ApiError::invalid("capabilities.slots", "must be in 1..=64"));
    }
    check_len("capabilities.version", &caps.version, 200)?;
    check_len("capabilities.hostname", &caps.hostname, 200)?;
    let mut out = Capabilities {
        cpu_cores: caps.cpu_cores,
        slots: caps.slots,
        version: caps.version.clone(),
        ..Default::default()
    };
    for (i, d) in caps.devices.iter().enumerate() {
        check_len(&format!("capabilities.devices[{i}].model"), &d.model, 200)?;
        match v1::DeviceKind::try_from(d.kind) {
            Ok(v1::DeviceKind::Cpu) => out.devices.push("cpu".into()),
            Ok(v1::DeviceKind::Cuda) => {
                out.gpus += 1;
                let mb = d.memory_bytes / (1024 * 1024);
                if mb >= out.gpu_memory_mb {
                    out.gpu_memory_mb = mb;
                    if !d.model.is_empty() {
                        out.gpu_model = Some(d.model.clone());
                    }
                }
                out.devices.push(format!("cuda:{}", d.index));
            }
            _ => {
                return Err(ApiError::invalid(
                    format!("capabilities.devices[{i}].kind"),
                    "must be DEVICE_KIND_CPU or DEVICE_KIND_CUDA",
                ))
            }
        }
    }
    Ok(out)
}

/// What one free slot offers: a CUDA slot offers that GPU, a CPU slot no GPU.
pub(super) fn slot_capabilities(
    worker: &Capabilities,
    device: Option<&v1::Device>,
) -> Capabilities {
    let mut caps = worker.clone();
    match device.map(|d| (v1::DeviceKind::try_from(d.kind), d)) {
        Some((Ok(v1::DeviceKind::Cuda), d)) => {
            caps.gpus = 1;
            if d.memory_bytes > 0 {
                caps.gpu_memory_mb = d.memory_bytes / (1024 * 1024);
            }
        }
        _ => {
            caps.gpus = 0;
            caps.gpu_memory_mb = 0;
        }
    }
    caps
}

/// `now + duration`, saturating.
pub(super) fn lease_expiry(
    now: chrono::DateTime<chrono::Utc>,
    duration: Duration,
) -> chrono::DateTime<chrono::Utc> {
    chrono::Duration::from_std(duration)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

pub(super) fn token(field: &str, v: u64) -> Result<i64, ApiError> {
    if v == 0 {
        return Err(ApiError::invalid(field, "is required"));
    }
    i64::try_from(v).map_err(|_| ApiError::invalid(field, "out of range"))
}
