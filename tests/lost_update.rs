//! Two mounts of one store (two hosts) and another client, driven at random: no close or
//! fsync that returns 0 replaces a version its mount did not see, every one that returns 0
//! stored exactly what its handle showed, and a conflict (ESTALE) stores nothing over the
//! winner, or, with `--on-conflict keep-both`, stores the loser beside it. Run with a store
//! that checks conditional writes (as AWS) and one that ignores them (as Garage: the mount
//! checks with a HEAD).
//!
//! The single-mount model (`model.rs`) never lets another client touch a file held open,
//! which is why it could not find the lost update this checks for (both closes of an
//! in-place rewrite returned 0 and the first was silently gone).

use std::ffi::OsStr;
use std::sync::Arc;

use bytes::Bytes;
use pailfs::fs::conflict::OnConflict;
use pailfs::fs::inode::ROOT;
use pailfs::fs::{Fs, FsConfig};
use pailfs::store::memory::MemoryStore;
use proptest::prelude::*;

const FILES: [&str; 2] = ["f0", "f1"];

#[derive(Clone, Debug)]
enum Step {
    /// Mount `m` opens file `f` read-write (with `O_TRUNC` if `trunc`), unless it holds one.
    Open {
        m: usize,
        f: usize,
        trunc: bool,
    },
    Write {
        m: usize,
        off: u64,
        data: Vec<u8>,
    },
    Fsync {
        m: usize,
    },
    Close {
        m: usize,
    },
    /// Another client PUTs file `f`.
    Other {
        f: usize,
        data: Vec<u8>,
    },
}

/// A handle a mount holds: what it shows, and the version of S3 it builds on.
struct Held {
    fh: u64,
    key: &'static str,
    view: Vec<u8>,
    seen: Option<String>,
    dirty: bool,
    failed: bool,
}

struct Host {
    fs: Arc<Fs<Arc<MemoryStore>>>,
    held: Option<Held>,
    _dir: tempfile::TempDir,
}

fn host(store: &Arc<MemoryStore>, name: &str, mode: OnConflict, checks: bool) -> Host {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = FsConfig::new("", pailfs::cache_dir::MountDir::at(dir.path()));
    cfg.conflicts.mode = mode;
    cfg.conflicts.server_checks = checks;
    cfg.conflicts.host = name.to_string();
    Host {
        fs: Fs::new(store.clone(), cfg).unwrap(),
        held: None,
        _dir: dir,
    }
}

fn etag(store: &MemoryStore, key: &str) -> Option<String> {
    store.peek_etag(key)
}

fn data(store: &MemoryStore, key: &str) -> Vec<u8> {
    store.peek(key).map(|d| d.to_vec()).unwrap_or_default()
}

async fn open(h: &mut Host, store: &MemoryStore, f: usize, trunc: bool) {
    let key = FILES[f];
    let ino = h.fs.lookup(ROOT, OsStr::new(key)).await.unwrap().ino;
    let flags = libc::O_RDWR | if trunc { libc::O_TRUNC } else { 0 };
    let fh = h.fs.open(ino, flags).await.unwrap().fh;
    let view = if trunc { Vec::new() } else { data(store, key) };
    h.held = Some(Held {
        fh,
        key,
        view,
        seen: etag(store, key),
        dirty: trunc,
        failed: false,
    });
}

/// An fsync or close of the held handle, checked against what S3 held before and after.
async fn store_held(h: &mut Host, store: &MemoryStore, close: bool, mode: OnConflict) {
    let held = h.held.as_mut().unwrap();
    let before = etag(store, held.key);
    let r = if close {
        let r = h.fs.flush(held.fh).await;
        let _ = h.fs.release(held.fh).await;
        r
    } else {
        h.fs.fsync(held.fh).await
    };
    let after = etag(store, held.key);
    match r {
        _ if held.failed => {}
        Ok(()) if before != after => {
            assert_eq!(
                before, held.seen,
                "{}: a version this mount never saw was replaced",
                held.key
            );
            assert_eq!(
                data(store, held.key),
                held.view,
                "{}: stored what the handle did not show",
                held.key
            );
            held.seen = after;
            held.dirty = false;
        }
        Ok(()) if held.dirty && mode == OnConflict::KeepBoth => {
            assert_ne!(
                before, held.seen,
                "{}: nothing stored without a conflict",
                held.key
            );
            let prefix = format!("{}.conflict-", held.key);
            let copies: Vec<String> = store
                .keys()
                .into_iter()
                .filter(|k| k.starts_with(&prefix))
                .collect();
            assert!(
                copies.iter().any(|k| data(store, k) == held.view),
                "{}: the losing version is not kept beside the winner ({copies:?})",
                held.key
            );
            held.failed = true;
        }
        Ok(()) => assert!(
            !held.dirty,
            "{}: a change was reported stored but is not",
            held.key
        ),
        Err(e) => {
            assert_eq!(e.errno(), libc::ESTALE, "{}: {e}", held.key);
            assert_eq!(before, after, "{}: a failed close changed S3", held.key);
            assert_ne!(
                before, held.seen,
                "{}: a conflict without another writer",
                held.key
            );
            held.failed = true;
        }
    }
    if close {
        h.held = None;
    }
}

async fn run(steps: Vec<Step>, mode: OnConflict, checks: bool) {
    let store = Arc::new(MemoryStore::new());
    if !checks {
        store.ignore_conditions();
    }
    for k in FILES {
        store.insert(k, Bytes::from_static(b"initial"));
    }
    let mut hosts = [
        host(&store, "alpha", mode, checks),
        host(&store, "beta", mode, checks),
    ];
    for step in steps {
        match step {
            Step::Open { m, f, trunc } if hosts[m].held.is_none() => {
                open(&mut hosts[m], &store, f, trunc).await
            }
            Step::Write { m, off, data } => {
                let h = &mut hosts[m];
                let Some(held) = h.held.as_mut() else {
                    continue;
                };
                let r = h.fs.write(held.fh, off, &data).await;
                if held.failed {
                    continue;
                }
                r.unwrap();
                let end = off as usize + data.len();
                if held.view.len() < end {
                    held.view.resize(end, 0);
                }
                held.view[off as usize..end].copy_from_slice(&data);
                held.dirty = true;
            }
            Step::Fsync { m } if hosts[m].held.is_some() => {
                store_held(&mut hosts[m], &store, false, mode).await
            }
            Step::Close { m } if hosts[m].held.is_some() => {
                store_held(&mut hosts[m], &store, true, mode).await
            }
            Step::Other { f, data } => store.insert(FILES[f], Bytes::from(data)),
            _ => {}
        }
    }
}

fn step() -> impl Strategy<Value = Step> {
    let m = 0..2usize;
    let bytes = prop::collection::vec(any::<u8>(), 1..6);
    prop_oneof![
        (m.clone(), 0..2usize, any::<bool>()).prop_map(|(m, f, trunc)| Step::Open { m, f, trunc }),
        (m.clone(), 0..10u64, bytes.clone()).prop_map(|(m, off, data)| Step::Write {
            m,
            off,
            data
        }),
        m.clone().prop_map(|m| Step::Fsync { m }),
        m.prop_map(|m| Step::Close { m }),
        (0..2usize, bytes).prop_map(|(f, data)| Step::Other { f, data }),
    ]
}

fn check(steps: Vec<Step>, mode: OnConflict, checks: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(steps, mode, checks));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn no_update_is_lost_where_the_server_checks_conditions(steps in prop::collection::vec(step(), 1..40)) {
        check(steps, OnConflict::Fail, true);
    }

    #[test]
    fn no_update_is_lost_where_the_mount_checks_with_a_head(steps in prop::collection::vec(step(), 1..40)) {
        check(steps, OnConflict::Fail, false);
    }

    #[test]
    fn keep_both_keeps_every_losing_version(steps in prop::collection::vec(step(), 1..40)) {
        check(steps, OnConflict::KeepBoth, false);
    }
}

/// The sequence, as a fixed case: both open, A rewrites every byte and closes, then B.
#[test]
fn both_rewriting_every_byte_in_place_fail_the_second_close() {
    let steps = vec![
        Step::Open {
            m: 0,
            f: 0,
            trunc: false,
        },
        Step::Open {
            m: 1,
            f: 0,
            trunc: false,
        },
        Step::Write {
            m: 0,
            off: 0,
            data: b"AAAAAAA".to_vec(),
        },
        Step::Write {
            m: 1,
            off: 0,
            data: b"BBBBBBB".to_vec(),
        },
        Step::Close { m: 0 },
        Step::Close { m: 1 },
    ];
    for checks in [true, false] {
        check(steps.clone(), OnConflict::Fail, checks);
    }
}
