//! From a request to its pool: the signal (listener or path), the tenant
//! (header), and the routing table that maps the pair to a pool.
//!
//! The table is built aside from a validated config and published with one
//! `ArcSwap::store`; the request path only loads it and looks up.

mod identity;
mod signal;
mod table;

pub use identity::{identify, sha256};
pub use signal::{classify, classify_path, Access, Listener, Signal, PATH_TABLE};
pub use table::{Refusal, RouteStore, RoutingTable, Shared, TenantRoute};
