//! The persistent attribute cache: the user metadata (mode, owner, times, ...) of objects,
//! kept on local disk by (key, ETag), so that a listing, which gives every key's ETag but no
//! metadata, shows exact attributes without a HEAD per file, also after a remount or a crash.
//!
//! Why it can be trusted: an entry is used only for the ETag it was stored with, so a new
//! version of the object is never shown with old attributes. A copy of an object onto itself
//! with new metadata (a `chmod` by another host) keeps a single-part object's ETag, so an
//! entry also holds the object's Last-Modified second when it was learned from S3 (a HEAD),
//! and is used only at that time; an entry stored from an upload or a copy made here (whose
//! answer carries no date) is bound to the first date a listing shows with its ETag within
//! [`BIND_WINDOW`] of the time it was stored (a copy onto itself made elsewhere within that
//! window, before this host listed the object, is the one case it cannot tell apart).
//!
//! Where it lives: one SQLite database per bucket and endpoint under the cache root
//! (`attrs/BUCKET-HASH.sqlite`), shared by every mount of that bucket with that cache root,
//! in separate processes at once (SQLite's locking and write-ahead log). The directory and file
//! are private like the rest of the cache; an existing file must be a regular file of this user.
//! Each row carries a CRC32C of what it says: a row altered on disk is deleted, never used; a
//! database SQLite finds damaged at open is replaced by an empty one.
//!
//! Bounds: the database holds at most `cap` bytes of pages; past it, the least recently used
//! rows go (use is recorded at most once an hour per row, so reads rarely write). Writes are
//! queued in memory and written by one thread in a transaction every [`FLUSH`]; a crash loses
//! at most that much (misses, never wrong answers). Lookups read the queue first.
//!
//! Locks: `pending` (the queue), `reader` (the lookup connection) and `unsaved` (counters)
//! are never held together: a lookup copies what the queue says, reads the database, then
//! queues what it found to write. The writer thread owns its own connection and takes
//! `pending` and `unsaved` only to swap them out. `AttrCache` alone touches them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::store::{ObjectMeta, UserMeta};

/// How often queued writes reach the database.
pub const FLUSH: Duration = Duration::from_millis(200);
/// The format of the database; another one is replaced.
const VERSION: i64 = 1;
/// A row's use is written again only when older than this.
const TOUCH_EVERY: i64 = 3600;
/// How far (seconds, either way) the date a listing shows may be from the time an upload made
/// here was stored for the two to be taken as the same version: clocks differ a little, and
/// a server whose clock is further off only costs HEADs (each HEAD stores the exact date).
const BIND_WINDOW: i64 = 2;
/// The least bound accepted (an empty database takes a few pages).
pub const MIN_CAP: u64 = 256 << 10;

/// What is known of one key, waiting to be written.
#[derive(Clone, Debug)]
enum Pending {
    Put(Row),
    Forget,
    /// Binds an entry stored without a date to the date a listing showed.
    Bind {
        etag: String,
        modified: i64,
    },
    Touch,
}

#[derive(Clone, Debug, PartialEq)]
struct Row {
    etag: String,
    /// Last-Modified in whole seconds; `None` when stored from an upload or copy made here.
    modified: Option<i64>,
    /// When this host stored it (whole seconds): a dateless row matches only a date near it.
    written: i64,
    meta: UserMeta,
}

impl Row {
    /// Whether the row describes the listed version `etag` at `modified`.
    fn matches(&self, etag: &str, modified: i64) -> bool {
        self.etag == etag
            && match self.modified {
                Some(m) => m == modified,
                None => (modified - self.written).abs() <= BIND_WINDOW,
            }
    }
}

/// What the queue and the writer thread share.
struct Shared {
    pending: Mutex<HashMap<String, Pending>>,
    wake: Condvar,
    stop: AtomicBool,
    /// Hits and misses not yet added to the database's totals.
    unsaved: Mutex<(u64, u64)>,
}

/// The cache of one bucket (see the module documentation).
pub struct AttrCache {
    path: PathBuf,
    shared: Arc<Shared>,
    reader: Mutex<Connection>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// What `doctor` shows of a cache.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub path: PathBuf,
    pub bytes: u64,
    pub entries: u64,
    pub hits: u64,
    pub misses: u64,
}

/// The database of `bucket` at `endpoint` under `cache_root`.
pub fn path_of(cache_root: &Path, endpoint: &str, bucket: &str) -> PathBuf {
    let hash = crate::private::stable_hash(&[endpoint.as_bytes(), bucket.as_bytes()]);
    cache_root
        .join("attrs")
        .join(format!("{bucket}-{}.sqlite", &hash[..16]))
}

fn now_secs() -> i64 {
    secs(SystemTime::now())
}

/// Whole seconds since the epoch (what an HTTP date keeps of a time).
pub fn secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    }
}

fn crc(key: &str, r: &Row, meta_json: &str) -> i64 {
    let m = r.modified.map(|m| m.to_string()).unwrap_or_default();
    let w = r.written.to_string();
    let text = [key, r.etag.as_str(), &m, &w, meta_json].join("\0");
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, text.as_bytes()) as i64
}

fn sql_err(path: &Path, e: rusqlite::Error) -> String {
    format!("the attribute cache {}: {e}", path.display())
}

/// Opens (creating it private) the database at `path`; a damaged one is started afresh.
/// Returns a notice when that happened.
fn open_db(path: &Path) -> Result<(Connection, Option<String>), String> {
    let dir = path.parent().expect("a file in a directory");
    crate::private::private_dir(dir)?;
    check_file(path)?;
    match open_checked(path) {
        Ok(c) => Ok((c, None)),
        Err(e) if !is_damage(&e) => Err(sql_err(path, e)),
        Err(why) => {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = path.as_os_str().to_owned();
                p.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(p));
            }
            let c = open_checked(path).map_err(|e| sql_err(path, e))?;
            Ok((
                c,
                Some(format!(
                    "the attribute cache {} could not be used ({why}); it was started afresh",
                    path.display()
                )),
            ))
        }
    }
}

/// Whether an error says the file is not a sound database (then it is started afresh; any
/// other error, a busy database say, leaves it alone).
fn is_damage(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match e {
        rusqlite::Error::SqliteFailure(f, _) => matches!(f.code, DatabaseCorrupt | NotADatabase),
        rusqlite::Error::InvalidQuery => true, // what a failed quick_check is reported as
        _ => false,
    }
}

/// An existing database file must be a regular file of this user (not a symlink); a missing
/// one is created private (never truncating one another mount just created).
fn check_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    match std::fs::symlink_metadata(path) {
        Err(_) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map(drop)
            .map_err(|e| format!("cannot create {}: {e}", path.display())),
        Ok(m) if !m.file_type().is_file() => Err(format!(
            "{} is not a regular file; remove it or choose another --cache-dir",
            path.display()
        )),
        Ok(m) if m.uid() != unsafe { libc::geteuid() } => Err(format!(
            "{} belongs to another user; remove it or choose another --cache-dir",
            path.display()
        )),
        Ok(_) => Ok(()),
    }
}

fn open_checked(path: &Path) -> Result<Connection, rusqlite::Error> {
    let mut c = open_connection(path)?;
    prepare(&mut c)?;
    Ok(c)
}

fn open_connection(path: &Path) -> Result<Connection, rusqlite::Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let c = Connection::open_with_flags(path, flags)?;
    c.busy_timeout(Duration::from_secs(5))?;
    let ok: String = c.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if ok != "ok" {
        return Err(rusqlite::Error::InvalidQuery);
    }
    Ok(c)
}

/// Settings and tables (created by the first process to get there).
fn prepare(c: &mut Connection) -> Result<(), rusqlite::Error> {
    // Takes effect only in a new database: before its first table.
    c.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")?;
    c.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    c.execute_batch(
        "PRAGMA synchronous = NORMAL;
         PRAGMA cache_size = -512;
         PRAGMA wal_autocheckpoint = 256;
         PRAGMA journal_size_limit = 1048576;",
    )?;
    // One process at a time creates or replaces the tables.
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version != VERSION {
        tx.execute_batch("DROP TABLE IF EXISTS attrs; DROP TABLE IF EXISTS totals;")?;
    }
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS attrs (
             key TEXT PRIMARY KEY, etag TEXT NOT NULL, modified INTEGER,
             written INTEGER NOT NULL, meta TEXT NOT NULL, crc INTEGER NOT NULL, used INTEGER NOT NULL);
         CREATE INDEX IF NOT EXISTS attrs_used ON attrs(used);
         CREATE TABLE IF NOT EXISTS totals (name TEXT PRIMARY KEY, value INTEGER NOT NULL);",
    )?;
    tx.pragma_update(None, "user_version", VERSION)?;
    tx.commit()
}

impl AttrCache {
    /// Opens the cache at `path`, bounded to `cap` bytes. Returns it and a notice when a
    /// damaged database was replaced.
    pub fn open(path: &Path, cap: u64) -> Result<(Arc<AttrCache>, Option<String>), String> {
        let (reader, notice) = open_db(path)?;
        let writer = open_checked(path).map_err(|e| sql_err(path, e))?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            unsaved: Mutex::new((0, 0)),
        });
        let s = shared.clone();
        let cap = cap.max(MIN_CAP);
        let handle = std::thread::Builder::new()
            .name("pailfs-attrs".into())
            .spawn(move || write_loop(writer, &s, cap))
            .map_err(|e| format!("cannot start the attribute cache's writer: {e}"))?;
        let cache = AttrCache {
            path: path.to_path_buf(),
            shared,
            reader: Mutex::new(reader),
            writer: Mutex::new(Some(handle)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        };
        Ok((Arc::new(cache), notice))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hits and misses of this process.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Fills in the user metadata of the listed objects the cache holds at their ETag and
    /// date; returns how many it filled.
    pub fn fill(&self, objects: &mut [ObjectMeta]) -> usize {
        let want: Vec<usize> = (0..objects.len())
            .filter(|&n| objects[n].user_meta.is_none() && !objects[n].etag.is_empty())
            .collect();
        if want.is_empty() {
            return 0;
        }
        let queued: Vec<Option<Pending>> = {
            let pending = self.shared.pending.lock().expect("attrs pending");
            want.iter()
                .map(|&n| pending.get(&objects[n].key).cloned())
                .collect()
        };
        let mut later = Vec::new();
        let rows = self.read_rows(objects, &want, &queued, &mut later);
        let mut filled = 0;
        for (&n, found) in want.iter().zip(rows) {
            let o = &mut objects[n];
            let modified = secs(o.last_modified);
            if let Some(r) = found.filter(|r| r.matches(&o.etag, modified)) {
                if r.modified.is_none() {
                    later.push((o.key.clone(), Later::Bind(r.clone(), modified)));
                }
                o.user_meta = Some(r.meta);
                filled += 1;
            }
        }
        let mut pending = self.shared.pending.lock().expect("attrs pending");
        for (key, l) in later {
            l.queue(&mut pending, key);
        }
        drop(pending);
        self.count(filled as u64, (want.len() - filled) as u64);
        filled
    }

    /// The row of each wanted object: from the queue when a change waits there, else from the
    /// database (read without the queue's lock held).
    fn read_rows(
        &self,
        objects: &[ObjectMeta],
        want: &[usize],
        queued: &[Option<Pending>],
        later: &mut Vec<(String, Later)>,
    ) -> Vec<Option<Row>> {
        let reader = self.reader.lock().expect("attrs reader");
        let mut stmt = match reader.prepare_cached(
            "SELECT etag, modified, written, meta, crc, used FROM attrs WHERE key = ?1",
        ) {
            Ok(s) => Some(s),
            Err(e) => {
                log::debug!("{}", sql_err(&self.path, e));
                None
            }
        };
        want.iter()
            .zip(queued)
            .map(|(&n, q)| match (q, stmt.as_mut()) {
                (Some(Pending::Put(r)), _) => Some(r.clone()),
                (Some(Pending::Forget), _) | (_, None) => None,
                (_, Some(stmt)) => read_row(stmt, &objects[n].key, later),
            })
            .collect()
    }

    /// Counts lookups: hits, and misses (files a HEAD had to be asked for).
    pub fn count(&self, hits: u64, misses: u64) {
        if hits == 0 && misses == 0 {
            return;
        }
        self.hits.fetch_add(hits, Ordering::Relaxed);
        self.misses.fetch_add(misses, Ordering::Relaxed);
        let mut u = self.shared.unsaved.lock().expect("attrs totals");
        u.0 += hits;
        u.1 += misses;
    }

    /// Remembers what a HEAD said of `key`: its metadata at `etag` and `modified`. An answer
    /// dated within [`BIND_WINDOW`] of now is not kept: another version with the same ETag
    /// could still follow within the same second (a copy onto itself elsewhere).
    pub fn remember_head(&self, key: &str, etag: &str, modified: SystemTime, meta: &UserMeta) {
        let modified = secs(modified);
        if etag.is_empty() || (now_secs() - modified).abs() <= BIND_WINDOW {
            return;
        }
        let row = Row {
            etag: etag.to_string(),
            modified: Some(modified),
            written: now_secs(),
            meta: meta.clone(),
        };
        self.queue(key, Pending::Put(row));
    }

    /// Remembers what this host stored at `key` (an upload or a copy begun at `started`): S3
    /// answers with the ETag only, so the entry waits for a date (see the module documentation).
    pub fn remember_stored(&self, key: &str, etag: &str, started: SystemTime, meta: &UserMeta) {
        if etag.is_empty() {
            return;
        }
        let row = Row {
            etag: etag.to_string(),
            modified: None,
            written: secs(started),
            meta: meta.clone(),
        };
        self.queue(key, Pending::Put(row));
    }

    /// Drops what is known of `key` (deleted).
    pub fn forget(&self, key: &str) {
        self.queue(key, Pending::Forget);
    }

    /// Whether a row for `key` at `etag` is known (tests, `doctor`).
    pub fn holds(&self, key: &str, etag: &str) -> bool {
        let pending = self.shared.pending.lock().expect("attrs pending");
        if let Some(Pending::Put(r)) = pending.get(key) {
            return r.etag == etag;
        }
        drop(pending);
        let reader = self.reader.lock().expect("attrs reader");
        reader
            .query_row("SELECT etag FROM attrs WHERE key = ?1", [key], |r| {
                r.get::<_, String>(0)
            })
            .optional()
            .ok()
            .flatten()
            .is_some_and(|e| e == etag)
    }

    fn queue(&self, key: &str, p: Pending) {
        let mut pending = self.shared.pending.lock().expect("attrs pending");
        pending.insert(key.to_string(), p);
        if pending.len() >= 4096 {
            self.shared.wake.notify_one();
        }
    }

    /// Writes everything queued now (tests; the writer thread does it every [`FLUSH`]).
    pub fn flush(&self) {
        let writer = open_checked(&self.path);
        match writer {
            Ok(mut c) => write_queued(&mut c, &self.shared, None),
            Err(e) => log::warn!("{}", sql_err(&self.path, e)),
        }
    }
}

impl AttrCache {
    /// Writes what is queued and stops the writer (at unmount; dropping the cache does it too).
    /// What is remembered afterwards is written by [`Self::flush`] only.
    pub fn close(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
        if let Some(h) = self.writer.lock().expect("attrs writer").take() {
            let _ = h.join();
        }
    }
}

impl Drop for AttrCache {
    fn drop(&mut self) {
        self.close();
    }
}

/// What a lookup found to write, queued after the rows were read.
enum Later {
    /// Binds the dateless row to the date a listing showed.
    Bind(Row, i64),
    Touch,
    Forget,
}

impl Later {
    fn queue(self, pending: &mut HashMap<String, Pending>, key: String) {
        match self {
            Later::Bind(r, modified) => match pending.get_mut(&key) {
                // Still in the queue, and the same entry (not a newer one): bind it there.
                Some(Pending::Put(q)) if q.etag == r.etag && q.written == r.written => {
                    q.modified = Some(modified);
                }
                Some(Pending::Put(_) | Pending::Forget) => {}
                _ => {
                    let etag = r.etag;
                    pending.insert(key, Pending::Bind { etag, modified });
                }
            },
            Later::Touch => {
                pending.entry(key).or_insert(Pending::Touch);
            }
            Later::Forget => {
                pending.insert(key, Pending::Forget);
            }
        }
    }
}

/// Reads the row of `key`; a row whose CRC does not match is queued for deletion.
fn read_row(
    stmt: &mut rusqlite::CachedStatement<'_>,
    key: &str,
    later: &mut Vec<(String, Later)>,
) -> Option<Row> {
    let got = stmt
        .query_row([key], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })
        .optional()
        .ok()
        .flatten()?;
    let (etag, modified, written, meta_json, stored_crc, used) = got;
    let meta: Option<UserMeta> = serde_json::from_str(&meta_json).ok();
    let row = meta.map(|meta| Row {
        etag,
        modified,
        written,
        meta,
    });
    match row {
        Some(r) if crc(key, &r, &meta_json) == stored_crc => {
            if now_secs() - used > TOUCH_EVERY {
                later.push((key.to_string(), Later::Touch));
            }
            Some(r)
        }
        _ => {
            log::warn!("attribute cache: the row of {key:?} is damaged; dropped");
            later.push((key.to_string(), Later::Forget));
            None
        }
    }
}

fn write_loop(mut c: Connection, shared: &Shared, cap: u64) {
    loop {
        let stop = {
            let pending = shared.pending.lock().expect("attrs pending");
            let (_p, _) = shared
                .wake
                .wait_timeout(pending, FLUSH)
                .expect("attrs pending");
            shared.stop.load(Ordering::SeqCst)
        };
        write_queued(&mut c, shared, Some(cap));
        if stop {
            return;
        }
    }
}

/// Writes the queue in one transaction, adds the counters to the totals, and evicts past `cap`.
fn write_queued(c: &mut Connection, shared: &Shared, cap: Option<u64>) {
    let queued = std::mem::take(&mut *shared.pending.lock().expect("attrs pending"));
    let counted = std::mem::take(&mut *shared.unsaved.lock().expect("attrs totals"));
    if queued.is_empty() && counted == (0, 0) {
        return;
    }
    if let Err(e) = write_batch(c, &queued, counted) {
        log::warn!("attribute cache: cannot write: {e}");
        return;
    }
    if let Some(cap) = cap
        && let Err(e) = evict(c, cap)
    {
        log::warn!("attribute cache: cannot evict: {e}");
    }
}

fn write_batch(
    c: &mut Connection,
    queued: &HashMap<String, Pending>,
    counted: (u64, u64),
) -> rusqlite::Result<()> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let now = now_secs();
    {
        let mut put = tx.prepare_cached(
            "INSERT INTO attrs (key, etag, modified, written, meta, crc, used) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT(key) DO UPDATE SET etag = excluded.etag, modified = excluded.modified, \
             written = excluded.written, meta = excluded.meta, crc = excluded.crc, \
             used = excluded.used \
             WHERE NOT (attrs.etag = excluded.etag AND attrs.written > excluded.written)",
        )?;
        let mut forget = tx.prepare_cached("DELETE FROM attrs WHERE key = ?1")?;
        let mut touch = tx.prepare_cached("UPDATE attrs SET used = ?2 WHERE key = ?1")?;
        let mut bind = tx.prepare_cached(
            "SELECT meta, written FROM attrs WHERE key = ?1 AND etag = ?2 AND modified IS NULL",
        )?;
        for (key, p) in queued {
            match p {
                Pending::Put(r) => {
                    let json = serde_json::to_string(&r.meta).unwrap_or_default();
                    let sum = crc(key, r, &json);
                    put.execute(params![key, r.etag, r.modified, r.written, json, sum, now])?;
                }
                Pending::Forget => {
                    forget.execute([key])?;
                }
                Pending::Touch => {
                    touch.execute(params![key, now])?;
                }
                Pending::Bind { etag, modified } => {
                    let got: Option<(String, i64)> = bind
                        .query_row(params![key, etag], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?;
                    let Some((json, written)) = got else { continue };
                    if let Ok(meta) = serde_json::from_str(&json) {
                        let r = Row {
                            etag: etag.clone(),
                            modified: Some(*modified),
                            written,
                            meta,
                        };
                        let sum = crc(key, &r, &json);
                        put.execute(params![key, r.etag, r.modified, r.written, json, sum, now])?;
                    }
                }
            }
        }
        let mut add = tx.prepare_cached(
            "INSERT INTO totals (name, value) VALUES (?1, ?2) \
             ON CONFLICT(name) DO UPDATE SET value = value + ?2",
        )?;
        add.execute(params!["hits", counted.0 as i64])?;
        add.execute(params!["misses", counted.1 as i64])?;
    }
    tx.commit()
}

fn pragma(c: &Connection, name: &str) -> rusqlite::Result<i64> {
    c.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
}

/// Keeps the database file within `cap` bytes: gives free pages back to the file system, and
/// deletes the least recently used rows until the file fits in nine tenths of `cap`.
fn evict(c: &mut Connection, cap: u64) -> rusqlite::Result<()> {
    let size = pragma(c, "page_size")? as u64;
    let mut shrunk = false;
    for _ in 0..8 {
        if pragma(c, "freelist_count")? > 0 {
            // One page per step: run it to its end.
            let mut vacuum = c.prepare("PRAGMA incremental_vacuum")?;
            let mut rows = vacuum.query([])?;
            while rows.next()?.is_some() {}
            shrunk = true;
        }
        let file = pragma(c, "page_count")? as u64 * size;
        if file <= cap {
            break;
        }
        let rows: i64 = c.query_row("SELECT count(*) FROM attrs", [], |r| r.get(0))?;
        let target = cap / 10 * 9;
        let drop_rows = (rows as u128 * (file - target) as u128 / file as u128) as i64 + 1;
        c.execute(
            "DELETE FROM attrs WHERE key IN (SELECT key FROM attrs ORDER BY used LIMIT ?1)",
            [drop_rows],
        )?;
    }
    if shrunk {
        // Shrinks the file now rather than at the next automatic checkpoint.
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    Ok(())
}

/// What the cache at `path` holds, for `doctor` (read without changing it); `None` when there
/// is none.
pub fn report(path: &Path) -> Option<Report> {
    let bytes = std::fs::metadata(path).ok()?.len();
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let c = Connection::open_with_flags(path, flags).ok()?;
    let _ = c.busy_timeout(Duration::from_secs(5));
    let entries: i64 = c
        .query_row("SELECT count(*) FROM attrs", [], |r| r.get(0))
        .ok()?;
    let total = |name: &str| -> u64 {
        c.query_row("SELECT value FROM totals WHERE name = ?1", [name], |r| {
            r.get::<_, i64>(0)
        })
        .map(|v| v as u64)
        .unwrap_or(0)
    };
    Some(Report {
        path: path.to_path_buf(),
        bytes,
        entries: entries as u64,
        hits: total("hits"),
        misses: total("misses"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(mode: &str) -> UserMeta {
        [("mode".to_string(), mode.to_string())].into()
    }

    fn listed(key: &str, etag: &str, at: u64) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size: 1,
            etag: etag.into(),
            last_modified: UNIX_EPOCH + Duration::from_millis(at),
            user_meta: None,
        }
    }

    fn now() -> u64 {
        now_secs() as u64 * 1000
    }

    fn open(dir: &Path, cap: u64) -> Arc<AttrCache> {
        AttrCache::open(&dir.join("attrs/b.sqlite"), cap).unwrap().0
    }

    #[test]
    fn an_entry_is_used_only_at_its_etag_and_date() {
        let d = tempfile::tempdir().unwrap();
        let c = open(d.path(), 1 << 20);
        let at = UNIX_EPOCH + Duration::from_secs(1000);
        c.remember_head("a", "\"e1\"", at, &meta("33188"));
        c.remember_head("new", "\"e1\"", SystemTime::now(), &meta("33188"));
        assert!(!c.holds("new", "\"e1\""), "an answer dated now is not kept");
        let mut l = vec![
            listed("a", "\"e1\"", 1_000_400),
            listed("a", "\"e2\"", 1_000_400),
            listed("a", "\"e1\"", 1_001_000),
            listed("b", "\"e1\"", 1_000_000),
        ];
        assert_eq!(c.fill(&mut l), 1);
        assert_eq!(l[0].user_meta, Some(meta("33188")));
        assert!(l[1..].iter().all(|o| o.user_meta.is_none()), "{l:?}");
        c.flush();
        let mut again = vec![listed("a", "\"e1\"", 1_000_999)];
        assert_eq!(c.fill(&mut again), 1, "read back from the database");
    }

    #[test]
    fn an_upload_is_bound_to_the_first_date_listed_near_its_time() {
        let d = tempfile::tempdir().unwrap();
        let c = open(d.path(), 1 << 20);
        let now = now_secs() as u64 * 1000;
        c.remember_stored("a", "\"e\"", SystemTime::now(), &meta("33261"));
        c.remember_stored("far", "\"e\"", SystemTime::now(), &meta("33261"));
        c.flush();
        assert_eq!(c.fill(&mut [listed("a", "\"e\"", now + 2_000)]), 1);
        c.flush();
        assert_eq!(c.fill(&mut [listed("a", "\"e\"", now + 2_500)]), 1);
        assert_eq!(
            c.fill(&mut [listed("a", "\"e\"", now + 4_000)]),
            0,
            "a copy onto itself elsewhere (same ETag, later date) is not trusted"
        );
        let far = now + 1000 * (BIND_WINDOW as u64 + 5);
        assert_eq!(c.fill(&mut [listed("far", "\"e\"", far)]), 0);
    }

    #[test]
    fn it_survives_reopening_and_counts_hits() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("attrs/b.sqlite");
        {
            let (c, notice) = AttrCache::open(&path, 1 << 20).unwrap();
            assert_eq!(notice, None);
            c.remember_stored("k", "\"e\"", SystemTime::now(), &UserMeta::new());
            assert_eq!(c.fill(&mut [listed("k", "\"e\"", now())]), 1);
            c.count(0, 3);
        }
        let (c, _) = AttrCache::open(&path, 1 << 20).unwrap();
        let mut l = [listed("k", "\"e\"", now())];
        assert_eq!(c.fill(&mut l), 1);
        assert_eq!(
            l[0].user_meta,
            Some(UserMeta::new()),
            "no metadata is known too"
        );
        drop(c);
        let r = report(&path).unwrap();
        assert_eq!((r.entries, r.hits, r.misses), (1, 2, 3));
    }

    #[test]
    fn a_damaged_row_or_file_is_never_used() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("attrs/b.sqlite");
        let c = open(d.path(), 1 << 20);
        c.remember_stored("k", "\"e\"", SystemTime::now(), &meta("33188"));
        c.flush();
        let raw = Connection::open(&path).unwrap();
        raw.execute("UPDATE attrs SET meta = '{\"mode\":\"33279\"}'", [])
            .unwrap();
        drop(raw);
        assert_eq!(c.fill(&mut [listed("k", "\"e\"", now())]), 0);
        drop(c);
        std::fs::write(&path, b"not a database at all, not at all").unwrap();
        let (c, notice) = AttrCache::open(&path, 1 << 20).unwrap();
        assert!(notice.unwrap().contains("started afresh"));
        c.remember_stored("k", "\"e\"", SystemTime::now(), &meta("33188"));
        c.flush();
        assert!(c.holds("k", "\"e\""));
    }

    #[test]
    fn it_stays_within_its_bound() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("attrs/b.sqlite");
        let cap = 1 << 20;
        let (c, _) = AttrCache::open(&path, cap).unwrap();
        for batch in 0..20 {
            for n in 0..1000 {
                let m = meta(&format!("{:0100}", batch * 1000 + n));
                c.remember_stored(
                    &format!("dir/file-{batch}-{n}"),
                    "\"etag\"",
                    SystemTime::now(),
                    &m,
                );
            }
            std::thread::sleep(FLUSH * 2);
        }
        std::thread::sleep(FLUSH * 3);
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size <= cap, "{size} bytes for a bound of {cap}");
        let r = report(&path).unwrap();
        assert!(r.entries > 1000 && r.entries < 20_000, "{r:?}");
        assert!(c.holds("dir/file-19-999", "\"etag\""), "the newest is kept");
        assert!(!c.holds("dir/file-0-0", "\"etag\""), "the oldest went");
    }

    #[test]
    fn a_symlink_in_its_place_is_refused() {
        let d = tempfile::tempdir().unwrap();
        crate::private::private_dir(&d.path().join("attrs")).unwrap();
        let path = d.path().join("attrs/b.sqlite");
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        let err = AttrCache::open(&path, 1 << 20).err().unwrap();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
