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
    /// Per shared file: the changes whose close reported a conflict.
    refused: HashMap<usize, Vec<Change>>,
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

/// What one change of a shared file came to.
enum Outcome {
    /// Its close returned 0.
    Stored(Change),
    /// A conflict (ESTALE): the change it attempted, when it got that far.
    Refused(Option<Change>),
}

fn stale(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ESTALE)
}

/// Read, change and close one shared file: an append, or a whole rewrite.
fn change(p: &Path, token: &[u8], rewrite: bool) -> std::io::Result<Outcome> {
    let opened = fs::OpenOptions::new().read(true).write(true).open(p);
    let mut f = match opened {
        Err(e) if stale(&e) => return Ok(Outcome::Refused(None)),
        other => other?,
    };
    let base = match read_all(&mut f) {
        Err(e) if stale(&e) => return Ok(Outcome::Refused(None)),
        other => other?,
    };
    let new = if rewrite {
        token.to_vec()
    } else {
        [base.as_slice(), token].concat()
    };
    let at = if rewrite { 0 } else { base.len() as u64 };
    let written = (|| {
        if rewrite {
            f.set_len(0)?;
        }
        f.write_all_at(token, at)?;
        f.sync_all()
    })();
    match written {
        Ok(()) => Ok(Outcome::Stored((base, new))),
        Err(e) if stale(&e) => Ok(Outcome::Refused(Some((base, new)))),
        Err(e) => Err(e),
    }
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
                    Outcome::Stored(pair) => j.stored.entry(f).or_default().push(pair),
                    Outcome::Refused(attempt) => {
                        j.conflicts += 1;
                        j.refused.entry(f).or_default().extend(attempt);
                    }
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

/// What the checker found of one file: updates lost (two closes that returned 0 replaced
/// the same version), and changes in S3's history although their close reported a conflict.
#[derive(Default)]
struct Found {
    lost: usize,
    refused_yet_stored: usize,
}

/// One file's history, from what the hosts did and what S3 holds now. Every version S3 held
/// (`now`, every version a close built on, every read) is the first content or one a close
/// produced (no mix, nothing invented), and S3 ends with a version some change made. Where
/// the server checks conditional writes (`strict`) the closes that returned 0 also chain
/// exactly from the first content to `now`: no update lost, and no change whose close
/// reported a conflict in the history; elsewhere those two are counted.
fn check(f: usize, j: &Journal, first: &[u8], now: &[u8], strict: bool) -> Found {
    let empty = Vec::new();
    let stored = j.stored.get(&f).unwrap_or(&empty);
    let refused = j.refused.get(&f).unwrap_or(&empty);
    let reads = j.reads.get(&f).map_or(&[][..], Vec::as_slice);
    let made: HashSet<&[u8]> = stored.iter().map(|(_, n)| n.as_slice()).collect();
    let tried: HashSet<&[u8]> = refused.iter().map(|(_, n)| n.as_slice()).collect();
    let known = |v: &[u8]| v == first || made.contains(v) || tried.contains(v);
    for (base, _) in stored {
        let b = String::from_utf8_lossy(base);
        assert!(
            known(base),
            "shared-{f}: a close built on a version nobody made: {b:?}"
        );
    }
    assert!(known(now), "shared-{f}: S3 holds a version nobody made");
    for r in reads {
        let v = String::from_utf8_lossy(r);
        assert!(
            known(r),
            "shared-{f}: a read returned a version nobody made: {v:?}"
        );
    }
    let mut bases: HashMap<&[u8], usize> = HashMap::new();
    for (base, _) in stored {
        *bases.entry(base).or_default() += 1;
    }
    let found = Found {
        lost: bases.values().map(|n| n - 1).sum(),
        refused_yet_stored: stored
            .iter()
            .filter(|(b, _)| tried.contains(b.as_slice()) && !made.contains(b.as_slice()))
            .count()
            + usize::from(tried.contains(now) && !made.contains(now)),
    };
    if strict {
        assert_eq!(
            found.lost, 0,
            "shared-{f}: two closes replaced one version: updates lost"
        );
        assert_eq!(
            found.refused_yet_stored, 0,
            "shared-{f}: a refused change is in S3"
        );
        let last = (now == first || made.contains(now)) && !bases.contains_key(now);
        assert!(last, "shared-{f}: S3 does not hold the last close");
    }
    found
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
    let (mut lost, mut refused_yet_stored) = (0, 0);
    for f in 0..SHARED {
        let now = env(0).stored(&format!("{prefix}shared-{f}"));
        let found = check(f, &j, &first(f), &now, strict);
        lost += found.lost;
        refused_yet_stored += found.refused_yet_stored;
    }
    let closes: usize = j.stored.values().map(Vec::len).sum();
    eprintln!(
        "soak ({name}): {HOSTS} hosts, {secs} s: {} operations ({:.0}/s), {closes} changes stored, {} conflicts (ESTALE), {lost} updates lost in the HEAD window, {refused_yet_stored} changes refused yet in S3",
        j.ops,
        j.ops as f64 / took,
        j.conflicts
    );
    assert!(closes > 0 && j.conflicts > 0, "the hosts did not race");
}

/// On a server that checks conditional writes (moto, as AWS): not one update lost.
#[test]
fn four_hosts_on_a_server_with_conditional_writes_lose_no_update() {
    if !alone("soak::four_hosts_on_a_server_with_conditional_writes_lose_no_update") {
        return;
    }
    soak("soak-moto", |_| S3Env::moto_full(), true);
}

/// On the three-node Garage cluster, one host per node: Garage checks no conditions, so two
/// uploads whose HEADs both ran before either PUT can both succeed (the documented window);
/// everything else holds, and the losses are counted.
#[test]
fn four_hosts_on_a_three_node_cluster_lose_nothing_outside_the_head_window() {
    if !alone("soak::four_hosts_on_a_three_node_cluster_lose_nothing_outside_the_head_window") {
        return;
    }
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
