//! The kernel side: the `fuser` adapter and the mount session.

pub mod adapter;
pub mod notify;
pub mod session;
