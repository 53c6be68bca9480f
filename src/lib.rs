//! mirador-router: a multi-tenant reverse-proxy data plane for the
//! VictoriaMetrics stack, on Pingora.
//!
//! Modules follow the path of a request: `config` (TOML → validated model),
//! `routing` (signal, tenant, routing table), `upstream` (pools and endpoint
//! selection), `proxy` (the Pingora phases and the error → status map),
//! `reload` (build aside, swap once), `admin` (the admin listener) and
//! `server` (assembly).

pub mod access_log;
pub mod admin;
pub mod config;
pub mod metrics;
pub mod proxy;
pub mod quota;
pub mod reload;
pub mod routing;
pub mod server;
pub mod upstream;
