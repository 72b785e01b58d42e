//! The multi-host soak: four mounts (four "hosts", each on its own node of a three-node
//! Garage cluster, each with its own cache directory) read, append to, rewrite and list six
//! shared files at once, and rename files of their own in the shared directory, for a bounded
//! time. At the end a checker proves no update was lost: every file's successful closes form
//! one chain from its first content (each read exactly the version the previous one stored)
//! that ends in what S3 holds, every close that did not return 0 failed with ESTALE (a
//! conflict, counted), and every read returned one whole stored version.
//!
//! CI runs it for `PAILFS_SOAK_SECS` (20 s by default); `scripts/soak` runs it longer and
//! reports operations per second and the conflict count.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

const SHARED: usize = 6;
const HOSTS: usize = 4;

/// A close that returned 0: the version it read, and the one it stored.
type Change = (Vec<u8>, Vec<u8>);

/// What the hosts did, for the checker.
#[derive(Default)]
struct Journal {
    /// Per shared file: every close that returned 0.
    stored: HashMap<usize, Vec<Change>>,
    /// Per shared file: every whole content a read returned.
    reads: HashMap<usize, Vec<Vec<u8>>>,
    conflicts: u64,
    ops: u64,
}

/// A small deterministic generator per host.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn read_all(f: &mut fs::File) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    f.read_to_end(&mut v)?;
    Ok(v)
}

/// Read, change and close one shared file: an append, or a whole rewrite. `Ok(None)` when the
/// close was a conflict (ESTALE).
fn change(p: &Path, token: &[u8], rewrite: bool) -> std::io::Result<Option<Change>> {
    match try_change(p, token, rewrite) {
        Err(e) if e.raw_os_error() == Some(libc::ESTALE) => Ok(None),
        other => other.map(Some),
    }
}

fn try_change(p: &Path, token: &[u8], rewrite: bool) -> std::io::Result<Change> {
    let mut f = fs::OpenOptions::new().read(true).write(true).open(p)?;
    let base = read_all(&mut f)?;
    let new = if rewrite {
        f.set_len(0)?;
        token.to_vec()
    } else {
        [base.as_slice(), token].concat()
    };
    let at = if rewrite { 0 } else { base.len() as u64 };
    f.write_all_at(token, at)?;
    f.sync_all()?;
    Ok((base, new))
}

/// One host's loop until `until`.
fn host(id: usize, m: &Mount, until: Instant, journal: &Mutex<Journal>) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1));
    let own = |n: u64| m.p(&format!("own-{id}-{}", n % 2));
    fs::write(own(0), format!("host {id}")).unwrap();
    let (mut seq, mut renames) = (0u64, 0u64);
    while Instant::now() < until {
        seq += 1;
        let f = rng.below(SHARED as u64) as usize;
        let p = m.p(&format!("shared-{f}"));
        let token = format!("[{id}.{seq}]");
        match rng.below(10) {
            0..=5 => {
                let rewrite = rng.below(6) == 5;
                let r = change(&p, token.as_bytes(), rewrite)
                    .unwrap_or_else(|e| panic!("host {id}: change of shared-{f}: {e}"));
                let mut j = journal.lock().unwrap();
                match r {
                    Some(pair) => j.stored.entry(f).or_default().push(pair),
                    None => j.conflicts += 1,
                }
            }
            6 | 7 => match fs::read(&p) {
                Ok(got) => journal
                    .lock()
                    .unwrap()
                    .reads
                    .entry(f)
                    .or_default()
                    .push(got),
                // Replaced while being read: never two versions mixed.
                Err(e) if e.raw_os_error() == Some(libc::ESTALE) => {}
                Err(e) => panic!("host {id}: read shared-{f}: {e}"),
            },
            8 => {
                let names = fs::read_dir(m.path())
                    .unwrap_or_else(|e| panic!("host {id}: list: {e}"))
                    .count();
                assert!(names >= SHARED, "host {id}: {names} names listed");
            }
            _ => {
                fs::rename(own(renames), own(renames + 1))
                    .unwrap_or_else(|e| panic!("host {id}: rename: {e}"));
                renames += 1;
                assert_eq!(
                    fs::read(own(renames)).unwrap(),
                    format!("host {id}").as_bytes()
                );
            }
        }
        journal.lock().unwrap().ops += 1;
    }
}

/// Every file's successful closes chain from `first` to what S3 holds, and every read is a
/// version of that history. Two closes that replaced the same version are a lost update:
/// none may happen where the server checks conditional writes (`strict`); elsewhere they are
/// counted (the window of the HEAD before an upload) and everything else must still hold.
/// Returns the lost updates.
fn check(
    f: usize,
    first: &[u8],
    stored: &[Change],
    reads: &[Vec<u8>],
    now: &[u8],
    strict: bool,
) -> usize {
    let mut next: HashMap<&[u8], Vec<&[u8]>> = HashMap::new();
    for (base, new) in stored {
        next.entry(base).or_default().push(new);
    }
    let mut versions: HashSet<&[u8]> = HashSet::from([first]);
    let mut todo = vec![first];
    while let Some(v) = todo.pop() {
        for n in next.get(v).into_iter().flatten() {
            if versions.insert(n) {
                todo.push(n);
            }
        }
    }
    let lost: usize = next.values().map(|n| n.len() - 1).sum();
    assert!(
        !strict || lost == 0,
        "shared-{f}: {lost} closes replaced a version another close had replaced: updates lost"
    );
    let orphan = stored
        .iter()
        .find(|(b, _)| !versions.contains(b.as_slice()));
    assert!(
        orphan.is_none(),
        "shared-{f}: a close that returned 0 built on a version never stored: {:?} (stored: {:?})",
        orphan.map(|(b, n)| (String::from_utf8_lossy(b), String::from_utf8_lossy(n))),
        stored
            .iter()
            .map(|(_, n)| String::from_utf8_lossy(n))
            .collect::<Vec<_>>()
    );
    assert!(
        versions.contains(now),
        "shared-{f}: S3 holds a version no close stored"
    );
    for r in reads {
        assert!(
            versions.contains(r.as_slice()),
            "shared-{f}: a read returned a version never stored: {:?}",
            String::from_utf8_lossy(r)
        );
    }
    lost
}

/// Four hosts on `env(i)` for `PAILFS_SOAK_SECS` (20 s by default), checked (see `check`).
fn soak(name: &str, env: impl Fn(usize) -> S3Env, strict: bool) {
    let secs: u64 = std::env::var("PAILFS_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let prefix = unique_prefix(name);
    let source = format!("{}:{prefix}", env(0).bucket);
    let first = |f: usize| format!("shared {f}:").into_bytes();
    for f in 0..SHARED {
        env(0).put(&format!("{prefix}shared-{f}"), &first(f));
    }
    let mounts: Vec<Mount> = (0..HOSTS)
        .map(|i| {
            let host = format!("host{i}");
            Mount::on(env(i), &source, &prefix, &["--host-name", &host], &[])
        })
        .collect();
    let journal = Arc::new(Mutex::new(Journal::default()));
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    std::thread::scope(|s| {
        for (id, m) in mounts.iter().enumerate() {
            let journal = journal.clone();
            s.spawn(move || host(id, m, until, &journal));
        }
    });
    let took = started.elapsed().as_secs_f64();
    drop(mounts);
    let j = journal.lock().unwrap();
    let mut lost = 0;
    for f in 0..SHARED {
        let now = env(0).stored(&format!("{prefix}shared-{f}"));
        let stored = j.stored.get(&f).map_or(&[][..], Vec::as_slice);
        let reads = j.reads.get(&f).map_or(&[][..], Vec::as_slice);
        lost += check(f, &first(f), stored, reads, &now, strict);
    }
    let closes: usize = j.stored.values().map(Vec::len).sum();
    eprintln!(
        "soak ({name}): {HOSTS} hosts, {secs} s: {} operations ({:.0}/s), {closes} changes stored, {} conflicts (ESTALE), {lost} updates lost in the HEAD window",
        j.ops,
        j.ops as f64 / took,
        j.conflicts
    );
    assert!(closes > 0 && j.conflicts > 0, "the hosts did not race");
}

/// On a server that checks conditional writes (moto, as AWS): not one update lost.
#[test]
fn four_hosts_on_a_server_with_conditional_writes_lose_no_update() {
    soak("soak-moto", |_| S3Env::moto_full(), true);
}

/// On the three-node Garage cluster, one host per node: Garage checks no conditions, so two
/// uploads whose HEADs both ran before either PUT can both succeed (the documented window);
/// everything else holds, and the losses are counted.
#[test]
fn four_hosts_on_a_three_node_cluster_lose_nothing_outside_the_head_window() {
    let s3 = PrivateS3::cluster("soak", 4040, 3);
    soak(
        "soak-cluster",
        |i| S3Env {
            endpoint: format!("http://127.0.0.1:{}", 4040 + 10 * (i % 3)),
            ..s3.env.clone()
        },
        false,
    );
}
