//! Personal data in logs.
//!
//! Phone numbers, SIP URIs and display names are personal data. They are wrapped in
//! [`Pii`] before they reach a `tracing` field; it prints `{REDACTED}` unless redaction
//! was switched off for the whole process (`[log] redact_pii = false`, for lab use).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

static REDACT: AtomicBool = AtomicBool::new(true);

/// Switch redaction of personal data in logs on (the default) or off.
pub fn set_redaction(on: bool) {
    REDACT.store(on, Ordering::Relaxed);
}

/// A value that is personal data: its `Display`/`Debug` print `{REDACTED}` by default.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Pii<T>(pub T);

impl<T: fmt::Display> fmt::Display for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if REDACT.load(Ordering::Relaxed) {
            f.write_str("{REDACTED}")
        } else {
            self.0.fmt(f)
        }
    }
}

impl<T: fmt::Display> fmt::Debug for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_by_default() {
        assert_eq!(format!("{}", Pii("+4930123456")), "{REDACTED}");
        assert_eq!(format!("{:?}", Pii("sip:alice@example.com")), "{REDACTED}");
    }
}
