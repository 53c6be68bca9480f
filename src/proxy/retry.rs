//! The retry decision: whether a failed attempt of a request goes to another
//! endpoint, and why. One pure function of what happened and what is left,
//! called from every hook where Pingora asks ([`super::Router`]'s
//! `fail_to_connect`, `error_while_proxy`, `upstream_response_filter`).
//!
//! The rules: nothing of the request was sent (a failed connect) — any
//! request may go again. Something was sent — a read is replayed when Pingora
//! still holds its whole body; a write only when the attempt met a reused
//! keep-alive connection that the upstream had closed before reading
//! anything (Pingora's `ReusedOnly`), or — for ingest requests of a
//! deployment with `retry_ingest = true` — after any failure once it went
//! out, while Pingora still holds the whole body (the price: a write the
//! failed endpoint had stored is stored twice; README, "Retries"). A
//! 502/503/504 answer to a read is replayed too. In every case an attempt must be left, the deployment's
//! timeout must not have run out since the request started, and a healthy
//! untried endpoint must remain.

use crate::api::Access;
use std::time::Duration;

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Connecting failed: nothing of the request went out.
    ConnectFailed,
    /// The attempt failed after (part of) the request went out.
    Failed {
        /// The upstream side failed (not the client).
        upstream: bool,
        /// A reused keep-alive connection turned out closed before the
        /// upstream read anything.
        stale_connection: bool,
    },
    /// The upstream answered with this status.
    Answered(u16),
}

/// Everything the decision looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub outcome: Outcome,
    /// Whether the request only reads (and so may be replayed).
    pub read: bool,
    /// Whether the request is ingest to a deployment that replays ingest
    /// after a failure (`retry_ingest`).
    pub replay_ingest: bool,
    /// Whether the request can go again as it was: Pingora's retry buffer
    /// holds the whole body and nothing of an answer was sent to the client.
    pub replayable: bool,
    /// Attempts made so far, this one included.
    pub attempts: u32,
    pub max_attempts: u32,
    /// Time since the request started, and the deployment's timeout.
    pub elapsed: Duration,
    pub timeout: Duration,
    /// Whether a healthy endpoint this request has not tried is left.
    pub endpoint_left: bool,
}

/// Why a request goes to another endpoint, or why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    NothingSent,
    ReadReplayed,
    /// Ingest replayed by the deployment's `retry_ingest`.
    IngestReplayed,
    StaleConnection,
    /// An answer that is not a failure of the endpoint passes through.
    Answered,
    /// A write whose body the upstream may have read.
    WriteSent,
    /// The body is no longer all in the retry buffer, or the client got
    /// part of an answer.
    NotReplayable,
    /// The client failed, not the upstream.
    ClientFailed,
    NoAttemptLeft,
    TimeUp,
    NoEndpointLeft,
}

/// The decision: retry or not, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub retry: bool,
    pub why: Why,
}

/// Whether a request to an endpoint of class `access` is a read, and so may
/// be replayed: queries by any method they take (Grafana posts its
/// queries) and UI pages. Never a write, and never an admin operation, which
/// VictoriaMetrics runs on GET as on POST.
pub fn is_read(access: Access) -> bool {
    matches!(access, Access::Query | Access::Ui)
}

/// The retry decision for one failed or answered attempt.
pub fn decide(attempt: &Attempt) -> Decision {
    let stop = |why| Decision { retry: false, why };
    let why = match attempt.outcome {
        Outcome::ConnectFailed => Why::NothingSent,
        Outcome::Failed { upstream: false, .. } => return stop(Why::ClientFailed),
        Outcome::Failed { .. } | Outcome::Answered(502..=504) if !attempt.replayable => {
            return stop(Why::NotReplayable)
        }
        Outcome::Failed { .. } | Outcome::Answered(502..=504) if attempt.read => Why::ReadReplayed,
        Outcome::Failed { stale_connection: true, .. } => Why::StaleConnection,
        Outcome::Failed { .. } if attempt.replay_ingest => Why::IngestReplayed,
        Outcome::Failed { .. } | Outcome::Answered(502..=504) => return stop(Why::WriteSent),
        Outcome::Answered(_) => return stop(Why::Answered),
    };
    if attempt.attempts >= attempt.max_attempts {
        return stop(Why::NoAttemptLeft);
    }
    if attempt.elapsed >= attempt.timeout {
        return stop(Why::TimeUp);
    }
    if !attempt.endpoint_left {
        return stop(Why::NoEndpointLeft);
    }
    Decision { retry: true, why }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAILED: Outcome = Outcome::Failed { upstream: true, stale_connection: false };
    const STALE: Outcome = Outcome::Failed { upstream: true, stale_connection: true };
    const CLIENT: Outcome = Outcome::Failed { upstream: false, stale_connection: true };

    fn attempt(outcome: Outcome, read: bool) -> Attempt {
        Attempt {
            outcome,
            read,
            replay_ingest: false,
            replayable: true,
            attempts: 1,
            max_attempts: 3,
            elapsed: Duration::from_millis(10),
            timeout: Duration::from_secs(30),
            endpoint_left: true,
        }
    }

    #[test]
    fn the_decision_table() {
        let not_replayable = |a: Attempt| Attempt { replayable: false, ..a };
        let last = |a: Attempt| Attempt { attempts: 3, ..a };
        let late = |a: Attempt| Attempt { elapsed: Duration::from_secs(30), ..a };
        let alone = |a: Attempt| Attempt { endpoint_left: false, ..a };
        let ingest = |a: Attempt| Attempt { replay_ingest: true, ..a };
        let cases = [
            // what happened, then the decision
            (attempt(Outcome::ConnectFailed, false), true, Why::NothingSent),
            (not_replayable(attempt(Outcome::ConnectFailed, false)), true, Why::NothingSent),
            (attempt(FAILED, true), true, Why::ReadReplayed),
            (attempt(FAILED, false), false, Why::WriteSent),
            (ingest(attempt(FAILED, false)), true, Why::IngestReplayed),
            (not_replayable(ingest(attempt(FAILED, false))), false, Why::NotReplayable),
            (ingest(attempt(Outcome::Answered(503), false)), false, Why::WriteSent),
            (attempt(STALE, false), true, Why::StaleConnection),
            (not_replayable(attempt(STALE, false)), false, Why::NotReplayable),
            (not_replayable(attempt(FAILED, true)), false, Why::NotReplayable),
            (attempt(CLIENT, true), false, Why::ClientFailed),
            (attempt(Outcome::Answered(503), true), true, Why::ReadReplayed),
            (attempt(Outcome::Answered(502), false), false, Why::WriteSent),
            (attempt(Outcome::Answered(500), true), false, Why::Answered),
            (attempt(Outcome::Answered(200), true), false, Why::Answered),
            (not_replayable(attempt(Outcome::Answered(504), true)), false, Why::NotReplayable),
            (last(attempt(Outcome::ConnectFailed, true)), false, Why::NoAttemptLeft),
            (late(attempt(FAILED, true)), false, Why::TimeUp),
            (alone(attempt(Outcome::ConnectFailed, true)), false, Why::NoEndpointLeft),
        ];
        for (attempt, retry, why) in cases {
            assert_eq!(decide(&attempt), Decision { retry, why }, "{attempt:?}");
        }
    }

    #[test]
    fn reads_are_queries_and_pages() {
        assert!(is_read(Access::Query));
        assert!(is_read(Access::Ui));
        assert!(!is_read(Access::Ingest));
        assert!(!is_read(Access::Admin), "an admin GET may snapshot or delete");
    }
}
