//! The runbooks of `docs/runbooks/` run: every `sh` block of every runbook,
//! in order, in one shell per runbook (`set -euo pipefail`), against a real
//! router (with an admin token) and two real VictoriaMetrics. After each
//! runbook the test checks, on its own, the outcome the runbook promises.

mod common;

use common::victoria::{force_flush, start_victoria_metrics};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const RUNBOOKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/runbooks");

/// The runbooks in the order they run (each starts from where the one
/// before left the router).
const ORDER: [&str; 7] = [
    "add-a-tenant.md",
    "move-a-tenants-endpoints.md",
    "an-endpoint-is-down.md",
    "a-reload-was-refused.md",
    "rotate-a-tenants-credential.md",
    "suspend-and-resume-a-tenant.md",
    "migrate-a-tenant.md",
];

/// The `sh` blocks of a markdown text, in order.
fn sh_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut open: Option<String> = None;
    for line in text.lines() {
        match (&mut open, line.trim_end()) {
            (None, "```sh") => open = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                open = None;
            }
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(open.is_none(), "an sh block is not closed");
    blocks
}

struct Env {
    vars: Vec<(&'static str, String)>,
    path: String,
}

/// Runs every block of `runbook`; panics with its output when one fails.
fn run(runbook: &str, env: &Env) {
    let text = std::fs::read_to_string(Path::new(RUNBOOKS).join(runbook)).unwrap();
    let blocks = sh_blocks(&text);
    assert!(!blocks.is_empty(), "{runbook} has no sh block");
    let script = format!("set -euo pipefail\nset -x\n{}", blocks.join("\n"));
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .envs(env.vars.iter().map(|(k, v)| (k, v)))
        .env("PATH", &env.path)
        .output()
        .expect("bash runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "{runbook} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    println!("{runbook}: {} blocks ran", blocks.len());
}

fn sha256_hex(text: &str) -> String {
    let output =
        Command::new("sha256sum").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn();
    let mut child = output.unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().split(' ').next().unwrap().to_string()
}

#[test]
fn every_runbook_is_run_by_the_test() {
    let mut present: Vec<String> = std::fs::read_dir(RUNBOOKS)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md") && name != "README.md")
        .collect();
    present.sort();
    let mut ordered: Vec<String> = ORDER.iter().map(|s| s.to_string()).collect();
    ordered.sort();
    assert_eq!(present, ordered, "a runbook the test does not run, or one it runs that is gone");
    let index = std::fs::read_to_string(Path::new(RUNBOOKS).join("README.md")).unwrap();
    for runbook in ORDER {
        assert!(index.contains(&format!("]({runbook})")), "README.md does not list {runbook}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runbooks_run_against_a_real_router_and_victoriametrics() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, vm_a) = start_victoria_metrics(dir.path(), "vm-a").await;
    let (_b, vm_b) = start_victoria_metrics(dir.path(), "vm-b").await;
    let (_new, vm_new) = start_victoria_metrics(dir.path(), "vm-new").await;
    // What newco's data on its new instance will be (copied there beforehand).
    let put = client().post(format!("http://{vm_a}/api/v1/import/prometheus")).body("runbook_moved 1\n").send().await;
    assert_eq!(put.unwrap().status(), 204);
    force_flush(vm_a).await;

    let admin_token = dir.path().join("admin.token");
    std::fs::write(&admin_token, "runbook-admin-token\n").unwrap();
    let old_token = "old-acme-token-0123456789abcdef";
    let acme_tokens = dir.path().join("acme.tokens");
    std::fs::write(&acme_tokens, format!("{}\n", sha256_hex(old_token))).unwrap();
    let (acme_vm, flaky_vm) = (Upstream::start("acme-vm").await, Upstream::start("flaky-vm").await);
    let gone = free_addr(); // a decommissioned replica: nothing listens
    let router = RouterProcess::builder()
        .admin_extra(format!("token_file = \"{}\"", admin_token.display()))
        .tenants(format!(
            "[tenants.acme.metrics]\nendpoints = [\"{}\"]\n\
             [tenants.acme.auth]\nbearer_tokens_sha256_file = \"{}\"\n\
             [tenants.flaky.metrics]\nendpoints = [\"{}\", \"http://{gone}\"]\n",
            acme_vm.url(),
            acme_tokens.display(),
            flaky_vm.url()
        ))
        .start();
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_mirador-router"));
    let env = Env {
        vars: vec![
            ("ADMIN", format!("http://{}", router.admin)),
            ("AUTH", "Authorization: Bearer runbook-admin-token".into()),
            ("ROUTER", router.base("unified")),
            ("CONFIG", router.config_path.display().to_string()),
            ("VM_A", format!("http://{vm_a}")),
            ("VM_B", format!("http://{vm_b}")),
            ("VM_NEW", format!("http://{vm_new}")),
            ("ACME_TOKENS", acme_tokens.display().to_string()),
            ("OLD_TOKEN", old_token.into()),
        ],
        path: format!("{}:{}", binary.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default()),
    };
    let bearer = |token: &str| format!("Bearer {token}");
    let admin = |path: &str| {
        let url = format!("http://{}{path}", router.admin);
        async move {
            let r = client().get(url).header("authorization", bearer("runbook-admin-token")).send().await.unwrap();
            let status = r.status().as_u16();
            (status, serde_json::from_slice::<serde_json::Value>(&r.bytes().await.unwrap()).unwrap())
        }
    };

    run(ORDER[0], &env);
    let (status, newco) = admin("/api/v1/tenants/newco").await;
    assert_eq!((status, &newco["metrics"]["endpoints"]), (200, &serde_json::json!([format!("http://{vm_b}")])));

    run(ORDER[1], &env);
    let (_, newco) = admin("/api/v1/tenants/newco").await;
    assert_eq!(newco["metrics"]["endpoints"], serde_json::json!([format!("http://{vm_a}")]), "moved");

    run(ORDER[2], &env);
    let (_, flaky) = admin("/api/v1/tenants/flaky").await;
    assert_eq!(flaky["metrics"]["endpoints"], serde_json::json!([flaky_vm.url()]), "the gone replica is out");

    // Someone breaks the file; the reload is refused.
    let text = std::fs::read_to_string(&router.config_path).unwrap();
    let broken = text.replacen("[tenants.acme.metrics]\n", "[tenants.acme.metrics]\ntimeout = \"soon\"\n", 1);
    assert_ne!(broken, text);
    std::fs::write(&router.config_path, broken).unwrap();
    let refused = client()
        .post(format!("http://{}/api/v1/reload", router.admin))
        .header("authorization", bearer("runbook-admin-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    run(ORDER[3], &env);
    let (_, last) = admin("/api/v1/reload").await;
    assert_eq!(last["last"]["ok"], true, "{last}");
    let (_, acme) = admin("/api/v1/tenants/acme").await;
    assert_eq!(acme["metrics"]["timeout"], "10s", "{acme}");

    run(ORDER[4], &env);
    let tokens = std::fs::read_to_string(&acme_tokens).unwrap();
    assert_eq!(tokens.lines().count(), 1, "only the new digest is left: {tokens}");
    assert!(!tokens.contains(&sha256_hex(old_token)));
    let old = client()
        .get(format!("{}/api/v1/labels", router.base("unified")))
        .header("authorization", bearer(old_token))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 401);

    run(ORDER[5], &env);
    let (_, newco) = admin("/api/v1/tenants/newco").await;
    assert!(newco.get("status").is_none_or(|s| s == "active"), "resumed: {newco}");
    assert_eq!(served(&router, "newco").await, 200);

    run(ORDER[6], &env);
    let (_, newco) = admin("/api/v1/tenants/newco").await;
    assert_eq!(newco["metrics"]["endpoints"], serde_json::json!([format!("http://{vm_new}")]), "migrated");
    assert!(newco["metrics"].get("migration").is_none(), "{newco}");
    // The history came along: what was on A is on the new instance.
    let series = |vm: std::net::SocketAddr| async move {
        let url = format!("http://{vm}/api/v1/series?match[]=runbook_moved");
        let r = client().get(url).send().await.unwrap();
        serde_json::from_slice::<serde_json::Value>(&r.bytes().await.unwrap()).unwrap()["data"].clone()
    };
    assert_eq!(series(vm_new).await.as_array().map(Vec::len), Some(1));
    assert_eq!(series(vm_a).await, series(vm_new).await);
}

async fn served(router: &RouterProcess, tenant: &str) -> u16 {
    let r =
        client().get(format!("{}/api/v1/labels", router.base("unified"))).header("X-Tenant-ID", tenant).send().await;
    r.unwrap().status().as_u16()
}
