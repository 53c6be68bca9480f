//! A real DNS server for the router's `dns = [...]` names: dnsmasq (Debian
//! package `dnsmasq-base`) on a free loopback port, UDP and TCP, answering
//! only from its files. A records come from a hosts file, re-read on SIGHUP;
//! SRV records from its config file, read at start, so changing them
//! restarts it on the same port.

use super::victoria::{spawn_from, wait_accepting, Process};
use super::{free_addr, Wait};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BINARY: &str = "/usr/sbin/dnsmasq";

pub struct Dnsmasq {
    process: Option<Process>,
    /// Where it listens, as `[dns] nameservers` names it.
    pub addr: SocketAddr,
    hosts: PathBuf,
    conf: PathBuf,
}

impl Dnsmasq {
    /// Starts it answering `hosts` (hosts-file lines) and `conf` (dnsmasq
    /// config lines: `srv-host=`, `host-record=`).
    pub async fn start(dir: &Path, hosts: &str, conf: &str) -> Dnsmasq {
        let (hosts_path, conf_path) = (dir.join("dns.hosts"), dir.join("dnsmasq.conf"));
        std::fs::write(&hosts_path, hosts).unwrap();
        std::fs::write(&conf_path, conf).unwrap();
        let mut dns = Dnsmasq { process: None, addr: free_addr(), hosts: hosts_path, conf: conf_path };
        dns.run().await;
        dns
    }

    /// `nameservers = ["…"]` under `[dns]`.
    pub fn section(&self) -> String {
        format!("[dns]\nnameservers = [\"{}\"]\n\n", self.addr)
    }

    async fn run(&mut self) {
        let args = [
            "--no-daemon".to_string(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--bind-interfaces".into(),
            "--listen-address=127.0.0.1".into(),
            format!("--port={}", self.addr.port()),
            format!("--addn-hosts={}", self.hosts.display()),
            format!("--conf-file={}", self.conf.display()),
        ];
        self.process = Some(spawn_from(BINARY, &args, "dnsmasq-base"));
        wait_accepting("dnsmasq", self.addr).await;
    }

    /// Answers `hosts` from now on (the file rewritten, dnsmasq told by SIGHUP).
    pub fn set_hosts(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).unwrap();
        let pid = self.process.as_ref().expect("dnsmasq runs").0.id();
        let status = Command::new("kill").arg("-HUP").arg(pid.to_string()).status().unwrap();
        assert!(status.success(), "kill -HUP dnsmasq");
    }

    /// Answers `conf` from now on: restarted on the same port.
    pub async fn set_conf(&mut self, conf: &str) {
        std::fs::write(&self.conf, conf).unwrap();
        self.stop();
        self.run().await;
    }

    /// Stops answering: the port is closed.
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts again on the same port and files.
    pub async fn start_again(&mut self) {
        self.run().await;
    }
}
