//! The fleet under attack: coordinators (child processes of the real `nat-coordinator`), real
//! `nat-worker` processes, `sim-workers` subprocesses (simulated workers that must live in the
//! partition's network namespace or under libfaketime), and the leader as the database sees it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sqlx::postgres::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::procs::{free_port, Proc, Spec};

/// One coordinator process.
#[derive(Debug)]
pub struct Coord {
    pub instance_id: String,
    pub grpc_port: u16,
    pub http_port: u16,
    pub proc: Proc,
}

/// Settings every coordinator gets.
#[derive(Debug, Clone)]
pub struct CoordSettings {
    pub bin: PathBuf,
    pub database_url: String,
    pub lease_seconds: f64,
    pub heartbeat_seconds: f64,
    pub max_attempts: u32,
    /// `Some(S)`: leader election on (`--instance-id`, `--leader-lease-seconds S`).
    pub leader_lease_seconds: Option<f64>,
    /// `--max-streams-per-connection` (when the binary has it).
    pub max_streams_per_connection: Option<u32>,
}

impl Coord {
    pub fn new(index: usize, s: &CoordSettings, dir: &Path) -> anyhow::Result<Coord> {
        let instance_id = format!("chaos-c{index}");
        let grpc_port = free_port()?;
        let http_port = free_port()?;
        let mut argv = vec![
            s.bin.to_string_lossy().into_owned(),
            "--listen".into(),
            format!("0.0.0.0:{grpc_port}"),
            "--http-listen".into(),
            format!("127.0.0.1:{http_port}"),
            "--database-url".into(),
            s.database_url.clone(),
            "--lease-seconds".into(),
            s.lease_seconds.to_string(),
            "--heartbeat-seconds".into(),
            s.heartbeat_seconds.to_string(),
            "--max-attempts".into(),
            s.max_attempts.to_string(),
            "--auth".into(),
            "none".into(),
            // Listening on 0.0.0.0 so that the partition's namespace reaches it over the veth.
            "--insecure".into(),
        ];
        if let Some(lease) = s.leader_lease_seconds {
            argv.extend([
                "--instance-id".into(),
                instance_id.clone(),
                "--leader-lease-seconds".into(),
                lease.to_string(),
            ]);
        }
        if let Some(n) = s.max_streams_per_connection {
            argv.extend(["--max-streams-per-connection".into(), n.to_string()]);
        }
        let spec = Spec {
            name: instance_id.clone(),
            argv,
            env: vec![(
                "RUST_LOG".into(),
                "warn,nat_coordinator=info,nat_store=info".into(),
            )],
            log: dir.join(format!("{instance_id}.log")),
        };
        Ok(Coord {
            instance_id,
            grpc_port,
            http_port,
            proc: Proc::new(spec),
        })
    }

    /// Starts it and waits until `/readyz` answers 200 (or `timeout`).
    pub async fn start(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        self.proc.start()?;
        loop {
            if let Ok((200, _)) = http_get(self.http_port, "/readyz").await {
                return Ok(t0.elapsed());
            }
            if !self.proc.is_running() {
                bail!(
                    "{} exited at start; its log ends with:\n{}",
                    self.instance_id,
                    self.proc.log_tail(15)
                );
            }
            if t0.elapsed() > timeout {
                bail!(
                    "{} not ready within {timeout:?}; its log ends with:\n{}",
                    self.instance_id,
                    self.proc.log_tail(15)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self, host: &str) -> String {
        format!("http://{host}:{}", self.grpc_port)
    }
}

/// `GET path` on 127.0.0.1:port (HTTP/1.0): (status, body).
pub async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(2), io)
        .await
        .context("HTTP timeout")??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The leader as the database says: (holder, epoch, lease live).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub holder: String,
    pub epoch: i64,
    pub live: bool,
}

pub async fn leader(pool: &PgPool) -> anyhow::Result<Option<Leader>> {
    let row: Option<(String, i64, bool)> = sqlx::query_as(
        "SELECT holder, epoch, expires_at > now() AS live FROM leadership WHERE name = 'coordinator'",
    )
    .fetch_optional(pool)
    .await
    .context("read the leadership row")?;
    Ok(row.map(|(holder, epoch, live)| Leader {
        holder,
        epoch,
        live,
    }))
}

/// The flags of the coordinator binary the run depends on.
#[derive(Debug, Clone, Copy)]
pub struct CoordFeatures {
    /// `--instance-id` and `--leader-lease-seconds`.
    pub leader_election: bool,
    /// `--max-streams-per-connection`.
    pub max_streams: bool,
}

/// Which of the flags the run depends on the coordinator binary has (from its `--help`).
pub fn coordinator_features(bin: &Path) -> anyhow::Result<CoordFeatures> {
    let out = std::process::Command::new(bin)
        .arg("--help")
        .output()
        .with_context(|| format!("run {} --help", bin.display()))?;
    let help = String::from_utf8_lossy(&out.stdout);
    Ok(CoordFeatures {
        leader_election: help.contains("--instance-id") && help.contains("--leader-lease-seconds"),
        max_streams: help.contains("--max-streams-per-connection"),
    })
}

/// What `/readyz` says of a coordinator's role: `leader (epoch N)`, `follower (leader ID,
/// epoch N)`, or another follower line (no live leader, none yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyRole {
    Leader { epoch: i64 },
    Follower { leader: String, epoch: i64 },
    FollowerNoLeader,
}

/// Parses the role out of a `/readyz` body (`ready: …; leader (epoch 3)`); `None` when the
/// body names no role.
pub fn parse_ready_role(body: &str) -> Option<ReadyRole> {
    let epoch_after = |s: &str| -> Option<i64> {
        let rest = s.split("epoch ").nth(1)?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    if let Some(i) = body.find("follower (leader ") {
        let rest = &body[i + "follower (leader ".len()..];
        let (leader, tail) = rest.split_once(", ")?;
        return Some(ReadyRole::Follower {
            leader: leader.to_string(),
            epoch: epoch_after(tail)?,
        });
    }
    if body.contains("follower (") {
        return Some(ReadyRole::FollowerNoLeader);
    }
    if let Some(i) = body.find("leader (epoch ") {
        return Some(ReadyRole::Leader {
            epoch: epoch_after(&body[i..])?,
        });
    }
    None
}

/// What a coordinator's `/readyz` says its role is (`None`: no answer within 2 s, or no role
/// in the body).
pub async fn ready_role(http_port: u16) -> Option<ReadyRole> {
    let (_, body) = http_get(http_port, "/readyz").await.ok()?;
    parse_ready_role(&body)
}

/// What the leader watch saw (sampled every 500 ms against the `leadership` row).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Awareness {
    /// Samples taken with a live holder that answered `/readyz`.
    pub samples: u64,
    /// Of those, samples in which the holder did not say `leader (epoch N)` for the row's N.
    pub unaware_samples: u64,
    /// The longest stretch of consecutive unaware samples, in seconds.
    pub longest_unaware_s: f64,
    /// Samples in which a coordinator said `leader (epoch E)` without holding the row's live
    /// term E (another holds it, or its own term expired): a deposed leader that has not
    /// stepped down.
    pub stale_leader_samples: u64,
    /// The longest such stretch of one coordinator, from its first to its last stale answer
    /// (samples without an answer in between do not end it), in seconds.
    pub longest_stale_leader_s: f64,
    /// When and what, for stretches of 1 s or more (up to 5 of each kind).
    pub examples: Vec<String>,
}

/// A stretch of one kind: since when, at which run time, what was seen first, last seen.
struct Stretch {
    since: Instant,
    at: f64,
    what: String,
    last: Instant,
}

/// Samples every 500 ms, until `stop` turns true, whether the coordinators agree with the
/// `leadership` row: the live holder knows it leads (its `/readyz` says `leader (epoch N)` for
/// the row's N), and no other coordinator says it leads. A term whose holder does not know it
/// holds it leaves the jobs without a driver while the row says they have one; a coordinator
/// that still says it leads after its term ended still runs the drivers and the lease sweep.
/// `coords`: (instance id, HTTP port).
pub async fn watch_awareness(
    pool: PgPool,
    coords: Vec<(String, u16)>,
    t0: Instant,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Awareness {
    let mut a = Awareness::default();
    let mut unaware: Option<Stretch> = None;
    let mut stale: Vec<Option<Stretch>> = coords.iter().map(|_| None).collect();
    let mut unaware_examples = 0;
    let mut stale_examples = 0;
    let mut close_unaware = |a: &mut Awareness, run: &mut Option<Stretch>| {
        if let Some(r) = run.take() {
            let s = r.since.elapsed().as_secs_f64();
            a.longest_unaware_s = a.longest_unaware_s.max(s);
            if s >= 1.0 && unaware_examples < 5 {
                unaware_examples += 1;
                a.examples.push(format!(
                    "unaware holder from {:.1} s for {s:.1} s: {}",
                    r.at, r.what
                ));
            }
        }
    };
    let mut close_stale = |a: &mut Awareness, run: &mut Option<Stretch>| {
        if let Some(r) = run.take() {
            let s = (r.last - r.since).as_secs_f64();
            a.longest_stale_leader_s = a.longest_stale_leader_s.max(s);
            if s >= 1.0 && stale_examples < 5 {
                stale_examples += 1;
                a.examples.push(format!(
                    "stale leader from {:.1} s for {s:.1} s: {}",
                    r.at, r.what
                ));
            }
        }
    };
    let stretch = |what: String| Stretch {
        since: Instant::now(),
        at: t0.elapsed().as_secs_f64(),
        what,
        last: Instant::now(),
    };
    while !*stop.borrow() {
        if let Ok(Some(l)) = leader(&pool).await {
            for (i, (id, port)) in coords.iter().enumerate() {
                let role = ready_role(*port).await;
                let holder = *id == l.holder;
                if holder && l.live {
                    match &role {
                        Some(ReadyRole::Leader { epoch }) if *epoch == l.epoch => {
                            a.samples += 1;
                            close_unaware(&mut a, &mut unaware);
                        }
                        Some(other) => {
                            a.samples += 1;
                            a.unaware_samples += 1;
                            if unaware.is_none() {
                                unaware = Some(stretch(format!(
                                    "the row names {} (epoch {}), whose /readyz says {other:?}",
                                    l.holder, l.epoch
                                )));
                            }
                        }
                        // It does not answer (stopped, killed): not this check's.
                        None => close_unaware(&mut a, &mut unaware),
                    }
                }
                match role {
                    Some(ReadyRole::Leader { epoch })
                        if !(holder && l.live && epoch == l.epoch) =>
                    {
                        a.stale_leader_samples += 1;
                        match &mut stale[i] {
                            Some(r) => r.last = Instant::now(),
                            run => {
                                *run = Some(stretch(format!(
                                    "{id} says leader (epoch {epoch}) while the row names {} (epoch {}, {})",
                                    l.holder,
                                    l.epoch,
                                    if l.live { "live" } else { "expired" }
                                )));
                            }
                        }
                    }
                    Some(_) => close_stale(&mut a, &mut stale[i]),
                    None => {}
                }
            }
            if !l.live {
                close_unaware(&mut a, &mut unaware);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => {}
        }
    }
    close_unaware(&mut a, &mut unaware);
    for run in &mut stale {
        close_stale(&mut a, run);
    }
    a
}

/// A real `nat-worker` process.
pub fn real_worker_spec(bin: &Path, name: &str, urls: &str, data_dir: &Path, dir: &Path) -> Spec {
    Spec {
        name: name.to_string(),
        argv: vec![
            bin.to_string_lossy().into_owned(),
            "--coordinator".into(),
            urls.to_string(),
            "--devices".into(),
            "cpu".into(),
            "--data-dir".into(),
            data_dir.to_string_lossy().into_owned(),
            "--threads".into(),
            "1".into(),
            "--name".into(),
            name.to_string(),
            "--checkpoint-dir".into(),
            dir.join(format!("ck-{name}"))
                .to_string_lossy()
                .into_owned(),
            "--metrics-listen".into(),
            "off".into(),
            "--lease-wait".into(),
            "1s".into(),
            "--max-backoff".into(),
            "2s".into(),
            "--report-give-up".into(),
            "2m".into(),
            "--drain-timeout".into(),
            "2s".into(),
        ],
        env: vec![("RUST_LOG".into(), "info".into())],
        log: dir.join(format!("{name}.log")),
    }
}

/// A `nat-chaos sim-workers` subprocess (simulated workers in another process: inside the
/// partition's namespace, or under libfaketime).
pub fn sim_process_spec(
    self_bin: &Path,
    name: &str,
    urls: &str,
    count: usize,
    hold_ms: u64,
    stats_file: &Path,
    dir: &Path,
) -> Spec {
    Spec {
        name: name.to_string(),
        argv: vec![
            self_bin.to_string_lossy().into_owned(),
            "sim-workers".into(),
            "--coordinator".into(),
            urls.to_string(),
            "--count".into(),
            count.to_string(),
            "--hold-ms".into(),
            hold_ms.to_string(),
            "--name".into(),
            name.to_string(),
            "--stats-file".into(),
            stats_file.to_string_lossy().into_owned(),
        ],
        env: vec![],
        log: dir.join(format!("{name}.log")),
    }
}

/// libfaketime's preload library, if installed (Debian package `faketime`).
pub fn libfaketime() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// Runs a process under libfaketime with an offset read from `file` at every clock call.
/// Only the wall clock jumps (as an NTP step does); CLOCK_MONOTONIC is left alone.
pub fn under_faketime(spec: &mut Spec, lib: &Path, file: &Path) {
    spec.env.extend([
        ("LD_PRELOAD".to_string(), lib.to_string_lossy().into_owned()),
        (
            "FAKETIME_TIMESTAMP_FILE".to_string(),
            file.to_string_lossy().into_owned(),
        ),
        ("FAKETIME_NO_CACHE".to_string(), "1".to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".to_string(), "1".to_string()),
    ]);
}

#[cfg(test)]
mod tests {
    use super::{parse_ready_role, ReadyRole};

    #[test]
    fn readyz_roles() {
        assert_eq!(
            parse_ready_role("ready: the postgres database answers; leader (epoch 3)\n"),
            Some(ReadyRole::Leader { epoch: 3 })
        );
        assert_eq!(
            parse_ready_role(
                "ready: the postgres database answers; follower (leader chaos-c1, epoch 12)"
            ),
            Some(ReadyRole::Follower {
                leader: "chaos-c1".into(),
                epoch: 12
            })
        );
        assert_eq!(
            parse_ready_role("not ready: x; follower (no live leader; last chaos-c0, epoch 2)"),
            Some(ReadyRole::FollowerNoLeader)
        );
        assert_eq!(
            parse_ready_role("follower (no leader yet)"),
            Some(ReadyRole::FollowerNoLeader)
        );
        assert_eq!(
            parse_ready_role("ready: the postgres database answers"),
            None
        );
    }
}
