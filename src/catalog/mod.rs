//! catalog (filled in by its owner)
