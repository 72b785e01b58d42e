//! The `--log-file` writer: private (0600, no symlink followed), and reopened on SIGHUP, so
//! `logrotate` can move the file away and the daemon goes on writing to a new one at the same
//! path (the usual `postrotate kill -HUP` convention) instead of dying, as the default action
//! of SIGHUP would make it.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// The log file in use, for the SIGHUP handler.
static CURRENT: OnceLock<LogFile> = OnceLock::new();

/// A log file that can be reopened; clones share the file.
#[derive(Clone)]
pub struct LogFile {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl LogFile {
    /// Opens `path` for appending (creating it 0600) and makes it the one SIGHUP reopens.
    pub fn open(path: PathBuf) -> io::Result<LogFile> {
        let f = crate::private::append_file(&path)?;
        let log = LogFile {
            path,
            file: Arc::new(Mutex::new(f)),
        };
        let _ = CURRENT.set(log.clone());
        Ok(log)
    }

    fn reopen(&self) -> io::Result<()> {
        let f = crate::private::append_file(&self.path)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = f;
        Ok(())
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

/// SIGHUP: reopens the log file, if there is one. Returns what to log about it.
pub fn reopen() -> Option<String> {
    let log = CURRENT.get()?;
    Some(match log.reopen() {
        Ok(()) => format!("SIGHUP: reopened the log file {}", log.path.display()),
        Err(e) => format!(
            "SIGHUP: cannot reopen the log file {} ({e}); still writing to the old one",
            log.path.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_log_file_is_recreated_on_reopen() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("pailfs.log");
        let mut log = LogFile::open(p.clone()).unwrap();
        writeln!(log, "before").unwrap();
        std::fs::rename(&p, t.path().join("pailfs.log.1")).unwrap();
        log.reopen().unwrap();
        writeln!(log, "after").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "after\n");
        assert_eq!(
            std::fs::read_to_string(t.path().join("pailfs.log.1")).unwrap(),
            "before\n"
        );
    }
}
