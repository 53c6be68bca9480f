//! The shadow-read comparison (`migration::same_answer`) as a property: a
//! Prometheus API answer compares equal to itself in any series order, any
//! float spelling and any `stats`; any changed value, any missing series
//! or any changed label compares different.

use mirador_router::migration::same_answer;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Series: distinct label sets, each with a value.
fn series() -> impl Strategy<Value = Vec<(BTreeMap<String, String>, f64)>> {
    let labels = prop::collection::btree_map("[a-c]", "[a-z0-9]{1,4}", 1..3);
    let value = prop_oneof![
        (-1000i64..1000).prop_map(|n| n as f64),
        (-1e6f64..1e6).prop_map(|f| (f * 1000.0).round() / 1000.0)
    ];
    prop::collection::btree_map(labels, value, 1..8).prop_map(|m| m.into_iter().collect())
}

/// A float the way one server or another may print it.
fn spelled(value: f64, style: u8) -> String {
    match style % 3 {
        0 => format!("{value}"),
        1 => format!("{value:e}"),
        _ if value.fract() == 0.0 => format!("{value:.1}"),
        _ => format!("{value}"),
    }
}

fn answer(series: &[(BTreeMap<String, String>, f64)], order: &[usize], styles: &[u8], stats: Option<u32>) -> Vec<u8> {
    let result: Vec<Value> = order
        .iter()
        .map(|&i| {
            let (labels, value) = &series[i];
            json!({"metric": labels, "value": [1_700_000_000, spelled(*value, styles[i % styles.len()])]})
        })
        .collect();
    let mut body = json!({"status": "success", "data": {"resultType": "vector", "result": result}});
    if let Some(n) = stats {
        body["stats"] = json!({"seriesFetched": n.to_string(), "executionTimeMsec": n});
    }
    serde_json::to_vec(&body).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn equal_answers_compare_equal_in_any_order_and_spelling(
        series in series(),
        shuffle in any::<prop::sample::Index>(),
        styles in prop::collection::vec(any::<u8>(), 1..8),
        stats in prop::option::of(any::<u32>()),
    ) {
        let order: Vec<usize> = (0..series.len()).collect();
        let mut shuffled = order.clone();
        let k = shuffle.index(series.len());
        shuffled.rotate_left(k);
        shuffled.reverse();
        let a = answer(&series, &order, &[0], None);
        let b = answer(&series, &shuffled, &styles, stats);
        prop_assert!(same_answer(&a, &b), "{} vs {}", String::from_utf8_lossy(&a), String::from_utf8_lossy(&b));
    }

    #[test]
    fn any_changed_value_label_or_series_compares_different(
        series in series(),
        pick in any::<prop::sample::Index>(),
        change in 0u8..3,
        delta in prop_oneof![Just(1.0f64), Just(-0.5), Just(0.001), Just(1e6)],
    ) {
        let order: Vec<usize> = (0..series.len()).collect();
        let a = answer(&series, &order, &[0], None);
        let i = pick.index(series.len());
        let mut other = series.clone();
        let order_b: Vec<usize> = match change {
            0 => { other[i].1 += delta; order.clone() }
            1 => { other[i].0.insert("zz".into(), "changed".into()); order.clone() }
            _ => order.iter().copied().filter(|&j| j != i).collect(),
        };
        let b = answer(&other, &order_b, &[0], None);
        prop_assert!(!same_answer(&a, &b), "{} vs {}", String::from_utf8_lossy(&a), String::from_utf8_lossy(&b));
    }
}
