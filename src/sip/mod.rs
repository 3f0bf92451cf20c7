//! sip (filled in by its owner)
