//! From a request to its pool: the tenant (header or credential), and the
//! routing table that maps (tenant, signal) to a pool.
//!
//! The table is built aside from a validated config and published with one
//! `ArcSwap::store`; the request path only loads it and looks up. Which
//! signal a request is belongs to [`crate::api`].

mod collector;
mod identity;
mod jwks;
mod table;
mod token;

pub use collector::watch;
pub use identity::{identify, sha256, Identity, Presented};
pub use jwks::refresh_forever;
pub use table::{RouteStore, RoutingTable, Shared, TenantRoute};
pub use token::{Claims, Tokens};
