//! The JWKS refresh: the current table's key set read again on its interval.

use super::RouteStore;
use std::sync::Arc;
use std::time::Duration;

/// Shortest wait before another try after a failed refresh.
const RETRY: Duration = Duration::from_secs(5);

/// Refreshes the current table's JWKS on its interval, for ever (a thread
/// of its own: the fetch blocks). Each result is logged and counted.
pub fn refresh_forever(store: Arc<RouteStore>, metrics: Option<Arc<crate::metrics::Metrics>>) {
    let mut wait = RETRY;
    loop {
        std::thread::sleep(wait);
        let table = store.load_full();
        let Some(tokens) = table.tokens() else {
            wait = RETRY;
            continue;
        };
        let (refresh, source) = tokens.schedule();
        let result = tokens.refresh();
        if let Some(metrics) = &metrics {
            metrics.jwks_refreshes(result.is_ok()).inc();
        }
        wait = match result {
            Ok(_) => refresh,
            Err(why) => {
                tracing::warn!(source = source, error = %why, "JWKS refresh failed; the keys in force stay");
                refresh.min(RETRY * 6)
            }
        };
    }
}
