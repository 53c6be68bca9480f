//! mirador-router: a multi-tenant reverse-proxy data plane for the
//! VictoriaMetrics stack, on Pingora.
//!
//! Modules follow the path of a request, from the ground up (ARCHITECTURE.md
//! draws the layers; a test keeps the imports to them): `api` (signals, the
//! path table), `rejection` and `reply` (why the router answers itself, and
//! how), `config` (TOML → validated model), `metrics`, `quota`, `access_log`,
//! `upstream` (pools, endpoint health and probes), `routing` (tenant,
//! routing table), `proxy` (the Pingora phases), `otlp_grpc` (the OTLP/gRPC
//! listener, through the proxy's pipeline), `reload` (build aside, swap
//! once), `activity` (each pool's last minute) and `usage` (what deployments
//! hold), `admin` (the admin listener and its status page) and `server`
//! (assembly).

pub mod access_log;
pub mod activity;
pub mod admin;
pub mod api;
pub mod config;
pub mod connection;
pub mod edge;
pub mod metrics;
pub mod migration;
pub mod otlp_grpc;
pub mod proxy;
pub mod quota;
pub mod rejection;
pub mod reload;
pub mod reply;
pub mod routing;
pub mod server;
pub mod store;
pub mod upstream;
pub mod usage;
