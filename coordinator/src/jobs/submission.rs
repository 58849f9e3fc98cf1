//! The part of `SubmitJob` every job kind shares: name, priority, dataset and its shape,
//! budget, architectures and device requirements, validated at the edge into a [`Submission`].

use nat_arch::Genotype;
use nat_proto::v1;
use nat_schema::{Budget, JobSpec};
use nat_store::{Requirements, Worker};

use crate::error::ApiError;
use crate::state::check_len;

/// Most architectures in one job.
pub const MAX_ARCHITECTURES: usize = 1024;
/// Longest accepted architecture text, in bytes.
pub const MAX_ARCHITECTURE_LEN: usize = 64 * 1024;
/// Longest job name, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// A submission's shared part, validated.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The spec fields every kind stores.
    pub spec: JobSpec,
    /// The parsed architectures, in submission order (`spec.architectures` holds their
    /// canonical JSON).
    pub genotypes: Vec<Genotype>,
    /// What a worker needs to run the job's tasks.
    pub requirements: Requirements,
    /// Scheduling priority.
    pub priority: i32,
    /// Name of the token that submits the job (`None` without authentication); set by the
    /// JobService from the caller, never from the request.
    pub owner: Option<String>,
}

impl Submission {
    /// Validates the shared fields of `r`. `architectures_optional`: the kind accepts a job
    /// without architectures (an optimize job on random inputs). `workers`: the registered
    /// workers, where a user dataset's shape is learned when `r` gives none (see
    /// [`super::dataset::resolve`]; a built-in dataset needs none).
    pub fn validate(
        r: &v1::SubmitJobRequest,
        architectures_optional: bool,
        workers: &[Worker],
    ) -> Result<Submission, ApiError> {
        check_len("name", &r.name, MAX_NAME_LEN)?;
        let priorities = nat_store::limits::MIN_PRIORITY..=nat_store::limits::MAX_PRIORITY;
        if !priorities.contains(&r.priority) {
            return Err(ApiError::invalid(
                "priority",
                format!(
                    "must be in {}..={}, got {}",
                    priorities.start(),
                    priorities.end(),
                    r.priority
                ),
            ));
        }
        let (budget_preset, budget) = Budget::resolve(r.budget.as_ref(), "budget")?;
        if r.architectures.is_empty() && !architectures_optional {
            return Err(ApiError::invalid(
                "architectures",
                "at least one architecture is required",
            ));
        }
        if r.architectures.len() > MAX_ARCHITECTURES {
            return Err(ApiError::invalid(
                "architectures",
                format!("at most {MAX_ARCHITECTURES} architectures per job"),
            ));
        }
        let mut genotypes = Vec::with_capacity(r.architectures.len());
        for (i, text) in r.architectures.iter().enumerate() {
            let field = format!("architectures[{i}]");
            check_len(&field, text, MAX_ARCHITECTURE_LEN)?;
            let g =
                nat_arch::parse_any(text).map_err(|e| ApiError::invalid(&field, e.to_string()))?;
            genotypes.push(g);
        }
        let (device, min_mem) = match r.requirements.as_ref() {
            None => (String::new(), 0),
            Some(req) => {
                let kind = v1::DeviceKind::try_from(req.device).map_err(|_| {
                    ApiError::invalid(
                        "requirements.device",
                        format!("unknown device kind {}", req.device),
                    )
                })?;
                let device = match kind {
                    v1::DeviceKind::Cuda => "cuda".to_string(),
                    v1::DeviceKind::Cpu | v1::DeviceKind::Unspecified => String::new(),
                };
                if req.min_device_memory_bytes > 0 && device.is_empty() {
                    return Err(ApiError::invalid(
                        "requirements.min_device_memory_bytes",
                        "only meaningful with device = DEVICE_KIND_CUDA",
                    ));
                }
                (device, req.min_device_memory_bytes)
            }
        };
        // Last: the shape may depend on the workers (FAILED_PRECONDITION), after every check
        // of the request alone.
        let (dataset, dataset_shape) = super::dataset::resolve(r, workers)?;
        let spec = JobSpec {
            name: r.name.trim().to_string(),
            dataset,
            dataset_shape,
            seed: r.seed,
            budget_preset,
            budget,
            architectures: genotypes.iter().map(Genotype::to_json).collect(),
            device,
            min_device_memory_bytes: min_mem,
        };
        let requirements = requirements_of(&spec);
        Ok(Submission {
            spec,
            genotypes,
            requirements,
            priority: r.priority,
            owner: None,
        })
    }
}

/// What a worker needs to run the tasks of a job with `spec`.
pub fn requirements_of(spec: &JobSpec) -> Requirements {
    Requirements {
        needs_gpu: spec.needs_gpu(),
        min_gpu_memory_mb: spec.min_gpu_memory_mb(),
        min_cpu_cores: 0,
    }
}
