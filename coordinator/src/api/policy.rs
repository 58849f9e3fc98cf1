//! `nat.v1.PolicyService`: the stored NAT policies, and applying one to an architecture
//! without training (`natctl policy transform`).

use std::sync::Arc;

use nat_policy::PolicyLearner;
use nat_proto::v1;
use nat_store::StoreError;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::convert::{self, changed_edges};
use crate::error::ApiError;
use crate::state::{check_len, excerpt, Coordinator};

/// Why a transformation could not be computed.
enum TransformError {
    /// The architecture does not fit the policy's space (`INVALID_ARGUMENT`).
    Input(String),
    /// The stored policy is unusable (`FAILED_PRECONDITION`).
    Policy(String),
}

/// `nat.v1.PolicyService`: stored policies, and applying one without training.
#[derive(Debug, Clone)]
pub struct PolicyApi {
    c: Arc<Coordinator>,
}

impl PolicyApi {
    /// The service over shared state.
    pub fn new(c: Arc<Coordinator>) -> Self {
        PolicyApi { c }
    }

    async fn transform(
        &self,
        r: v1::TransformArchitectureRequest,
    ) -> Result<v1::TransformArchitectureResponse, ApiError> {
        check_len("policy_id", &r.policy_id, 200)?;
        check_len(
            "architecture",
            &r.architecture,
            crate::jobs::MAX_ARCHITECTURE_LEN,
        )?;
        if r.policy_id.trim().is_empty() {
            return Err(ApiError::invalid("policy_id", "is required"));
        }
        let g = nat_arch::parse_any(&r.architecture)
            .map_err(|e| ApiError::invalid("architecture", e.to_string()))?;
        let cp = match self.c.store.latest_checkpoint(r.policy_id.trim()).await {
            Ok(cp) => cp,
            Err(StoreError::NotFound { .. }) => {
                return Err(ApiError::NotFound(format!(
                    "policy {:?}",
                    excerpt(&r.policy_id)
                )))
            }
            Err(e) => return Err(e.into()),
        };
        let (sample, seed) = (r.sample, r.seed);
        let input = g.clone();
        let params = cp.params.clone();
        let alpha = tokio::task::spawn_blocking(move || {
            let learner = PolicyLearner::from_parts(&params, &[]).map_err(|e| {
                TransformError::Policy(format!("stored policy cannot be loaded: {e}"))
            })?;
            nat_policy::input::validate_input(learner.config().space, &input, "architecture")
                .map_err(|e| TransformError::Input(e.to_string()))?;
            let out = if sample {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                learner.sample(std::slice::from_ref(&input), 1, &mut rng)
            } else {
                learner.argmax(std::slice::from_ref(&input))
            };
            out.map_err(|e| TransformError::Input(e.to_string()))?
                .into_iter()
                .next()
                .map(|s| s.alpha)
                .ok_or_else(|| {
                    TransformError::Policy("the policy returned no transformation".into())
                })
        })
        .await
        .map_err(|e| ApiError::Internal(StoreError::backend(e)))?
        .map_err(|e| match e {
            TransformError::Input(reason) => ApiError::invalid("architecture", reason),
            TransformError::Policy(reason) => ApiError::FailedPrecondition(reason),
        })?;
        Ok(v1::TransformArchitectureResponse {
            genotype_json: alpha.to_json(),
            genotype_darts: alpha.to_darts_string(),
            policy: Some(v1::PolicyRef {
                id: cp.policy_id.clone(),
                version: u64::try_from(cp.version).unwrap_or(0),
            }),
            changed_edges: changed_edges(&g, &alpha),
        })
    }
}

#[tonic::async_trait]
impl v1::policy_service_server::PolicyService for PolicyApi {
    async fn list_policies(
        &self,
        _request: tonic::Request<v1::ListPoliciesRequest>,
    ) -> Result<tonic::Response<v1::ListPoliciesResponse>, tonic::Status> {
        let policies = self
            .c
            .store
            .list_policies()
            .await
            .map_err(ApiError::from)?
            .into_iter()
            .map(|p| v1::PolicyInfo {
                id: p.policy_id,
                space: p.space,
                version: u64::try_from(p.version).unwrap_or(0),
                source_job: p.source_job.map(|j| j.to_string()).unwrap_or_default(),
                rewards_consumed: p.rewards_consumed,
                updated_at_unix_ms: convert::unix_ms(p.updated_at),
            })
            .collect();
        Ok(tonic::Response::new(v1::ListPoliciesResponse { policies }))
    }

    async fn transform_architecture(
        &self,
        request: tonic::Request<v1::TransformArchitectureRequest>,
    ) -> Result<tonic::Response<v1::TransformArchitectureResponse>, tonic::Status> {
        Ok(tonic::Response::new(
            self.transform(request.into_inner()).await?,
        ))
    }
}
