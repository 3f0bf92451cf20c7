//! recording (filled in by its owner)
