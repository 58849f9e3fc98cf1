//! nat-store (being built).
