//! Backend-independent rules, shared by both backends: input validation ([`validate`]), the
//! accounting of a job when its tasks change ([`account`]), the decision of a report
//! ([`report`]) and the fencing token of a new lease ([`fencing`]). The backends read rows, call
//! into these modules, and write back what they decided, inside their transaction.

pub(crate) mod account;
pub(crate) mod fencing;
pub(crate) mod report;
pub(crate) mod validate;

pub(crate) use account::*;
pub(crate) use report::*;
pub(crate) use validate::*;
