//! POSIX attributes and how they are stored in S3 object metadata, the way s3fs stores them.
//!
//! Headers (user metadata, so `x-amz-meta-` on the wire): `mode` (decimal, file-type bits
//! included: 33188 is a 0644 file, 41471 a symlink), `uid`, `gid`, and `mtime`, `ctime`,
//! `atime` as `seconds` or `seconds.nnnnnnnnn` (always nine digits, as s3fs reads the fraction
//! as an integer count of nanoseconds). s3fs reads numbers with `strtoll(.., 0)`, so `0644` is
//! octal there; we accept the same spellings. An object without these headers gets the mount's
//! defaults and its `Last-Modified` time, so buckets written by other tools look sensible and a
//! bucket written by s3fs shows its modes here and the other way round.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::store::UserMeta;

pub const META_MODE: &str = "mode";
pub const META_UID: &str = "uid";
pub const META_GID: &str = "gid";
pub const META_MTIME: &str = "mtime";
pub const META_CTIME: &str = "ctime";
pub const META_ATIME: &str = "atime";
/// The device number of a character or block device node (s3fs's `x-amz-meta-rdev`).
pub const META_RDEV: &str = "rdev";

const S_IFMT: u32 = libc::S_IFMT;
const S_IFDIR: u32 = libc::S_IFDIR;
const S_IFLNK: u32 = libc::S_IFLNK;
const S_IFREG: u32 = libc::S_IFREG;

/// What an inode is. FIFOs, sockets and device nodes are stored as s3fs stores them: an empty
/// object whose mode carries the type (and `rdev` the device number); the kernel handles what
/// opening them means (a pipe, a socket), and the mount is `nodev`, so a device node stored in
/// the bucket never reaches a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl Kind {
    fn type_bits(self) -> u32 {
        match self {
            Kind::File => S_IFREG,
            Kind::Dir => S_IFDIR,
            Kind::Symlink => S_IFLNK,
            Kind::Fifo => libc::S_IFIFO,
            Kind::Socket => libc::S_IFSOCK,
            Kind::CharDevice => libc::S_IFCHR,
            Kind::BlockDevice => libc::S_IFBLK,
        }
    }

    /// The kind the file-type bits of a mode name, if any.
    pub fn from_mode(mode: u32) -> Option<Kind> {
        [
            Kind::File,
            Kind::Dir,
            Kind::Symlink,
            Kind::Fifo,
            Kind::Socket,
            Kind::CharDevice,
            Kind::BlockDevice,
        ]
        .into_iter()
        .find(|k| k.type_bits() == mode & S_IFMT)
    }

    /// A FIFO, socket or device node: an empty object nobody reads through the mount.
    pub fn is_special(self) -> bool {
        !matches!(self, Kind::File | Kind::Dir | Kind::Symlink)
    }

    fn is_device(self) -> bool {
        matches!(self, Kind::CharDevice | Kind::BlockDevice)
    }
}

/// Owner and modes given to objects that carry no metadata, and how far stored metadata is
/// trusted: whoever can write to the bucket writes it.
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u16,
    pub dir_mode: u16,
    /// Show stored setuid and setgid bits (off: they are cleared, so `cp -a` or `rsync -a`
    /// out of the mount never makes a setuid file someone else put in the bucket).
    pub keep_setid: bool,
    /// Show stored owners (off: every object belongs to `uid` and `gid`).
    pub stored_owners: bool,
}

impl Defaults {
    /// The defaults of a mount owned by `uid`:`gid` (modes 644 and 755, stored owners shown,
    /// setuid and setgid bits not).
    pub fn for_user(uid: u32, gid: u32) -> Self {
        Defaults {
            uid,
            gid,
            file_mode: DEFAULT_FILE_MODE,
            dir_mode: DEFAULT_DIR_MODE,
            keep_setid: false,
            stored_owners: true,
        }
    }
}

/// The default `--file-mode`: permissions of files without stored attributes.
pub const DEFAULT_FILE_MODE: u16 = 0o644;
/// The default `--dir-mode`.
pub const DEFAULT_DIR_MODE: u16 = 0o755;

/// The attributes of one inode, without its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub kind: Kind,
    pub size: u64,
    /// Permission bits (07777).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    /// The device number of a device node; 0 for everything else.
    pub rdev: u32,
}

impl Stat {
    /// A fresh inode of `kind` with the defaults and all times `now`.
    pub fn new(kind: Kind, d: &Defaults, now: SystemTime) -> Self {
        Stat {
            kind,
            size: 0,
            perm: if kind == Kind::Dir {
                d.dir_mode
            } else if kind == Kind::Symlink {
                0o777
            } else {
                d.file_mode
            },
            uid: d.uid,
            gid: d.gid,
            atime: now,
            mtime: now,
            ctime: now,
            rdev: 0,
        }
    }

    /// Attributes of an object: its size and date, then whatever its metadata says.
    pub fn from_object(
        kind: Kind,
        size: u64,
        last_modified: SystemTime,
        meta: Option<&UserMeta>,
        d: &Defaults,
    ) -> Self {
        let mut s = Stat::new(kind, d, last_modified);
        s.size = size;
        if let Some(m) = meta {
            s.apply_meta(m, d);
        }
        s
    }

    /// Overrides fields from stored metadata, as far as `d` trusts it; unparsable values are
    /// ignored.
    pub fn apply_meta(&mut self, m: &UserMeta, d: &Defaults) {
        if let Some(mode) = m.get(META_MODE).and_then(|v| parse_int(v)) {
            let setid = if d.keep_setid { 0 } else { 0o6000 };
            self.perm = (mode as u32 & 0o7777 & !setid) as u16;
        }
        if d.stored_owners {
            if let Some(uid) = m.get(META_UID).and_then(|v| parse_int(v)) {
                self.uid = uid as u32;
            }
            if let Some(gid) = m.get(META_GID).and_then(|v| parse_int(v)) {
                self.gid = gid as u32;
            }
        }
        if let Some(t) = m.get(META_MTIME).and_then(|v| parse_time(v)) {
            self.mtime = t;
            // Without their own headers, ctime and atime follow the stored mtime.
            self.ctime = t;
            self.atime = t;
        }
        if let Some(t) = m.get(META_CTIME).and_then(|v| parse_time(v)) {
            self.ctime = t;
        }
        if let Some(t) = m.get(META_ATIME).and_then(|v| parse_time(v)) {
            self.atime = t;
        }
        if self.kind.is_device() {
            self.rdev = m.get(META_RDEV).and_then(|v| parse_int(v)).unwrap_or(0) as u32;
        }
    }

    /// `base` with our headers set from this stat (other headers are kept, as s3fs does).
    pub fn to_meta(&self, base: Option<&UserMeta>) -> UserMeta {
        let mut m = base.cloned().unwrap_or_default();
        m.insert(
            META_MODE.into(),
            (self.kind.type_bits() | self.perm as u32).to_string(),
        );
        m.insert(META_UID.into(), self.uid.to_string());
        m.insert(META_GID.into(), self.gid.to_string());
        m.insert(META_MTIME.into(), format_time(self.mtime));
        m.insert(META_CTIME.into(), format_time(self.ctime));
        m.insert(META_ATIME.into(), format_time(self.atime));
        if self.kind.is_device() {
            m.insert(META_RDEV.into(), self.rdev.to_string());
        }
        m
    }
}

/// The kind an object's metadata declares, if any.
pub fn kind_from_meta(m: &UserMeta) -> Option<Kind> {
    Kind::from_mode(parse_int(m.get(META_MODE)?)? as u32)
}

/// Parses an integer the way `strtoll(s, NULL, 0)` does (decimal, `0` octal, `0x` hex).
pub fn parse_int(s: &str) -> Option<i64> {
    let s = s.trim();
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = if let Some(h) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i64::from_str_radix(h, 16).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        i64::from_str_radix(&digits[1..], 8).ok()?
    } else {
        digits.parse::<i64>().ok()?
    };
    Some(if neg { -v } else { v })
}

/// Parses `seconds` or `seconds.nanoseconds` (the fraction is an integer count of ns).
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (secs, nanos) = match s.split_once('.') {
        Some((a, b)) => (a.parse::<i64>().ok()?, b.parse::<u32>().ok()?),
        None => (s.parse::<i64>().ok()?, 0),
    };
    if nanos >= 1_000_000_000 {
        return None;
    }
    if secs >= 0 {
        Some(UNIX_EPOCH + Duration::new(secs as u64, nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))?
            .checked_add(Duration::from_nanos(nanos as u64))
    }
}

/// Formats a time as s3fs does: `seconds` when whole, else `seconds.nnnnnnnnn`.
pub fn format_time(t: SystemTime) -> String {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d.subsec_nanos() == 0 => d.as_secs().to_string(),
        Ok(d) => format!("{}.{:09}", d.as_secs(), d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            if d.subsec_nanos() == 0 {
                format!("-{}", d.as_secs())
            } else {
                // -1.5 s is stored as -2 s + 0.5 s, matching how parse_time reads it back.
                format!(
                    "-{}.{:09}",
                    d.as_secs() + 1,
                    1_000_000_000 - d.subsec_nanos()
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Defaults = Defaults {
        uid: 1000,
        gid: 1000,
        file_mode: 0o644,
        dir_mode: 0o755,
        keep_setid: false,
        stored_owners: true,
    };

    #[test]
    fn stored_setuid_bits_and_owners_are_trusted_only_when_asked() {
        let mut m = UserMeta::new();
        m.insert("mode".into(), (libc::S_IFREG | 0o6755).to_string());
        m.insert("uid".into(), "0".into());
        m.insert("gid".into(), "0".into());
        let s = Stat::from_object(Kind::File, 3, SystemTime::now(), Some(&m), &D);
        assert_eq!((s.perm, s.uid, s.gid), (0o755, 0, 0));
        let keep = Defaults {
            keep_setid: true,
            stored_owners: false,
            ..D
        };
        let s = Stat::from_object(Kind::File, 3, SystemTime::now(), Some(&m), &keep);
        assert_eq!((s.perm, s.uid, s.gid), (0o6755, 1000, 1000));
    }

    #[test]
    fn strtoll_spellings() {
        assert_eq!(parse_int("33188"), Some(33188));
        assert_eq!(parse_int("0644"), Some(0o644));
        assert_eq!(parse_int("0x1ed"), Some(0x1ed));
        assert_eq!(parse_int("0"), Some(0));
        assert_eq!(parse_int("12abc"), None);
    }

    #[test]
    fn times_round_trip_with_nine_digits() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        assert_eq!(format_time(t), "1700000000.000000005");
        assert_eq!(parse_time("1700000000.000000005"), Some(t));
        assert_eq!(format_time(UNIX_EPOCH + Duration::from_secs(7)), "7");
        let before = UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(parse_time(&format_time(before)), Some(before));
    }

    #[test]
    fn s3fs_metadata_is_read() {
        let mut m = UserMeta::new();
        m.insert("mode".into(), "33261".into()); // 0100755
        m.insert("uid".into(), "0".into());
        m.insert("gid".into(), "42".into());
        m.insert("mtime".into(), "1600000000".into());
        let s = Stat::from_object(Kind::File, 3, SystemTime::now(), Some(&m), &D);
        assert_eq!(s.perm, 0o755);
        assert_eq!((s.uid, s.gid), (0, 42));
        assert_eq!(s.mtime, UNIX_EPOCH + Duration::from_secs(1_600_000_000));
        assert_eq!(s.ctime, s.mtime);
        assert_eq!(kind_from_meta(&m), Some(Kind::File));
    }

    #[test]
    fn written_metadata_reads_back_and_keeps_foreign_headers() {
        let mut foreign = UserMeta::new();
        foreign.insert("color".into(), "blue".into());
        let mut s = Stat::new(Kind::Symlink, &D, UNIX_EPOCH + Duration::new(5, 6));
        s.uid = 7;
        let m = s.to_meta(Some(&foreign));
        assert_eq!(m["mode"], "41471");
        assert_eq!(m["color"], "blue");
        assert_eq!(kind_from_meta(&m), Some(Kind::Symlink));
        let back = Stat::from_object(Kind::Symlink, 0, SystemTime::now(), Some(&m), &D);
        assert_eq!(back, s);
    }

    #[test]
    fn objects_without_metadata_get_defaults() {
        let lm = UNIX_EPOCH + Duration::from_secs(99);
        let s = Stat::from_object(Kind::File, 10, lm, None, &D);
        assert_eq!((s.perm, s.uid, s.size, s.mtime), (0o644, 1000, 10, lm));
    }
}
