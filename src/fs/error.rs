//! The core's errors, one enum per layer, and the one table that turns each into an errno.
//!
//! A layer says what went wrong in its own terms: the store in S3 terms ([`StoreError`]), the
//! namespace in terms of names and kinds ([`NsError`]), attributes ([`AttrError`]), open
//! handles and reads ([`HandleError`]), uploads and the spool ([`UploadError`]). Each converts
//! into [`FsError`] with `From` (a store error with the key it concerned), and [`ToErrno`]
//! decides, here and nowhere else, the number the application sees: "what does `cp` get when S3
//! says X" is answered by reading this file (and `docs/SEMANTICS.md`, failure behaviour). The
//! source error is kept, so the log line says why, not only which errno.
//!
//! Operations we do not support go through [`unsupported!`](crate::unsupported), which logs the
//! first time each one is asked for and answers a definite errno every time (mountpoint-s3's
//! `fuse_unsupported!`).

use std::sync::Arc;

use crate::store::StoreError;

pub type Errno = i32;

/// The errno an error becomes. Implemented for every layer's error; [`FsError`] delegates.
pub trait ToErrno {
    fn to_errno(&self) -> Errno;
}

impl ToErrno for StoreError {
    fn to_errno(&self) -> Errno {
        match self {
            StoreError::NotFound => libc::ENOENT,
            StoreError::PreconditionFailed => libc::ESTALE,
            // As mountpoint-s3 answers it: the object exists, reading it is not allowed now.
            StoreError::Archived
            | StoreError::EncryptionKey(_)
            | StoreError::Credentials(_)
            | StoreError::AccessDenied(_)
            | StoreError::InvalidAccessKey
            | StoreError::SignatureMismatch
            | StoreError::ExpiredToken => libc::EACCES,
            StoreError::TooLarge => libc::EFBIG,
            StoreError::NotImplemented(_) => libc::ENOTSUP,
            StoreError::Timeout(_)
            | StoreError::NoSuchBucket
            | StoreError::WrongRegion(_)
            | StoreError::Unreachable(_)
            | StoreError::NoSuchUpload
            | StoreError::Throttled(_)
            | StoreError::Other(_) => libc::EIO,
        }
    }
}

/// Names, kinds and the shape of the tree.
#[derive(Clone, Debug, thiserror::Error)]
pub enum NsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("{0:?} was deleted from S3")]
    Deleted(String),
    #[error("not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    #[error("is a symlink")]
    IsASymlink,
    /// A FIFO, socket or device node: the kernel opens those, never the filesystem.
    #[error("a FIFO, socket or device node is not opened through the filesystem")]
    SpecialFile,
    #[error("mknod of a file type that cannot be made this way")]
    BadFileType,
    #[error("not a symlink")]
    NotASymlink,
    #[error("not a regular file")]
    NotARegularFile,
    #[error("{0:?} exists")]
    Exists(String),
    #[error("directory not empty")]
    NotEmpty,
    #[error("{0} must be UTF-8 to be stored in S3")]
    NotUtf8(&'static str),
    #[error("name longer than 1,024 bytes")]
    NameTooLong,
    #[error("the key would be {0} bytes; S3 keys hold at most 1,024")]
    KeyTooLong(usize),
    #[error("invalid file name {0:?}")]
    InvalidName(String),
    #[error(
        "{name:?} differs only in case from the existing {existing:?} (--case-collision=error)"
    )]
    CaseCollision { name: String, existing: String },
    #[error("{0:?} kept moving while it was looked up")]
    KeptMoving(String),
    #[error("cannot move a directory into itself")]
    IntoItself,
    #[error(
        "directory holds {count} objects, more than --max-rename-objects={limit}; rename it with a tool that copies, or raise the limit"
    )]
    TooManyObjects { count: u64, limit: u64 },
    #[error("the bucket root has no object to store attributes in")]
    RootHasNoObject,
    #[error("{key:?} claims to be a symlink of {size} bytes, longer than PATH_MAX")]
    HostileSymlink { key: String, size: u64 },
    #[error("the listing of {prefix:?} returned {key:?}, which is not under it")]
    OutsidePrefix { prefix: String, key: String },
}

impl ToErrno for NsError {
    fn to_errno(&self) -> Errno {
        match self {
            NsError::NotFound | NsError::Deleted(_) => libc::ENOENT,
            NsError::NotADirectory => libc::ENOTDIR,
            NsError::IsADirectory => libc::EISDIR,
            NsError::IsASymlink => libc::ELOOP,
            NsError::SpecialFile => libc::ENXIO,
            NsError::BadFileType => libc::EINVAL,
            NsError::Exists(_) | NsError::CaseCollision { .. } => libc::EEXIST,
            NsError::NotEmpty => libc::ENOTEMPTY,
            NsError::NameTooLong | NsError::KeyTooLong(_) => libc::ENAMETOOLONG,
            NsError::NotASymlink
            | NsError::NotARegularFile
            | NsError::NotUtf8(_)
            | NsError::InvalidName(_)
            | NsError::IntoItself => libc::EINVAL,
            NsError::KeptMoving(_) => libc::EAGAIN,
            NsError::TooManyObjects { .. } | NsError::RootHasNoObject => libc::EPERM,
            NsError::HostileSymlink { .. } | NsError::OutsidePrefix { .. } => libc::EIO,
        }
    }
}

/// Extended attributes and the object metadata that holds attributes.
#[derive(Clone, Debug, thiserror::Error)]
pub enum AttrError {
    #[error("no such attribute")]
    NoSuchAttribute,
    #[error("attribute exists")]
    Exists,
    #[error("system.* attributes are interpreted by the kernel and not stored in S3: {0:?}")]
    UnstoredNamespace(String),
    #[error("attributes need {total} bytes of object metadata; S3 allows {max}")]
    TooBig { total: usize, max: usize },
}

impl ToErrno for AttrError {
    fn to_errno(&self) -> Errno {
        match self {
            AttrError::NoSuchAttribute => libc::ENODATA,
            AttrError::Exists => libc::EEXIST,
            AttrError::UnstoredNamespace(_) => libc::ENOTSUP,
            AttrError::TooBig { .. } => libc::E2BIG,
        }
    }
}

/// Open file and directory handles, and the reads served through them.
#[derive(Clone, Debug, thiserror::Error)]
pub enum HandleError {
    #[error("bad file handle")]
    BadFile,
    #[error("bad directory handle")]
    BadDir,
    #[error("file not open for writing")]
    NotWritable,
    #[error("directory offset no longer valid")]
    StaleOffset,
    #[error("file would exceed the largest S3 object")]
    TooLarge,
    #[error("{0:?} was replaced or deleted in S3 while open; reopen it to read the new version")]
    Replaced(String),
    #[error("{key:?} returned {got} bytes for {want} at {at}")]
    Short {
        key: String,
        got: u64,
        want: u64,
        at: u64,
    },
    #[error("read failed: {0}")]
    Internal(&'static str),
}

impl ToErrno for HandleError {
    fn to_errno(&self) -> Errno {
        match self {
            HandleError::BadFile | HandleError::BadDir | HandleError::NotWritable => libc::EBADF,
            HandleError::StaleOffset => libc::EINVAL,
            HandleError::TooLarge => libc::EFBIG,
            HandleError::Replaced(_) => libc::ESTALE,
            HandleError::Short { .. } | HandleError::Internal(_) => libc::EIO,
        }
    }
}

/// Uploads and the spool that holds what is being written.
#[derive(Clone, Debug, thiserror::Error)]
pub enum UploadError {
    #[error("spool directory is full ({used} bytes in use, limit {limit}); raise --max-spool-size")]
    SpoolFull { used: u64, limit: u64 },
    #[error("file moved or removed during upload")]
    Moved,
    #[error("filesystem is shutting down")]
    ShuttingDown,
    #[error("the mount is stopping; the file's data is kept in the cache directory")]
    Stopping,
    #[error("an earlier upload of this file failed: {0}")]
    EarlierFailed(Box<FsError>),
    /// The object changed in S3 since this mount read it (another host wrote it): this
    /// version was not stored over it (see `conflict`).
    #[error(
        "{key:?} was changed by another client since this mount read it (now {winner}); this version was not stored over it"
    )]
    Conflict { key: String, winner: String },
    /// With `--on-conflict keep-both`: the version was stored beside the winner.
    #[error("{key:?} was changed by another client; this version was stored as {kept_as:?}")]
    KeptBoth { key: String, kept_as: String },
}

impl ToErrno for UploadError {
    fn to_errno(&self) -> Errno {
        match self {
            UploadError::SpoolFull { .. } => libc::ENOSPC,
            UploadError::Moved | UploadError::Conflict { .. } | UploadError::KeptBoth { .. } => {
                libc::ESTALE
            }
            UploadError::ShuttingDown | UploadError::Stopping => libc::EIO,
            UploadError::EarlierFailed(e) => e.to_errno(),
        }
    }
}

/// An error of a filesystem operation: one layer's error, kept whole for the log.
#[derive(Clone, Debug, thiserror::Error)]
pub enum FsError {
    #[error("{source} (key {key:?})")]
    Store { key: String, source: StoreError },
    #[error(transparent)]
    Namespace(#[from] NsError),
    #[error(transparent)]
    Attr(#[from] AttrError),
    #[error(transparent)]
    Handle(#[from] HandleError),
    #[error(transparent)]
    Upload(#[from] UploadError),
    #[error("{what}: {source}")]
    Local {
        what: String,
        source: Arc<std::io::Error>,
    },
    #[error("the mount is read-only")]
    ReadOnly,
    #[error("{what} is not supported")]
    Unsupported { what: &'static str, errno: Errno },
}

impl ToErrno for FsError {
    fn to_errno(&self) -> Errno {
        match self {
            FsError::Store { source, .. } => source.to_errno(),
            FsError::Namespace(e) => e.to_errno(),
            FsError::Attr(e) => e.to_errno(),
            FsError::Handle(e) => e.to_errno(),
            FsError::Upload(e) => e.to_errno(),
            FsError::Local { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            FsError::ReadOnly => libc::EROFS,
            FsError::Unsupported { errno, .. } => *errno,
        }
    }
}

pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    /// The errno the kernel is told.
    pub fn errno(&self) -> Errno {
        self.to_errno()
    }

    pub fn not_found() -> Self {
        NsError::NotFound.into()
    }

    /// S3 failure `e` of a request about `key`.
    pub fn from_store(e: StoreError, key: &str) -> Self {
        FsError::Store {
            key: key.to_string(),
            source: e,
        }
    }

    /// A local file operation (`what`, naming the file) that failed.
    pub fn local(what: impl Into<String>, e: std::io::Error) -> Self {
        FsError::Local {
            what: what.into(),
            source: Arc::new(e),
        }
    }

    /// A conflicting write by another client (see `conflict`).
    pub fn is_conflict(&self) -> bool {
        match self {
            FsError::Upload(UploadError::Conflict { .. }) => true,
            FsError::Upload(UploadError::EarlierFailed(e)) => e.is_conflict(),
            _ => false,
        }
    }

    /// A version kept beside the winner of a conflict (`--on-conflict keep-both`).
    pub fn is_kept_both(&self) -> bool {
        match self {
            FsError::Upload(UploadError::KeptBoth { .. }) => true,
            FsError::Upload(UploadError::EarlierFailed(e)) => e.is_kept_both(),
            _ => false,
        }
    }

    /// Failures every caller expects now and then (a name that is absent or taken, a missing
    /// attribute, a declined operation): logged at debug level, not as warnings.
    pub fn is_routine(&self) -> bool {
        matches!(self, FsError::Unsupported { .. })
            || matches!(
                self.errno(),
                libc::ENOENT
                    | libc::EEXIST
                    | libc::ENOTEMPTY
                    | libc::ENOTDIR
                    | libc::EISDIR
                    | libc::ENODATA
                    | libc::ENOTSUP
            )
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> Self {
        FsError::local("local spool I/O", e)
    }
}

/// Answers an operation pailfs does not support: logs the first time (per call site) why,
/// then gives the [`FsError`] with the errno applications see.
///
/// ```ignore
/// return Err(unsupported!("hard links", libc::EPERM, "S3 has no way to store them"));
/// ```
#[macro_export]
macro_rules! unsupported {
    ($what:expr, $errno:expr, $why:expr) => {{
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            log::info!(
                "{} are not supported: {} (answered with errno {})",
                $what,
                $why,
                $errno
            )
        });
        $crate::fs::error::FsError::Unsupported {
            what: $what,
            errno: $errno,
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_the_documented_errnos() {
        let table = [
            (StoreError::NotFound, libc::ENOENT),
            (StoreError::PreconditionFailed, libc::ESTALE),
            (StoreError::AccessDenied("x".into()), libc::EACCES),
            (StoreError::TooLarge, libc::EFBIG),
            (StoreError::Timeout("t".into()), libc::EIO),
            (StoreError::Unreachable("u".into()), libc::EIO),
            (StoreError::Throttled("s".into()), libc::EIO),
            (StoreError::Other("o".into()), libc::EIO),
        ];
        for (e, errno) in table {
            assert_eq!(FsError::from_store(e.clone(), "k").errno(), errno, "{e:?}");
        }
    }

    #[test]
    fn messages_name_the_key_and_keep_the_source() {
        let e = FsError::from_store(StoreError::AccessDenied("policy".into()), "docs/a.txt");
        let line = e.to_string();
        assert!(
            line.contains("docs/a.txt") && line.contains("policy"),
            "{line}"
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn each_layer_converts_with_its_errno() {
        let cases: [(FsError, Errno); 6] = [
            (NsError::NotEmpty.into(), libc::ENOTEMPTY),
            (AttrError::NoSuchAttribute.into(), libc::ENODATA),
            (HandleError::Replaced("k".into()).into(), libc::ESTALE),
            (
                UploadError::SpoolFull { used: 1, limit: 1 }.into(),
                libc::ENOSPC,
            ),
            (
                std::io::Error::from_raw_os_error(libc::ENOSPC).into(),
                libc::ENOSPC,
            ),
            (FsError::ReadOnly, libc::EROFS),
        ];
        for (e, errno) in cases {
            assert_eq!(e.errno(), errno, "{e}");
        }
    }

    #[test]
    fn an_earlier_failure_keeps_its_errno() {
        let first = FsError::from_store(StoreError::AccessDenied("no".into()), "k");
        let again: FsError = UploadError::EarlierFailed(Box::new(first)).into();
        assert_eq!(again.errno(), libc::EACCES);
        assert!(again.to_string().contains("earlier upload"));
    }

    #[test]
    fn unsupported_answers_its_errno_every_time() {
        for _ in 0..2 {
            let e = unsupported!("test calls", libc::EPERM, "a test");
            assert_eq!(e.errno(), libc::EPERM);
            assert!(e.is_routine());
        }
    }
}
