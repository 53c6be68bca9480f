//! Upstream side: pools of endpoints per (tenant, signal), endpoint health
//! (active probes and live-traffic ejection), and how an endpoint is chosen
//! for each attempt of a request, and the HTTP version it is spoken to.

mod fetch;
mod health;
mod pool;
mod probe;
mod registry;
mod schedule;
mod tls;
mod version;

pub use fetch::Sent;
pub use fetch::{Answer, GrpcAnswer, PostFailed};
pub use health::{EndpointHealth, HealthSnapshot};
pub use pool::{GrpcEndpoint, Pick, Pool, Role, Tried, UpstreamEndpoint};
pub use registry::HealthRegistry;
