//! The core's error type and the one table that turns every failure into an errno.
//!
//! Every layer's error converts into [`FsError`], which carries the errno the kernel will see
//! and a message for the log. Keeping the table in one place is what makes "what does the
//! application see when S3 says X" answerable (see `docs/SEMANTICS.md`, failure behaviour).

use crate::store::StoreError;

pub type Errno = i32;

/// An error of a filesystem operation: the errno for the kernel and a message for the log.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct FsError {
    pub errno: Errno,
    pub message: String,
}

pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    pub fn new(errno: Errno, message: impl Into<String>) -> Self {
        FsError {
            errno,
            message: message.into(),
        }
    }

    pub fn not_found() -> Self {
        Self::new(libc::ENOENT, "no such file or directory")
    }

    pub fn read_only() -> Self {
        Self::new(libc::EROFS, "the mount is read-only")
    }

    /// The errno S3 failure `e` becomes, with the key it concerned in the message.
    pub fn from_store(e: StoreError, key: &str) -> Self {
        let errno = match &e {
            StoreError::NotFound => libc::ENOENT,
            StoreError::PreconditionFailed => libc::ESTALE,
            StoreError::AccessDenied(_)
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
        };
        FsError::new(errno, format!("{e} (key {key:?})"))
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> Self {
        let errno = e.raw_os_error().unwrap_or(libc::EIO);
        FsError::new(errno, format!("local spool I/O: {e}"))
    }
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
            assert_eq!(FsError::from_store(e.clone(), "k").errno, errno, "{e:?}");
        }
    }

    #[test]
    fn messages_name_the_key() {
        let e = FsError::from_store(StoreError::NotFound, "docs/a.txt");
        assert!(e.message.contains("docs/a.txt"));
    }
}
