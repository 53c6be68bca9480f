//! Tiers: `[tiers.<name>]` holds quotas, features, health-check overrides
//! and per-signal `timeout`/`max_attempts` that every tenant naming the
//! tier (`tier = "<name>"`, else `tenancy.default_tier`) inherits, key by
//! key: a key the tenant sets itself wins.
//!
//! Each tier is validated on its own first, its errors at `tiers.<name>…`;
//! only a tier without errors is inherited, so one bad value is reported
//! once, at the tier, not again at every tenant in it. Inheritance works on
//! the file format ([`inherit`]): the merged tenant is then validated as if
//! it had written every key itself, and the admin API's `?effective=true`
//! shows that merged table.

use super::check::{check_tenant_id, Problems};
use super::deployment::{attempts, health_check_settings, quotas};
use super::error::KeyPath;
use super::model::HealthCheck;
use super::raw::{RawFeatures, RawHealthCheck, RawQuotas, RawTenant, RawTier, RawTierSignal};
use crate::api::Signal;
use std::collections::{BTreeMap, BTreeSet};

/// Validates every tier; the names of those without an error.
pub(super) fn tiers(
    raw: &BTreeMap<String, RawTier>,
    health_check: &HealthCheck,
    problems: &mut Problems,
) -> BTreeSet<String> {
    let mut clean = BTreeSet::new();
    for (name, tier) in raw {
        let before = problems.0.len();
        let path = KeyPath::root().key("tiers").key(name);
        if let Err(why) = check_tenant_id(name) {
            problems.add(&path, why.replace("tenant id", "tier name"));
        }
        let RawTier { quotas: tier_quotas, features, health_check: tier_health, metrics, logs, traces } = tier;
        quotas(tier_quotas.clone(), &path.key("quotas"), problems);
        let RawFeatures { signals: _, read_only, admin_api } = features;
        if read_only.unwrap_or(false) && admin_api.as_ref().is_some_and(|ops| !ops.is_empty()) {
            problems.add(
                &path.key("features").key("admin_api"),
                "a read-only tier cannot grant admin operations: drop read_only or admin_api",
            );
        }
        if let Some(raw) = tier_health {
            health_check_settings(raw.clone(), health_check, &path.key("health_check"), problems);
        }
        for (signal, settings) in [(Signal::Metrics, metrics), (Signal::Logs, logs), (Signal::Traces, traces)] {
            if let Some(RawTierSignal { timeout, max_attempts }) = settings {
                attempts(timeout.as_deref(), *max_attempts, &path.key(signal.as_str()), problems);
            }
        }
        if problems.0.len() == before {
            clean.insert(name.clone());
        }
    }
    clean
}

/// The tier a tenant inherits from, checked: its own `tier`, else the
/// default. `Err(())` when it names a tier that does not exist (reported).
pub(super) fn tier_of<'t>(
    tenant: &RawTenant,
    default: Option<&str>,
    tiers: &'t BTreeMap<String, RawTier>,
    path: &KeyPath,
    problems: &mut Problems,
) -> Result<Option<&'t RawTier>, ()> {
    let Some(name) = tenant.tier.as_deref().or(default) else { return Ok(None) };
    match tiers.get(name) {
        Some(tier) => Ok(Some(tier)),
        None if tenant.tier.is_some() => {
            problems.add(&path.key("tier"), no_such_tier(name, tiers));
            Err(())
        }
        // A missing default tier is reported once, at tenancy.default_tier.
        None => Err(()),
    }
}

/// The error for a tier name no `[tiers.<name>]` defines.
pub(super) fn no_such_tier(name: &str, tiers: &BTreeMap<String, RawTier>) -> String {
    let known: Vec<&str> = tiers.keys().map(String::as_str).collect();
    let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
    format!("no tier {name:?} (tiers: {known})")
}

/// `tenant` with every key `tier` sets and the tenant does not. Returns
/// whether the tenant's `features.signals` came from the tier (then they
/// allow signals rather than demand deployments for them).
pub fn inherit(tenant: &mut RawTenant, tier: &RawTier) -> bool {
    let RawTier { quotas, features, health_check, metrics, logs, traces } = tier;
    inherit_quotas(&mut tenant.quotas, quotas);
    let inherited_signals = tenant.features.signals.is_none() && features.signals.is_some();
    let RawFeatures { signals, read_only, admin_api } = &mut tenant.features;
    or_take(signals, &features.signals);
    or_take(read_only, &features.read_only);
    or_take(admin_api, &features.admin_api);
    for (deployment, settings) in
        [(&mut tenant.metrics, metrics), (&mut tenant.logs, logs), (&mut tenant.traces, traces)]
    {
        let Some(deployment) = deployment else { continue };
        if let Some(RawTierSignal { timeout, max_attempts }) = settings {
            or_take(&mut deployment.timeout, timeout);
            or_take(&mut deployment.max_attempts, max_attempts);
        }
        if let Some(tier_health) = health_check {
            let own = deployment.health_check.get_or_insert_with(RawHealthCheck::default);
            inherit_health_check(own, tier_health);
        }
    }
    inherited_signals
}

fn inherit_quotas(own: &mut RawQuotas, tier: &RawQuotas) {
    let RawQuotas { requests_per_second, burst, max_concurrent_requests, max_body_bytes } = own;
    or_take(requests_per_second, &tier.requests_per_second);
    or_take(burst, &tier.burst);
    or_take(max_concurrent_requests, &tier.max_concurrent_requests);
    or_take(max_body_bytes, &tier.max_body_bytes);
}

fn inherit_health_check(own: &mut RawHealthCheck, tier: &RawHealthCheck) {
    let RawHealthCheck {
        interval,
        timeout,
        path,
        healthy_threshold,
        unhealthy_threshold,
        passive_failures,
        ejection_cooldown,
    } = own;
    or_take(interval, &tier.interval);
    or_take(timeout, &tier.timeout);
    or_take(path, &tier.path);
    or_take(healthy_threshold, &tier.healthy_threshold);
    or_take(unhealthy_threshold, &tier.unhealthy_threshold);
    or_take(passive_failures, &tier.passive_failures);
    or_take(ejection_cooldown, &tier.ejection_cooldown);
}

fn or_take<T: Clone>(own: &mut Option<T>, tier: &Option<T>) {
    if own.is_none() {
        own.clone_from(tier);
    }
}

/// Tenant `id` of the config `text` with its tier's keys inherited, as
/// JSON (the admin API's `?effective=true`); `None` when there is no such
/// tenant. Defaults the router applies beyond the tier are not shown.
pub fn effective_tenant(text: &str, id: &str) -> Option<serde_json::Value> {
    let mut raw: super::raw::RawConfig = toml::from_str(text).ok()?;
    let mut tenant = raw.tenants.remove(id)?;
    let tier_name = tenant.tier.clone().or(raw.tenancy.default_tier.clone());
    if let Some(tier) = tier_name.as_ref().and_then(|name| raw.tiers.get(name)) {
        inherit(&mut tenant, tier);
        tenant.tier = tier_name;
    }
    let mut value = serde_json::to_value(&tenant).ok()?;
    drop_nulls(&mut value);
    let serde_json::Value::Object(fields) = value else { return None };
    let mut object = serde_json::Map::new();
    object.insert("id".into(), id.into());
    object.extend(fields);
    Some(serde_json::Value::Object(object))
}

/// Removes absent keys (`null`) and the empty tables they leave.
fn drop_nulls(value: &mut serde_json::Value) {
    if let serde_json::Value::Object(fields) = value {
        fields.values_mut().for_each(drop_nulls);
        fields.retain(|_, v| !v.is_null() && v.as_object().is_none_or(|o| !o.is_empty()));
    }
}
