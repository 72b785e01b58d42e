//! Logging to syslog (and so to the journal) for a mount running in the background.
//!
//! A daemonized mount has no terminal; without `--log-file` its log would be lost. When
//! `/dev/log` exists, each log record becomes one datagram in the classic syslog format
//! (`<priority>pailfs[pid]: message`, facility `daemon`), which rsyslog and journald both
//! read. env_logger formats each record into one buffer and writes it with one call, so one
//! record is one datagram.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// The syslog socket.
pub const DEV_LOG: &str = "/dev/log";

/// `<PRI>` for facility daemon and the record's level.
/// True when standard error is a stream to the systemd journal: systemd sets `JOURNAL_STREAM`
/// to that stream's `device:inode`, which a process started elsewhere does not inherit as its
/// own standard error.
pub fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    // SAFETY: fstat fills the struct it is given.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    dev.parse() == Ok(st.st_dev) && ino.parse() == Ok(st.st_ino)
}

pub fn priority(level: log::Level) -> u8 {
    const DAEMON: u8 = 3 << 3;
    DAEMON
        + match level {
            log::Level::Error => 3,
            log::Level::Warn => 4,
            log::Level::Info => 6,
            log::Level::Debug | log::Level::Trace => 7,
        }
}

/// Sends each write as one datagram to a syslog socket.
pub struct SyslogWriter {
    path: PathBuf,
    sock: UnixDatagram,
}

impl SyslogWriter {
    pub fn connect(path: &Path) -> std::io::Result<SyslogWriter> {
        let sock = UnixDatagram::unbound()?;
        sock.connect(path)?;
        Ok(SyslogWriter {
            path: path.to_path_buf(),
            sock,
        })
    }
}

impl Write for SyslogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let msg = buf.strip_suffix(b"\n").unwrap_or(buf);
        if self.sock.send(msg).is_err() {
            // The log daemon restarted: reconnect once.
            self.sock = UnixDatagram::unbound()?;
            self.sock.connect(&self.path)?;
            self.sock.send(msg)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `s` with control characters (newlines, escapes, NUL...) written as `\n`, `\u{1b}`, ...
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(escape_controls("plain é"), "plain é");
    }

    #[test]
    fn each_write_is_one_datagram_without_the_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut w = SyslogWriter::connect(&path).unwrap();
        let line = format!("<{}>pailfs[1]: upload failed\n", priority(log::Level::Warn));
        w.write_all(line.as_bytes()).unwrap();
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"<28>pailfs[1]: upload failed");
        assert_eq!(priority(log::Level::Error), 27);
    }
}
