//! routing tests (to be written).
