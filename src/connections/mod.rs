//! Named connections: a label for a bucket (or a subfolder of one), where it is, and which
//! credentials reach it.
//!
//! Users keep several S3 endpoints side by side, sometimes two connections to one bucket with
//! different keys; the label is how they tell them apart. A connection can say its credentials
//! only reach a subfolder: then the subfolder becomes the mount's root and `check` probes
//! permissions there, never at the bucket root. Secrets are stored only in files no one else can
//! read ([`file`]), never taken from the command line, and never printed ([`Connection::masked`]).

pub mod check;
pub mod commands;
pub mod file;
pub mod passwd;
pub mod policy;
pub mod report;

use crate::error::CliError;
use serde::{Deserialize, Serialize};

use crate::fs::names::normalize_prefix;
use crate::store::client::{S3Settings, StaticKeys};

/// One saved connection, as stored in `connections.toml` under `[connections.LABEL]`.
/// `Debug` masks the secret.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub path_style: bool,
    /// The part of the bucket the credentials are restricted to ("" = the whole bucket).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subfolder: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub case_insensitive: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// The session token of temporary keys (STS), a secret like the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
    /// A command printing credentials as JSON, as in AWS's `credential_process` (a password
    /// manager, a vault, an SSO helper).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_process: Option<String>,
    /// Encryption, storage class, checksums, payer, owner, anonymous access
    /// (`[connections.LABEL.requests]`); command-line flags win.
    #[serde(default, skip_serializing_if = "crate::cli::RequestArgs::is_empty")]
    pub requests: crate::cli::RequestArgs,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.masked();
        f.debug_struct("Connection")
            .field("bucket", &m.bucket)
            .field("region", &m.region)
            .field("endpoint_url", &m.endpoint_url)
            .field("path_style", &m.path_style)
            .field("subfolder", &m.subfolder)
            .field("read_only", &m.read_only)
            .field("case_insensitive", &m.case_insensitive)
            .field("profile", &m.profile)
            .field(
                "access_key_id",
                &m.access_key_id.as_deref().map(mask_key_id),
            )
            .field("secret_access_key", &m.secret_access_key)
            .field("session_token", &m.session_token)
            .field(
                "credential_process",
                &m.credential_process.as_deref().map(program_of),
            )
            .field("requests", &m.requests)
            .finish()
    }
}

/// Labels are short and safe to use as file names and in fstab: `[A-Za-z0-9._-]{1,64}`, and
/// not `.` or `..` (the systemd unit mounts at /mnt/pailfs/LABEL).
pub fn validate_label(label: &str) -> Result<(), CliError> {
    let ok = !label.is_empty()
        && label != "."
        && label != ".."
        && label.len() <= 64
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(CliError::Invalid(format!(
            "connection label {label:?} must be 1 to 64 letters, digits, '.', '-' or '_', and not '.' or '..'"
        )))
    }
}

impl Connection {
    /// Checks the fields and normalizes the subfolder (no leading `/`, one trailing `/`).
    pub fn validated(mut self) -> Result<Connection, CliError> {
        crate::config::Source::parse(&self.bucket).map_err(|e| e.within("bucket"))?;
        self.subfolder = normalize_prefix(&self.subfolder)?;
        if let Some(e) = &self.endpoint_url
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(CliError::Invalid(format!(
                "endpoint {e:?} must start with http:// or https://"
            )));
        }
        let sources = [
            self.profile.is_some(),
            self.access_key_id.is_some(),
            self.credential_process.is_some(),
            self.requests.no_sign_request,
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err(CliError::Invalid(
                "use one source of credentials: a profile, an access key, a credential process, or none (no_sign_request)".into(),
            ));
        }
        if self.session_token.is_some() && self.access_key_id.is_none() {
            return Err(CliError::Invalid(
                "a session token goes with an access key id and its secret".into(),
            ));
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err(CliError::Invalid(
                "an access key id needs its secret access key".into(),
            ));
        }
        Ok(self)
    }

    pub fn has_secret(&self) -> bool {
        self.secret_access_key.is_some()
    }

    /// The S3 settings this connection implies (before command-line overrides).
    pub fn apply_to(&self, s: &mut S3Settings) {
        if self.endpoint_url.is_some() {
            s.endpoint_url = self.endpoint_url.clone();
        }
        if self.region.is_some() {
            s.region = self.region.clone();
        }
        s.force_path_style |= self.path_style;
        if self.profile.is_some() {
            s.profile = self.profile.clone();
        }
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            s.static_keys = Some(StaticKeys {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
                session_token: self.session_token.clone(),
            });
        }
        if self.credential_process.is_some() {
            s.credential_process = self.credential_process.clone();
        }
    }

    /// A copy safe to print: the secret replaced by a mask.
    pub fn masked(&self) -> Connection {
        let mut c = self.clone();
        if c.secret_access_key.is_some() {
            c.secret_access_key = Some("********".into());
        }
        if c.session_token.is_some() {
            c.session_token = Some("********".into());
        }
        if let Some(cmd) = &c.credential_process
            && program_of(cmd) != cmd.trim()
        {
            // Its arguments may hold a token.
            c.credential_process = Some(format!("{} ********", program_of(cmd)));
        }
        c
    }

    /// How the credentials are found, for messages.
    pub fn credentials_source(&self) -> String {
        match (&self.profile, &self.access_key_id, &self.credential_process) {
            (Some(p), _, _) => format!("profile {p:?}"),
            (None, Some(id), _) if self.session_token.is_some() => {
                format!("temporary access key {}", mask_key_id(id))
            }
            (None, Some(id), _) => format!("access key {}", mask_key_id(id)),
            (None, None, Some(c)) => format!("credential process {:?}", program_of(c)),
            _ if self.requests.no_sign_request => "no credentials (unsigned requests)".into(),
            (None, None, None) => "the default AWS credential chain".into(),
        }
    }
}

/// The program of a command line, without its arguments (which may hold secrets).
pub fn program_of(command: &str) -> &str {
    command.split_whitespace().next().unwrap_or("")
}

/// Shows the first and last 4 characters of an access key id.
pub fn mask_key_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 10 {
        return "****".into();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_process_is_shown_without_its_arguments() {
        let c = Connection {
            bucket: "b".into(),
            credential_process: Some("/usr/bin/vault-creds --token s3cr3t".into()),
            ..Default::default()
        };
        let shown = toml::to_string(&c.masked()).unwrap();
        assert!(
            shown.contains("vault-creds") && !shown.contains("s3cr3t"),
            "{shown}"
        );
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn debug_masks_the_secret_and_key_ids_of_any_text_are_masked() {
        let c = Connection {
            bucket: "b".into(),
            access_key_id: Some("AKIAIOSFODNN7EXAMPLE".into()),
            secret_access_key: Some("wJalrXUtnFEMI/K7MDENG".into()),
            ..Default::default()
        };
        let d = format!("{c:?}");
        assert!(
            !d.contains("wJalr") && !d.contains("AKIAIOSFODNN7EXAMPLE"),
            "{d}"
        );
        assert_eq!(mask_key_id("ÄÖÜäöüßÄÖÜäöü"), "ÄÖÜä…Üäöü");
        assert_eq!(mask_key_id("é"), "****");
    }

    #[test]
    fn labels() {
        assert!(validate_label("work-photos_2.0").is_ok());
        assert!(validate_label("").is_err());
        assert!(validate_label("a b").is_err());
        assert!(validate_label(".").is_err());
        assert!(validate_label("..").is_err());
        assert!(validate_label(&"x".repeat(65)).is_err());
    }

    #[test]
    fn validation_normalizes_and_refuses_mixups() {
        let c = Connection {
            bucket: "b-1".into(),
            subfolder: "/team/2024".into(),
            ..Default::default()
        };
        assert_eq!(c.validated().unwrap().subfolder, "team/2024/");
        let both = Connection {
            bucket: "b-1".into(),
            profile: Some("p".into()),
            access_key_id: Some("AKIA".into()),
            secret_access_key: Some("s".into()),
            ..Default::default()
        };
        assert!(both.validated().is_err());
        let no_secret = Connection {
            bucket: "b-1".into(),
            access_key_id: Some("AKIA".into()),
            ..Default::default()
        };
        assert!(no_secret.validated().is_err());
    }

    #[test]
    fn masking_hides_the_secret() {
        let c = Connection {
            bucket: "b-1".into(),
            access_key_id: Some("AKIAIOSFODNN7EXAMPLE".into()),
            secret_access_key: Some("wJalrXUtnFEMI/K7MDENG".into()),
            ..Default::default()
        };
        let shown = format!("{:?} {}", c.masked(), c.credentials_source());
        assert!(!shown.contains("wJalrXUtnFEMI"));
        assert!(shown.contains("AKIA…MPLE"));
    }
}
