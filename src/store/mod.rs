//! The tenant store of a fleet: with `[store] kind = "etcd"` tenants and
//! tiers are one etcd key each under a prefix, read by every router, and the
//! config file keeps only the router's own settings.
//!
//! A [`Snapshot`] is the prefix at one etcd revision. It becomes config
//! [`Layer`]s, validated with the file like one document
//! (`config::parse_layered`), and a merged TOML document the admin API reads
//! and edits like the file. Writes are compare-and-swap on a key's revision
//! ([`etcd::EtcdStore::write`]), so of two concurrent changes one wins and
//! the other is told, never lost. The watch ([`etcd::watch`]) turns every
//! change into one reload through the same path as SIGHUP.

pub mod etcd;
pub mod transfer;

use crate::config::{EtcdSettings, Layer, Section};
use std::collections::BTreeMap;

pub use etcd::{EtcdStore, StoreError};

/// One key of the prefix: its TOML and the revision it was last written at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: String,
    pub mod_revision: i64,
}

/// The store's keys at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub revision: i64,
    /// Full key → entry.
    pub entries: BTreeMap<String, Entry>,
}

impl Snapshot {
    /// The config layers of this snapshot: `<prefix>tenants/<id>` and
    /// `<prefix>tiers/<name>` keys; other keys under the prefix are not ours
    /// and are left alone.
    pub fn layers(&self, settings: &EtcdSettings) -> Vec<Layer> {
        self.entries
            .iter()
            .filter_map(|(key, entry)| {
                let rest = key.strip_prefix(&settings.prefix)?;
                let (section, id) = match rest.split_once('/')? {
                    ("tenants", id) => (Section::Tenants, id),
                    ("tiers", name) => (Section::Tiers, name),
                    _ => return None,
                };
                (!id.is_empty() && !id.contains('/')).then(|| Layer {
                    name: format!("etcd:{key}"),
                    section,
                    id: id.to_string(),
                    text: entry.value.clone(),
                })
            })
            .collect()
    }

    /// The revision `key` was last written at; 0 when it does not exist
    /// (what etcd compares a missing key's revision as).
    pub fn mod_revision(&self, key: &str) -> i64 {
        self.entries.get(key).map_or(0, |e| e.mod_revision)
    }

    /// This snapshot after a write of `key` (a delete when `value` is `None`) at `revision`.
    pub fn with(mut self, key: &str, value: Option<String>, revision: i64) -> Snapshot {
        match value {
            Some(value) => drop(self.entries.insert(key.to_string(), Entry { value, mod_revision: revision })),
            None => drop(self.entries.remove(key)),
        }
        self.revision = self.revision.max(revision);
        self
    }
}

/// The config file with the layers' tables put in: the one document the
/// admin API lists, reads and edits, as it does the file without a store.
pub fn merged_document(file_text: &str, layers: &[Layer]) -> Result<toml_edit::DocumentMut, String> {
    let mut doc: toml_edit::DocumentMut =
        file_text.parse().map_err(|e| format!("the config file is not valid TOML: {e}"))?;
    for layer in layers {
        let value: toml_edit::DocumentMut =
            layer.text.parse().map_err(|e| format!("{} is not valid TOML: {e}", layer.name))?;
        let section = doc
            .entry(layer.section.key())
            .or_insert_with(|| {
                let mut table = toml_edit::Table::new();
                table.set_implicit(true);
                toml_edit::Item::Table(table)
            })
            .as_table_mut()
            .ok_or_else(|| format!("{} is not a table in the config file", layer.section.key()))?;
        let mut table = value.as_table().clone();
        table.set_implicit(false);
        section.insert(&layer.id, toml_edit::Item::Table(table));
    }
    Ok(doc)
}

/// The TOML of one table as a document of its own: what a key holds.
pub fn table_text(item: &toml_edit::Item) -> Option<String> {
    let table = match item {
        toml_edit::Item::Table(table) => table.clone(),
        toml_edit::Item::Value(toml_edit::Value::InlineTable(inline)) => inline.clone().into_table(),
        _ => return None,
    };
    let mut doc = toml_edit::DocumentMut::new();
    for (key, value) in table.iter() {
        doc.insert(key, value.clone());
    }
    Some(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EtcdSettings {
        EtcdSettings {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/mirador/".into(),
            credentials: None,
            timeout: std::time::Duration::from_secs(1),
        }
    }

    fn snapshot(entries: &[(&str, &str)]) -> Snapshot {
        let entries = entries
            .iter()
            .enumerate()
            .map(|(i, (k, v))| (k.to_string(), Entry { value: v.to_string(), mod_revision: i as i64 + 2 }))
            .collect();
        Snapshot { revision: 9, entries }
    }

    #[test]
    fn keys_become_layers_and_foreign_keys_are_left_alone() {
        let snap = snapshot(&[
            ("/mirador/tenants/acme", "[metrics]\nendpoints = [\"http://127.0.0.1:8428\"]\n"),
            ("/mirador/tiers/gold", "quotas = { requests_per_second = 5 }\n"),
            ("/mirador/other/x", "junk"),
            ("/mirador/tenants/a/b", "junk"),
        ]);
        let layers = snap.layers(&settings());
        let named: Vec<_> = layers.iter().map(|l| (l.section, l.id.as_str(), l.name.as_str())).collect();
        assert_eq!(
            named,
            [
                (Section::Tenants, "acme", "etcd:/mirador/tenants/acme"),
                (Section::Tiers, "gold", "etcd:/mirador/tiers/gold")
            ]
        );
        assert_eq!(snap.mod_revision("/mirador/tenants/acme"), 2);
        assert_eq!(snap.mod_revision("/mirador/tenants/none"), 0);
    }

    #[test]
    fn the_merged_document_is_the_config_with_every_key_and_a_table_round_trips() {
        let file = "# router\n[admin]\nlisten = \"127.0.0.1:9091\"\n";
        let value = "tier = \"gold\"\n[metrics]\nendpoints = [\"http://127.0.0.1:8428\"]\n";
        let snap = snapshot(&[("/mirador/tenants/acme", value), ("/mirador/tiers/gold", "[quotas]\nburst = 3\n")]);
        let doc = merged_document(file, &snap.layers(&settings())).unwrap();
        let parsed: toml::Table = toml::from_str(&doc.to_string()).unwrap();
        assert_eq!(parsed["tenants"]["acme"]["metrics"]["endpoints"][0].as_str(), Some("http://127.0.0.1:8428"));
        assert_eq!(parsed["tiers"]["gold"]["quotas"]["burst"].as_integer(), Some(3));
        assert!(doc.to_string().starts_with("# router"), "the file's comments are kept");
        let back = table_text(&doc["tenants"]["acme"]).unwrap();
        assert_eq!(toml::from_str::<toml::Table>(&back).unwrap(), toml::from_str::<toml::Table>(value).unwrap());
    }
}
