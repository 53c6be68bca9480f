//! Whether two deployments answered a read the same: the answers are
//! normalised, then compared as values.
//!
//! - A JSON document (the Prometheus querying API, VictoriaLogs' hits and
//!   field lists, Jaeger's JSON): `stats` objects are dropped (they count
//!   the work done, not the answer), arrays of series (`{"metric": …}`) are
//!   sorted by their labels, and every number — including the
//!   string-formatted sample values `"1"`, `"1.0"`, `"1e0"` — is compared as
//!   the float it stands for.
//! - JSON lines (LogsQL `/select/logsql/query`): each line normalised as
//!   above, the lines sorted (two deployments may return equal-time rows in
//!   any order).
//! - Anything else: the bytes.

use serde_json::{Map, Value};

/// Whether `a` and `b` are the same answer, once normalised.
pub fn same_answer(a: &[u8], b: &[u8]) -> bool {
    normalise(a) == normalise(b)
}

/// The normalised form of an answer: what [`same_answer`] compares.
pub fn normalise(body: &[u8]) -> Normalised {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        return Normalised::Json(canonical(value));
    }
    let Ok(text) = std::str::from_utf8(body) else { return Normalised::Bytes(body.to_vec()) };
    let lines: Option<Vec<Value>> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str::<Value>(line).ok().map(canonical))
        .collect();
    match lines {
        Some(mut lines) => {
            lines.sort_by_key(|line| line.to_string());
            Normalised::Lines(lines)
        }
        None => Normalised::Bytes(body.to_vec()),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Normalised {
    Json(Value),
    Lines(Vec<Value>),
    Bytes(Vec<u8>),
}

/// `value` with `stats` dropped, series sorted, numbers as floats.
fn canonical(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let map: Map<String, Value> =
                map.into_iter().filter(|(key, _)| key != "stats").map(|(key, value)| (key, canonical(value))).collect();
            Value::Object(map)
        }
        Value::Array(items) => {
            let mut items: Vec<Value> = items.into_iter().map(canonical).collect();
            if items.iter().all(|item| item.get("metric").is_some()) {
                items.sort_by_key(|item| item["metric"].to_string());
            }
            Value::Array(items)
        }
        Value::String(text) => match number(&text) {
            Some(n) => float(n),
            None => Value::String(text),
        },
        Value::Number(n) => n.as_f64().map_or(Value::Number(n), float),
        other => other,
    }
}

/// A sample value as Prometheus formats it: a float, `NaN`, `+Inf`, `-Inf`.
fn number(text: &str) -> Option<f64> {
    let looks_numeric = text.bytes().next().is_some_and(|b| b.is_ascii_digit() || b == b'-' || b == b'+' || b == b'.');
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ if looks_numeric => text.parse().ok(),
        _ => None,
    }
}

/// A float as a comparable JSON value (NaN and infinities, which JSON
/// numbers cannot hold, as tagged strings).
fn float(n: f64) -> Value {
    match serde_json::Number::from_f64(n) {
        // -0 and 0 are the same sample value.
        Some(_) if n == 0.0 => Value::from(0.0),
        Some(number) => Value::Number(number),
        None if n.is_nan() => Value::String("\u{0}NaN".into()),
        None => Value::String(format!("\u{0}{n}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_order_float_formatting_and_stats_do_not_count() {
        let a = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"job":"a"},"value":[1700000000,"1"]},{"metric":{"job":"b"},"value":[1700000000,"2.5"]}]},
            "stats":{"seriesFetched":"2"}}"#;
        let b = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"job":"b"},"value":[1700000000,"2.50"]},{"metric":{"job":"a"},"value":[1700000000,"1.0e0"]}]},
            "stats":{"seriesFetched":"9","executionTimeMsec":3}}"#;
        assert!(same_answer(a, b));
        let changed = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"job":"b"},"value":[1700000000,"2.5"]},{"metric":{"job":"a"},"value":[1700000000,"1.5"]}]}}"#;
        assert!(!same_answer(a, changed));
    }

    #[test]
    fn logsql_lines_compare_in_any_order() {
        let a = b"{\"_msg\":\"one\",\"_time\":\"t1\"}\n{\"_msg\":\"two\",\"_time\":\"t1\"}\n";
        let b = b"{\"_time\":\"t1\",\"_msg\":\"two\"}\n{\"_msg\":\"one\",\"_time\":\"t1\"}\n";
        assert!(same_answer(a, b));
        assert!(!same_answer(a, b"{\"_msg\":\"one\",\"_time\":\"t1\"}\n"));
    }

    #[test]
    fn special_values_and_plain_text() {
        assert!(same_answer(br#"["NaN","+Inf","-0"]"#, br#"["NaN","+Inf","0"]"#));
        assert!(!same_answer(br#"["NaN"]"#, br#"["+Inf"]"#));
        assert!(same_answer(b"plain text", b"plain text"));
        assert!(!same_answer(b"plain text", b"plain text!"));
    }
}
