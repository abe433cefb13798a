//! balancing tests (to be written).
