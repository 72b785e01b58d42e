//! Data written but not uploaded when pailfs died: journaled next to each spool file, and turned
//! back into complete files by the next mount.
//!
//! A spool file alone cannot be recovered: for a file opened from an existing object it holds
//! only the bytes written (the rest is still in S3), and it does not know its key. So every
//! spool has a journal, `spool-….log`, one JSON record per line, appended (not synced: it
//! only has to survive the process, not the machine) whenever the file's shape changes: opened
//! (key, S3 version it is based on, size), bytes written over that version, size set, renamed,
//! uploaded, unlinked. A clean close deletes both files.
//!
//! At the next mount with the same cache directory, [`recover_spools`] replays each journal
//! left behind. A file with changes that never reached S3 is rebuilt as a complete local file
//! under `recovered/<time>/`, at its path relative to the mount: written bytes from the spool,
//! the others from the S3 version it was based on (pinned by ETag). If that version is gone the
//! file is kept with zeros in its gaps and flagged incomplete. It is **not uploaded**: the
//! application never saw its `close()` or `fsync()` succeed, so the data may be half a save,
//! and the key may hold newer data from another writer by now. The mount says where the files
//! are and how to copy them back; `RECOVERY.txt` there lists each one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ranges::RangeSet;
use crate::store::ObjectStore;

/// One journal record. Short field names keep the per-write record small.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "r")]
pub enum Record {
    /// The spool was created: the file's key, the version it is based on, its size.
    #[serde(rename = "o")]
    Open {
        key: String,
        base: Option<BaseRef>,
        size: u64,
    },
    /// Bytes `off..off+len` were written over the base version.
    #[serde(rename = "w")]
    Wrote { off: u64, len: u64 },
    /// The size was set (truncate or extend).
    #[serde(rename = "t")]
    Size { len: u64 },
    /// The file (or the object its base is) moved.
    #[serde(rename = "k")]
    Key {
        key: String,
        base_key: Option<String>,
    },
    /// An upload stored the file as `etag`; `clean` when nothing changed during it.
    #[serde(rename = "b")]
    Stored {
        key: String,
        etag: String,
        len: u64,
        clean: bool,
    },
    /// The name was removed: nothing is to be kept.
    #[serde(rename = "u")]
    Unlinked,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BaseRef {
    pub key: String,
    pub etag: String,
    pub len: u64,
}

/// The append-only journal of one spool file.
pub struct SpoolLog {
    file: File,
}

impl SpoolLog {
    pub fn create(path: &Path) -> std::io::Result<SpoolLog> {
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(path)?;
        Ok(SpoolLog { file })
    }

    /// Appends one record with a single `write` (whole lines, even if the process dies).
    pub fn note(&self, rec: &Record) {
        let mut line = serde_json::to_vec(rec).unwrap_or_default();
        line.push(b'\n');
        if let Err(e) = (&self.file).write_all(&line) {
            log::warn!("cannot journal a spool change: {e}; a crash now could not recover it");
        }
    }
}

/// A file's state rebuilt from its journal.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    pub key: String,
    pub base: Option<BaseRef>,
    pub size: u64,
    pub present: RangeSet,
    pub dirty: bool,
    pub unlinked: bool,
}

/// Replays journal lines; a torn or unknown line ends the replay there.
pub fn replay(text: &str) -> Option<Replayed> {
    let mut st: Option<Replayed> = None;
    for line in text.lines() {
        let Ok(rec) = serde_json::from_str::<Record>(line) else {
            break;
        };
        if let Record::Open { key, base, size } = rec {
            st = Some(Replayed {
                key,
                dirty: base.is_none() || size != base.as_ref().map_or(0, |b| b.len),
                base,
                size,
                ..Default::default()
            });
            continue;
        }
        let s = st.as_mut()?;
        match rec {
            Record::Open { .. } => unreachable!(),
            Record::Wrote { off, len } => {
                s.present.insert(off..off + len);
                s.size = s.size.max(off + len);
                s.dirty = true;
            }
            Record::Size { len } => {
                if let Some(b) = s.base.as_mut() {
                    b.len = b.len.min(len);
                }
                s.present.truncate(len);
                s.size = len;
                s.dirty = true;
            }
            Record::Key { key, base_key } => {
                s.key = key;
                if let (Some(b), Some(k)) = (s.base.as_mut(), base_key) {
                    b.key = k;
                }
            }
            Record::Stored {
                key,
                etag,
                len,
                clean,
            } => {
                let old = s.base.as_ref().map_or(0, |b| b.len);
                if len > old {
                    s.present.insert(old..len);
                }
                s.base = Some(BaseRef { key, etag, len });
                if clean {
                    s.dirty = false;
                }
            }
            Record::Unlinked => s.unlinked = true,
        }
    }
    st
}

/// One file rebuilt from a spool left behind.
#[derive(Debug)]
pub struct Recovered {
    pub key: String,
    pub path: PathBuf,
    pub size: u64,
    /// False when some bytes could not be had (the base version is gone): they read as zeros.
    pub complete: bool,
    pub note: String,
}

/// Bytes copied per step while rebuilding a file.
const STEP: u64 = 8 << 20;

/// Rebuilds every dirty spool file left in `spool_dir` by an earlier process under
/// `out_root/<time>/`, then deletes the spools. `prefix` is the mount's key prefix, so files
/// land at their paths relative to the mount root.
pub async fn recover_spools<S: ObjectStore>(
    store: &S,
    spool_dir: &Path,
    out_root: &Path,
    prefix: &str,
) -> Vec<Recovered> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(spool_dir) else {
        return out;
    };
    let dir = out_root.join(utc_stamp());
    for spool in spool_files(rd) {
        if let Some(r) = recover_spool(store, &spool, &dir, prefix).await {
            out.push(r);
        }
    }
    if !out.is_empty() {
        write_index(&dir, &out);
    }
    out
}

/// The spool files (not their journals) of a spool directory, in name order.
fn spool_files(rd: std::fs::ReadDir) -> Vec<PathBuf> {
    let mut spools: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("spool-") && !n.ends_with(".log"))
        })
        .collect();
    spools.sort();
    spools
}

/// Recovers one spool file into `dir` and deletes it with its journal. `None` when nothing
/// was to be kept, or when it could not be rebuilt (logged; the spool is left in place).
async fn recover_spool<S: ObjectStore>(
    store: &S,
    spool: &Path,
    dir: &Path,
    prefix: &str,
) -> Option<Recovered> {
    let log_path = PathBuf::from(format!("{}.log", spool.display()));
    let journal = std::fs::read_to_string(&log_path).unwrap_or_default();
    let Some(mut st) = replay(&journal) else {
        // A spool made ahead of need and never written to (see `SpoolPool`): nothing to keep.
        if journal.is_empty() && std::fs::metadata(spool).is_ok_and(|m| m.len() == 0) {
            discard(spool, &log_path);
            return None;
        }
        return keep_unidentified(spool, &log_path, dir);
    };
    // The spool is always exactly as long as the file (writes extend it, truncates
    // set it), including writes to a new file, which are not journaled one by one.
    if let Ok(m) = std::fs::metadata(spool) {
        st.size = m.len();
    }
    if !st.dirty || st.unlinked {
        discard(spool, &log_path);
        return None;
    }
    let dest = dir.join(relative_path(&st.key, prefix));
    match rebuild(store, spool, &st, &dest).await {
        Ok(missing) => {
            discard(spool, &log_path);
            Some(rebuilt(st, dest, missing))
        }
        Err(e) => {
            log::error!(
                "cannot rebuild {:?} from {} ({e}); the spool is left in place",
                st.key,
                spool.display()
            );
            None
        }
    }
}

/// A spool with no journal (or no opening record): nothing says what the bytes are, so the
/// file is moved as it is to `unidentified/`.
fn keep_unidentified(spool: &Path, log_path: &Path, dir: &Path) -> Option<Recovered> {
    let dest = dir.join("unidentified").join(spool.file_name().unwrap());
    let kept =
        std::fs::create_dir_all(dest.parent().unwrap()).and_then(|_| std::fs::rename(spool, &dest));
    let _ = std::fs::remove_file(log_path);
    kept.ok()?;
    Some(Recovered {
        key: String::new(),
        size: std::fs::metadata(&dest).map_or(0, |m| m.len()),
        path: dest,
        complete: false,
        note: "spool file without a journal: its key is unknown".into(),
    })
}

/// Deletes a spool file and its journal.
fn discard(spool: &Path, log_path: &Path) {
    let _ = std::fs::remove_file(spool);
    let _ = std::fs::remove_file(log_path);
}

/// The report of a file rebuilt at `dest`, `missing` bytes of which S3 no longer had.
fn rebuilt(st: Replayed, dest: PathBuf, missing: u64) -> Recovered {
    let note = if missing == 0 {
        "complete".into()
    } else {
        format!(
            "incomplete: {missing} bytes came from S3 version {} of {:?}, which is gone; they read as zeros",
            st.base.as_ref().map_or("", |b| b.etag.as_str()),
            st.base.as_ref().map_or("", |b| b.key.as_str())
        )
    };
    Recovered {
        key: st.key,
        path: dest,
        size: st.size,
        complete: missing == 0,
        note,
    }
}

/// Writes the rebuilt file; returns how many bytes could not be had from S3.
async fn rebuild<S: ObjectStore>(
    store: &S,
    spool: &Path,
    st: &Replayed,
    dest: &Path,
) -> std::io::Result<u64> {
    std::fs::create_dir_all(dest.parent().unwrap())?;
    let src = File::open(spool)?;
    let dst = File::create(dest)?;
    dst.set_len(st.size)?;
    let base_len = st.base.as_ref().map_or(0, |b| b.len).min(st.size);
    let mut missing = 0;
    let from_spool = |r: std::ops::Range<u64>| -> std::io::Result<()> {
        let mut pos = r.start;
        while pos < r.end {
            let n = (r.end - pos).min(STEP) as usize;
            let mut buf = vec![0u8; n];
            let got = read_full(&src, &mut buf, pos)?;
            dst.write_all_at(&buf[..got], pos)?;
            pos += n as u64;
        }
        Ok(())
    };
    let mut pos = 0;
    for gap in st.present.gaps(0..base_len) {
        from_spool(pos..gap.start)?;
        let b = st
            .base
            .as_ref()
            .expect("a gap below the base length has a base");
        let mut at = gap.start;
        while at < gap.end {
            let end = (at + STEP).min(gap.end);
            match store.get_range(&b.key, at..end, Some(&b.etag)).await {
                Ok(data) if data.len() as u64 == end - at => dst.write_all_at(&data, at)?,
                _ => missing += end - at,
            }
            at = end;
        }
        pos = gap.end;
    }
    from_spool(pos..st.size)?;
    dst.sync_all()?;
    Ok(missing)
}

fn read_full(f: &File, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = f.read_at(&mut buf[done..], off + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// The key's path below the mount root, with nothing that could leave the directory.
/// A key segment as a local file name: one over the local 255-byte limit (names through the
/// mount go up to 1,024) is cut and given a hash of the whole; RECOVERY.txt has the full key.
fn local_segment(seg: &str) -> String {
    const LOCAL_NAME_MAX: usize = 255;
    if seg.len() <= LOCAL_NAME_MAX {
        return seg.to_string();
    }
    let mut cut = 200;
    while !seg.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}~{}",
        &seg[..cut],
        crate::private::stable_hash(&[seg.as_bytes()])
    )
}

fn relative_path(key: &str, prefix: &str) -> PathBuf {
    let rel = key.strip_prefix(prefix).unwrap_or(key);
    let mut p = PathBuf::new();
    for seg in rel.split('/') {
        if !seg.is_empty() && seg != "." && seg != ".." {
            p.push(local_segment(seg));
        }
    }
    if p.as_os_str().is_empty() {
        p.push("unnamed");
    }
    p
}

fn write_index(dir: &Path, files: &[Recovered]) {
    let mut text = String::from(
        "Files written through pailfs whose changes never reached S3: the pailfs process that held\n\
         them stopped before they were closed or synced. They were not uploaded (the application\n\
         never saw the save succeed). Copy back the ones you want, e.g.: cp -a THIS_DIR/. MOUNTPOINT/\n\n",
    );
    for f in files {
        text.push_str(&format!(
            "{}\n  key: {:?}\n  size: {}\n  {}\n",
            f.path.strip_prefix(dir).unwrap_or(&f.path).display(),
            f.key,
            f.size,
            f.note
        ));
    }
    let _ = std::fs::write(dir.join("RECOVERY.txt"), text);
}

/// `YYYYmmdd-HHMMSS` in UTC, for the recovery directory's name.
fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{ObjectStore, UserMeta};
    use bytes::Bytes;

    #[test]
    fn long_key_segments_become_local_names_that_fit() {
        let long = "é".repeat(300);
        let p = relative_path(&format!("pre/{long}/f"), "pre/");
        let first = p.iter().next().unwrap().to_str().unwrap();
        assert!(first.len() <= 255, "{} bytes", first.len());
        assert_ne!(
            local_segment(&long),
            local_segment(&format!("{long}x")),
            "two long names stay apart"
        );
        assert_eq!(local_segment("short"), "short");
    }

    fn lines(recs: &[Record]) -> String {
        recs.iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect()
    }

    fn base(etag: &str, len: u64) -> Option<BaseRef> {
        Some(BaseRef {
            key: "p/a".into(),
            etag: etag.into(),
            len,
        })
    }

    #[test]
    fn replay_follows_writes_truncates_uploads_and_unlinks() {
        let new_file = lines(&[Record::Open {
            key: "p/new".into(),
            base: None,
            size: 0,
        }]);
        assert!(replay(&new_file).unwrap().dirty);

        let edited = lines(&[
            Record::Open {
                key: "p/a".into(),
                base: base("e1", 100),
                size: 100,
            },
            Record::Wrote { off: 10, len: 5 },
            Record::Size { len: 50 },
        ]);
        let r = replay(&edited).unwrap();
        assert!(r.dirty);
        assert_eq!((r.size, r.base.unwrap().len), (50, 50));

        let uploaded = lines(&[
            Record::Open {
                key: "p/a".into(),
                base: base("e1", 100),
                size: 100,
            },
            Record::Wrote { off: 100, len: 5 },
            Record::Stored {
                key: "p/a".into(),
                etag: "e2".into(),
                len: 105,
                clean: true,
            },
        ]);
        assert!(!replay(&uploaded).unwrap().dirty);

        let torn = uploaded.clone() + "{\"r\":\"w\",\"off\":1";
        assert!(!replay(&torn).unwrap().dirty);
        let unlinked = edited + &lines(&[Record::Unlinked]);
        assert!(replay(&unlinked).unwrap().unlinked);
        assert!(replay("").is_none());
    }

    #[test]
    fn spools_left_behind_become_complete_files() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = MemoryStore::new();
            let etag = store
                .put("p/d/a", Bytes::from(vec![b'o'; 20]), &UserMeta::new())
                .await
                .unwrap()
                .etag;
            let spool_dir = tempfile::tempdir().unwrap();
            let out = tempfile::tempdir().unwrap();
            let write = |name: &str, data: &[(u64, &[u8])], recs: &[Record]| {
                let f = File::create(spool_dir.path().join(name)).unwrap();
                // As `Fs::spool_of` does: the spool starts as long as the file.
                if let Some(Record::Open { size, .. }) = recs.first() {
                    f.set_len(*size).unwrap();
                }
                for (off, d) in data {
                    f.write_all_at(d, *off).unwrap();
                }
                std::fs::write(spool_dir.path().join(format!("{name}.log")), lines(recs)).unwrap();
            };
            // An edit of an existing object: bytes 5..8 written, size 24.
            write(
                "spool-1-0",
                &[(5, b"NEW"), (20, b"TAIL")],
                &[
                    Record::Open {
                        key: "p/d/a".into(),
                        base: Some(BaseRef {
                            key: "p/d/a".into(),
                            etag: etag.clone(),
                            len: 20,
                        }),
                        size: 20,
                    },
                    Record::Wrote { off: 5, len: 3 },
                    Record::Wrote { off: 20, len: 4 },
                ],
            );
            // A new file, and one that was uploaded cleanly (nothing to recover).
            write(
                "spool-1-1",
                &[(0, b"fresh")],
                &[Record::Open {
                    key: "p/b".into(),
                    base: None,
                    size: 0,
                }],
            );
            write(
                "spool-1-2",
                &[(0, b"done")],
                &[
                    Record::Open {
                        key: "p/c".into(),
                        base: None,
                        size: 0,
                    },
                    Record::Stored {
                        key: "p/c".into(),
                        etag: "x".into(),
                        len: 4,
                        clean: true,
                    },
                ],
            );
            // Two spools made ahead of need and never written (`SpoolPool`), left by a kill:
            // discarded, not reported.
            for sp in [
                super::super::spool::Spool::create(spool_dir.path()).unwrap(),
                super::super::spool::Spool::create(spool_dir.path()).unwrap(),
            ] {
                sp.keep();
            }
            let got = recover_spools(&store, spool_dir.path(), out.path(), "p/").await;
            assert_eq!(got.len(), 2, "{got:?}");
            assert!(got.iter().all(|r| r.complete));
            let a = got.iter().find(|r| r.key == "p/d/a").unwrap();
            assert!(a.path.ends_with("d/a"));
            assert_eq!(std::fs::read(&a.path).unwrap(), b"oooooNEWooooooooooooTAIL");
            let b = got.iter().find(|r| r.key == "p/b").unwrap();
            assert_eq!(std::fs::read(&b.path).unwrap(), b"fresh");
            assert_eq!(std::fs::read_dir(spool_dir.path()).unwrap().count(), 0);
            let index = std::fs::read_to_string(
                a.path
                    .parent()
                    .unwrap()
                    .parent()
                    .unwrap()
                    .join("RECOVERY.txt"),
            )
            .unwrap();
            assert!(index.contains("p/d/a") && index.contains("cp -a"));

            // The base version is gone: the file is kept, flagged incomplete.
            write(
                "spool-2-0",
                &[(0, b"X")],
                &[
                    Record::Open {
                        key: "p/d/a".into(),
                        base: Some(BaseRef {
                            key: "p/d/a".into(),
                            etag: "\"gone\"".into(),
                            len: 20,
                        }),
                        size: 20,
                    },
                    Record::Wrote { off: 0, len: 1 },
                ],
            );
            let got = recover_spools(&store, spool_dir.path(), out.path(), "p/").await;
            assert_eq!(got.len(), 1);
            assert!(!got[0].complete && got[0].note.contains("19 bytes"));
        });
    }

    #[test]
    fn recovered_paths_stay_inside_the_directory() {
        assert_eq!(relative_path("p/a/../b", "p/"), PathBuf::from("a/b"));
        assert_eq!(relative_path("/etc//x", ""), PathBuf::from("etc/x"));
        assert_eq!(relative_path("p/", "p/"), PathBuf::from("unnamed"));
        assert_eq!(utc_stamp().len(), 15);
    }
}
