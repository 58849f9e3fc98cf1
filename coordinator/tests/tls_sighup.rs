//! SIGHUP reloads the coordinator's TLS certificate. Its own test binary: the signal goes to
//! the whole process.
#![cfg(unix)]

mod common;
mod tls_support;

use std::time::Duration;

use nat_coordinator::tls::ServerTls;
use tls_support::{eventually, list_jobs, Ca, Files, TlsServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate() {
    // Registered first, so that SIGHUP never takes its default action (ending the process),
    // however early it comes.
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .expect("SIGHUP handler");
    let (ca_a, ca_b) = (Ca::new("CA A"), Ca::new("CA B"));
    let files = Files::write(&ca_a.server(), None);
    // No polling: only the signal can reload.
    let tls = ServerTls::load(files.files.clone())
        .expect("load")
        .with_poll_interval(Duration::ZERO);
    let server = TlsServer::start(tls).await;
    eventually("ListJobs with CA A", || {
        list_jobs(server.grpc, Some(&ca_a), None)
    })
    .await;

    files.replace(&ca_b.server(), None);
    list_jobs(server.grpc, Some(&ca_b), None)
        .await
        .expect_err("no reload before the signal");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(5), hangups.recv())
        .await
        .expect("SIGHUP delivered");
    eventually("ListJobs with CA B after SIGHUP", || {
        list_jobs(server.grpc, Some(&ca_b), None)
    })
    .await;
    list_jobs(server.grpc, Some(&ca_a), None)
        .await
        .expect_err("a client trusting only CA A after SIGHUP");

    server.stop().await;
}
