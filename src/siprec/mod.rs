//! siprec (filled in by its owner)
