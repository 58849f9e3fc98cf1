//! The real `nat-coordinator` binary: safe by default (no authentication → loopback only unless
//! `--insecure`, which warns), and the token bootstrap (`nat-coordinator token create`, then
//! the token works over gRPC; `token list`, `token revoke`).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::connect;
use nat_proto::v1;
use nat_proto::v1::token_service_client::TokenServiceClient;
use tonic::{Code, Request};

const BIN: &str = env!("CARGO_BIN_EXE_nat-coordinator");

fn command(args: &[&str], dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("NAT_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn run(args: &[&str], dir: &Path) -> Output {
    command(args, dir).output().expect("run nat-coordinator")
}

/// Starts the server; returns it with its gRPC address, or its exit output if it exited.
fn start(args: &[&str], dir: &Path) -> Result<(Child, String), String> {
    let mut child = command(args, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    if line.is_empty() {
        let mut err = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err)
            .expect("read stderr");
        let status = child.wait().expect("wait");
        return Err(format!("{status}: {err}"));
    }
    let grpc = line
        .split_whitespace()
        .find_map(|p| p.strip_prefix("grpc="))
        .expect("grpc address")
        .to_string();
    Ok((child, grpc))
}

fn stop(mut child: Child) -> String {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let mut err = String::new();
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    err
}

#[test]
fn without_auth_it_listens_on_loopback_only_unless_insecure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = ["--listen", "0.0.0.0:0", "--http-listen", "127.0.0.1:0"];
    let err = start(&open, dir.path()).expect_err("refused");
    assert!(err.contains("refusing to listen on 0.0.0.0"), "{err}");
    assert!(err.contains("--auth token"), "{err}");

    let loopback = ["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"];
    let (child, _) = start(&loopback, dir.path()).expect("loopback is fine");
    let log = stop(child);
    assert!(log.contains("loopback only"), "{log}");

    let mut insecure = open.to_vec();
    insecure.push("--insecure");
    let (child, _) = start(&insecure, dir.path()).expect("--insecure starts");
    let log = stop(child);
    assert!(log.contains("INSECURE"), "warns on every start: {log}");

    let mut token = open.to_vec();
    token.extend(["--auth", "token"]);
    let (child, _) = start(&token, dir.path()).expect("--auth token starts");
    stop(child);
}

fn bearer<T>(secret: &str, m: T) -> Request<T> {
    let mut r = Request::new(m);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {secret}").parse().expect("ascii"),
    );
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_an_admin_token_then_manage_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite:{}", dir.path().join("nat.db").display());
    let out = run(
        &[
            "token",
            "create",
            "--role",
            "admin",
            "--name",
            "ops",
            "--database-url",
            &db,
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{out:?}");
    let secret = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string();
    assert!(
        secret.starts_with("nat_"),
        "only the secret on stdout: {secret}"
    );
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(note.contains("not shown again"), "{note}");

    let bad = run(
        &["token", "create", "--role", "root", "--database-url", &db],
        dir.path(),
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--role"));

    let (child, grpc) = start(
        &[
            "--auth",
            "token",
            "--database-url",
            &db,
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ],
        dir.path(),
    )
    .expect("starts");
    let mut tokens = TokenServiceClient::new(connect(&format!("http://{grpc}")).await);
    let err = tokens
        .list_tokens(v1::ListTokensRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let listed = tokens
        .list_tokens(bearer(&secret, v1::ListTokensRequest::default()))
        .await
        .expect("the bootstrap token works")
        .into_inner()
        .tokens;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "ops");
    assert_eq!(listed[0].role, v1::Role::Admin as i32);

    // The CLI lists and revokes while the server runs; the server sees it within its cache TTL.
    let list = run(&["token", "list", "--database-url", &db], dir.path());
    assert!(String::from_utf8_lossy(&list.stdout).contains("ops"));
    let revoke = run(
        &["token", "revoke", &listed[0].id, "--database-url", &db],
        dir.path(),
    );
    assert!(revoke.status.success(), "{revoke:?}");
    tokio::time::sleep(nat_coordinator::auth::CACHE_TTL + Duration::from_millis(200)).await;
    let err = tokens
        .list_tokens(bearer(&secret, v1::ListTokensRequest::default()))
        .await
        .expect_err("revoked");
    assert_eq!(err.code(), Code::Unauthenticated);
    stop(child);
}
