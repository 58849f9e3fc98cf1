//! The `nat-worker` daemon as a library.
//!
//! # Layout
//! - [`config`]: flags and `NAT_…` variables, validated into a [`config::WorkerConfig`].
//! - [`daemon`]: the async side — registration, lease long-polls, heartbeats, reports,
//!   reconnection with backoff, draining on SIGTERM/SIGINT.
//! - [`slot`]: one OS thread per task slot, owning its runner; panics become failed outcomes.
//! - [`runner`]: the libtorch runner of a slot (proto task → `nat-train` call → outcome).
//! - [`backoff`]: capped exponential backoff with jitter.
//! - [`doctor`]: `nat-worker doctor` — the libtorch, CUDA runtime, driver and devices it finds.
//! - [`system`]: host name, CPU and GPU facts for registration.
//! - [`telemetry`]: log set-up.

pub mod backoff;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod runner;
pub mod slot;
pub mod system;
pub mod telemetry;
