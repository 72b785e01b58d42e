//! s3fs's password file, for users who bring their fstab lines and `passwd_file` along.
//!
//! The format is s3fs's: one credential per line, `ACCESS_KEY_ID:SECRET_ACCESS_KEY` for any
//! bucket or `BUCKET:ACCESS_KEY_ID:SECRET_ACCESS_KEY` for one; `#` starts a comment. A line for
//! the bucket being mounted wins over a bare one. Like the connections file, it is refused
//! when group or others can read it (s3fs refuses it too), with the `chmod` to run; a parse
//! error names the line, never its content.

use std::path::Path;

use crate::error::CliError;
use crate::store::client::StaticKeys;

/// The keys `path` holds for `bucket`.
pub fn keys_for(path: &Path, bucket: &str) -> Result<StaticKeys, CliError> {
    super::file::check_private(path)?;
    super::file::check_owner_and_writers(path)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::failed(format!("cannot read {}", path.display()), e))?;
    pick(&text, bucket).map_err(|e| e.within(path.display()))
}

/// The line for `bucket`, else the bare line, from the text of a password file.
fn pick(text: &str, bucket: &str) -> Result<StaticKeys, CliError> {
    let mut bare = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(':').collect();
        let keys = |id: &str, secret: &str| StaticKeys {
            access_key_id: id.to_string(),
            secret_access_key: secret.to_string(),
            session_token: None,
        };
        match fields.as_slice() {
            [id, secret] if !id.is_empty() && !secret.is_empty() => {
                bare.get_or_insert(keys(id, secret));
            }
            [b, id, secret] if !id.is_empty() && !secret.is_empty() => {
                if *b == bucket {
                    return Ok(keys(id, secret));
                }
            }
            _ => {
                return Err(CliError::Invalid(format!(
                    "line {} is not ACCESS_KEY_ID:SECRET or BUCKET:ACCESS_KEY_ID:SECRET",
                    n + 1
                )));
            }
        }
    }
    bare.ok_or_else(|| {
        CliError::Invalid(format!(
            "no line for bucket {bucket:?} and no line for every bucket"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_bucket_line_wins_over_the_bare_one() {
        let text = "# s3fs\nAKIABARE:bare-secret\nphotos:AKIAPHOTOS:photo-secret\n";
        assert_eq!(pick(text, "photos").unwrap().access_key_id, "AKIAPHOTOS");
        assert_eq!(
            pick(text, "other").unwrap().secret_access_key,
            "bare-secret"
        );
        assert!(pick("photos:AKIA:s", "other").is_err());
    }

    #[test]
    fn bad_lines_are_named_without_their_content() {
        let e = pick("ok:fine\nnot-a-credential-line-with-secret\n", "b")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && !e.contains("secret"), "{e}");
    }

    #[test]
    fn a_file_others_can_read_is_refused_with_the_chmod() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd-s3fs");
        std::fs::write(&path, "AKIA:secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = keys_for(&path, "b").unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(keys_for(&path, "b").unwrap().access_key_id, "AKIA");
    }
}
