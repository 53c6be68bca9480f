//! The one way the integration tests wait: poll a condition until it holds,
//! with a deadline, and fail naming what was awaited.
//!
//! `wait_until` (sync condition, async test), `wait_until_async` (async
//! condition) and `wait_until_blocking` (sync code) poll every 10 ms; `Wait`
//! sets another interval. A condition returns `bool`, `Option<T>` (done with
//! `Some`) or `Result<T, String>` (done with `Ok`, the `Err` text saying how
//! far things got, shown when the deadline passes); the wait returns the `T`.
//! The async waits also bound a condition that never returns.

use std::future::Future;
use std::time::{Duration, Instant};

/// What one look at a condition tells: done (with a value), or not yet.
pub trait Outcome {
    type Value;
    /// `Ok(value)` when done; else `Err` with the state seen, if the condition says it.
    fn done(self) -> Result<Self::Value, Option<String>>;
}

impl Outcome for bool {
    type Value = ();
    fn done(self) -> Result<(), Option<String>> {
        if self {
            Ok(())
        } else {
            Err(None)
        }
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn done(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T> Outcome for Result<T, String> {
    type Value = T;
    fn done(self) -> Result<T, Option<String>> {
        self.map_err(Some)
    }
}

/// A wait: what for, how long at most, how often to look.
pub struct Wait {
    what: String,
    within: Duration,
    every: Duration,
}

impl Wait {
    pub fn new(what: impl Into<String>, within: Duration) -> Wait {
        Wait { what: what.into(), within, every: Duration::from_millis(10) }
    }

    /// Looks at the condition every `every` (default 10 ms).
    pub fn every(self, every: Duration) -> Wait {
        Wait { every, ..self }
    }

    fn timed_out(&self, last: &Option<String>) -> ! {
        match last {
            Some(state) => panic!("timed out after {:?} waiting for {}; last seen: {state}", self.within, self.what),
            None => panic!("timed out after {:?} waiting for {}", self.within, self.what),
        }
    }

    /// Polls a sync condition from async code.
    pub async fn until<O: Outcome>(self, mut condition: impl FnMut() -> O) -> O::Value {
        self.until_async(move || std::future::ready(condition())).await
    }

    /// Polls an async condition. The deadline holds even if one look hangs.
    pub async fn until_async<O, F, Fut>(self, mut condition: F) -> O::Value
    where
        O: Outcome,
        F: FnMut() -> Fut,
        Fut: Future<Output = O>,
    {
        let deadline = Instant::now() + self.within;
        let mut last = None;
        let polling = async {
            loop {
                match condition().await.done() {
                    Ok(value) => return Ok(value),
                    Err(state) => last = state,
                }
                if Instant::now() >= deadline {
                    return Err(());
                }
                tokio::time::sleep(self.every).await;
            }
        };
        // The loop itself checks the deadline; the timeout (1 s of slack)
        // catches a look that never returns.
        let outcome = tokio::time::timeout(self.within + Duration::from_secs(1), polling).await;
        match outcome {
            Ok(Ok(value)) => value,
            Ok(Err(())) | Err(_) => self.timed_out(&last),
        }
    }

    /// Polls a sync condition from sync code, sleeping the thread between looks.
    pub fn blocking<O: Outcome>(self, mut condition: impl FnMut() -> O) -> O::Value {
        let deadline = Instant::now() + self.within;
        loop {
            match condition().done() {
                Ok(value) => return value,
                Err(state) if Instant::now() >= deadline => self.timed_out(&state),
                Err(_) => std::thread::sleep(self.every),
            }
        }
    }
}

/// Waits until `condition` holds, looking every 10 ms; panics after `within`
/// with a message naming `what`.
pub async fn wait_until<O: Outcome>(
    what: impl Into<String>,
    within: Duration,
    condition: impl FnMut() -> O,
) -> O::Value {
    Wait::new(what, within).until(condition).await
}

/// [`wait_until`] with an async condition.
pub async fn wait_until_async<O, F, Fut>(what: impl Into<String>, within: Duration, condition: F) -> O::Value
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    Wait::new(what, within).until_async(condition).await
}

/// [`wait_until`] for sync code: sleeps the thread between looks.
pub fn wait_until_blocking<O: Outcome>(
    what: impl Into<String>,
    within: Duration,
    condition: impl FnMut() -> O,
) -> O::Value {
    Wait::new(what, within).blocking(condition)
}
