//! proxying tests (to be written).
