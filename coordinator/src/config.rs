//! Settings of a running coordinator (the binary builds them from flags and `NAT_…` variables).

use std::time::Duration;

/// What the services need to know; every field has a production default.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// How long a lease lives unless a heartbeat extends it.
    pub lease_duration: Duration,
    /// How often workers are asked to heartbeat (must be well under `lease_duration`).
    pub heartbeat_interval: Duration,
    /// Leases granted to a task before it fails for good.
    pub max_attempts: u32,
    /// Longest LeaseTask long-poll honoured.
    pub max_lease_wait: Duration,
    /// How often expired leases are collected in the background.
    pub expiry_interval: Duration,
    /// Lease reservations (see [`crate::reserve`]): how much of each slot profile's recent
    /// lease rate is kept claimed ahead of demand, so that LeaseTask is answered from memory
    /// under load. Zero switches reservations off (every lease claimed on the request path).
    pub lease_reserve: Duration,
    /// Lease rate (per second, per slot profile) under which nothing is reserved.
    pub lease_reserve_min_rate: f64,
    /// Authentication (see [`crate::auth`]); none by default.
    pub auth: crate::auth::AuthSettings,
    /// This coordinator's name in the leader election (see [`crate::leader`]); unique among
    /// the coordinators of one database. Default: `<hostname>-<pid>`.
    pub instance_id: String,
    /// Most concurrent calls (HTTP/2 streams) one client connection may have open; a client
    /// that opens more waits for a slot (compliant clients queue them) or has the stream refused.
    /// Bounds what one flooding connection can take of the coordinator.
    pub max_streams_per_connection: u32,
    /// How long a leadership term lasts unless renewed (renewed every fifth of it); a follower
    /// takes over this long after the leader stopped renewing.
    pub leader_lease: Duration,
    /// Largest supernet weights document a worker may upload (`PutSupernet`), in bytes.
    pub max_supernet_bytes: u64,
}

/// `<hostname>-<pid>`: unique among the processes of a cluster.
pub fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "coordinator".to_string());
    format!("{host}-{}", std::process::id())
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lease_duration: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(10),
            max_attempts: 3,
            max_lease_wait: Duration::from_secs(5),
            expiry_interval: Duration::from_secs(1),
            lease_reserve: Duration::from_millis(50),
            lease_reserve_min_rate: 100.0,
            auth: crate::auth::AuthSettings::default(),
            max_streams_per_connection: 1024,
            instance_id: default_instance_id(),
            leader_lease: Duration::from_secs(5),
            max_supernet_bytes: 1 << 30,
        }
    }
}

impl Config {
    /// Age after which an unused reservation goes back to the queue: a quarter of the lease
    /// (so it is handed out with most of its store-side expiry left), at most 5 s.
    pub fn reservation_max_age(&self) -> Duration {
        (self.lease_duration / 4).min(Duration::from_secs(5))
    }

    /// How long after its hand-out a reserved lease's worker is written if neither its report
    /// nor a heartbeat recorded it first (see [`crate::handout`]): one second, at most a
    /// quarter of the lease.
    pub fn assignment_delay(&self) -> Duration {
        (self.lease_duration / 4).min(crate::handout::MAX_DELAY)
    }

    /// Checks the settings against each other; the error names the offending setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_duration < Duration::from_millis(100)
            || self.lease_duration > Duration::from_secs(24 * 3600)
        {
            return Err("lease duration must be between 100 ms and 24 h".into());
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.lease_duration {
            return Err("heartbeat interval must be positive and shorter than the lease".into());
        }
        if !(1..=nat_store::limits::MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(format!(
                "max attempts must be in 1..={}",
                nat_store::limits::MAX_ATTEMPTS
            ));
        }
        if self.max_lease_wait > Duration::from_secs(60) {
            return Err("max lease wait must be at most 60 s".into());
        }
        if self.expiry_interval < Duration::from_millis(10) {
            return Err("expiry interval must be at least 10 ms".into());
        }
        if self.lease_reserve > Duration::from_secs(1) {
            return Err("lease reserve must be at most 1000 ms".into());
        }
        if !(self.lease_reserve_min_rate.is_finite() && self.lease_reserve_min_rate >= 0.0) {
            return Err("lease reserve minimum rate must be a finite number >= 0".into());
        }
        if !(1..=100_000).contains(&self.max_streams_per_connection) {
            return Err("max streams per connection must be in 1..=100000".into());
        }
        if self.instance_id.trim().is_empty() || self.instance_id.len() > 256 {
            return Err("instance id must be 1 to 256 bytes, not blank".into());
        }
        if self.leader_lease < Duration::from_secs(1)
            || self.leader_lease > Duration::from_secs(300)
        {
            return Err("leader lease must be between 1 s and 300 s".into());
        }
        Ok(())
    }
}
