//! The `nat-worker` daemon as a library.
//!
//! # Layout
//! - [`config`]: flags and `NAT_…` variables, validated into a [`config::WorkerConfig`].
//! - [`backoff`]: capped exponential backoff with jitter for reconnecting.
//! - [`slot`]: one OS thread per task slot, owning its runner; panics become failed outcomes.
//! - [`telemetry`]: log set-up.

pub mod backoff;
pub mod config;
pub mod slot;
pub mod telemetry;
