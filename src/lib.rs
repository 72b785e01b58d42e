//! pailfs: an S3 bucket mounted as a POSIX directory.
//!
//! # Layout
//!
//! ```text
//! kernel ── fuse/ (adapter) ──> fs/ (async POSIX core) ──> store/ (ObjectStore) ──> S3
//! ```
//!
//! * [`fuse`]: the only place `fuser` types appear; each kernel request becomes one call on the
//!   core and exactly one reply.
//! * [`fs`]: POSIX operations over inode numbers, as `async fn`s returning plain structs.
//! * [`store`]: the S3 operations the core needs, over aws-sdk-s3 or in memory for tests.
//! * [`cli`], [`config`], [`run`]: the command line, its validation, and the mount's lifetime;
//!   [`diagnose`] explains S3 failures to people.
//! * [`private`]: local files only their user can read (caches, spool, logs, sockets);
//!   [`logfile`]: the `--log-file` writer, reopened on SIGHUP.

pub mod buffers;
pub mod cache;
pub mod cache_dir;
pub mod cli;
pub mod collisions;
pub mod config;
pub mod connections;
pub mod diagnose;
pub mod doctor;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod logfile;
pub mod ls;
pub mod metrics;
pub mod mount_opts;
pub mod private;
pub mod run;
pub mod store;
pub mod syslog;
