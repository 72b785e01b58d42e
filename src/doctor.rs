//! `pailfs doctor`: everything a mount cannot show or has left behind, in one report.
//!
//! A mount skips keys it cannot show as files (logging each once) and keeps, in its cache
//! directory, data it could not upload. Those are easy to miss in a log, so this command lists
//! them on demand:
//!
//! * keys under the mount's prefix that are not reachable as files, with the reason: an empty
//!   or `.`/`..` segment, a segment over 255 bytes, a `dir/` marker holding data, or a file
//!   hidden by a directory of the same name (`a` and `a/b`). One streaming pass over a flat
//!   LIST; memory is bounded by the depth of a key, not by the number of keys;
//! * multipart uploads still open under the prefix (any client's: they hold storage until
//!   aborted);
//! * in the local cache directory: files rebuilt after a crash (`recovered/`), files whose
//!   upload failed (`spool/failed/`), and journal entries of uploads not yet aborted.
//!
//! Exit status 1 when anything is found, so it can run from a script or a timer.

use crate::error::CliError;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::fs::names::{Unrepresentable, check_segment};
use crate::store::{ListRequest, ObjectStore, Pages};

/// Unreachable keys listed one by one (all are counted).
const LISTED: usize = 10_000;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Skipped {
    pub key: String,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct OpenUpload {
    pub key: String,
    pub upload_id: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct LocalItem {
    /// `recovered`, `failed` or `unaborted-upload`.
    pub kind: &'static str,
    pub path: PathBuf,
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct Report {
    pub bucket: String,
    pub prefix: String,
    pub keys_scanned: u64,
    pub unreachable_total: u64,
    pub unreachable: Vec<Skipped>,
    pub open_uploads: Vec<OpenUpload>,
    /// Why unfinished uploads could not be listed, if they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uploads_unknown: Option<String>,
    pub local: Vec<LocalItem>,
    /// Objects in GLACIER or DEEP_ARCHIVE: reads answer `EACCES` until they are restored.
    pub archived_total: u64,
    pub archived: Vec<String>,
    /// The bucket's attribute cache under the cache root, when there is one.
    pub attr_cache: Option<crate::cache::attrs::Report>,
}

impl Report {
    pub fn has_findings(&self) -> bool {
        self.unreachable_total > 0
            || self.archived_total > 0
            || !self.open_uploads.is_empty()
            || !self.local.is_empty()
    }
}

/// Why the key at `rel` (relative to the prefix) cannot be reached, ignoring shadowing.
fn why_unreachable(rel: &str, size: u64) -> Option<String> {
    let (body, marker) = match rel.strip_suffix('/') {
        Some(b) => (b, true),
        None => (rel, false),
    };
    if marker && size > 0 && !body.is_empty() {
        return Some(Unrepresentable::ContentInDirectoryMarker.to_string());
    }
    if body.is_empty() {
        return (!marker || size > 0).then(|| Unrepresentable::EmptySegment.to_string());
    }
    body.split('/')
        .find_map(|seg| check_segment(seg).err())
        .map(|e| e.to_string())
}

/// Finds files hidden by a directory of the same name in key order: every key that is a
/// string prefix of a later key is still on the stack when that key comes.
#[derive(Default)]
struct Shadows {
    /// Keys that are string prefixes of the current one, each with "already reported".
    stack: Vec<(String, bool)>,
}

impl Shadows {
    /// Returns the earlier keys that `key` proves to be hidden (`a` when `key` is `a/...`).
    fn see(&mut self, key: &str) -> Vec<String> {
        while self
            .stack
            .last()
            .is_some_and(|(top, _)| !key.starts_with(top.as_str()))
        {
            self.stack.pop();
        }
        let mut hidden = Vec::new();
        for (e, reported) in self.stack.iter_mut() {
            if !*reported
                && !e.is_empty()
                && !e.ends_with('/')
                && key.as_bytes().get(e.len()) == Some(&b'/')
            {
                *reported = true;
                hidden.push(e.clone());
            }
        }
        self.stack.push((key.to_string(), false));
        hidden
    }
}

/// Lists every key under `prefix` and reports the unreachable ones.
pub async fn scan_keys<S: ObjectStore>(
    store: &S,
    prefix: &str,
    mut progress: impl FnMut(u64),
) -> Result<Scan, CliError> {
    let mut pages = Pages::new(ListRequest::flat(prefix));
    let (mut scanned, mut total, mut listed) = (0u64, 0u64, Vec::new());
    let mut archived = (0u64, Vec::new());
    let mut shadows = Shadows::default();
    let mut add = |key: String, reason: String, listed: &mut Vec<Skipped>| {
        total += 1;
        if listed.len() < LISTED {
            listed.push(Skipped { key, reason });
        }
    };
    while let Some(page) = pages
        .next(store)
        .await
        .map_err(|e| CliError::failed(format!("cannot list s3 prefix {prefix:?}"), e))?
    {
        for key in page.archived {
            archived.0 += 1;
            if archived.1.len() < LISTED {
                archived.1.push(key);
            }
        }
        for raw in &page.unreadable {
            scanned += 1;
            add(
                raw.clone(),
                Unrepresentable::NotUtf8.to_string(),
                &mut listed,
            );
        }
        for o in &page.objects {
            scanned += 1;
            let Some(rel) = o.key.strip_prefix(prefix) else {
                add(
                    o.key.clone(),
                    Unrepresentable::OutsidePrefix.to_string(),
                    &mut listed,
                );
                continue;
            };
            for hidden in shadows.see(rel) {
                add(
                    format!("{prefix}{hidden}"),
                    "a directory of the same name hides it".into(),
                    &mut listed,
                );
            }
            if let Some(why) = why_unreachable(rel, o.size) {
                add(o.key.clone(), why, &mut listed);
            }
        }
        progress(scanned);
    }
    Ok(Scan {
        scanned,
        unreachable_total: total,
        unreachable: listed,
        archived_total: archived.0,
        archived: archived.1,
    })
}

/// What a scan of the keys found.
pub struct Scan {
    pub scanned: u64,
    pub unreachable_total: u64,
    pub unreachable: Vec<Skipped>,
    pub archived_total: u64,
    pub archived: Vec<String>,
}

/// What the cache directories of mounts of `bucket` under `cache_root` hold.
pub fn scan_local(cache_root: &Path, bucket: &str) -> Vec<LocalItem> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(cache_root) else {
        return out;
    };
    let mut dirs: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(bucket))
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .map(|e| e.path())
        .collect();
    dirs.sort();
    let mut entries = |dir: PathBuf, kind: &'static str, only: fn(&str) -> bool| {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            let mut v: Vec<PathBuf> = rd
                .flatten()
                .filter(|e| e.file_name().to_str().is_some_and(only))
                .map(|e| e.path())
                .collect();
            v.sort();
            out.extend(v.into_iter().map(|path| LocalItem { kind, path }));
        }
    };
    for d in dirs.into_iter().map(crate::cache_dir::MountDir::at) {
        entries(d.recovered(), "recovered", |_| true);
        entries(d.failed(), "failed", |_| true);
        entries(d.uploads(), "unaborted-upload", |n| {
            n.starts_with("upload-")
        });
    }
    out
}

pub fn text(r: &Report) -> String {
    let mut s = format!(
        "s3://{}/{}: {} keys scanned\n",
        r.bucket, r.prefix, r.keys_scanned
    );
    if r.unreachable_total == 0 {
        s.push_str("every key is reachable as a file or directory\n");
    } else {
        s.push_str(&format!(
            "{} key(s) cannot be shown as files (a mount skips them):\n",
            r.unreachable_total
        ));
        for k in &r.unreachable {
            s.push_str(&format!("  {:?}: {}\n", k.key, k.reason));
        }
        if r.unreachable_total > r.unreachable.len() as u64 {
            s.push_str(&format!(
                "  ... and {} more\n",
                r.unreachable_total - r.unreachable.len() as u64
            ));
        }
    }
    if r.archived_total > 0 {
        s.push_str(&format!(
            "{} object(s) in GLACIER or DEEP_ARCHIVE: reads answer EACCES until they are restored (aws s3api restore-object):\n",
            r.archived_total
        ));
        for k in &r.archived {
            s.push_str(&format!("  {k:?}\n"));
        }
        if r.archived_total > r.archived.len() as u64 {
            s.push_str(&format!(
                "  ... and {} more\n",
                r.archived_total - r.archived.len() as u64
            ));
        }
    }
    if let Some(why) = &r.uploads_unknown {
        s.push_str(&format!("unfinished multipart uploads {why}\n"));
    } else if r.open_uploads.is_empty() {
        s.push_str("no unfinished multipart uploads\n");
    } else {
        s.push_str(&format!(
            "{} unfinished multipart upload(s) (they hold storage until aborted; a mount of this \
             prefix aborts the ones its own cache directory journaled):\n",
            r.open_uploads.len()
        ));
        for u in &r.open_uploads {
            s.push_str(&format!("  {:?} (upload id {})\n", u.key, u.upload_id));
        }
    }
    if r.local.is_empty() {
        s.push_str("nothing left in the local cache directory\n");
    } else {
        s.push_str("in the local cache directory:\n");
        for l in &r.local {
            let what = match l.kind {
                "recovered" => "written before a crash, never uploaded (see RECOVERY.txt inside)",
                "failed" => "its upload failed; the data is kept here",
                _ => "an upload to abort at the next mount",
            };
            s.push_str(&format!("  {}: {what}\n", l.path.display()));
        }
    }
    s.push_str(&attr_cache_line(r.attr_cache.as_ref()));
    s
}

/// What the attribute cache holds and how often it answered.
fn attr_cache_line(r: Option<&crate::cache::attrs::Report>) -> String {
    let Some(r) = r else {
        return "no attribute cache for this bucket under the cache directory\n".into();
    };
    let asked = r.hits + r.misses;
    let rate = if asked > 0 {
        format!("{:.1}%", 100.0 * r.hits as f64 / asked as f64)
    } else {
        "-".into()
    };
    format!(
        "attribute cache {}: {} objects, {}, hit rate {rate} ({} hits, {} misses)\n",
        r.path.display(),
        r.entries,
        crate::metrics::human(r.bytes),
        r.hits,
        r.misses
    )
}

/// `pailfs doctor`: exit 1 when anything is found.
pub fn command(a: crate::cli::DoctorArgs) -> Result<i32, CliError> {
    let resolved = crate::config::resolve_source(&a.source)?;
    let conn = resolved.connection.as_ref().map(|(_, c)| c);
    let s3 = crate::config::s3_settings(conn, &a.s3, &resolved.source.bucket)?;
    let rt = crate::config::command_runtime()?;
    let bar = crate::config::scan_spinner(!a.json);
    let (bucket, prefix) = (&resolved.source.bucket, &resolved.source.prefix);
    let result = rt.block_on(async {
        let store = crate::store::aws::AwsStore::connect(&s3, bucket).await;
        let scan = scan_keys(&store, prefix, |n| {
            if let Some(b) = &bar {
                b.set_position(n);
            }
        })
        .await?;
        // The minimal policies leave s3:ListBucketMultipartUploads out: say so, go on.
        let uploads = match store.list_multipart_uploads(prefix).await {
            Ok(u) => Ok(u),
            Err(crate::store::StoreError::AccessDenied(_)) => Err(
                "not listed: the credentials may not list multipart uploads (s3:ListBucketMultipartUploads)".to_string(),
            ),
            Err(e) => {
                return Err(CliError::failed(
                    format!("cannot list multipart uploads under {prefix:?}"),
                    e,
                ));
            }
        };
        Ok::<_, CliError>((scan, uploads))
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let (scan, uploads) = result?;
    let cache_root = a
        .cache_dir
        .clone()
        .unwrap_or_else(crate::config::default_cache_dir);
    let report = Report {
        bucket: bucket.clone(),
        prefix: prefix.clone(),
        keys_scanned: scan.scanned,
        unreachable_total: scan.unreachable_total,
        unreachable: scan.unreachable,
        archived_total: scan.archived_total,
        archived: scan.archived,
        uploads_unknown: uploads.as_ref().err().cloned(),
        open_uploads: uploads
            .unwrap_or_default()
            .into_iter()
            .map(|u| OpenUpload {
                key: u.key,
                upload_id: u.upload_id,
            })
            .collect(),
        local: scan_local(&cache_root, bucket),
        attr_cache: crate::cache::attrs::report(&crate::cache::attrs::path_of(
            &cache_root,
            s3.endpoint_url.as_deref().unwrap_or_default(),
            bucket,
        )),
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", text(&report));
    }
    Ok(i32::from(report.has_findings()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn reports_every_kind_of_unreachable_key_once() {
        let s = MemoryStore::new();
        let ok = [
            "p/a b",
            "p/%+#?",
            "p/caf\u{e9}",
            "p/cafe\u{301}",
            "p/\u{1f600}",
            "p/d/",
            "p/d/x",
            "p/ctl\u{1}",
        ];
        for k in ok {
            s.insert(k, "");
        }
        let long = format!("p/{}", "x".repeat(1025));
        let bad = [
            "p//lead",
            "p/x//y",
            "p/./dot",
            "p/../up",
            long.as_str(),
            "p/marker/",
            "p/f",
            "p/f/child",
            "p/f.txt",
            "p/g",
            "p/g!",
            "p/g/deep/er",
        ];
        for k in bad {
            s.insert(k, if k == "p/marker/" { "data" } else { "" });
        }
        let Scan {
            scanned,
            unreachable_total: total,
            unreachable: listed,
            ..
        } = scan_keys(&s, "p/", |_| {}).await.unwrap();
        assert_eq!(scanned as usize, ok.len() + bad.len());
        let mut keys: Vec<&str> = listed.iter().map(|k| k.key.as_str()).collect();
        keys.sort();
        let mut want = vec![
            "p//lead",
            "p/x//y",
            "p/./dot",
            "p/../up",
            &long,
            "p/marker/",
            "p/f",
            "p/g",
        ];
        want.sort();
        assert_eq!(keys, want);
        assert_eq!(total, 8);
        let f = listed.iter().find(|k| k.key == "p/f").unwrap();
        assert!(f.reason.contains("directory of the same name"));
    }

    #[test]
    fn local_leftovers_are_found_per_bucket() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("bkt-0123456789abcdef");
        std::fs::create_dir_all(d.join("recovered/20260101-000000")).unwrap();
        std::fs::create_dir_all(d.join("spool/failed")).unwrap();
        std::fs::write(d.join("spool/failed/1-a"), "x").unwrap();
        std::fs::create_dir_all(d.join("uploads")).unwrap();
        std::fs::write(d.join("uploads/upload-1-0.json"), "{}").unwrap();
        std::fs::create_dir_all(root.path().join("other-0123456789abcdef/recovered/x")).unwrap();
        let items = scan_local(root.path(), "bkt");
        let kinds: Vec<&str> = items.iter().map(|i| i.kind).collect();
        assert_eq!(kinds, vec!["recovered", "failed", "unaborted-upload"]);
        assert!(scan_local(root.path(), "none").is_empty());
    }
}
