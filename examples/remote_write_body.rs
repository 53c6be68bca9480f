//! Writes a Prometheus remote-write body of about `BYTES` (argument, default
//! 4096) compressed bytes to stdout: series of a scraped node's shape, for
//! benches/load.sh's POST.

#[path = "../tests/common/remote_write.rs"]
mod remote_write;

use remote_write::{body, Series};
use std::io::Write;

fn main() {
    let want: usize = std::env::args().nth(1).map_or(4096, |a| a.parse().expect("a size in bytes"));
    let names: Vec<String> = (0..100_000).map(|i| format!("node_metric_{}", i % 40)).collect();
    let cpus: Vec<String> = (0..100_000).map(|i| (i / 40).to_string()).collect();
    let labels: Vec<[(&str, &str); 3]> =
        cpus.iter().map(|cpu| [("cpu", cpu.as_str()), ("instance", "10.0.0.1:9100"), ("job", "node")]).collect();
    let mut n = 1;
    loop {
        let series: Vec<Series> = (0..n)
            .map(|i| Series {
                name: &names[i],
                labels: &labels[i],
                value: i as f64 * 1.5,
                timestamp_ms: 1_700_000_000_000 + i as i64,
            })
            .collect();
        let out = body(&series);
        if out.len() >= want || n == names.len() {
            std::io::stdout().write_all(&out).expect("stdout");
            eprintln!("{} series, {} bytes ({} decoded)", n, out.len(), remote_write::write_request(&series).len());
            return;
        }
        n += 1 + n / 8;
    }
}
