//! `pailfs collisions`: find every group of keys that would become one name on a
//! case-insensitive file system (Windows, macOS), before a copy goes wrong.
//!
//! The scan is one flat, paged LIST of the bucket or subfolder. Every key contributes a record
//! `(folded path, original path)` for itself and for each directory above it. Colliding names
//! can be far apart in S3's byte order (`A...` and `a...`), so the records are sorted by folded
//! path: in chunks of bounded size, spilled to temporary files when a bucket is large, then
//! merged. Memory stays bounded however many millions of keys the bucket holds. In the sorted
//! stream, the spellings of one name are adjacent, and everything inside a directory follows
//! it, which gives "which files would be merged" for colliding directories in the same pass.

use crate::error::CliError;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufRead, BufReader, BufWriter, Write};

use serde::Serialize;

use crate::fs::names::fold;
use crate::store::{ListRequest, ObjectStore, Pages};

/// Records sorted in memory before spilling to disk.
const CHUNK_RECORDS: usize = 200_000;
/// Merged files listed per colliding directory (all are counted).
const MERGED_LISTED: usize = 20;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum GroupKind {
    Files,
    Directories,
    /// A file and a directory.
    Mixed,
}

#[derive(Clone, Debug, Serialize)]
pub struct Group {
    pub kind: GroupKind,
    /// The colliding paths, relative to the scanned prefix (directories end in `/`).
    pub paths: Vec<String>,
    /// For directories: files that would end up in one directory.
    pub merged_files: Vec<String>,
    pub merged_total: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ScanReport {
    pub bucket: String,
    pub prefix: String,
    pub normalization: bool,
    pub keys_scanned: u64,
    pub groups: Vec<Group>,
}

type Rec = (String, String);

/// Sorted runs of records: in memory, or spilled to temporary files.
struct Runs {
    current: Vec<Rec>,
    spilled: Vec<tempfile::NamedTempFile>,
    chunk: usize,
}

impl Runs {
    fn new(chunk: usize) -> Self {
        Runs {
            current: Vec::new(),
            spilled: Vec::new(),
            chunk,
        }
    }

    fn push(&mut self, r: Rec) -> std::io::Result<()> {
        self.current.push(r);
        if self.current.len() >= self.chunk {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> std::io::Result<()> {
        self.current.sort();
        self.current.dedup();
        let mut f = tempfile::NamedTempFile::new()?;
        {
            let mut w = BufWriter::new(f.as_file_mut());
            for (a, b) in self.current.drain(..) {
                write_field(&mut w, &a)?;
                write_field(&mut w, &b)?;
            }
            w.flush()?;
        }
        self.spilled.push(f);
        Ok(())
    }

    /// All records in sorted order, duplicates removed.
    fn into_sorted(mut self) -> std::io::Result<Box<dyn Iterator<Item = Rec>>> {
        if self.spilled.is_empty() {
            self.current.sort();
            self.current.dedup();
            return Ok(Box::new(self.current.into_iter()));
        }
        if !self.current.is_empty() {
            self.spill()?;
        }
        let mut readers = Vec::new();
        for f in &self.spilled {
            readers.push(BufReader::new(f.reopen()?));
        }
        Ok(Box::new(Merge::new(readers, self.spilled)?))
    }
}

/// Keys may hold any byte but NUL-free UTF-8 is not guaranteed to lack newlines, so fields
/// are length-prefixed.
fn write_field(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u32).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn read_field(r: &mut impl BufRead) -> Option<String> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut buf).ok()?;
    String::from_utf8(buf).ok()
}

/// A k-way merge of sorted spill files.
struct Merge {
    readers: Vec<BufReader<std::fs::File>>,
    heap: BinaryHeap<Reverse<(Rec, usize)>>,
    last: Option<Rec>,
    _files: Vec<tempfile::NamedTempFile>,
}

impl Merge {
    fn new(
        mut readers: Vec<BufReader<std::fs::File>>,
        files: Vec<tempfile::NamedTempFile>,
    ) -> std::io::Result<Self> {
        let mut heap = BinaryHeap::new();
        for (i, r) in readers.iter_mut().enumerate() {
            if let (Some(a), Some(b)) = (read_field(r), read_field(r)) {
                heap.push(Reverse(((a, b), i)));
            }
        }
        Ok(Merge {
            readers,
            heap,
            last: None,
            _files: files,
        })
    }
}

impl Iterator for Merge {
    type Item = Rec;
    fn next(&mut self) -> Option<Rec> {
        loop {
            let Reverse((rec, i)) = self.heap.pop()?;
            let r = &mut self.readers[i];
            if let (Some(a), Some(b)) = (read_field(r), read_field(r)) {
                self.heap.push(Reverse(((a, b), i)));
            }
            if self.last.as_ref() != Some(&rec) {
                self.last = Some(rec.clone());
                return Some(rec);
            }
        }
    }
}

/// Records for one key (relative to the prefix): its directories and itself.
fn records(rel: &str, normalize: bool, out: &mut Runs) -> std::io::Result<()> {
    let mut end = 0;
    while let Some(i) = rel[end..].find('/') {
        end += i + 1;
        let dir = &rel[..end];
        out.push((fold(dir, normalize), dir.to_string()))?;
    }
    if end < rel.len() {
        out.push((fold(rel, normalize), rel.to_string()))?;
    }
    Ok(())
}

/// Finds the groups in the sorted stream.
fn groups(sorted: impl Iterator<Item = Rec>) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    // Colliding directories whose contents are still streaming: (folded prefix, group index).
    let mut open: Vec<(String, usize)> = Vec::new();
    let mut cur: Option<(String, Vec<String>)> = None;
    let finish = |folded: String,
                  paths: Vec<String>,
                  out: &mut Vec<Group>,
                  open: &mut Vec<(String, usize)>| {
        if paths.len() < 2 {
            return;
        }
        let dirs = paths.iter().filter(|p| p.ends_with('/')).count();
        let kind = match dirs {
            0 => GroupKind::Files,
            d if d == paths.len() => GroupKind::Directories,
            _ => GroupKind::Mixed,
        };
        if kind == GroupKind::Directories {
            open.push((folded, out.len()));
        }
        out.push(Group {
            kind,
            paths,
            merged_files: Vec::new(),
            merged_total: 0,
        });
    };
    for (folded, original) in sorted {
        // A new name closes the previous group first: a colliding directory must be open
        // before its first entry is counted.
        if cur.as_ref().is_some_and(|(f, _)| *f != folded)
            && let Some((f, paths)) = cur.take()
        {
            finish(f, paths, &mut out, &mut open);
        }
        while open
            .last()
            .is_some_and(|(p, _)| !folded.starts_with(p.as_str()))
        {
            open.pop();
        }
        if !original.ends_with('/') {
            for (p, gi) in &open {
                if folded.starts_with(p.as_str()) && folded != *p {
                    let g = &mut out[*gi];
                    g.merged_total += 1;
                    if g.merged_files.len() < MERGED_LISTED {
                        g.merged_files.push(original.clone());
                    }
                }
            }
        }
        match &mut cur {
            Some((_, paths)) => paths.push(original),
            None => cur = Some((folded, vec![original])),
        }
    }
    if let Some((f, paths)) = cur.take() {
        finish(f, paths, &mut out, &mut open);
    }
    out
}

/// Scans `prefix` of the store's bucket. `progress` is called with the keys scanned so far.
pub async fn scan<S: ObjectStore>(
    store: &S,
    bucket: &str,
    prefix: &str,
    normalize: bool,
    progress: impl Fn(u64),
) -> Result<ScanReport, CliError> {
    scan_with_chunk(store, bucket, prefix, normalize, progress, CHUNK_RECORDS).await
}

pub async fn scan_with_chunk<S: ObjectStore>(
    store: &S,
    bucket: &str,
    prefix: &str,
    normalize: bool,
    progress: impl Fn(u64),
    chunk: usize,
) -> Result<ScanReport, CliError> {
    let mut runs = Runs::new(chunk.max(2));
    let mut pages = Pages::new(ListRequest::flat(prefix));
    let mut scanned = 0u64;
    while let Some(page) = pages
        .next(store)
        .await
        .map_err(|e| CliError::failed(format!("listing s3://{bucket}/{prefix} failed"), e))?
    {
        for o in &page.objects {
            scanned += 1;
            // A key outside the prefix asked for (a broken server) is no name here.
            let rel = o.key.strip_prefix(prefix).unwrap_or("");
            if !rel.is_empty() {
                records(rel, normalize, &mut runs)
                    .map_err(|e| CliError::failed("cannot spill the scan to disk", e))?;
            }
        }
        progress(scanned);
    }
    let sorted = runs
        .into_sorted()
        .map_err(|e| CliError::failed("cannot read the spilled scan", e))?;
    Ok(ScanReport {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
        normalization: normalize,
        keys_scanned: scanned,
        groups: groups(sorted),
    })
}

/// The report for people.
pub fn text(r: &ScanReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Scanned {} keys under s3://{}/{} ignoring case{}",
        r.keys_scanned,
        r.bucket,
        r.prefix,
        if r.normalization {
            " and Unicode normalization"
        } else {
            ""
        }
    );
    if r.groups.is_empty() {
        let _ = writeln!(
            s,
            "No collisions: every name stays distinct on a case-insensitive file system."
        );
        return s;
    }
    let _ = writeln!(s, "{} collision groups:", r.groups.len());
    for g in &r.groups {
        let what = match g.kind {
            GroupKind::Files => "files",
            GroupKind::Directories => "directories",
            GroupKind::Mixed => "a file and a directory",
        };
        let paths: Vec<String> = g.paths.iter().map(|p| format!("{p:?}")).collect();
        let _ = writeln!(s, "  {what}: {}", paths.join(", "));
        if g.kind == GroupKind::Directories {
            let _ = write!(
                s,
                "    merging them would put {} files in one directory",
                g.merged_total
            );
            if g.merged_files.is_empty() {
                let _ = writeln!(s);
            } else {
                let more = g.merged_total.saturating_sub(g.merged_files.len() as u64);
                let listed: Vec<String> = g.merged_files.iter().map(|p| format!("{p:?}")).collect();
                let _ = writeln!(
                    s,
                    ": {}{}",
                    listed.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
    s
}

/// `pailfs collisions`: exit 1 when collisions exist, 0 when none.
pub fn command(a: crate::cli::CollisionsArgs) -> Result<i32, CliError> {
    let resolved = crate::config::resolve_source(&a.source)?;
    let conn = resolved.connection.as_ref().map(|(_, c)| c);
    let s3 = crate::config::s3_settings(conn, &a.s3, &resolved.source.bucket)?;
    let rt = crate::config::command_runtime()?;
    let bar = crate::config::scan_spinner(!a.json);
    let report = rt.block_on(async {
        let store = crate::store::aws::AwsStore::connect(&s3, &resolved.source.bucket).await;
        scan(
            &store,
            &resolved.source.bucket,
            &resolved.source.prefix,
            a.normalization,
            |n| {
                if let Some(b) = &bar {
                    b.set_position(n);
                }
            },
        )
        .await
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let report = report?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", text(&report));
    }
    Ok(if report.groups.is_empty() { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    async fn scan_keys(keys: &[&str], normalize: bool, chunk: usize) -> ScanReport {
        let s = MemoryStore::new();
        for k in keys {
            s.insert(k, "x");
        }
        scan_with_chunk(&s, "b", "p/", normalize, |_| {}, chunk)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn finds_file_and_directory_groups_and_merged_files() {
        let keys = [
            "p/MyFile.txt",
            "p/myfile.txt",
            "p/Dir/x",
            "p/dir/y",
            "p/dir/sub/z",
            "p/other",
        ];
        for chunk in [2, 3, 1000] {
            let r = scan_keys(&keys, false, chunk).await;
            assert_eq!(r.keys_scanned, 6);
            assert_eq!(r.groups.len(), 2, "chunk {chunk}: {:?}", r.groups);
            let d = r
                .groups
                .iter()
                .find(|g| g.kind == GroupKind::Directories)
                .unwrap();
            assert_eq!(d.paths, vec!["Dir/", "dir/"]);
            assert_eq!(d.merged_total, 3);
            // In folded order: what would sit side by side in the merged directory.
            assert_eq!(d.merged_files, vec!["dir/sub/z", "Dir/x", "dir/y"]);
            let f = r
                .groups
                .iter()
                .find(|g| g.kind == GroupKind::Files)
                .unwrap();
            assert_eq!(f.paths, vec!["MyFile.txt", "myfile.txt"]);
        }
    }

    #[tokio::test]
    async fn unicode_folding_and_normalization() {
        let keys = [
            "p/Stra\u{df}e",
            "p/STRASSE",
            "p/\u{39f}\u{394}\u{39f}\u{3a3}",
            "p/\u{3bf}\u{3b4}\u{3bf}\u{3c2}",
            "p/caf\u{e9}",
            "p/cafe\u{301}",
        ];
        let r = scan_keys(&keys, false, 1000).await;
        assert_eq!(r.groups.len(), 2, "{:?}", r.groups);
        let r = scan_keys(&keys, true, 1000).await;
        assert_eq!(r.groups.len(), 3, "{:?}", r.groups);
    }

    #[tokio::test]
    async fn the_first_file_of_a_merged_directory_counts() {
        let r = scan_keys(&["p/Dir/x", "p/dir/y"], false, 1000).await;
        assert_eq!(r.groups.len(), 1);
        assert_eq!(r.groups[0].merged_total, 2);
        assert_eq!(r.groups[0].merged_files, vec!["Dir/x", "dir/y"]);
    }

    #[tokio::test]
    async fn no_collisions_no_groups() {
        let r = scan_keys(&["p/a", "p/b", "p/a-b/c"], false, 2).await;
        assert!(r.groups.is_empty());
        assert!(text(&r).contains("No collisions"));
    }
}
