//! What the binary does with the store outside serving: open it at start-up
//! (the file's settings with every tenant and tier from etcd), and
//! `mirador-router store import|export` between a TOML file and etcd.

use super::{merged_document, table_text, EtcdStore, Snapshot, StoreError};
use crate::config::{self, Config, EtcdSettings, Layer, Section};
use std::sync::Arc;

/// The store, opened: the validated config, its merged text and the snapshot it was read from.
pub struct Opened {
    pub store: Arc<EtcdStore>,
    pub config: Config,
    pub text: String,
    pub snapshot: Snapshot,
}

/// Connects to etcd and reads the config file `text` (named `file`) with
/// the tenants and tiers stored there; every error as a line.
pub fn open(settings: &EtcdSettings, file: &str, text: &str) -> Result<Opened, Vec<String>> {
    let store = EtcdStore::connect(settings.clone()).map_err(|e| vec![e.to_string()])?;
    let snapshot = store.snapshot().map_err(|e| vec![e.to_string()])?;
    let layers = snapshot.layers(settings);
    let config = config::parse_layered(file, text, &layers).map_err(|errors| lines(&errors))?;
    let text = merged_document(text, &layers).map_err(|e| vec![e])?.to_string();
    Ok(Opened { store, config, text, snapshot })
}

fn lines(errors: &[config::ConfigError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

/// Writes the tenants and tiers of the TOML file `from` (a router config, or
/// a file of `[tenants]`/`[tiers]` only) to etcd, after validating them with
/// the config file and what etcd holds already. A key that exists is
/// replaced only with `overwrite`; each write is a compare-and-swap, so a
/// concurrent change is reported, not lost. Returns what was written.
pub fn import(
    store: &EtcdStore,
    file: &str,
    text: &str,
    from: &str,
    from_text: &str,
    overwrite: bool,
) -> Result<Vec<String>, Vec<String>> {
    let doc: toml_edit::DocumentMut = from_text.parse().map_err(|e| vec![format!("{from}: not valid TOML: {e}")])?;
    let snapshot = store.snapshot().map_err(|e| vec![e.to_string()])?;
    let settings = store.settings();
    let mut imported = Vec::new();
    for section in [Section::Tiers, Section::Tenants] {
        let Some(table) = doc.get(section.key()).and_then(|item| item.as_table_like()) else { continue };
        for (id, item) in table.iter() {
            let key = match section {
                Section::Tenants => settings.tenant_key(id),
                Section::Tiers => settings.tier_key(id),
            };
            let text =
                table_text(item).ok_or_else(|| vec![format!("{from}: {}.{id} is not a table", section.key())])?;
            imported.push((
                key,
                Layer { name: format!("{from} ({}.{id})", section.key()), section, id: id.to_string(), text },
            ));
        }
    }
    if imported.is_empty() {
        return Err(vec![format!("{from} has no [tenants] or [tiers] to import")]);
    }
    let mut layers: Vec<Layer> = snapshot
        .layers(settings)
        .into_iter()
        .filter(|held| !imported.iter().any(|(_, new)| new.section == held.section && new.id == held.id))
        .collect();
    layers.extend(imported.iter().map(|(_, layer)| layer.clone()));
    config::parse_layered(file, text, &layers).map_err(|errors| lines(&errors))?;
    let mut written = Vec::new();
    for (key, layer) in &imported {
        let held = snapshot.mod_revision(key);
        if held != 0 && !overwrite {
            return Err(vec![format!(
                "{key} exists in etcd already; --overwrite replaces it (written so far: {written:?})"
            )]);
        }
        match store.write(key, Some(&layer.text), held) {
            Ok(_) => written.push(key.clone()),
            Err(e @ StoreError::Conflict { .. }) => return Err(vec![format!("{e} (written so far: {written:?})")]),
            Err(e) => return Err(vec![format!("{e} (written so far: {written:?})")]),
        }
    }
    Ok(written)
}

/// Every tenant and tier in etcd as one TOML document of `[tiers]` and `[tenants]`.
pub fn export(store: &EtcdStore) -> Result<String, String> {
    let snapshot = store.snapshot().map_err(|e| e.to_string())?;
    Ok(merged_document("", &snapshot.layers(store.settings()))?.to_string())
}
