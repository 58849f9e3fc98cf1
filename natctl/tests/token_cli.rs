//! `natctl token …` and the connection flags against a scripted TokenService served over TLS
//! (tonic's own server, certificates made here by rcgen): the token commands' output, the bearer
//! token on each call, the hints for UNAUTHENTICATED / PERMISSION_DENIED, and TLS failures.
#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use nat_proto::v1;
use nat_proto::v1::token_service_server::{TokenService, TokenServiceServer};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

const NATCTL: &str = env!("CARGO_BIN_EXE_natctl");
const ADMIN: &str = "nat_admin.secret-1";
const VIEWER: &str = "nat_viewer.secret-2";

/// One call: the RPC and its `authorization` header.
type Call = (String, Option<String>);

/// A TokenService that knows two bearer tokens (admin, viewer) and records what each call sent.
#[derive(Clone, Default)]
struct Tokens {
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Tokens {
    /// Records the call; UNAUTHENTICATED without a known token, PERMISSION_DENIED for a viewer.
    fn admit<T>(&self, rpc: &str, request: &Request<T>) -> Result<(), Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned());
        self.calls
            .lock()
            .unwrap()
            .push((rpc.to_owned(), auth.clone()));
        match auth.as_deref().and_then(|a| a.strip_prefix("Bearer ")) {
            Some(ADMIN) => Ok(()),
            Some(VIEWER) => Err(Status::permission_denied(
                "role viewer may not call TokenService",
            )),
            _ => Err(Status::unauthenticated("no valid token")),
        }
    }
}

fn token(id: &str, name: &str, role: v1::Role, revoked: i64) -> v1::ApiToken {
    v1::ApiToken {
        id: id.into(),
        name: name.into(),
        role: role as i32,
        created_at_unix_ms: 1_735_689_600_000,
        expires_at_unix_ms: 0,
        revoked_at_unix_ms: revoked,
        created_by: String::new(),
        last_used_at_unix_ms: 0,
    }
}

#[tonic::async_trait]
impl TokenService for Tokens {
    async fn create_token(
        &self,
        request: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        self.admit("create", &request)?;
        let r = request.into_inner();
        let role = v1::Role::try_from(r.role).unwrap();
        let mut t = token("tok-9", &r.name, role, 0);
        if r.expires_in_seconds > 0 {
            t.expires_at_unix_ms =
                t.created_at_unix_ms + i64::try_from(r.expires_in_seconds).unwrap() * 1000;
        }
        Ok(Response::new(v1::CreateTokenResponse {
            token: Some(t),
            secret: "nat_new.secret-9".into(),
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        self.admit("list", &request)?;
        let mut tokens = vec![token("tok-1", "root", v1::Role::Admin, 0)];
        if request.get_ref().include_revoked {
            tokens.push(token("tok-2", "old-ci", v1::Role::User, 1_735_700_000_000));
        }
        Ok(Response::new(v1::ListTokensResponse { tokens }))
    }

    async fn revoke_token(
        &self,
        request: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::RevokeTokenResponse>, Status> {
        self.admit("revoke", &request)?;
        if request.get_ref().id != "tok-1" {
            return Err(Status::not_found("id: no token tok-x"));
        }
        Ok(Response::new(v1::RevokeTokenResponse {
            token: Some(token("tok-1", "root", v1::Role::Admin, 1_735_700_000_000)),
        }))
    }
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

struct Fixture {
    addr: SocketAddr,
    tokens: Tokens,
    dir: tempfile::TempDir,
    ca_file: PathBuf,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Fixture {
    fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        write(self.dir.path(), name, text, mode)
    }

    fn calls(&self) -> Vec<Call> {
        self.tokens.calls.lock().unwrap().clone()
    }
}

fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

async fn start() -> Fixture {
    let (ca_pem, issuer) = ca("natctl test CA");
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(cert.pem(), key.serialize_pem()));
    let tokens = Tokens::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = Server::builder()
        .tls_config(tls)
        .unwrap()
        .add_service(TokenServiceServer::new(tokens.clone()));
    tokio::spawn(router.serve_with_incoming_shutdown(
        TcpListenerStream::new(listener),
        async move {
            let _ = stopped.await;
        },
    ));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca_pem, 0o644);
    Fixture {
        addr,
        tokens,
        dir,
        ca_file,
        _stop: stop,
    }
}

/// Runs natctl with `args` and `env`, with no NAT_ variable from this process's environment.
async fn natctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(NATCTL);
        for (key, _) in std::env::vars() {
            if key.starts_with("NAT_") {
                command.env_remove(key);
            }
        }
        command.args(&args).envs(env).output().unwrap()
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_commands_over_tls_with_the_token() {
    let f = start().await;
    let url = f.url();
    let ca = f.ca_file.to_string_lossy().into_owned();
    let base = ["--coordinator", &url, "--ca-cert", &ca];

    // create: the secret is the last line; the reminder goes to stderr.
    let mut args = base.to_vec();
    args.extend([
        "token",
        "create",
        "--role",
        "worker",
        "--name",
        "gpu-1",
        "--expires",
        "30d",
    ]);
    let out = natctl(&args, &[("NAT_TOKEN", ADMIN)]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().last(), Some("nat_new.secret-9"), "{text}");
    assert!(
        text.contains("created worker token gpu-1 (id tok-9), expires 2025-01-31 00:00 UTC"),
        "{text}"
    );
    assert!(stderr(&out).contains("shown only once"), "{}", stderr(&out));

    // -o json, the token from a file (flags after the subcommand work too).
    let token_file = f.write("admin.token", &format!("{ADMIN}\n"), 0o600);
    let token_file = token_file.to_string_lossy().into_owned();
    let out = natctl(
        &[
            "token",
            "create",
            "--role",
            "user",
            "-o",
            "json",
            "--coordinator",
            &url,
            "--ca-cert",
            &ca,
            "--token-file",
            &token_file,
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["id"], "tok-9");
    assert_eq!(v["role"], "user");
    assert!(v["name"].as_str().unwrap().starts_with("user-"), "{v}");
    assert!(v["expires_at"].is_null());
    assert_eq!(v["secret"], "nat_new.secret-9");
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));

    // list: a table; --all asks for revoked ones too; -o json an array.
    let mut args = base.to_vec();
    args.extend(["token", "list", "--all"]);
    let out = natctl(&args, &[("NAT_TOKEN", ADMIN)]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let header = text.lines().next().unwrap();
    for column in [
        "ID",
        "NAME",
        "ROLE",
        "CREATED",
        "EXPIRES",
        "REVOKED",
        "LAST USED",
    ] {
        assert!(header.contains(column), "{text}");
    }
    assert!(text.contains("root") && text.contains("old-ci"), "{text}");
    let mut args = base.to_vec();
    args.extend(["token", "list", "-o", "json"]);
    let out = natctl(&args, &[("NAT_TOKEN", ADMIN)]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["created_at"], "2025-01-01T00:00:00Z");
    assert!(v[0]["revoked_at"].is_null() && v[0]["last_used_at"].is_null());

    // revoke.
    let mut args = base.to_vec();
    args.extend(["token", "revoke", "tok-1"]);
    let out = natctl(&args, &[("NAT_TOKEN", ADMIN)]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "revoked token tok-1 (root, admin)");

    // Every call carried the bearer token.
    let calls = f.calls();
    assert_eq!(calls.len(), 5, "{calls:?}");
    for (rpc, auth) in calls {
        assert_eq!(auth, Some(format!("Bearer {ADMIN}")), "{rpc}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_print_a_hint() {
    let f = start().await;
    let url = f.url();
    let ca = f.ca_file.to_string_lossy().into_owned();
    let mut args = vec!["--coordinator", &url, "--ca-cert", &ca];
    args.extend(["token", "list"]);

    let out = natctl(&args, &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: token list: no valid token (UNAUTHENTICATED); hint: ")
            && err.contains("pass --token"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    let out = natctl(&args, &[("NAT_TOKEN", VIEWER)]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("(PERMISSION_DENIED); hint: your token's role may not"),
        "{err}"
    );
    assert_eq!(f.calls()[0].1, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flag_errors_name_the_flag() {
    let f = start().await;
    let url = f.url();
    let ca = f.ca_file.to_string_lossy().into_owned();

    // --ca-cert with an http:// URL.
    let http = format!("http://localhost:{}", f.addr.port());
    let out = natctl(&["--coordinator", &http, "--ca-cert", &ca, "jobs"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("must be https:// to use --ca-cert"),
        "{}",
        stderr(&out)
    );

    // Another CA: the handshake fails, saying why.
    let other = another_ca_file(&f);
    let out = natctl(
        &["--coordinator", &url, "--ca-cert", &other, "token", "list"],
        &[("NAT_TOKEN", ADMIN)],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot connect to the coordinator at {url}"))
            && err.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );

    // An empty token file; a token file others can read (a warning, and the call goes on).
    let empty = f.write("empty.token", "\n", 0o600);
    let out = natctl(
        &[
            "--coordinator",
            &url,
            "--ca-cert",
            &ca,
            "--token-file",
            &empty.to_string_lossy(),
            "token",
            "list",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--token-file: ") && stderr(&out).contains("is empty"));
    let open = f.write("open.token", ADMIN, 0o644);
    let out = natctl(
        &["--coordinator", &url, "--ca-cert", &ca, "token", "list"],
        &[("NAT_TOKEN_FILE", &open.to_string_lossy())],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("warning: --token-file: ") && stderr(&out).contains("chmod 600"),
        "{}",
        stderr(&out)
    );

    // --token and --token-file together; --cert without --key.
    let out = natctl(&["--token", "a", "--token-file", "f", "jobs"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = natctl(&["--cert", "c.pem", "jobs"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--key"), "{}", stderr(&out));

    // Bad token names and expiries fail before connecting.
    let out = natctl(
        &[
            "--coordinator",
            "http://127.0.0.1:1",
            "token",
            "create",
            "--role",
            "user",
            "--name",
            "a b",
        ],
        &[],
    )
    .await;
    assert!(
        stderr(&out).contains("--name: ' ' is not allowed"),
        "{}",
        stderr(&out)
    );
    let out = natctl(
        &["token", "create", "--role", "user", "--expires", "3 days"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// The certificate file of a CA that did not sign the server's certificate.
fn another_ca_file(f: &Fixture) -> String {
    let (pem, _) = ca("another CA");
    f.write("other.pem", &pem, 0o644)
        .to_string_lossy()
        .into_owned()
}

#[tokio::test]
async fn help_never_prints_the_token() {
    let out = natctl(&["--help"], &[("NAT_TOKEN", "s3cret-value")]).await;
    assert!(out.status.success());
    let help = stdout(&out);
    for flag in [
        "--ca-cert",
        "--cert",
        "--key",
        "--token",
        "--token-file",
        "NAT_TOKEN",
    ] {
        assert!(help.contains(flag), "{flag}: {help}");
    }
    assert!(!help.contains("s3cret-value"), "{help}");
    let out = natctl(
        &["token", "create", "--help"],
        &[("NAT_TOKEN", "s3cret-value")],
    )
    .await;
    assert!(!stdout(&out).contains("s3cret-value"));
}
