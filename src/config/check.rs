//! Checks of single values shared by the validators: every problem is
//! collected with its key path, and a value that passes is in its
//! documented range.

use super::error::{KeyPath, Problem};
use std::net::SocketAddr;
use std::time::Duration;

/// Collects problems while converting.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<Problem>);

impl Problems {
    pub(super) fn add(&mut self, path: &KeyPath, message: impl Into<String>) {
        self.0.push(Problem { path: path.clone(), message: message.into() });
    }
}

pub(super) fn listen_addr(raw: &str, path: &KeyPath, problems: &mut Problems) -> Option<SocketAddr> {
    match raw.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.add(path, format!("{raw:?} is not a listen address; expected ip:port such as 0.0.0.0:8080"));
            None
        }
    }
}

/// The documented range of a duration: the least and the most it may be.
pub(super) type Bounds = (Duration, Duration);

const MS: Duration = Duration::from_millis(1);
const HOUR: Duration = Duration::from_secs(3600);
/// Timeouts and intervals: a millisecond to an hour.
pub(super) const UP_TO_AN_HOUR: Bounds = (MS, HOUR);
/// Connect and probe timeouts: a millisecond to five minutes.
pub(super) const UP_TO_FIVE_MINUTES: Bounds = (MS, Duration::from_secs(5 * 60));
/// The shutdown grace period: none to an hour.
pub(super) const NONE_TO_AN_HOUR: Bounds = (Duration::ZERO, HOUR);

/// A duration within `bounds`, `default` when absent. Every duration of the
/// config passes here, so time arithmetic on them cannot overflow.
pub(super) fn duration(
    raw: Option<&str>,
    default: Duration,
    (min, max): Bounds,
    path: &KeyPath,
    problems: &mut Problems,
) -> Duration {
    let Some(text) = raw else { return default };
    let shown = |d: Duration| humantime::format_duration(d).to_string();
    match humantime::parse_duration(text) {
        Ok(d) if d >= min && d <= max => d,
        Ok(d) if d.is_zero() => {
            problems.add(path, "must be longer than zero");
            default
        }
        Ok(d) if d < min => {
            problems.add(path, format!("must be at least {}, got {text:?}", shown(min)));
            default
        }
        Ok(_) => {
            problems.add(path, format!("must be at most {}, got {text:?}", shown(max)));
            default
        }
        Err(e) => {
            problems.add(path, format!("{text:?} is not a duration ({e}); write e.g. \"30s\" or \"250ms\""));
            default
        }
    }
}

pub(super) fn count(raw: Option<i64>, default: u32, path: &KeyPath, problems: &mut Problems) -> u32 {
    match raw.unwrap_or(default as i64) {
        n @ 1..=1000 => n as u32,
        n => {
            problems.add(path, format!("must be between 1 and 1000, got {n}"));
            default
        }
    }
}

/// A whole number from 1 to `max`, when given.
pub(super) fn positive(raw: Option<i64>, max: u64, path: &KeyPath, problems: &mut Problems) -> Option<u64> {
    match raw {
        Some(n) if n <= 0 => {
            problems.add(path, format!("must be greater than zero, got {n}"));
            None
        }
        Some(n) if n as u64 > max => {
            problems.add(path, format!("must be at most {max}, got {n}"));
            None
        }
        other => other.map(|n| n as u64),
    }
}

pub const MAX_TENANT_ID_LEN: usize = 64;

/// Tenant ids travel in headers and label values: keep them short and plain.
pub fn check_tenant_id(id: &str) -> Result<(), String> {
    let plain = id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let starts_well = id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    if id.is_empty() || id.len() > MAX_TENANT_ID_LEN || !plain || !starts_well {
        return Err(format!(
            "tenant id {id:?} must be 1 to {MAX_TENANT_ID_LEN} characters of A-Z a-z 0-9 _ -, starting with a letter or digit"
        ));
    }
    Ok(())
}
