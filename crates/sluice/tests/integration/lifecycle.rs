//! lifecycle tests (to be written).
