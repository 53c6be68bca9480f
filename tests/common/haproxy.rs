//! A real HAProxy (Debian package `haproxy`) on a loopback port, balancing
//! round-robin over a fleet of routers as an L4-ish front of a fleet does:
//! HTTP mode with `balance roundrobin`, one new server per request.

use super::victoria::{spawn, Process};
use super::{free_addr, Wait};
use std::net::SocketAddr;
use std::time::Duration;

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
        let process = spawn("haproxy", &["-db".into(), "-f".into(), path.display().to_string()]);
        Wait::new(format!("haproxy on {addr}"), Duration::from_secs(10))
            .every(Duration::from_millis(20))
            .until(|| {
                std::net::TcpStream::connect(addr)
                    .map(drop)
                    .map_err(|e| format!("{e} (the Debian package haproxy; scripts/test installs it)"))
            })
            .await;
        Haproxy { _process: process, addr }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}
