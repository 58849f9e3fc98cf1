//! nat-coordinator (being built).
