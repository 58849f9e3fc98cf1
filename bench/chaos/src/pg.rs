//! A private PostgreSQL 15 server for one chaos run: `initdb` in the run's temporary directory,
//! started on a free port, restarted by the PG-restart attack, stopped at the end (also from
//! `Drop`, so that every exit path stops it).
//!
//! initdb and postgres refuse to run as root, so when the harness is root they run as the
//! `postgres` user through `runuser` (as `crates/nat-store/tests/pg_tls.rs` does).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The default location of the PostgreSQL 15 server binaries (Debian's postgresql-15).
pub const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A running private server.
#[derive(Debug)]
pub struct PgServer {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    running: bool,
}

/// Whether this process runs as root (the owner of /proc/self is the effective user).
pub fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Whether `tool` is an executable somewhere on PATH.
pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Checks that the server binaries (and `runuser` when root) are there; the error says what
/// to install.
pub fn check_prerequisites(bin: &Path) -> anyhow::Result<()> {
    for tool in ["initdb", "pg_ctl", "postgres"] {
        if !bin.join(tool).is_file() {
            bail!(
                "--pg-bin: {}/{tool} is missing: install postgresql-15 (the chaos run starts its own \
                 server, which it restarts) or point --pg-bin at the directory holding it",
                bin.display()
            );
        }
    }
    if running_as_root() && !on_path("runuser") {
        bail!("`runuser` (util-linux) is missing: as root the harness needs it to run PostgreSQL as the `postgres` user");
    }
    Ok(())
}

impl PgServer {
    /// Creates a cluster under `dir` (made accessible to the `postgres` user when root) and
    /// starts it on `port`.
    pub fn start(bin: &Path, dir: &Path, port: u16) -> anyhow::Result<PgServer> {
        check_prerequisites(bin)?;
        let root = dir.join("pg");
        std::fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
        hand_over(&root, 0o700)?;
        let data = root.join("data");
        let log = root.join("postgres.log");
        run_tool(
            bin,
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )?;
        let conf = data.join("postgresql.conf");
        let mut text =
            std::fs::read_to_string(&conf).with_context(|| format!("read {}", conf.display()))?;
        text.push_str(&format!(
            "\n# nat-chaos\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             max_connections = 400\nshared_buffers = 128MB\n",
            root.display()
        ));
        std::fs::write(&conf, text).with_context(|| format!("write {}", conf.display()))?;
        let mut server = PgServer {
            bin: bin.to_path_buf(),
            data,
            log,
            port,
            running: false,
        };
        server.pg_start()?;
        Ok(server)
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB`.
    /// The server's log (`postgres.log` in the run directory).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn pg_start(&mut self) -> anyhow::Result<()> {
        run_tool(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                &self.data.to_string_lossy(),
                "-l",
                &self.log.to_string_lossy(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .with_context(|| format!("start PostgreSQL (log: {})", self.log.display()))?;
        self.running = true;
        Ok(())
    }

    fn pg_stop(&mut self, mode: &str) -> anyhow::Result<()> {
        run_tool(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                &self.data.to_string_lossy(),
                "-m",
                mode,
                "-w",
                "-t",
                "60",
                "stop",
            ],
        )?;
        self.running = false;
        Ok(())
    }

    /// The restart attack: a fast shutdown (clients disconnected, open transactions rolled
    /// back) and a start. Returns how long the server was away.
    pub fn restart_fast(&mut self) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        self.pg_stop("fast")
            .context("fast shutdown of PostgreSQL")?;
        self.pg_start()?;
        Ok(t0.elapsed())
    }

    /// Stops the server now (immediate mode); idempotent.
    pub fn stop(&mut self) {
        if self.running {
            if let Err(e) = self.pg_stop("immediate") {
                eprintln!("chaos: cannot stop the private PostgreSQL: {e:#}");
            }
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs a PostgreSQL tool (as `postgres` when root); the error carries its output.
fn run_tool(bin: &Path, tool: &str, args: &[&str]) -> anyhow::Result<()> {
    let path = bin.join(tool);
    let mut cmd = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&path);
        c
    } else {
        Command::new(&path)
    };
    cmd.args(args).current_dir("/");
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {}", path.display()))?;
    if !out.status.success() {
        bail!(
            "{tool} {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Gives `path` to the `postgres` user (when root) with `mode`.
fn hand_over(path: &Path, mode: u32) -> anyhow::Result<()> {
    if running_as_root() {
        let out = Command::new("chown")
            .arg("postgres:postgres")
            .arg(path)
            .output()
            .context("run chown")?;
        if !out.status.success() {
            bail!(
                "chown postgres {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}
