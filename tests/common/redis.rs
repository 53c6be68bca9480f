//! A real Redis (Debian package `redis-server`) on a loopback port, with no
//! persistence: stopped and started again on the same port, as a Redis
//! restart is (its keys gone, as after a failover to an empty replica).

use super::free_addr;
use super::victoria::{spawn_from, wait_accepting, Process};
use std::net::SocketAddr;

pub struct Redis {
    process: Option<Process>,
    pub addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Redis {
    pub async fn start(dir: &std::path::Path) -> Redis {
        let mut redis = Redis { process: None, addr: free_addr(), dir: dir.join("redis") };
        std::fs::create_dir_all(&redis.dir).unwrap();
        redis.run().await;
        redis
    }

    /// `redis://127.0.0.1:PORT/0`, as `[quotas] url` names it.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts it again on the same port after [`Redis::stop`].
    pub async fn run(&mut self) {
        let args = [
            "--bind".to_string(),
            "127.0.0.1".into(),
            "--port".into(),
            self.addr.port().to_string(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            self.dir.display().to_string(),
        ];
        self.process = Some(spawn_from("redis-server", &args, "redis-server"));
        wait_accepting("redis-server", self.addr).await;
    }
}
