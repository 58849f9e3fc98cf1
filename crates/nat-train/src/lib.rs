//! nat-train (being built).
