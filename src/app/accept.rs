//! What every listener does when `accept` fails: it never ends the listener. Out of file
//! descriptors (EMFILE/ENFILE), aborted connections and the like are logged (at most once
//! per [`LOG_EVERY`], with how many were not logged), the listener backs off so a
//! persistent error does not spin a core, and accepting resumes by itself once the cause
//! is gone (descriptors freed).

use std::time::{Duration, Instant};

/// Back-off after a failed accept: short enough that service resumes within a fraction
/// of a second after descriptors are free, long enough not to spin.
pub const BACKOFF: Duration = Duration::from_millis(100);

/// Failed accepts are logged at most this often per listener.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Per-listener state of failed accepts.
pub struct AcceptErrors {
    listener: &'static str,
    last_log: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    /// State for the listener named `listener` (in logs).
    pub fn new(listener: &'static str) -> Self {
        AcceptErrors {
            listener,
            last_log: None,
            suppressed: 0,
        }
    }

    /// One failed accept: log (rate-limited) and back off.
    pub async fn failed(&mut self, e: &std::io::Error) {
        let now = Instant::now();
        if self
            .last_log
            .map_or(true, |t| now.duration_since(t) >= LOG_EVERY)
        {
            let fds = crate::app::ports::is_fd_exhaustion(e);
            tracing::warn!(
                listener = self.listener,
                error = %e,
                suppressed = self.suppressed,
                "accept failed{}; retrying",
                if fds { " (too many open files)" } else { "" }
            );
            self.last_log = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        tokio::time::sleep(BACKOFF).await;
    }
}
