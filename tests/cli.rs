//! The command line: `--check` on good and bad files, and the embedded default.

use std::process::Command;

fn router() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mirador-router"))
}

#[test]
fn check_accepts_every_shipped_config() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/conf")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = router().arg("--config").arg(&path).arg("--check").output().unwrap();
            assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
            assert!(String::from_utf8_lossy(&out.stdout).contains(": ok ("));
        }
    }
}

#[test]
fn check_prints_every_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[tenants.acme.metrics]\nendpoints = [\"http://127.0.0.1:1\", \"http://127.0.0.1:1\"]\ntimeout = \"forever\"\n",
    )
    .unwrap();
    let out = router().arg("--config").arg(&path).arg("--check").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = path.display();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{file}:2:36: tenants.acme.metrics.endpoints[1]: duplicate endpoint http://127.0.0.1:1"),
            format!("{file}:3:1: tenants.acme.metrics.timeout: \"forever\" is not a duration (expected number at 0); write e.g. \"30s\" or \"250ms\""),
            format!("{file}: 2 error(s); nothing started"),
        ]
    );
}

#[test]
fn without_a_config_file_the_embedded_default_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let out = router().arg("--check").current_dir(dir.path()).output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "<embedded default config>: ok (1 tenants)");
}

#[test]
fn a_missing_explicit_config_is_an_error_not_the_default() {
    let out = router().args(["--config", "/nonexistent/mirador.toml", "--check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("/nonexistent/mirador.toml: cannot read the file:"));
}
