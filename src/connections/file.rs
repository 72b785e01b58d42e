//! The connections file: TOML under `$XDG_CONFIG_HOME/pailfs/connections.toml` (or
//! `~/.config/pailfs/`), and `/etc/pailfs/connections.toml` for system mounts (fstab, systemd).
//!
//! Checked as ssh checks its configuration: a file owned by another user, or writable by group
//! or others, is refused (whoever can write it can send the credentials of a profile to an
//! endpoint of theirs); one that holds a secret and can be read by group or others is refused
//! too, each with the `chmod` or `chown` to run: a leaked key is worse than a mount that does
//! not start. A file that does not parse is reported by line and field, never by its text
//! (the line may hold a secret). Writes are atomic (a temporary file renamed over the old one)
//! and create the file with mode 0600.

use crate::error::CliError;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Connection, validate_label};

pub const FILE_NAME: &str = "connections.toml";
pub const SYSTEM_DIR: &str = "/etc/pailfs";

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    connections: BTreeMap<String, Connection>,
}

/// The user's configuration directory: `$PAILFS_CONFIG_DIR`, `$XDG_CONFIG_HOME/pailfs` or
/// `~/.config/pailfs`.
pub fn user_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PAILFS_CONFIG_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("pailfs");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".config").join("pailfs")
}

/// One connections file and what it holds.
pub struct ConnectionFile {
    pub path: PathBuf,
    pub connections: BTreeMap<String, Connection>,
}

impl ConnectionFile {
    /// The user's file (`system`: the system-wide one).
    pub fn path_for(system: bool) -> PathBuf {
        if system {
            PathBuf::from(SYSTEM_DIR).join(FILE_NAME)
        } else {
            user_dir().join(FILE_NAME)
        }
    }

    /// Reads `path`; a missing file is an empty one.
    pub fn load(path: &Path) -> Result<ConnectionFile, CliError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ConnectionFile {
                    path: path.to_path_buf(),
                    connections: BTreeMap::new(),
                });
            }
            Err(e) => {
                return Err(CliError::Invalid(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        check_owner_and_writers(path)?;
        let doc: Doc = toml::from_str(&text).map_err(|e| {
            format!(
                "{} is not a valid connections file: {}",
                path.display(),
                explain(&e, &text)
            )
        })?;
        let file = ConnectionFile {
            path: path.to_path_buf(),
            connections: doc.connections,
        };
        if file.connections.values().any(Connection::has_secret) {
            check_private(path)?;
        }
        for label in file.connections.keys() {
            validate_label(label).map_err(|e| e.within(path.display()))?;
        }
        Ok(file)
    }

    /// Writes the file atomically with mode 0600 (its directory 0700 when created).
    pub fn save(&self) -> Result<(), CliError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        if !dir.exists() {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::failed(format!("cannot create {}", dir.display()), e))?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let doc = Doc {
            connections: self.connections.clone(),
        };
        let text = toml::to_string_pretty(&doc)
            .map_err(|e| CliError::failed("cannot encode connections", e))?;
        let tmp = dir.join(format!(".{FILE_NAME}.{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| CliError::failed(format!("cannot write {}", tmp.display()), e))?;
        let written = f
            .write_all(
                b"# pailfs connections (pailfs connection add/remove). Keep this file private.\n",
            )
            .and_then(|_| f.write_all(text.as_bytes()))
            .and_then(|_| f.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(CliError::failed(
                format!("cannot write {}", tmp.display()),
                e,
            ));
        }
        std::fs::rename(&tmp, &self.path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            CliError::failed(format!("cannot replace {}", self.path.display()), e)
        })
    }
}

/// Refuses a file another user owns (root's files are trusted) or that group or others can
/// write.
pub fn check_owner_and_writers(path: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)
        .map_err(|e| CliError::failed(format!("cannot stat {}", path.display()), e))?;
    let me = unsafe { libc::geteuid() };
    if m.uid() != me && m.uid() != 0 {
        return Err(CliError::Invalid(format!(
            "{} belongs to uid {}, not to you; run: chown {me} {}",
            path.display(),
            m.uid(),
            path.display()
        )));
    }
    if m.mode() & 0o022 != 0 {
        return Err(CliError::Invalid(format!(
            "{} can be changed by group or others (mode {:o}); run: chmod go-w {}",
            path.display(),
            m.mode() & 0o777,
            path.display()
        )));
    }
    Ok(())
}

/// Where and what a parse error is (line, column, message, the field of that line), never
/// the text of the line: it may hold a secret.
fn explain(e: &toml::de::Error, text: &str) -> String {
    let Some(span) = e.span() else {
        return e.message().to_string();
    };
    let before = &text[..span.start.min(text.len())];
    let line_no = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let (key, value) = line.split_once('=').unwrap_or(("", line));
    let field = Some(key.trim()).filter(|k| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    // A message may quote the value ("invalid type: string \"...\""): never show it.
    let value = value.trim().trim_matches(|c| c == '\'' || c == '"');
    let mut msg = e.message().to_string();
    if value.len() >= 2 {
        msg = msg.replace(value, "(value hidden)");
    }
    match field {
        Some(f) => format!("line {line_no}, field {f}: {msg}"),
        None => format!("line {line_no}: {msg}"),
    }
}

/// Refuses a secret-holding file that group or others can read.
pub fn check_private(path: &Path) -> Result<(), CliError> {
    let mode = std::fs::metadata(path)
        .map_err(|e| CliError::failed(format!("cannot stat {}", path.display()), e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(CliError::Invalid(format!(
            "{} holds secrets and is readable by group or others (mode {:o}); run: chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        )));
    }
    Ok(())
}

/// Finds `label` in the user's file, then in the system file.
pub fn find(label: &str) -> Result<Option<(Connection, PathBuf)>, CliError> {
    for system in [false, true] {
        let path = ConnectionFile::path_for(system);
        if system && !path.exists() {
            continue;
        }
        let file = ConnectionFile::load(&path)?;
        if let Some(c) = file.connections.get(label) {
            return Ok(Some((c.clone(), path)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Connection {
        Connection {
            bucket: "photos".into(),
            subfolder: "team/".into(),
            access_key_id: Some("AKIAIOSFODNN7EXAMPLE".into()),
            secret_access_key: Some("s3cr3t".into()),
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(FILE_NAME);
        let mut f = ConnectionFile::load(&path).unwrap();
        assert!(f.connections.is_empty());
        f.connections.insert("work".into(), sample());
        f.save().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = ConnectionFile::load(&path).unwrap();
        assert_eq!(back.connections["work"], sample());
    }

    #[test]
    fn readable_secrets_are_refused_with_the_chmod_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut f = ConnectionFile::load(&path).unwrap();
        f.connections.insert("work".into(), sample());
        f.save().unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = ConnectionFile::load(&path).err().unwrap();
        assert!(
            e.to_string()
                .contains(&format!("chmod 600 {}", path.display())),
            "{e}"
        );
        assert!(!e.to_string().contains("s3cr3t"));
    }

    #[test]
    fn parse_errors_name_the_line_and_field_never_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(
            &path,
            "[connections.x]\nbucket = 'b'\nsecret_access_key = 'wJalrXUtnFEMI\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = ConnectionFile::load(&path).err().unwrap();
        assert!(
            e.to_string().contains("line 3") && e.to_string().contains("secret_access_key"),
            "{e}"
        );
        assert!(
            !e.to_string().contains("wJalr"),
            "the secret is in the message: {e}"
        );
        std::fs::write(
            &path,
            "[connections.x]\nbucket = 'b'\nsesion_token = 'tok3n'\n",
        )
        .unwrap();
        let e = ConnectionFile::load(&path).err().unwrap();
        assert!(
            !e.to_string().contains("tok3n"),
            "the value is in the message: {e}"
        );
        std::fs::write(
            &path,
            "[connections.x]\nbucket = 'b'\nread_only = 'hunter22'\n",
        )
        .unwrap();
        let e = ConnectionFile::load(&path).err().unwrap();
        assert!(
            e.to_string().contains("line 3") && !e.to_string().contains("hunter22"),
            "{e}"
        );
    }

    #[test]
    fn files_others_can_write_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "[connections.x]\nbucket = 'b'\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = ConnectionFile::load(&path).err().unwrap();
        assert!(e.to_string().contains("chmod go-w"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(ConnectionFile::load(&path).is_ok());
    }

    #[test]
    fn bad_files_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "[connections.x]\nbukket = 'b'\n").unwrap();
        let e = ConnectionFile::load(&path).err().unwrap();
        assert!(
            e.to_string().contains("not a valid connections file"),
            "{e}"
        );
    }
}
