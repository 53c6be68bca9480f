//! Tiers against the real router: a tier's settings reach every tenant in
//! it, a tier changed by SIGHUP changes all of them at once, and a change
//! that leaves their quotas alone keeps their rate buckets; the admin API
//! shows a tenant's own table and, with `?effective=true`, the merged one.

mod common;

use common::*;

/// Two tenants in tier `gold` (rate 1/s, burst 2), whose other keys come
/// from `gold_features`.
fn tenants(alpha: &Upstream, beta: &Upstream, gold_features: &str) -> String {
    format!(
        "[tiers.gold]\nquotas = {{ requests_per_second = 1, burst = 2 }}\nfeatures = {{ {gold_features} }}\n\
         [tenants.alpha]\ntier = \"gold\"\n[tenants.alpha.metrics]\nendpoints = [\"{}\"]\n\
         [tenants.beta]\ntier = \"gold\"\nfeatures = {{ read_only = false }}\n[tenants.beta.metrics]\nendpoints = [\"{}\"]\n",
        alpha.url(),
        beta.url()
    )
}

async fn status(router: &RouterProcess, method: &str, path: &str, tenant: &str) -> u16 {
    let url = format!("{}{path}", router.base("unified"));
    let request = match method {
        "POST" => client().post(url).body("x 1\n"),
        _ => client().get(url),
    };
    request.header("X-Tenant-ID", tenant).send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tier_change_reaches_every_tenant_in_it_and_keeps_their_buckets() {
    let (alpha, beta) = (Upstream::start("alpha").await, Upstream::start("beta").await);
    let router = RouterProcess::start(&tenants(&alpha, &beta, "read_only = false"));
    let query = "/api/v1/query?query=up";

    // The tier's rate: a burst of 2, then 429, for each tenant on its own.
    for tenant in ["alpha", "beta"] {
        assert_eq!(status(&router, "GET", query, tenant).await, 200, "{tenant}");
        assert_eq!(status(&router, "GET", query, tenant).await, 200, "{tenant}");
        assert_eq!(status(&router, "GET", query, tenant).await, 429, "{tenant}: the tier's burst is 2");
    }

    // The tier becomes read-only by SIGHUP: alpha (inheriting) stops writing,
    // beta (its own read_only = false) goes on; quotas unchanged, so the
    // buckets emptied before the reload are still empty after it.
    router.write_tenants(&tenants(&alpha, &beta, "read_only = true"));
    router.signal("HUP");
    router.wait_for_log("config reloaded", 1);
    assert_eq!(status(&router, "GET", query, "alpha").await, 429, "alpha's bucket kept across the reload");
    assert_eq!(status(&router, "GET", query, "beta").await, 429, "beta's bucket kept across the reload");
    // (Read-only is decided before quotas: no token needed to be refused.)
    assert_eq!(status(&router, "POST", "/api/v1/write", "alpha").await, 403, "read-only from the tier");
    let refill = Wait::new("beta's bucket to refill at 1/s", std::time::Duration::from_secs(5));
    let written = refill
        .until_async(|| async {
            let code = status(&router, "POST", "/api/v1/write", "beta").await;
            (code != 429).then_some(code)
        })
        .await;
    assert_eq!(written, 200, "beta's own key wins over the tier's");
    assert!(alpha.seen().iter().all(|s| s.method == "GET"), "no write reached alpha");

    // Own table and effective one.
    let (code, own) = router.admin_get("/api/v1/tenants/alpha").await;
    assert_eq!(code, 200);
    assert_eq!(own["tier"], "gold");
    assert!(own.get("quotas").is_none() && own.get("features").is_none(), "{own}");
    let (code, effective) = router.admin_get("/api/v1/tenants/alpha?effective=true").await;
    assert_eq!(code, 200);
    assert_eq!(effective["quotas"], serde_json::json!({ "requests_per_second": 1, "burst": 2 }));
    assert_eq!(effective["features"]["read_only"], true);
    let (_, effective) = router.admin_get("/api/v1/tenants/beta?effective=true").await;
    assert_eq!(effective["features"]["read_only"], false, "beta's own key");

    // A tenant created through the API into the tier inherits it at once.
    let gamma_vm = Upstream::start("gamma").await;
    let body = serde_json::json!({ "id": "gamma", "tier": "gold", "metrics": { "endpoints": [gamma_vm.url()] } });
    let (code, answer) = router.admin("POST", "/api/v1/tenants", Some(&body.to_string())).await;
    assert_eq!(code, 201, "{answer}");
    assert_eq!(status(&router, "POST", "/api/v1/write", "gamma").await, 403, "gamma is read-only by its tier");
}
