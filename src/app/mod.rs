//! app (filled in by its owner)
