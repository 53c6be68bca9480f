//! The `.deb` (`cargo deb`, `[package.metadata.deb]` in Cargo.toml): built
//! from this build's binary, installed with `dpkg -i`, checked and serving
//! as installed, removed with its conffile kept, then purged.
//!
//! It installs on the machine it runs on, so it needs root (CI runs as
//! root) and is one test function: nothing else installs this package.

mod common;

use common::{client, free_addr, Upstream, Wait};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PACKAGE: &str = "mirador-router";
const BINARY: &str = "/usr/bin/mirador-router";
const CONFIG: &str = "/etc/mirador-router/mirador-router.toml";
const UNIT: &str = "/lib/systemd/system/mirador-router.service";

/// Runs `program args`; its output, or a panic naming the command and its stderr.
fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr) + String::from_utf8_lossy(&out.stdout)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Purges the package when dropped, so that a failed run leaves nothing installed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", PACKAGE]).output();
    }
}

/// The installed router, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Builds the .deb of the binary this test run built into `dir`; its path.
///
/// cargo-deb takes binaries from `<target>/release` (its `--profile dev` is
/// deprecated): a copy of the debug binary goes into a target directory of
/// its own, where `--strip` may shrink it without touching the build's.
fn build_deb(dir: &Path) -> std::path::PathBuf {
    let target = dir.join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_mirador-router"), target.join("release/mirador-router")).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .args(["deb", "--no-build", "--strip", "--fast", "--output"])
        .arg(dir)
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo} deb: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cargo deb (scripts/test installs cargo-deb): {}\n{stderr}", out.status);
    let debs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "one .deb in {}: {debs:?}", dir.display());
    debs[0].clone()
}

/// The installed config with loopback ports of its own, pid file and upgrade
/// socket in `dir`, and the tenant's metrics at `upstream`: what an operator
/// changes in the installed file before enabling the service.
fn served_config(dir: &Path, upstream: &str) -> (String, std::net::SocketAddr, std::net::SocketAddr) {
    let (unified, admin) = (free_addr(), free_addr());
    let text = std::fs::read_to_string(CONFIG).unwrap();
    let mut doc: toml_edit::DocumentMut = text.parse().unwrap();
    doc["server"]["listen"] = toml_edit::value(toml_edit::Array::from_iter([unified.to_string()]));
    doc["server"]["pid_file"] = toml_edit::value(dir.join("router.pid").display().to_string());
    doc["server"]["upgrade_sock"] = toml_edit::value(dir.join("upgrade.sock").display().to_string());
    doc["admin"]["listen"] = toml_edit::value(admin.to_string());
    doc["tenants"]["platformbuilds"]["metrics"]["endpoints"] =
        toml_edit::value(toml_edit::Array::from_iter([upstream.to_string()]));
    (doc.to_string(), unified, admin)
}

/// Built, installed, checked, serving as the user postinst made, removed
/// with the conffile kept, purged: every step of the package's life on a
/// Debian machine, each asserted on dpkg's own records and the files.
#[tokio::test(flavor = "multi_thread")]
async fn the_deb_installs_checks_serves_and_removes_cleanly() {
    let uid = stdout(&run("id", &["-u"]));
    assert_eq!(uid.trim(), "0", "tests/packaging.rs installs a .deb with dpkg: run it as root (CI does)");
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    // A run that failed half-way may have left it installed.
    run("dpkg", &["--purge", PACKAGE]);

    let deb = build_deb(dir.path());
    let built = started.elapsed();
    let installed = Installed;
    run("dpkg", &["-i", deb.to_str().unwrap()]);
    let status = stdout(&run("dpkg-query", &["-W", "-f", "${Status}", PACKAGE]));
    assert_eq!(status, "install ok installed");
    let conffiles = stdout(&run("dpkg-query", &["-W", "-f", "${Conffiles}", PACKAGE]));
    assert!(conffiles.contains(CONFIG), "{CONFIG} is a conffile: {conffiles:?}");
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/mirador-router.toml")).unwrap();
    assert_eq!(std::fs::read_to_string(CONFIG).unwrap(), shipped, "the installed config is conf/mirador-router.toml");
    let user = stdout(&run("getent", &["passwd", PACKAGE]));
    assert!(user.trim_end().ends_with(":/usr/sbin/nologin"), "a system user without a shell: {user}");
    let uid: u32 = user.split(':').nth(2).and_then(|id| id.parse().ok()).expect("a uid");
    assert!(uid < 1000, "a system uid: {user}");
    // postinst again, as on a reinstall: the user is found, not made twice.
    run("dpkg", &["-i", deb.to_str().unwrap()]);
    assert_eq!(stdout(&run("getent", &["passwd", PACKAGE])), user, "the same user after a reinstall");

    // As the unit's ExecStartPre runs it, and the unit as installed.
    let check = stdout(&run(BINARY, &["--config", CONFIG, "--check"]));
    assert!(check.contains(": ok ("), "--check of the installed config: {check}");
    let verify = run("systemd-analyze", &["verify", UNIT]);
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(stderr.trim().is_empty(), "systemd-analyze verify {UNIT}: {stderr}");

    // The installed binary serves, as the package's user.
    let up = Upstream::start("up").await;
    let (text, unified, admin) = served_config(dir.path(), &up.url());
    let config = dir.path().join("mirador-router.toml");
    std::fs::write(&config, text).unwrap();
    run("chown", &["-R", &format!("{PACKAGE}:{PACKAGE}"), dir.path().to_str().unwrap()]);
    let log = std::fs::File::create(dir.path().join("router.log")).unwrap();
    let child = Command::new("runuser")
        .args(["-u", PACKAGE, "--", BINARY, "--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("runuser (util-linux)");
    let router = Running(child);
    let http = client();
    let health = format!("http://{admin}/health");
    Wait::new(format!("the installed router's {health}"), Duration::from_secs(20))
        .every(Duration::from_millis(50))
        .until_async(|| async {
            match http.get(&health).send().await {
                Ok(r) if r.status() == 200 => Ok(()),
                Ok(r) => Err(format!("answered {}", r.status())),
                Err(e) => Err(format!("{e}; log: {}", std::fs::read_to_string(dir.path().join("router.log")).unwrap())),
            }
        })
        .await;
    let query = format!("http://{unified}/api/v1/query?query=up");
    let answer = http.get(&query).header("X-Tenant-ID", "platformbuilds").send().await.unwrap();
    assert_eq!(answer.status(), 200, "a query of the example tenant through the installed router");
    assert!(
        up.seen().iter().any(|seen| seen.path_and_query.starts_with("/api/v1/query")),
        "the tenant's upstream saw the query"
    );
    drop(router);

    // Removed: binary and unit gone, the conffile kept; purged: gone too.
    run("dpkg", &["-r", PACKAGE]);
    let status = stdout(&run("dpkg-query", &["-W", "-f", "${Status}", PACKAGE]));
    assert_eq!(status, "deinstall ok config-files", "removed, its conffile kept");
    for gone in [BINARY, UNIT] {
        assert!(!Path::new(gone).exists(), "{gone} is removed with the package");
    }
    assert_eq!(std::fs::read_to_string(CONFIG).unwrap(), shipped, "the conffile stays after dpkg -r");
    run("dpkg", &["--purge", PACKAGE]);
    assert!(!Path::new(CONFIG).exists(), "{CONFIG} is purged");
    let after = Command::new("dpkg-query").args(["-W", "-f", "${Status}", PACKAGE]).output().unwrap();
    let after = stdout(&after);
    assert!(after.is_empty() || after.contains("not-installed"), "nothing left after the purge: {after:?}");
    drop(installed);
    eprintln!("packaging: .deb built in {built:.1?}, whole life in {:.1?}", started.elapsed());
}
