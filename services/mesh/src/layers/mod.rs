//! Tower layers for the concerns every gRPC server shares. The server builder stacks them from the
//! outside in: trace → metrics → shape → timeout → load shed → connection activity → identity →
//! routes.
//!
//! # Layout
//! - [`trace`]: one span per request, parented on the caller's W3C trace context.
//! - [`metrics`]: request counts and latencies by service, method, final status and peer kind.
//! - [`shape`]: refuses what is not a gRPC call of the right shape (path, message size).
//! - [`timeout`]: a deadline per request (the server's or the client's, whichever is shorter).
//! - [`shed`]: a process-wide concurrency limit, answered with `RESOURCE_EXHAUSTED`.
//! - [`identity`]: organisation and person identity, into [`crate::Caller`].
//! - [`body`]: a response body that reports the stream's final status when it ends.

pub mod body;
pub mod identity;
pub mod metrics;
pub mod shape;
pub mod shed;
pub mod timeout;
pub mod trace;

use std::collections::HashMap;
use std::sync::LazyLock;

use prost::Message;

/// The label every path that is not a method of the contract is counted under.
pub const UNKNOWN: &str = "unknown";

/// Methods outside `doorzet.v1` that every server serves (health and both reflection versions).
const STANDARD_METHODS: [(&str, &str); 4] = [
    ("grpc.health.v1.Health", "Check"),
    ("grpc.health.v1.Health", "Watch"),
    (
        "grpc.reflection.v1.ServerReflection",
        "ServerReflectionInfo",
    ),
    (
        "grpc.reflection.v1alpha.ServerReflection",
        "ServerReflectionInfo",
    ),
];

/// Every method of the contract by its path, with its labels, read once from the compiled-in
/// descriptors.
static KNOWN: LazyLock<HashMap<&'static str, (&'static str, &'static str)>> = LazyLock::new(|| {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let mut known = HashMap::new();
    let mut add = |service: &'static str, method: &'static str| {
        known.insert(leak(format!("/{service}/{method}")), (service, method));
    };
    for (service, method) in STANDARD_METHODS {
        add(service, method);
    }
    // The descriptor set is compiled in; a decoding failure is a build defect, and then only the
    // standard methods get their own labels.
    if let Ok(set) = prost_types::FileDescriptorSet::decode(doorzet_proto::FILE_DESCRIPTOR_SET) {
        for file in set.file {
            for service in &file.service {
                let full = leak(format!("{}.{}", file.package(), service.name()));
                for method in &service.method {
                    add(full, leak(method.name().to_owned()));
                }
            }
        }
    }
    known
});

/// Returns the `(service, method)` labels of a request path: the contract's own names for a known
/// method, and [`UNKNOWN`] for anything else, so nothing a caller sends becomes a label.
pub fn rpc_labels(path: &str) -> (&'static str, &'static str) {
    KNOWN.get(path).copied().unwrap_or((UNKNOWN, UNKNOWN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_methods_keep_their_names_and_everything_else_is_unknown() {
        assert_eq!(
            rpc_labels("/doorzet.v1.Directory/ListMembers"),
            ("doorzet.v1.Directory", "ListMembers")
        );
        assert_eq!(
            rpc_labels("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health", "Check")
        );
        for path in [
            "/odd",
            "/",
            "",
            "/doorzet.v1.Directory/Nope",
            "/bsn:123456782/geboortedatum:1970-01-01",
            "/doorzet.v1.Directory/ListMembers/extra",
        ] {
            assert_eq!(rpc_labels(path), (UNKNOWN, UNKNOWN), "{path}");
        }
    }

    proptest::proptest! {
        #[test]
        fn no_caller_text_becomes_a_label(path in "\\PC*") {
            let (service, method) = rpc_labels(&path);
            if service != UNKNOWN {
                proptest::prop_assert_eq!(path, format!("/{service}/{method}"));
            }
        }
    }
}
