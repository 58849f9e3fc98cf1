//! The gRPC services. Handlers convert wire types, check the shared fields and dispatch to the
//! job kinds (`crate::jobs`); they hold no job logic of their own.
//!
//! - [`job`]: `nat.v1.JobService` (submit, get, list, watch, cancel, result, workers).
//! - [`watch`]: `WatchJob`'s streamer.
//! - [`worker`]: `nat.v1.WorkerService` (register, heartbeat, lease, progress, result).
//! - [`weights`]: its supernet weight transfers (`FetchSupernet`, `PutSupernet`).
//! - [`policy`]: `nat.v1.PolicyService` (stored policies; transform an architecture).
//! - [`token`]: `nat.v1.TokenService` (API tokens; admin only).
//! - `validate`: checks of what workers send (capabilities, datasets, tokens).

pub mod job;
pub mod policy;
pub mod token;
mod validate;
pub mod watch;
pub mod weights;
pub mod worker;
