//! The Victoria* API as the router sees it: the three signals, whether a
//! path writes or reads, which listener a request came in on, and the path
//! table that classifies a request.
//!
//! Ground level: every other module may import this one, and it imports
//! none of them.

mod paths;

pub use paths::{classify, classify_path, PATH_TABLE};

use serde::{Deserialize, Serialize};
use std::fmt;

/// The three kinds of telemetry a tenant's deployments serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    Metrics,
    Logs,
    Traces,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Metrics, Signal::Logs, Signal::Traces];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
            Signal::Traces => "traces",
        }
    }

    /// Dense index, for per-signal arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a path writes data into a deployment or reads from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Ingest,
    Query,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Ingest => "ingest",
            Access::Query => "query",
        }
    }
}

/// Which listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The unified listener: the path decides the signal.
    Unified,
    /// A drop-in listener: every request is this signal.
    DropIn(Signal),
}

/// What a request is, by its listener and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    pub signal: Signal,
    pub access: Access,
    /// Whether the path is in [`PATH_TABLE`]; a drop-in listener takes
    /// other paths as queries of its signal.
    pub listed: bool,
}
