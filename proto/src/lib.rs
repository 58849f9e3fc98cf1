//! The nat-orchestrator wire contract: gRPC package `nat.v1`.
//!
//! The source of truth is `proto/nat/v1/nat.proto`; read it for the meaning of every field. This crate
//! compiles it with `tonic-prost-build` and re-exports the generated code:
//!
//! - [`v1`]: messages, [`v1::job_service_client::JobServiceClient`],
//!   [`v1::worker_service_client::WorkerServiceClient`] and the server traits
//!   [`v1::job_service_server::JobService`] / [`v1::worker_service_server::WorkerService`].
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for `tonic-reflection`.

/// Generated code for package `nat.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs, unused_qualifications)]
    tonic::include_proto!("nat.v1");
}

/// Encoded `FileDescriptorSet` of `nat.v1`, to register with a gRPC reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("nat_v1_descriptor");

/// Fully qualified gRPC service names, as reflection and health checks list them.
pub const JOB_SERVICE_NAME: &str = "nat.v1.JobService";
/// See [`JOB_SERVICE_NAME`].
pub const WORKER_SERVICE_NAME: &str = "nat.v1.WorkerService";

#[cfg(test)]
mod tests {
    use super::v1;
    use prost::Message;

    #[test]
    fn task_round_trips_through_the_wire_format() {
        let task = v1::Task {
            task_id: "t-1".into(),
            job_id: "j-1".into(),
            lease_token: 42,
            attempt: 2,
            lease_expires_at_unix_ms: 1_700_000_000_000,
            payload: Some(v1::task::Payload::TrainEval(v1::TrainEvalTask {
                genotype_json: "{}".into(),
                dataset: "digits".into(),
                budget: Some(v1::TrainingBudget {
                    epochs: 1,
                    batch_size: 32,
                    learning_rate: 0.025,
                    ..Default::default()
                }),
                seed: 7,
                checkpointed: false,
                checkpoint_key: String::new(),
                split: v1::EvalSplit::Test as i32,
                dataset_shape: Some(v1::DatasetShape {
                    channels: 1,
                    image_size: 8,
                    classes: 10,
                }),
            })),
        };
        let bytes = task.encode_to_vec();
        let back = v1::Task::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(back, task);
    }

    #[test]
    fn descriptor_set_names_both_services() {
        let text = String::from_utf8_lossy(super::FILE_DESCRIPTOR_SET);
        assert!(text.contains("JobService"));
        assert!(text.contains("WorkerService"));
        assert!(text.contains("nat.v1"));
    }
}
