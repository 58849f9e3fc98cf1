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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lease_duration: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(10),
            max_attempts: 3,
            max_lease_wait: Duration::from_secs(5),
            expiry_interval: Duration::from_secs(1),
        }
    }
}

impl Config {
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
        Ok(())
    }
}
