//! sdp (filled in by its owner)
