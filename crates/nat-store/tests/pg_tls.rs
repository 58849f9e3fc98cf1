//! PostgreSQL over TLS, against a real server: the test starts a private PostgreSQL 15 that
//! accepts only TLS connections (`hostssl … trust`, `hostnossl … reject`, plus one role that
//! must present a client certificate), with a CA and server certificate generated here, and
//! checks that `nat_store::connect` honours `sslmode`, `sslrootcert`, `sslcert` and `sslkey`.
//!
//! Needs the PostgreSQL 15 server binaries (`/usr/lib/postgresql/15/bin`, or the directory in
//! `NAT_TEST_PG_BIN`) and, when run as root, `runuser` (initdb and postgres refuse to run as
//! root, so they run as the `postgres` user). Missing ones fail the test with a message.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the test failing

use std::error::Error as _;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use sqlx::Connection;

const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The role that must authenticate with a client certificate (`hostssl … cert`).
const CERT_USER: &str = "nat_cert_user";

/// A CA: its certificate (PEM) and what signs with it.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("CA key");
    let cert = params.self_signed(&key).expect("self-signed CA");
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A certificate for `names` (subject alternative names) with common name `cn`, signed by
/// `ca`: (certificate PEM, private key PEM).
fn leaf(ca: &Ca, cn: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("leaf params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, &ca.issuer).expect("signed leaf");
    (cert.pem(), key.serialize_pem())
}

fn running_as_root() -> bool {
    // The owner of /proc/self is the process's effective user.
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Runs a PostgreSQL tool as the `postgres` user when we are root (initdb and postgres refuse
/// to run as root), else as ourselves. Panics with the tool's output when it fails.
fn run_pg_tool(bin: &Path, tool: &str, args: &[&str]) {
    let tool_path = bin.join(tool);
    let mut cmd = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&tool_path);
        c
    } else {
        Command::new(&tool_path)
    };
    cmd.args(args);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool_path.display()));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Checks the prerequisites, failing the test with a clear message when one is missing.
fn require_tools(bin: &Path) {
    for tool in ["initdb", "pg_ctl", "postgres"] {
        assert!(
            bin.join(tool).is_file(),
            "PostgreSQL server binary {}/{tool} is missing: install postgresql-15 (the TLS \
             test starts its own server) or set NAT_TEST_PG_BIN to the directory holding it",
            bin.display()
        );
    }
    if running_as_root() {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join("runuser").is_file()))
            .unwrap_or(false);
        assert!(
            found,
            "`runuser` is missing (util-linux): running as root, the TLS test needs it to start \
             PostgreSQL as the `postgres` user"
        );
    }
}

/// Gives `path` to the `postgres` user (when we are root) with `mode`.
fn hand_over(path: &Path, mode: u32) {
    if running_as_root() {
        let out = Command::new("chown")
            .arg("postgres:postgres")
            .arg(path)
            .output()
            .expect("run chown");
        assert!(
            out.status.success(),
            "chown postgres {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A private PostgreSQL server; stopped (immediately) when dropped, also when a test panics.
struct PgServer {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// CA that signed the server's and the client's certificates.
    ca_file: PathBuf,
    /// Another CA, which signed nothing the server presents.
    other_ca_file: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// Removed after the server is stopped (fields drop after `Drop::drop`).
    _dir: tempfile::TempDir,
}

impl PgServer {
    fn start() -> PgServer {
        let bin = std::env::var_os("NAT_TEST_PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PG_BIN));
        require_tools(&bin);

        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_path_buf();
        hand_over(&root, 0o700);
        let data = root.join("data");

        // Certificates: the CA, the server's (for 127.0.0.1 and localhost), a client's for
        // CERT_USER, and an unrelated CA.
        let ca = new_ca("nat test CA");
        let other = new_ca("nat other CA");
        let (server_cert, server_key) = leaf(
            &ca,
            "nat test server",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert_pem, client_key_pem) =
            leaf(&ca, CERT_USER, &[], ExtendedKeyUsagePurpose::ClientAuth);
        let file = |name: &str, text: &str, mode: u32| {
            let path = root.join(name);
            fs::write(&path, text).expect("write test file");
            hand_over(&path, mode);
            path
        };
        let ca_file = file("ca.pem", &ca.pem, 0o644);
        let other_ca_file = file("other-ca.pem", &other.pem, 0o644);
        let cert_file = file("server.crt", &server_cert, 0o644);
        let key_file = file("server.key", &server_key, 0o600);
        // The client's files stay ours (the driver reads them).
        let client_cert = root.join("client.crt");
        let client_key = root.join("client.key");
        fs::write(&client_cert, client_cert_pem).expect("write client cert");
        fs::write(&client_key, client_key_pem).expect("write client key");
        fs::set_permissions(&client_key, fs::Permissions::from_mode(0o600)).expect("chmod");

        let data_arg = data.to_string_lossy().into_owned();
        run_pg_tool(
            &bin,
            "initdb",
            &[
                "-D",
                &data_arg,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );

        let port = free_port();
        let conf = format!(
            "\n# nat-store pg_tls test\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{root}'\n\
             ssl = on\n\
             ssl_cert_file = '{cert}'\n\
             ssl_key_file = '{key}'\n\
             ssl_ca_file = '{ca}'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n",
            root = root.display(),
            cert = cert_file.display(),
            key = key_file.display(),
            ca = ca_file.display(),
        );
        let conf_path = data.join("postgresql.conf");
        let mut text = fs::read_to_string(&conf_path).expect("read postgresql.conf");
        text.push_str(&conf);
        fs::write(&conf_path, text).expect("write postgresql.conf");
        // TLS only; CERT_USER must present a certificate signed by the CA (ssl_ca_file) whose
        // common name is its name.
        fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all all trust\n\
                 hostssl all {CERT_USER} 127.0.0.1/32 cert\n\
                 hostssl all all 127.0.0.1/32 trust\n\
                 hostnossl all all 127.0.0.1/32 reject\n"
            ),
        )
        .expect("write pg_hba.conf");

        let server = PgServer {
            bin,
            data,
            port,
            ca_file,
            other_ca_file,
            client_cert,
            client_key,
            _dir: dir,
        };
        let log = root.join("server.log");
        let log_arg = log.to_string_lossy().into_owned();
        // On failure `server` is dropped while unwinding, which stops whatever did start.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            run_pg_tool(
                &server.bin,
                "pg_ctl",
                &["-D", &data_arg, "-l", &log_arg, "-w", "-t", "30", "start"],
            );
        }));
        if let Err(panic) = result {
            let log = fs::read_to_string(&log).unwrap_or_default();
            eprintln!("PostgreSQL server log:\n{log}");
            std::panic::resume_unwind(panic);
        }
        server
    }

    /// A URL of this server for `user`, with `query` appended.
    fn url(&self, host: &str, user: &str, query: &str) -> String {
        format!("postgres://{user}@{host}:{}/postgres{query}", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.data.to_string_lossy().into_owned();
        let stop = std::panic::catch_unwind(AssertUnwindSafe(|| {
            run_pg_tool(
                &self.bin,
                "pg_ctl",
                &["-D", &data, "-m", "immediate", "stop"],
            );
        }));
        if stop.is_err() {
            eprintln!("could not stop the test PostgreSQL server in {data}");
        }
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// The error and all its sources, as one line.
fn chain(err: &nat_store::StoreError) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Opens the store at `url`, which must work, and checks that its sessions are encrypted.
async fn must_connect(url: &str) {
    let store = match nat_store::connect(url).await {
        Ok(store) => store,
        Err(err) => panic!("connect {url}: {}", chain(&err)),
    };
    assert_eq!(store.backend(), "postgres");
    store.ping().await.expect("ping");
    drop(store);
    // The same connection path, keeping the pool: its session is encrypted.
    let store = match nat_store::PgStore::connect(url).await {
        Ok(store) => store,
        Err(err) => panic!("PgStore::connect {url}: {}", chain(&err)),
    };
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .expect("pg_stat_ssl");
    assert!(ssl, "{url}: the session is not encrypted");
    store.pool().close().await;
}

/// Opening the store at `url` must fail; returns the error with its sources.
async fn must_fail(url: &str) -> String {
    match nat_store::connect(url).await {
        Ok(_) => panic!("connect {url} succeeded; it must be refused"),
        Err(err) => {
            let err = chain(&err);
            eprintln!("refused as expected: {url}: {err}");
            err
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_modes_and_certificates_are_honoured() {
    let began = Instant::now();
    let server = PgServer::start();
    let ca = server.ca_file.display().to_string();
    let other_ca = server.other_ca_file.display().to_string();
    let ip = "127.0.0.1";

    // `require`: encrypted, the certificate is not checked; the store migrates.
    must_connect(&server.url(ip, "postgres", "?sslmode=require")).await;
    let mut conn = sqlx::PgConnection::connect(&server.url(ip, "postgres", "?sslmode=require"))
        .await
        .expect("connect");
    let migrated: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut conn)
        .await
        .expect("migrations table");
    assert!(migrated >= 3, "{migrated} migrations applied");
    let tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&mut conn)
        .await
        .expect("tasks table");
    assert_eq!(tasks, 0);
    // The role that authenticates with a client certificate.
    sqlx::query(&format!("CREATE ROLE {CERT_USER} LOGIN SUPERUSER"))
        .execute(&mut conn)
        .await
        .expect("create role");
    conn.close().await.expect("close");

    // `disable`: the server refuses (hostnossl … reject), and the error says so.
    let err = must_fail(&server.url(ip, "postgres", "?sslmode=disable")).await;
    assert!(
        err.contains("pg_hba.conf") && err.contains("no encryption"),
        "unexpected error: {err}"
    );

    // `allow` falls back to TLS; `prefer` (also the default) uses it.
    must_connect(&server.url(ip, "postgres", "?sslmode=allow")).await;
    must_connect(&server.url(ip, "postgres", "?sslmode=prefer")).await;
    must_connect(&server.url(ip, "postgres", "")).await;

    // Verified: the CA given with sslrootcert, for the address and for the name; the pool
    // size parameter does not disturb the TLS ones.
    let verify_full = format!("?sslmode=verify-full&sslrootcert={ca}");
    must_connect(&server.url(ip, "postgres", &verify_full)).await;
    must_connect(&server.url("localhost", "postgres", &verify_full)).await;
    must_connect(&server.url(
        ip,
        "postgres",
        &format!("?sslmode=verify-full&max_connections=2&sslrootcert={ca}"),
    ))
    .await;
    must_connect(&server.url(
        ip,
        "postgres",
        &format!("?sslmode=verify-ca&sslrootcert={ca}"),
    ))
    .await;

    // Another CA: the server's certificate is not trusted.
    for mode in ["verify-full", "verify-ca"] {
        let err = must_fail(&server.url(
            ip,
            "postgres",
            &format!("?sslmode={mode}&sslrootcert={other_ca}"),
        ))
        .await;
        assert!(
            err.to_lowercase().contains("certificate"),
            "{mode} with another CA: unexpected error: {err}"
        );
    }
    // Without sslrootcert only the public web PKI roots are trusted, not this CA.
    must_fail(&server.url(ip, "postgres", "?sslmode=verify-full")).await;

    // Client certificate authentication: sslcert + sslkey are presented; without them the
    // server refuses.
    let with_cert = format!(
        "?sslmode=verify-full&sslrootcert={ca}&sslcert={}&sslkey={}",
        server.client_cert.display(),
        server.client_key.display()
    );
    must_connect(&server.url(ip, CERT_USER, &with_cert)).await;
    let err = must_fail(&server.url(ip, CERT_USER, &verify_full)).await;
    assert!(
        err.contains("certificate"),
        "no client certificate: unexpected error: {err}"
    );

    drop(server);
    let took = began.elapsed();
    assert!(took.as_secs() < 30, "the TLS test took {took:?}");
}
