//! vault (filled in by its owner)
