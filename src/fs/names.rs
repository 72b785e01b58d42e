//! File names versus S3 keys: which keys can be shown as files, and how names become keys.
//!
//! A directory at key prefix `p` (ending in `/`, or empty for the bucket root) holds the child
//! `name` as the object `p + name` (a file or symlink) or the prefix `p + name + "/"` (a
//! directory). Not every key maps to a name a POSIX system can show:
//!
//! * an empty segment (`a//b`, a leading `/`) or a `.`/`..` segment has no name;
//! * a segment longer than 1,024 bytes is over FUSE's name limit;
//! * a key ending in `/` that holds bytes is shown as the directory it implies, and its
//!   content is not reachable.
//!
//! Such keys are skipped and reported once each through [`SkipLog`]; they never crash a listing.
//! Names written through the mount must be UTF-8 because S3 keys are.
//!
//! A name may be as long as FUSE passes (1,024 bytes, as s3fs allows), where its key fits in
//! S3's 1,024 bytes: a name whose key would not (with the mount's prefix and the directories
//! above it) answers `ENAMETOOLONG`, as a path over `PATH_MAX` does, before anything is made.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::sync::Mutex;

use super::error::{FsResult, NsError};

/// The longest name: FUSE's limit (`FUSE_NAME_MAX`), also what `statfs` reports.
pub const NAME_MAX: usize = 1024;

/// S3's longest key, in bytes.
pub const MAX_KEY: usize = 1024;

/// `ENAMETOOLONG` unless `key` fits in an S3 key.
pub fn fits(key: &str) -> FsResult<()> {
    fits_len(key.len())
}

/// `ENAMETOOLONG` unless a key of `len` bytes fits in an S3 key.
pub fn fits_len(len: usize) -> FsResult<()> {
    if len > MAX_KEY {
        return Err(NsError::KeyTooLong(len).into());
    }
    Ok(())
}

/// Why a listed key cannot appear as a file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unrepresentable {
    EmptySegment,
    DotSegment,
    TooLong,
    ContentInDirectoryMarker,
    /// The server listed it under a prefix it does not start with.
    OutsidePrefix,
    /// A segment holds a NUL character, which no file name can.
    Nul,
    /// The server listed a key that is not UTF-8 (shown percent-encoded).
    NotUtf8,
}

impl std::fmt::Display for Unrepresentable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unrepresentable::EmptySegment => {
                "it has an empty path segment (\"//\" or a leading \"/\")"
            }
            Unrepresentable::DotSegment => "it has a \".\" or \"..\" segment",
            Unrepresentable::TooLong => "a segment is longer than 1,024 bytes",
            Unrepresentable::ContentInDirectoryMarker => {
                "it ends in \"/\" but holds data; shown as a directory, its bytes are not reachable"
            }
            Unrepresentable::OutsidePrefix => {
                "the server listed it under a prefix it does not start with"
            }
            Unrepresentable::Nul => "it holds a NUL character, which no file name can",
            Unrepresentable::NotUtf8 => "it is not UTF-8 (shown percent-encoded)",
        })
    }
}

/// Checks one path segment taken from a key.
pub fn check_segment(seg: &str) -> Result<(), Unrepresentable> {
    if seg.is_empty() {
        Err(Unrepresentable::EmptySegment)
    } else if seg == "." || seg == ".." {
        Err(Unrepresentable::DotSegment)
    } else if seg.len() > NAME_MAX {
        Err(Unrepresentable::TooLong)
    } else if seg.contains('\0') {
        Err(Unrepresentable::Nul)
    } else {
        Ok(())
    }
}

/// Validates a name given by the kernel (for lookup or create) and returns it as UTF-8.
pub fn name_from_os(name: &OsStr) -> FsResult<&str> {
    let s = name.to_str().ok_or(NsError::NotUtf8("file names"))?;
    if s.len() > NAME_MAX {
        return Err(NsError::NameTooLong.into());
    }
    if s.is_empty() || s == "." || s == ".." || s.contains('/') || s.contains('\0') {
        return Err(NsError::InvalidName(s.to_string()).into());
    }
    Ok(s)
}

/// The key of child `name` of the directory whose prefix is `dir_prefix`.
pub fn child_key(dir_prefix: &str, name: &str) -> String {
    format!("{dir_prefix}{name}")
}

/// The prefix (ending in `/`) of child directory `name` of `dir_prefix`.
pub fn child_prefix(dir_prefix: &str, name: &str) -> String {
    format!("{dir_prefix}{name}/")
}

/// Normalizes a user-given prefix: no leading `/`, exactly one trailing `/`, or empty.
pub fn normalize_prefix(p: &str) -> Result<String, String> {
    let trimmed = p.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    for seg in trimmed.split('/') {
        check_segment(seg).map_err(|why| format!("prefix {p:?} cannot be mounted: {why}"))?;
    }
    Ok(format!("{trimmed}/"))
}

/// The key names are compared by in case-insensitive mode: Unicode full case folding
/// (`Straße` and `STRASSE` both fold to `strasse`, final and medial sigma to `σ`), and with
/// `normalize` also Unicode NFC, so a precomposed `é` and `e` + combining accent match.
pub fn fold(name: &str, normalize: bool) -> String {
    let folded = caseless::default_case_fold_str(name);
    if normalize {
        use unicode_normalization::UnicodeNormalization;
        folded.nfc().collect()
    } else {
        folded
    }
}

/// Remembers which keys were already reported, so each is logged once (bounded).
pub struct SkipLog {
    seen: Mutex<HashSet<String>>,
    limit: usize,
}

impl SkipLog {
    pub fn new(limit: usize) -> Self {
        SkipLog {
            seen: Mutex::new(HashSet::new()),
            limit,
        }
    }

    /// Logs that `key` was skipped, the first time only. Returns true when it logged.
    pub fn skipped(&self, key: &str, why: Unrepresentable) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(key) {
            return false;
        }
        if seen.len() < self.limit {
            seen.insert(key.to_string());
        } else if seen.len() == self.limit {
            log::warn!("more keys cannot be shown as files; not logging further ones");
            seen.insert(String::new());
            return false;
        } else {
            return false;
        }
        log::warn!("key {key:?} is not shown: {why}");
        true
    }

    /// The keys logged so far (for reports).
    pub fn keys(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = seen.iter().filter(|k| !k.is_empty()).cloned().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments() {
        assert_eq!(check_segment(""), Err(Unrepresentable::EmptySegment));
        assert_eq!(check_segment(".."), Err(Unrepresentable::DotSegment));
        assert_eq!(
            check_segment(&"x".repeat(1025)),
            Err(Unrepresentable::TooLong)
        );
        assert!(check_segment(&"x".repeat(1024)).is_ok());
        assert!(fits(&"k".repeat(1024)).is_ok());
        assert_eq!(
            fits(&"k".repeat(1025)).unwrap_err().errno(),
            libc::ENAMETOOLONG
        );
        assert!(check_segment("a b%+#?").is_ok());
    }

    #[test]
    fn kernel_names() {
        assert!(name_from_os(OsStr::new("ok.txt")).is_ok());
        // 2 bytes each: 1,026 bytes is over FUSE's limit, 256 bytes is a name.
        assert_eq!(
            name_from_os(OsStr::new(&"é".repeat(513)))
                .unwrap_err()
                .errno(),
            libc::ENAMETOOLONG
        );
        assert!(name_from_os(OsStr::new(&"é".repeat(128))).is_ok());
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(
            name_from_os(OsStr::from_bytes(b"\xff"))
                .unwrap_err()
                .errno(),
            libc::EINVAL
        );
    }

    #[test]
    fn prefixes() {
        assert_eq!(normalize_prefix("").unwrap(), "");
        assert_eq!(normalize_prefix("/").unwrap(), "");
        assert_eq!(normalize_prefix("photos/2024").unwrap(), "photos/2024/");
        assert_eq!(normalize_prefix("/photos/2024/").unwrap(), "photos/2024/");
        assert!(normalize_prefix("a//b").is_err());
        assert!(normalize_prefix("a/../b").is_err());
    }

    #[test]
    fn folding_is_unicode_case_folding() {
        assert_eq!(fold("Straße", false), fold("STRASSE", false));
        assert_eq!(fold("MyFile.TXT", false), "myfile.txt");
        // Greek: capital, medial and final sigma all match.
        assert_eq!(fold("ΟΔΟΣ", false), fold("οδος", false));
        assert_eq!(fold("οδος", false), fold("οδοσ", false));
        // NFC and NFD spellings of é differ unless normalization is asked for.
        let (nfc, nfd) = ("caf\u{e9}", "cafe\u{301}");
        assert_ne!(fold(nfc, false), fold(nfd, false));
        assert_eq!(fold(nfc, true), fold(nfd, true));
        assert_eq!(fold("CAF\u{c9}", true), fold(nfd, true));
    }

    #[test]
    fn skip_log_reports_once() {
        let log = SkipLog::new(10);
        assert!(log.skipped("a//b", Unrepresentable::EmptySegment));
        assert!(!log.skipped("a//b", Unrepresentable::EmptySegment));
        assert_eq!(log.keys(), vec!["a//b".to_string()]);
    }
}
