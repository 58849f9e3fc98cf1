//! nat-proto (being built).
