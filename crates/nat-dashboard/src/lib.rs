//! The nat-orchestrator dashboard (work in progress in this commit series).
