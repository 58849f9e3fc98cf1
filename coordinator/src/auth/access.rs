//! Which roles may call each RPC and HTTP route: one table, read by the gRPC layer and the HTTP
//! middleware, and printed in deploy/README.md's security section.

use nat_store::Role;

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token (gRPC health, reflection, `/healthz`, `/readyz`).
    Open,
    /// A token of one of these roles.
    Roles(&'static [Role]),
}

const ADMIN: &[Role] = &[Role::Admin];
const SUBMIT: &[Role] = &[Role::Admin, Role::User];
const READ: &[Role] = &[Role::Admin, Role::User, Role::Viewer];
const WORKER: &[Role] = &[Role::Admin, Role::Worker];
const DASHBOARD: &[Role] = &[Role::Admin, Role::Viewer];
const DASHBOARD_USERS: &[Role] = &[Role::Admin, Role::User, Role::Viewer];

/// The access rule of a gRPC method, by its path (`/nat.v1.JobService/SubmitJob`). Within
/// JobService a `user` is further limited to its own jobs by the handlers.
pub fn grpc(path: &str) -> Access {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    match service {
        "grpc.health.v1.Health"
        | "grpc.reflection.v1.ServerReflection"
        | "grpc.reflection.v1alpha.ServerReflection" => Access::Open,
        "nat.v1.JobService" => match method {
            "SubmitJob" | "CancelJob" => Access::Roles(SUBMIT),
            _ => Access::Roles(READ),
        },
        "nat.v1.PolicyService" => Access::Roles(READ),
        "nat.v1.WorkerService" => Access::Roles(WORKER),
        // TokenService and anything unknown (answered UNIMPLEMENTED once authenticated).
        _ => Access::Roles(ADMIN),
    }
}

/// Whether a gRPC path belongs to the WorkerService (which needs a client certificate under
/// mTLS).
pub fn is_worker_service(path: &str) -> bool {
    path.starts_with("/nat.v1.WorkerService/")
}

/// The access rule of an HTTP path. The dashboard shows every job, so a `user` sees it only
/// when users may read all jobs; `/metrics` is open when `metrics_public`.
pub fn http(path: &str, users_read_all: bool, metrics_public: bool) -> Access {
    match path {
        "/healthz" | "/readyz" => Access::Open,
        "/metrics" if metrics_public => Access::Open,
        "/metrics" => Access::Roles(DASHBOARD),
        _ if users_read_all => Access::Roles(DASHBOARD_USERS),
        _ => Access::Roles(DASHBOARD),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_covers_the_services() {
        assert_eq!(grpc("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(grpc("/nat.v1.JobService/SubmitJob"), Access::Roles(SUBMIT));
        assert_eq!(grpc("/nat.v1.JobService/ListJobs"), Access::Roles(READ));
        assert_eq!(
            grpc("/nat.v1.WorkerService/LeaseTask"),
            Access::Roles(WORKER)
        );
        assert_eq!(
            grpc("/nat.v1.TokenService/CreateToken"),
            Access::Roles(ADMIN)
        );
        assert_eq!(grpc("/x.Y/Z"), Access::Roles(ADMIN));
        assert_eq!(http("/metrics", false, true), Access::Open);
        assert_eq!(http("/metrics", false, false), Access::Roles(DASHBOARD));
        assert_eq!(
            http("/api/jobs", true, false),
            Access::Roles(DASHBOARD_USERS)
        );
        assert!(is_worker_service("/nat.v1.WorkerService/Heartbeat"));
    }
}
