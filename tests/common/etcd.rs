//! A real etcd (Debian package `etcd-server`) on loopback ports, and
//! `etcdctl` (Debian `etcd-client`) against it: stopped and started again on
//! the same data directory and ports, as an etcd restart is.

use super::victoria::{spawn_from, Process};
use super::{client, free_addr, Wait};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub struct Etcd {
    process: Option<Process>,
    pub client: SocketAddr,
    peer: SocketAddr,
    dir: PathBuf,
}

impl Etcd {
    pub async fn start(dir: &std::path::Path) -> Etcd {
        let mut etcd = Etcd { process: None, client: free_addr(), peer: free_addr(), dir: dir.join("etcd") };
        etcd.run().await;
        etcd
    }

    /// `http://127.0.0.1:PORT`, as the router's `[store] endpoints` name it.
    pub fn url(&self) -> String {
        format!("http://{}", self.client)
    }

    async fn run(&mut self) {
        let (url, peer) = (format!("http://{}", self.client), format!("http://{}", self.peer));
        let args = [
            "--name=t".to_string(),
            format!("--data-dir={}", self.dir.display()),
            format!("--listen-client-urls={url}"),
            format!("--advertise-client-urls={url}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=t={peer}"),
            "--logger=zap".into(),
            "--log-level=error".into(),
        ];
        self.process = Some(spawn_from("etcd", &args, "etcd-server"));
        let http = client();
        let health = format!("{url}/health");
        Wait::new(format!("etcd on {}", self.client), Duration::from_secs(30))
            .every(Duration::from_millis(50))
            .until_async(|| async {
                match http.get(&health).send().await {
                    Ok(r) if r.status() == 200 => Ok(()),
                    Ok(r) => Err(format!("/health answered {}", r.status())),
                    Err(e) => Err(format!("{e} (the Debian package etcd-server; scripts/test installs it)")),
                }
            })
            .await;
    }

    pub fn stop(&mut self) {
        self.process = None;
    }

    pub async fn restart(&mut self) {
        self.stop();
        self.run().await;
    }

    /// `etcdctl ARGS` (v3 API) against this etcd: its stdout, or a panic with its stderr.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.url()))
            .args(args)
            .output()
            .expect("etcdctl (the Debian package etcd-client; scripts/test installs it)");
        assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `etcdctl put KEY VALUE` (the value given on stdin-free argv).
    pub fn put(&self, key: &str, value: &str) {
        self.ctl(&["put", key, value]);
    }

    /// The value of `key`, or `None`.
    pub fn get(&self, key: &str) -> Option<String> {
        let out = self.ctl(&["get", key, "--print-value-only"]);
        (!out.is_empty()).then(|| out.strip_suffix('\n').unwrap_or(&out).to_string())
    }
}
