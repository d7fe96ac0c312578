//! Tower layers for the concerns every gRPC server shares. The server builder stacks them from the
//! outside in: trace → metrics → timeout → load shed → identity → routes.
//!
//! # Layout
//! - [`trace`]: one span per request, parented on the caller's W3C trace context.
//! - [`timeout`]: a deadline per request, answered with `DEADLINE_EXCEEDED`.
//! - [`shed`]: a process-wide concurrency limit, answered with `RESOURCE_EXHAUSTED`.
//! - [`identity`]: organisation and person identity, into [`crate::Caller`].
//! - [`metrics`]: request counts and latencies by service, method, status and peer kind.

pub mod identity;
pub mod metrics;
pub mod shed;
pub mod timeout;
pub mod trace;

/// Splits `/package.Service/Method` into its service and method, for span and metric labels.
pub(crate) fn rpc_names(path: &str) -> (&str, &str) {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split_once('/').unwrap_or((path, ""))
}

#[cfg(test)]
mod tests {
    #[test]
    fn splits_grpc_paths() {
        assert_eq!(
            super::rpc_names("/doorzet.v1.Directory/ListMembers"),
            ("doorzet.v1.Directory", "ListMembers")
        );
        assert_eq!(super::rpc_names("/odd"), ("odd", ""));
    }
}
