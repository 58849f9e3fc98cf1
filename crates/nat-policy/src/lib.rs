//! nat-policy (being built).
