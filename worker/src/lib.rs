//! nat-worker (being built).
