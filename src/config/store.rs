//! `[store]`: where tenants and tiers live — the config file (the default)
//! or etcd, one key per tenant and per tier under a prefix, shared by every
//! router of a fleet. Only the settings are validated here; the etcd client
//! and the merge of its keys into the config are `crate::store`'s.

use super::check::{duration, Problems, UP_TO_FIVE_MINUTES};
use super::error::KeyPath;
use super::inputs::Inputs;
use super::model::{EtcdSettings, Secret, Store};
use super::raw::{RawStore, StoreKind};
use std::time::Duration;

/// At most this many etcd endpoints: a cluster has 3 or 5 members.
pub const MAX_STORE_ENDPOINTS: usize = 16;
/// The longest key prefix accepted.
pub const MAX_PREFIX_BYTES: usize = 256;

pub(super) fn store(raw: RawStore, path: &KeyPath, inputs: &Inputs, problems: &mut Problems) -> Store {
    let RawStore { kind, endpoints, prefix, username, password_env, password_file, timeout } = raw;
    let timeout =
        duration(timeout.as_deref(), Duration::from_secs(2), UP_TO_FIVE_MINUTES, &path.key("timeout"), problems);
    if kind.unwrap_or_default() == StoreKind::File {
        let etcd_keys = [endpoints.is_some(), prefix.is_some(), username.is_some(), password_env.is_some()];
        if etcd_keys.into_iter().any(|set| set) || password_file.is_some() {
            problems
                .add(path, "endpoints, prefix and credentials are etcd settings: set kind = \"etcd\" or remove them");
        }
        return Store::File;
    }
    let endpoints = endpoints.unwrap_or_default();
    if endpoints.is_empty() || endpoints.len() > MAX_STORE_ENDPOINTS {
        problems.add(
            &path.key("endpoints"),
            format!("needs 1 to {MAX_STORE_ENDPOINTS} etcd endpoints such as \"http://127.0.0.1:2379\""),
        );
    }
    for (i, endpoint) in endpoints.iter().enumerate() {
        let ok = url::Url::parse(endpoint).is_ok_and(|url| {
            url.scheme() == "http" && url.host().is_some() && url.port_or_known_default().is_some() && url.path() == "/"
        });
        if !ok {
            problems.add(
                &path.key("endpoints").index(i),
                format!(
                    "{endpoint:?} is not an etcd endpoint; expected http://host:port (TLS to etcd is not supported)"
                ),
            );
        }
    }
    let prefix = prefix.unwrap_or_else(|| "/mirador/".to_string());
    let printable = prefix.bytes().all(|b| b.is_ascii_graphic());
    if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix.len() > MAX_PREFIX_BYTES || !printable {
        problems.add(
            &path.key("prefix"),
            format!("{prefix:?}: must start and end with \"/\", be printable ASCII without spaces and at most {MAX_PREFIX_BYTES} bytes"),
        );
    }
    let credentials = match (username, password_env, password_file) {
        (None, None, None) => None,
        (Some(user), env, file) => {
            let password = match (env, file) {
                (Some(name), None) => inputs
                    .env(&name)
                    .map(str::to_string)
                    .ok_or_else(|| format!("environment variable {name} is not set")),
                (None, Some(file)) => inputs.text(&file).map(|text| text.trim().to_string()),
                (Some(_), Some(_)) => Err("set password_env or password_file, not both".to_string()),
                (None, None) => Err("username needs password_env or password_file".to_string()),
            };
            match password {
                Ok(password) if !password.is_empty() && !user.is_empty() => Some((user, Secret(password))),
                Ok(_) => {
                    problems.add(path, "the etcd username and password must not be empty");
                    None
                }
                Err(why) => {
                    problems.add(path, why);
                    None
                }
            }
        }
        (None, _, _) => {
            problems.add(&path.key("username"), "a password needs a username");
            None
        }
    };
    Store::Etcd(EtcdSettings { endpoints, prefix, credentials, timeout })
}
