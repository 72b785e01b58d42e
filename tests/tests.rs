//! The integration tests, linked into one test binary (as ripgrep's `tests/tests.rs` does):
//! one link instead of one per file, and one copy of the helpers in `common/`. Each file
//! beside this one is a module of it, declared below (`autotests = false` in Cargo.toml keeps
//! cargo from building them as binaries of their own); `docs::every_test_file_is_a_module`
//! fails when one is left out. Run one module with `cargo test --test tests posix::`.
//!
//! All modules run in one process, so nothing here may change what is process-wide (the
//! environment, the current directory, the umask, signal handlers) or assume it runs alone:
//! each test gets its own key prefix (`common::unique_prefix`), mountpoint and cache
//! directory.

mod common;

mod attrs;
mod aws_options;
mod case;
mod cluster;
mod connections;
mod contract;
mod core;
mod crash;
mod docs;
mod faults;
mod hosts;
mod lost_update;
mod memory_mount;
mod model;
mod mount;
mod ops;
mod packaging;
mod posix;
mod races;
mod security;
mod soak;
mod visibility;
