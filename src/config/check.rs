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

pub(super) fn duration(
    raw: Option<&str>,
    default: &str,
    path: &KeyPath,
    zero_ok: bool,
    problems: &mut Problems,
) -> Duration {
    let text = raw.unwrap_or(default);
    match humantime::parse_duration(text) {
        Ok(d) if zero_ok || !d.is_zero() => d,
        Ok(_) => {
            problems.add(path, "must be longer than zero");
            Duration::from_secs(1)
        }
        Err(e) => {
            problems.add(path, format!("{text:?} is not a duration ({e}); write e.g. \"30s\" or \"250ms\""));
            Duration::from_secs(1)
        }
    }
}

/// A positive duration, `default` when absent.
pub(super) fn duration_or(raw: Option<&str>, default: Duration, path: &KeyPath, problems: &mut Problems) -> Duration {
    match raw {
        Some(text) => duration(Some(text), text, path, false, problems),
        None => default,
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

pub(super) fn positive(raw: Option<i64>, path: &KeyPath, problems: &mut Problems) -> Option<i64> {
    match raw {
        Some(n) if n <= 0 => {
            problems.add(path, format!("must be greater than zero, got {n}"));
            None
        }
        other => other,
    }
}
