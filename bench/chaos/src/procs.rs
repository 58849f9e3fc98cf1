//! Child processes of the fleet (coordinators, nat-worker processes, sim-worker groups): start
//! with a log file, kill -9, SIGSTOP/SIGCONT, graceful stop. Every child is spawned with
//! `kill_on_drop`, so that an early return, a panic or Ctrl-C leaves none behind.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

/// How to start one child process.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Shown in the timeline and in errors.
    pub name: String,
    /// Program and arguments (a netns child starts with `ip netns exec NS`).
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// stdout and stderr go here (appended: a restarted process keeps one log).
    pub log: PathBuf,
}

/// A child process that may be killed and restarted.
#[derive(Debug)]
pub struct Proc {
    pub spec: Spec,
    child: Option<Child>,
    /// SIGSTOPped and not yet continued.
    stopped: bool,
    pub starts: u32,
}

impl Proc {
    pub fn new(spec: Spec) -> Proc {
        Proc {
            spec,
            child: None,
            stopped: false,
            starts: 0,
        }
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("{} is already running", self.spec.name);
        }
        let (program, args) = self
            .spec
            .argv
            .split_first()
            .with_context(|| format!("{}: empty command", self.spec.name))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.log)
            .with_context(|| format!("open {}", self.spec.log.display()))?;
        let err = log
            .try_clone()
            .with_context(|| format!("dup {}", self.spec.log.display()))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(self.spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {} ({program})", self.spec.name))?;
        self.child = Some(child);
        self.stopped = false;
        self.starts += 1;
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Running (also while SIGSTOPped): it has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// kill -9, and reap it.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.start_kill()
                .with_context(|| format!("SIGKILL {}", self.spec.name))?;
            let _ = tokio::time::timeout(Duration::from_secs(10), c.wait()).await;
        }
        self.stopped = false;
        Ok(())
    }

    pub fn sigstop(&mut self) -> anyhow::Result<()> {
        self.signal("STOP")?;
        self.stopped = true;
        Ok(())
    }

    pub fn sigcont(&mut self) -> anyhow::Result<()> {
        self.signal("CONT")?;
        self.stopped = false;
        Ok(())
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("{} is not running", self.spec.name))?;
        signal_pid(pid, sig)
    }

    /// SIGTERM (SIGCONT first if stopped), then SIGKILL after `grace`.
    pub async fn terminate(&mut self, grace: Duration) {
        if self.stopped {
            let _ = self.sigcont();
        }
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                let _ = signal_pid(pid, "TERM");
                if tokio::time::timeout(grace, c.wait()).await.is_ok() {
                    return;
                }
            }
            let _ = c.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(5), c.wait()).await;
        }
    }

    /// The log's text (for figures and failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.spec.log).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// `kill -SIG PID` (the workspace forbids unsafe code, so no libc call).
pub fn signal_pid(pid: u32, sig: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .output()
        .context("run kill")?;
    if !out.status.success() {
        bail!(
            "kill -{sig} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs a command to completion; the error carries its output.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind a free port")?;
    Ok(l.local_addr()?.port())
}
