//! The floor: the least a Pingora 0.9.1 proxy can do in front of Victoria* —
//! a tenant header check and round robin, nothing else. Built from the same
//! dependencies as the router, for `benches/load.sh` to compare against.
//!
//! `cargo run --release --example floor -- LISTEN BACKEND [BACKEND...]`

use async_trait::async_trait;
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use std::sync::Arc;

struct Floor(Arc<LoadBalancer<RoundRobin>>);

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        if session.req_header().headers.contains_key("x-tenant-id") {
            return Ok(false);
        }
        session.respond_error(401).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let backend = self.0.select(b"", 256).ok_or_else(|| Error::new(ErrorType::ConnectNoRoute))?;
        Ok(Box::new(HttpPeer::new(backend.addr, false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, backends) = args.split_first().expect("usage: floor LISTEN BACKEND [BACKEND...]");
    let conf = pingora::server::configuration::ServerConf {
        threads: 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        pid_file: format!("/tmp/mirador-floor-{}.pid", std::process::id()),
        upgrade_sock: format!("/tmp/mirador-floor-{}.sock", std::process::id()),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let upstreams = LoadBalancer::try_from_iter(backends.iter().map(String::as_str)).expect("backend addresses");
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Floor(Arc::new(upstreams)));
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever()
}
