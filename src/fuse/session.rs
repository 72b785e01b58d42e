//! Mount options and the FUSE session's threads.
//!
//! The kernel checks permissions itself (`default_permissions`), always: with `allow_other` it
//! is what keeps one user from reading another's files, and without it `chmod 000` still means
//! something. A few FUSE threads suffice because callbacks only hand work to tokio; each has its
//! own `/dev/fuse` descriptor (`clone_fd`) so they do not contend on one.

use std::path::Path;

use fuser::{Config, MountOption, Session, SessionACL};

use super::adapter::Adapter;
use crate::store::ObjectStore;

/// What the mount looks like to the kernel.
#[derive(Clone, Debug)]
pub struct MountSettings {
    /// Shown as the source in `mount` and `/proc/mounts`, e.g. `pailfs:bucket/prefix`.
    pub fsname: String,
    pub read_only: bool,
    pub allow_other: bool,
    /// Root may use the mount too (FUSE's allow_root).
    pub allow_root: bool,
    /// fusermount unmounts when the process ends, however it ends.
    pub auto_unmount: bool,
    pub threads: usize,
}

pub fn fuse_config(s: &MountSettings) -> Config {
    let mut options = vec![
        MountOption::FSName(s.fsname.clone()),
        MountOption::Subtype("pailfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    options.push(if s.read_only {
        MountOption::RO
    } else {
        MountOption::RW
    });
    if s.auto_unmount {
        options.push(MountOption::AutoUnmount);
    }
    let mut config = Config::default();
    config.mount_options = options;
    config.acl = if s.allow_other {
        SessionACL::All
    } else if s.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(s.threads.max(1));
    config.clone_fd = true;
    config
}

/// Mounts; returns once the kernel handshake is done, i.e. the mount is live.
pub fn mount<S: ObjectStore>(
    adapter: Adapter<S>,
    mountpoint: &Path,
    s: &MountSettings,
) -> std::io::Result<Session<Adapter<S>>> {
    Session::new(adapter, mountpoint, &fuse_config(s))
}
