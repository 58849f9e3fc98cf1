//! The `nat-worker` command line: it starts without LD_LIBRARY_PATH (rpath from build.rs), every
//! flag is documented with its NAT_ variable, and bad flags exit 64 naming the flag.

use std::process::{Command, Output};

fn worker(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nat-worker"))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("NAT_DEVICES")
        .env_remove("NAT_THREADS")
        .env_remove("NAT_COORDINATOR")
        .env_remove("NAT_METRICS_LISTEN")
        .env_remove("NAT_CA_CERT")
        .env_remove("NAT_TOKEN")
        .env_remove("NAT_TOKEN_FILE")
        .output()
        .expect("run nat-worker")
}

#[test]
fn help_lists_every_flag_with_its_environment_variable() {
    let output = worker(&["--help"]);
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8_lossy(&output.stdout);
    for (flag, env) in [
        ("--coordinator", "NAT_COORDINATOR"),
        ("--devices", "NAT_DEVICES"),
        ("--data-dir", "NAT_DATA_DIR"),
        ("--threads", "NAT_THREADS"),
        ("--name", "NAT_WORKER_NAME"),
        ("--checkpoint-dir", "NAT_CHECKPOINT_DIR"),
        ("--log-format", "NAT_LOG_FORMAT"),
        ("--drain-timeout", "NAT_DRAIN_TIMEOUT"),
        ("--metrics-listen", "NAT_METRICS_LISTEN"),
        ("--ca-cert", "NAT_CA_CERT"),
        ("--cert", "NAT_CLIENT_CERT"),
        ("--key", "NAT_CLIENT_KEY"),
        ("--token", "NAT_TOKEN"),
        ("--token-file", "NAT_TOKEN_FILE"),
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
        assert!(help.contains(env), "{env} missing from --help:\n{help}");
    }
    assert!(help.contains("exits with status 77"), "{help}");
}

#[test]
fn bad_flags_exit_64_naming_the_flag() {
    for (args, flag) in [
        (&["--devices", "cuda:63"][..], "--devices"),
        (&["--devices", "tpu"][..], "--devices"),
        (&["--threads", "0"][..], "--threads"),
        (&["--coordinator", "127.0.0.1:50051"][..], "--coordinator"),
        (&["--metrics-listen", "localhost"][..], "--metrics-listen"),
        (&["--token-file", "/nonexistent/token"][..], "--token-file"),
        (
            &[
                "--coordinator",
                "http://127.0.0.1:1",
                "--ca-cert",
                concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
            ][..],
            "--ca-cert",
        ),
    ] {
        let output = worker(args);
        assert_eq!(output.status.code(), Some(64), "{args:?}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

#[test]
fn a_metrics_port_in_use_fails_naming_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let address = taken.local_addr().expect("local address").to_string();
    let output = worker(&[
        "--devices",
        "cpu",
        "--coordinator",
        "http://127.0.0.1:1",
        "--metrics-listen",
        &address,
    ]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("--metrics-listen: cannot listen on {address}")),
        "{stderr}"
    );
}
