//! errors tests (to be written).
