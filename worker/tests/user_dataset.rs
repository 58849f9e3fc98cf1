//! Bring your own dataset, end to end: the built-in digits exported as PNG image folders
//! (`my-digits/train/<class>/*.png`, `my-digits/test/<class>/*.png`) in a fresh data dir, a real
//! `nat-worker` that reports them at registration, a real `nat-coordinator` that learns their
//! shape from it, and an `evaluate` job on `my-digits` that trains and measures above chance.
#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::time::Duration;

use nat_arch::Dataset;
use nat_proto::v1;
use nat_proto::v1::job_service_client::JobServiceClient;

use common::{
    assert_measured, job_result, jobs_client, submit, wait_for_job_end, CoordinatorProcess,
    WorkerProcess,
};

/// Writes the digits as `data/my-digits/{train,test}/<class>/*.png`, every fifth image in test.
/// Returns (train, test) counts.
fn export_my_digits(data: &std::path::Path) -> (u64, u64) {
    let (raw, _) = nat_data::builtin::read_builtin(&common::data_dir(), Dataset::Digits).unwrap();
    let mut train = nat_data::RawImages {
        max_value: raw.max_value,
        ..nat_data::RawImages::empty()
    };
    let mut test = train.clone();
    for (index, (pixels, &label)) in raw.pixels.chunks_exact(64).zip(&raw.labels).enumerate() {
        let part = if index % 5 == 0 {
            &mut test
        } else {
            &mut train
        };
        part.pixels.extend_from_slice(pixels);
        part.labels.push(label);
        part.count += 1;
    }
    let classes: Vec<String> = (0..10).map(|c| c.to_string()).collect();
    nat_data::folder::export_png(
        &data.join("my-digits"),
        Dataset::Digits.shape(),
        &classes,
        &train,
        Some(&test),
    )
    .unwrap();
    (train.count as u64, test.count as u64)
}

async fn workers(client: &mut JobServiceClient<tonic::transport::Channel>) -> Vec<v1::WorkerInfo> {
    client
        .list_workers(v1::ListWorkersRequest {})
        .await
        .map(|r| r.into_inner().workers)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evaluate_job_on_an_image_folder_dataset_learns_above_chance() {
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let (train_count, test_count) = export_my_digits(&data);
    let coordinator = CoordinatorProcess::spawn(
        "127.0.0.1:0",
        &scratch.path().join("coordinator.db"),
        "20",
        &scratch.path().join("coordinator.log"),
    );
    let mut client = jobs_client(&coordinator.url()).await;
    let worker = WorkerProcess::spawn(
        &coordinator.url(),
        "byod",
        scratch.path(),
        &["--data-dir", data.to_str().unwrap()],
    );

    // Registration lists the dataset with the shape and sizes its files show.
    let mut registered = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while registered.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never registered: {}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        registered = workers(&mut client).await;
    }
    let capabilities = registered[0].capabilities.clone().unwrap();
    assert_eq!(capabilities.datasets, vec!["my-digits".to_owned()]);
    assert_eq!(
        capabilities.dataset_infos,
        vec![v1::DatasetInfo {
            name: "my-digits".into(),
            shape: Some(v1::DatasetShape {
                channels: 1,
                image_size: 8,
                classes: 10
            }),
            train_examples: train_count,
            test_examples: test_count,
            format: "image-folder".into(),
        }]
    );

    // The job names only the dataset: the coordinator learns its shape from the worker.
    let job_id = submit(
        &mut client,
        v1::SubmitJobRequest {
            kind: v1::JobKind::Evaluate as i32,
            architectures: vec!["darts-v2".into(), "resnet-block".into()],
            dataset: "my-digits".into(),
            budget: Some(v1::BudgetSpec {
                preset: "smoke".into(),
                overrides: None,
            }),
            seed: 3,
            name: "byod e2e".into(),
            ..v1::SubmitJobRequest::default()
        },
    )
    .await;
    let finished = wait_for_job_end(&mut client, &job_id, Duration::from_secs(300)).await;
    assert_eq!(
        finished.state,
        v1::JobState::Succeeded as i32,
        "{finished:?}\n{}",
        worker.log_text()
    );
    assert_eq!(
        finished.dataset_shape,
        Some(v1::DatasetShape {
            channels: 1,
            image_size: 8,
            classes: 10
        })
    );
    let result = job_result(&mut client, &job_id).await;
    assert_eq!(result.architectures.len(), 2);
    assert_measured(result.architectures.iter().map(|a| a.result.as_ref()));
    // Measured with the smoke budget (1 epoch on 512 examples): darts-v2 0.28, resnet-block 0.43
    // on the validation split; twice chance (0.1) is the bar.
    for architecture in &result.architectures {
        let accuracy = architecture.result.as_ref().unwrap().accuracy;
        eprintln!("my-digits, smoke budget: accuracy {accuracy:.3} (chance 0.1)");
        assert!(
            accuracy > 0.2,
            "accuracy {accuracy} on my-digits (chance is 0.1)"
        );
    }
    // The worker decoded the folder once and cached it.
    assert!(data
        .join("my-digits/.nat-cache/image-folder.safetensors")
        .is_file());
}
