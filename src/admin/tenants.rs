//! Tenant JSON ⇄ `[tenants.<id>]` tables.
//!
//! A tenant's JSON is its TOML table as JSON plus its `id`. Incoming JSON is
//! turned into a `toml_edit` table and put into the config document; the
//! whole document is then validated exactly like the file (so errors carry
//! the same key paths, `tenants.acme.metrics.endpoints[1]`). Outgoing JSON is
//! read from the text of the config in force.

use crate::config::check_tenant_id;
use crate::reload::MutationError;
use serde_json::{Map, Value};
use toml_edit::{Array, DocumentMut, InlineTable, Item, Table};

/// Sub-tables written as `[tenants.<id>.<key>]` sections; deeper ones inline.
const SECTIONS: [&str; 5] = ["metrics", "logs", "traces", "quotas", "features"];

fn bad_body(message: impl Into<String>) -> MutationError {
    MutationError::BadBody(message.into())
}

/// Every tenant of the config text, as JSON.
pub fn list(text: &str) -> Vec<Value> {
    tenants_of(text).into_iter().map(|(id, table)| with_id(&id, table)).collect()
}

/// One tenant of the config text, as JSON.
pub fn get(text: &str, id: &str) -> Option<Value> {
    tenants_of(text).remove(id).map(|table| with_id(id, table))
}

fn tenants_of(text: &str) -> Map<String, Value> {
    let parsed: toml::Table = toml::from_str(text).unwrap_or_default();
    match parsed.get("tenants").map(serde_json::to_value) {
        Some(Ok(Value::Object(tenants))) => tenants,
        _ => Map::new(),
    }
}

fn with_id(id: &str, table: Value) -> Value {
    let mut object = Map::new();
    object.insert("id".into(), Value::from(id));
    if let Value::Object(fields) = table {
        object.extend(fields);
    }
    Value::Object(object)
}

/// The tenant id and TOML table of a request body. `path_id` is the id in
/// the URL (PUT); a body id must then match it.
pub fn from_json(body: &[u8], path_id: Option<&str>) -> Result<(String, Item), MutationError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| bad_body(format!("the body is not JSON: {e}")))?;
    let Value::Object(mut fields) = value else {
        return Err(bad_body("the body must be a JSON object: the tenant's table plus its id"));
    };
    let body_id = match fields.remove("id") {
        None => None,
        Some(Value::String(id)) => Some(id),
        Some(_) => return Err(bad_body("id: must be a string")),
    };
    let id = match (path_id, body_id) {
        (Some(path), Some(body)) if path != body => {
            return Err(bad_body(format!("id: {body:?} in the body does not match {path:?} in the path")))
        }
        (Some(path), _) => path.to_string(),
        (None, Some(body)) => body,
        (None, None) => return Err(bad_body("id: missing")),
    };
    check_tenant_id(&id).map_err(|why| bad_body(format!("id: {why}")))?;
    let mut table = Table::new();
    table.set_implicit(true);
    for (key, value) in fields {
        let path = format!("tenants.{id}.{key}");
        let item = match value {
            Value::Object(inner) if SECTIONS.contains(&key.as_str()) => {
                let mut section = Table::new();
                for (inner_key, inner_value) in inner {
                    section.insert(&inner_key, Item::Value(to_value(inner_value, &format!("{path}.{inner_key}"))?));
                }
                Item::Table(section)
            }
            other => {
                table.set_implicit(false);
                Item::Value(to_value(other, &path)?)
            }
        };
        table.insert(&key, item);
    }
    Ok((id, Item::Table(table)))
}

/// A JSON value as a TOML value; objects become inline tables.
fn to_value(value: Value, path: &str) -> Result<toml_edit::Value, MutationError> {
    Ok(match value {
        Value::Null => return Err(bad_body(format!("{path}: null is not a value; leave the field out"))),
        Value::Bool(b) => b.into(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.into(),
            (None, Some(f)) => f.into(),
            _ => return Err(bad_body(format!("{path}: {n} is out of range"))),
        },
        Value::String(s) => s.into(),
        Value::Array(items) => {
            let mut array = Array::new();
            for (i, item) in items.into_iter().enumerate() {
                array.push(to_value(item, &format!("{path}[{i}]"))?);
            }
            array.into()
        }
        Value::Object(fields) => {
            let mut table = InlineTable::new();
            for (key, item) in fields {
                table.insert(&key, to_value(item, &format!("{path}.{key}"))?);
            }
            table.into()
        }
    })
}

/// The `[tenants]` table of the document, created (implicit) when missing.
fn tenants_table(doc: &mut DocumentMut) -> Result<&mut Table, MutationError> {
    let entry = doc.entry("tenants").or_insert_with(|| {
        let mut table = Table::new();
        table.set_implicit(true);
        Item::Table(table)
    });
    entry.as_table_mut().ok_or(MutationError::NotATable)
}

pub fn create(doc: &mut DocumentMut, id: &str, item: Item) -> Result<(), MutationError> {
    let tenants = tenants_table(doc)?;
    if tenants.contains_key(id) {
        return Err(MutationError::TenantExists(id.to_string()));
    }
    tenants.insert(id, item);
    Ok(())
}

pub fn replace(doc: &mut DocumentMut, id: &str, item: Item) -> Result<(), MutationError> {
    let tenants = tenants_table(doc)?;
    if !tenants.contains_key(id) {
        return Err(MutationError::UnknownTenant(id.to_string()));
    }
    tenants.insert(id, item);
    Ok(())
}

pub fn delete(doc: &mut DocumentMut, id: &str) -> Result<(), MutationError> {
    let tenants = tenants_table(doc)?;
    tenants.remove(id).map(|_| ()).ok_or_else(|| MutationError::UnknownTenant(id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_through_the_toml_table() {
        let body = br#"{"id":"acme","name":"ACME","metrics":{"endpoints":["http://127.0.0.1:8428"],"timeout":"5s","health_check":{"interval":"1s"}},"features":{"read_only":true}}"#;
        let (id, item) = from_json(body, None).unwrap();
        let mut doc: DocumentMut = "# keep me\n[server]\nthreads = 1\n".parse().unwrap();
        create(&mut doc, &id, item).unwrap();
        let text = doc.to_string();
        assert!(text.starts_with("# keep me\n[server]\nthreads = 1\n"), "{text}");
        assert!(text.contains("[tenants.acme.metrics]"), "{text}");
        let json = get(&text, "acme").unwrap();
        let expected: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(json, expected);
    }

    #[test]
    fn bad_bodies_are_refused_with_the_field() {
        let message = |body: &[u8], path: Option<&str>| match from_json(body, path) {
            Err(MutationError::BadBody(message)) => message,
            _ => panic!("accepted"),
        };
        assert!(message(b"{", None).starts_with("the body is not JSON"));
        assert_eq!(message(br#"{"name":"x"}"#, None), "id: missing");
        assert_eq!(message(br#"{"id":"a"}"#, Some("b")), "id: \"a\" in the body does not match \"b\" in the path");
        assert_eq!(
            message(br#"{"id":"a","metrics":{"timeout":null}}"#, None),
            "tenants.a.metrics.timeout: null is not a value; leave the field out"
        );
        assert!(message(br#"{"id":"a b"}"#, None).starts_with("id: tenant id \"a b\" must be"));
    }
}
