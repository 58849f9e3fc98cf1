//! Backend-independent rules, shared by both backends: input validation ([`validate`]), the
//! accounting of a job when its tasks change ([`account`]), and the decision of a report
//! ([`report`]). The backends read rows, call into these modules, and write back what they
//! decided, inside their transaction.

pub(crate) mod account;
pub(crate) mod report;
pub(crate) mod validate;

pub(crate) use account::*;
pub(crate) use report::*;
pub(crate) use validate::*;
