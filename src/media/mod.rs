//! media (filled in by its owner)
