//! Why the router answers a request itself, without an upstream: a closed
//! set, the only list of reasons. Metrics label by [`Rejection::as_str`],
//! counters are indexed by [`Rejection::index`], and `reply` maps each to
//! its status and message.
//!
//! Ground level: imports nothing of the crate.

/// Why the router refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// No tenant header and no credential.
    NoTenant,
    UnknownTenant,
    Suspended,
    SignalNotEnabled,
    /// A write to a read-only tenant.
    ReadOnly,
    /// A path that is no endpoint the router serves on its listener.
    Unroutable,
    /// Every endpoint of the pool is down.
    NoHealthyEndpoint,
    /// A missing credential where one is needed, or a wrong one.
    Unauthorized,
    /// The credential proves another tenant than the header names.
    CredentialMismatch,
    /// Over the tenant's request rate.
    RateLimited,
    /// Over the tenant's requests in flight.
    ConcurrencyLimited,
    /// The body is over `max_body_bytes`.
    BodyTooLarge,
    /// The path has no safe canonical reading (an encoded `/`, a `..`).
    BadPath,
    /// The endpoint does not take the request's method.
    MethodNotAllowed,
    /// An admin endpoint the tenant's `features.admin_api` does not grant.
    AdminNotGranted,
    /// Several tenant headers, or several `Authorization` headers.
    AmbiguousIdentity,
    /// More request headers, or more header bytes, than the listener takes.
    HeadersTooLarge,
    /// The path names a Victoria tenant itself (`/insert/<id>/`, `multitenant`).
    TenantInPath,
    /// An endpoint with no tenant-scoped form on the tenant's shared cluster.
    NotOnSharedCluster,
}

impl Rejection {
    pub const ALL: [Rejection; 19] = [
        Rejection::NoTenant,
        Rejection::UnknownTenant,
        Rejection::Suspended,
        Rejection::SignalNotEnabled,
        Rejection::ReadOnly,
        Rejection::Unroutable,
        Rejection::NoHealthyEndpoint,
        Rejection::Unauthorized,
        Rejection::CredentialMismatch,
        Rejection::RateLimited,
        Rejection::ConcurrencyLimited,
        Rejection::BodyTooLarge,
        Rejection::BadPath,
        Rejection::MethodNotAllowed,
        Rejection::AdminNotGranted,
        Rejection::AmbiguousIdentity,
        Rejection::HeadersTooLarge,
        Rejection::TenantInPath,
        Rejection::NotOnSharedCluster,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::NoTenant => "no_tenant",
            Rejection::UnknownTenant => "unknown_tenant",
            Rejection::Suspended => "suspended",
            Rejection::SignalNotEnabled => "signal_not_enabled",
            Rejection::ReadOnly => "read_only",
            Rejection::Unroutable => "unroutable",
            Rejection::NoHealthyEndpoint => "no_healthy_endpoint",
            Rejection::Unauthorized => "unauthorized",
            Rejection::CredentialMismatch => "credential_mismatch",
            Rejection::RateLimited => "rate_limited",
            Rejection::ConcurrencyLimited => "concurrency_limited",
            Rejection::BodyTooLarge => "body_too_large",
            Rejection::BadPath => "bad_path",
            Rejection::MethodNotAllowed => "method_not_allowed",
            Rejection::AdminNotGranted => "admin_not_granted",
            Rejection::AmbiguousIdentity => "ambiguous_identity",
            Rejection::HeadersTooLarge => "headers_too_large",
            Rejection::TenantInPath => "tenant_in_path",
            Rejection::NotOnSharedCluster => "not_on_shared_cluster",
        }
    }

    /// Dense index, for per-reason arrays: the position in [`Rejection::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_reason_once_in_index_order() {
        for (i, rejection) in Rejection::ALL.iter().enumerate() {
            assert_eq!(rejection.index(), i, "{rejection:?}");
        }
        let names: std::collections::HashSet<&str> = Rejection::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Rejection::ALL.len(), "label values are distinct");
    }
}
