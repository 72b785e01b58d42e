//! Many hosts, one bucket: an upload replaces an object only if it is still the version this
//! mount last saw, so no host silently overwrites another host's saved change.
//!
//! Every upload of a file carries a condition ([`Expect`]): the ETag of the version the file
//! was opened from (`If-Match`), or, for a file created here, that the key is still free
//! (`If-None-Match: *`). Where the server checks conditional writes (AWS, moto; found by the
//! write probe at mount) the condition rides on the PUT or CompleteMultipartUpload itself and
//! costs nothing; where it does not (Garage 2.5.0), a HEAD just before the PUT checks it, which
//! leaves a window of one round trip in which a concurrent write is not seen. A multipart
//! upload is always checked by a HEAD before its completion too (cheap next to its parts, and
//! moto checks no `If-Match` there).
//!
//! A failed condition is a conflict: `close()` and `fsync()` fail with `ESTALE`, the log names
//! the version that won (the host that wrote it, from the `pailfs-host` metadata every upload
//! carries, its ETag and date), and the data is kept in `failed/` (listed by `pailfs doctor`).
//! With `--on-conflict keep-both` the losing version is stored beside the winner as
//! `NAME.conflict-HOST-TIME` instead, and the close succeeds; `--on-conflict overwrite` sends
//! no condition (the last close wins, as before).

use std::time::SystemTime;

use super::Fs;
use super::error::{FsError, FsResult, UploadError};
use super::openfile::Base;
use crate::store::{Expect, ObjectMeta, ObjectStore, StoreError};

/// The object metadata naming the host that wrote a file's content.
pub const META_HOST: &str = "pailfs-host";

/// What an upload does when the object changed since this mount saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnConflict {
    /// Fail the close with ESTALE and keep the data in `failed/`.
    #[default]
    Fail,
    /// Store the losing version beside the winner as `NAME.conflict-HOST-TIME`.
    KeepBoth,
    /// Send no condition: the last close wins.
    Overwrite,
}

impl std::str::FromStr for OnConflict {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fail" => Ok(OnConflict::Fail),
            "keep-both" => Ok(OnConflict::KeepBoth),
            "overwrite" => Ok(OnConflict::Overwrite),
            _ => Err(format!("{s:?} is not one of fail, keep-both, overwrite")),
        }
    }
}

impl std::fmt::Display for OnConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OnConflict::Fail => "fail",
            OnConflict::KeepBoth => "keep-both",
            OnConflict::Overwrite => "overwrite",
        })
    }
}

/// The mount's conflict settings.
#[derive(Clone, Debug)]
pub struct Conflicts {
    pub mode: OnConflict,
    /// The server checks `If-Match` and `If-None-Match` on writes (the write probe found it).
    pub server_checks: bool,
    /// This host's name, stored with every upload and in conflict copies' names.
    pub host: String,
}

impl Default for Conflicts {
    fn default() -> Self {
        Conflicts {
            mode: OnConflict::Fail,
            server_checks: true,
            host: host_name(),
        }
    }
}

/// The machine's host name (`gethostname`), or `unknown-host`.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    let n = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(h) if n == 0 && !h.is_empty() => h.to_string(),
        _ => "unknown-host".to_string(),
    }
}

/// The name a losing version is kept under beside the winner.
pub fn conflict_key(key: &str, host: &str, at: SystemTime) -> String {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let host: String = host
        .chars()
        .map(|c| if c == '/' { '_' } else { c })
        .collect();
    format!("{key}.conflict-{host}-{secs}")
}

/// Says who wrote the version `m` of a key (for the log and the error).
fn describe(m: Option<&ObjectMeta>) -> String {
    let Some(m) = m else {
        return "deleted".to_string();
    };
    let host = m
        .user_meta
        .as_ref()
        .and_then(|u| u.get(META_HOST))
        .map_or("a client that does not say (not pailfs)", String::as_str);
    let secs = m
        .last_modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("written by {host}, ETag {}, at {secs} s", m.etag)
}

impl<S: ObjectStore> Fs<S> {
    /// The condition an upload of `key` from `base` carries.
    pub(crate) fn expect_for(&self, key: &str, base: Option<&Base>) -> Expect {
        if self.config.conflicts.mode == OnConflict::Overwrite {
            return Expect::Any;
        }
        match base {
            Some(b) if b.key == key && !b.etag.is_empty() => Expect::Etag(b.etag.clone()),
            // Renamed while the upload was being prepared (the rename decides), or a version
            // whose ETag is not known: nothing to compare with.
            Some(_) => Expect::Any,
            None => Expect::Absent,
        }
    }

    /// Checks `expect` with a HEAD where the server will not (or, with `always`, in any
    /// case): a conflict is an error naming the winner.
    pub(crate) async fn check_before_upload(
        &self,
        key: &str,
        expect: &Expect,
        always: bool,
    ) -> FsResult<()> {
        if *expect == Expect::Any || (self.config.conflicts.server_checks && !always) {
            return Ok(());
        }
        let current = match self.store.head(key).await {
            Ok(m) => Some(m),
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(FsError::from_store(e, key)),
        };
        if expect.holds(current.as_ref().map(|m| m.etag.as_str())) {
            return Ok(());
        }
        Err(conflict_error(key, current.as_ref()))
    }

    /// Turns an upload's failed condition (or the version it builds on gone) into the
    /// conflict error, asking S3 who won; other errors pass.
    pub(crate) async fn conflict_of(&self, key: &str, expect: &Expect, e: FsError) -> FsError {
        let failed_condition = match (&e, expect) {
            (_, Expect::Any) => false,
            (FsError::Store { source, .. }, _) => match source {
                StoreError::PreconditionFailed => true,
                StoreError::NotFound => matches!(expect, Expect::Etag(_)),
                _ => false,
            },
            _ => false,
        };
        if !failed_condition {
            return e;
        }
        let winner = self.store.head(key).await.ok();
        conflict_error(key, winner.as_ref())
    }
}

/// The conflict error for `key`, whose version now is `winner`.
fn conflict_error(key: &str, winner: Option<&ObjectMeta>) -> FsError {
    let winner = describe(winner);
    log::warn!("{key:?} changed in S3 since this mount read it (now {winner})");
    UploadError::Conflict {
        key: key.to_string(),
        winner,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_copies_are_named_for_the_host_and_time() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(
            conflict_key("d/report.txt", "web/1", at),
            "d/report.txt.conflict-web_1-1700000000"
        );
    }

    #[test]
    fn on_conflict_modes_parse_and_print_alike() {
        for m in [
            OnConflict::Fail,
            OnConflict::KeepBoth,
            OnConflict::Overwrite,
        ] {
            assert_eq!(m.to_string().parse::<OnConflict>(), Ok(m));
        }
        assert!("both".parse::<OnConflict>().is_err());
    }

    #[test]
    fn the_winner_is_described_by_its_host() {
        let mut meta = crate::store::UserMeta::new();
        meta.insert(META_HOST.into(), "beta".into());
        let m = ObjectMeta {
            key: "k".into(),
            size: 1,
            etag: "\"e\"".into(),
            last_modified: SystemTime::UNIX_EPOCH,
            user_meta: Some(meta),
        };
        assert_eq!(describe(Some(&m)), "written by beta, ETag \"e\", at 0 s");
        assert_eq!(describe(None), "deleted");
    }
}
