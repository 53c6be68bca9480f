//! The retry decision: whether a failed attempt of a request goes to another
//! endpoint, and why. One pure function of what happened and what is left,
//! called from every hook where Pingora asks ([`super::Router`]'s
//! `fail_to_connect`, `error_while_proxy`, `upstream_response_filter`).
//!
//! The rules: nothing of the request was sent (a failed connect) — any
//! request may go again. Something was sent — a read is replayed when Pingora
//! still holds its whole body; a write only when the attempt met a reused
//! keep-alive connection that the upstream had closed before reading
//! anything (Pingora's `ReusedOnly`). A 502/503/504 answer to a read is
//! replayed too. In every case an attempt must be left, the deployment's
//! timeout must not have run out since the request started, and a healthy
//! untried endpoint must remain.

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

/// Whether the request is a read: GET and HEAD, and a POST to a known query
/// path (Grafana posts its queries). `listed_query`: the path is a query
/// path of the table.
pub fn is_read(method: &http::Method, listed_query: bool) -> bool {
    matches!(*method, http::Method::GET | http::Method::HEAD) || listed_query
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
        let cases = [
            // what happened, then the decision
            (attempt(Outcome::ConnectFailed, false), true, Why::NothingSent),
            (not_replayable(attempt(Outcome::ConnectFailed, false)), true, Why::NothingSent),
            (attempt(FAILED, true), true, Why::ReadReplayed),
            (attempt(FAILED, false), false, Why::WriteSent),
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
    fn reads_are_get_head_and_listed_query_posts() {
        assert!(is_read(&http::Method::GET, false));
        assert!(is_read(&http::Method::HEAD, false));
        assert!(is_read(&http::Method::POST, true));
        assert!(!is_read(&http::Method::POST, false));
        assert!(!is_read(&http::Method::DELETE, false));
    }
}
