//! Upstream side: pools of endpoints per (tenant, signal) and how an
//! endpoint is chosen for each attempt of a request.

mod pool;

pub use pool::{Pool, Role, Tried, UpstreamEndpoint};
