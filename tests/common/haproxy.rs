//! A real HAProxy (Debian package `haproxy`) on a loopback port in front of
//! a fleet of routers: HTTP mode, `balance roundrobin` and no connection
//! reuse, so consecutive requests reach the replicas in turn.

use super::free_addr;
use super::victoria::{spawn_from, wait_accepting, Process};
use std::net::SocketAddr;

pub struct Haproxy {
    _process: Process,
    pub addr: SocketAddr,
}

impl Haproxy {
    /// HAProxy on a free port in front of `backends`; its config is written into `dir`.
    pub async fn start(dir: &std::path::Path, backends: &[SocketAddr]) -> Haproxy {
        let addr = free_addr();
        let servers: String = backends.iter().enumerate().map(|(i, b)| format!("    server r{i} {b}\n")).collect();
        let config = format!(
            "defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
             frontend fleet\n    bind {addr}\n    default_backend routers\n\
             backend routers\n    balance roundrobin\n    http-reuse never\n{servers}"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let process = spawn_from("haproxy", &["-db".into(), "-f".into(), path.display().to_string()], "haproxy");
        wait_accepting("haproxy", addr).await;
        Haproxy { _process: process, addr }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}
