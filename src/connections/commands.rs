//! The `pailfs connection ...` and `pailfs check` commands.

use crate::error::CliError;
use std::io::{BufRead, IsTerminal};

use super::check::{CheckTarget, run};
use super::file::ConnectionFile;
use super::policy::{Mode, PolicyForm};
use super::{Connection, mask_key_id, report, validate_label};
use crate::cli::{CheckArgs, ConnectionAddArgs, ConnectionCommand, S3Args};
use crate::config::{resolve_source, s3_settings};
use crate::fs::names::normalize_prefix;

/// Runs a `connection` subcommand; returns the exit status.
pub fn connection(cmd: ConnectionCommand) -> Result<i32, CliError> {
    match cmd {
        ConnectionCommand::Add(a) => add(*a).map(|_| 0),
        ConnectionCommand::List(s) => {
            let f = ConnectionFile::load(&ConnectionFile::path_for(s.system))?;
            if f.connections.is_empty() {
                println!("no connections in {}", f.path.display());
            }
            for (label, c) in &f.connections {
                println!(
                    "{label}\ts3://{}/{}\t{}\t{}{}",
                    c.bucket,
                    c.subfolder,
                    c.endpoint_url.as_deref().unwrap_or("aws"),
                    c.credentials_source(),
                    if c.read_only { "\tread-only" } else { "" }
                );
            }
            Ok(0)
        }
        ConnectionCommand::Show(l) => {
            let f = ConnectionFile::load(&ConnectionFile::path_for(l.system.system))?;
            let c = f.connections.get(&l.label).ok_or_else(|| {
                CliError::Invalid(format!(
                    "no connection {:?} in {}",
                    l.label,
                    f.path.display()
                ))
            })?;
            let text = toml::to_string_pretty(&c.masked()).map_err(|e| e.to_string())?;
            println!("# connection {:?} in {}\n{text}", l.label, f.path.display());
            Ok(0)
        }
        ConnectionCommand::Remove(l) => {
            let mut f = ConnectionFile::load(&ConnectionFile::path_for(l.system.system))?;
            if f.connections.remove(&l.label).is_none() {
                return Err(CliError::Invalid(format!(
                    "no connection {:?} in {}",
                    l.label,
                    f.path.display()
                )));
            }
            f.save()?;
            println!("removed connection {:?}", l.label);
            Ok(0)
        }
        ConnectionCommand::Test(t) => check(CheckArgs {
            source: t.label,
            s3: S3Args {
                max_attempts: 2,
                ..Default::default()
            },
            subfolder: None,
            read_only: false,
            json: t.json,
            bucket_policy: false,
        }),
    }
}

fn read_secret(a: &ConnectionAddArgs, id: &str) -> Result<String, CliError> {
    let secret = if let Some(var) = &a.secret_env {
        std::env::var(var)
            .map_err(|_| CliError::Invalid(format!("environment variable {var} is not set")))?
    } else if a.secret_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| CliError::failed("cannot read the secret from standard input", e))?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("Secret access key for {}: ", mask_key_id(id)))
            .map_err(|e| CliError::failed("cannot read the secret", e))?
    } else {
        return Err(CliError::Invalid("standard input is not a terminal: pass the secret with --secret-stdin or --secret-env VAR".into()));
    };
    if secret.trim().is_empty() {
        return Err(CliError::Invalid("the secret access key is empty".into()));
    }
    Ok(secret)
}

fn read_token(a: &ConnectionAddArgs) -> Result<Option<String>, CliError> {
    let Some(var) = &a.session_token_env else {
        return Ok(None);
    };
    match std::env::var(var) {
        Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_string())),
        _ => Err(CliError::Invalid(format!(
            "--session-token-env {var}: the variable is not set or empty"
        ))),
    }
}

fn add(a: ConnectionAddArgs) -> Result<(), CliError> {
    validate_label(&a.label)?;
    let secret = match &a.access_key_id {
        Some(id) => Some(read_secret(&a, id)?),
        None => None,
    };
    let c = Connection {
        bucket: a.bucket.clone(),
        region: a.region.clone(),
        endpoint_url: a.endpoint_url.clone(),
        path_style: a.path_style,
        subfolder: a.subfolder.clone().unwrap_or_default(),
        read_only: a.read_only,
        case_insensitive: a.case_insensitive,
        profile: a.profile.clone(),
        access_key_id: a.access_key_id.clone(),
        secret_access_key: secret,
        session_token: read_token(&a)?,
        credential_process: a.credential_process.clone(),
        requests: a.requests.clone(),
    }
    .validated()?;
    let path = ConnectionFile::path_for(a.system.system);
    let mut f = ConnectionFile::load(&path)?;
    if f.connections.contains_key(&a.label) && !a.force {
        return Err(CliError::Invalid(format!(
            "connection {:?} exists in {}; pass --force to replace it",
            a.label,
            path.display()
        )));
    }
    f.connections.insert(a.label.clone(), c.clone());
    f.save()?;
    println!(
        "saved connection {:?}: s3://{}/{} with {} in {}",
        a.label,
        c.bucket,
        c.subfolder,
        c.credentials_source(),
        path.display()
    );
    Ok(())
}

/// `pailfs check`: exit 0 only when the credentials allow what the connection needs.
pub fn check(a: CheckArgs) -> Result<i32, CliError> {
    let resolved = resolve_source(&a.source)?;
    let conn = resolved.connection.as_ref().map(|(_, c)| c);
    let s3 = s3_settings(conn, &a.s3, &resolved.source.bucket)?;
    let subfolder = match &a.subfolder {
        Some(s) => normalize_prefix(s)?,
        None => resolved.source.prefix.clone(),
    };
    let need = if a.read_only || conn.is_some_and(|c| c.read_only) {
        Mode::ReadOnly
    } else {
        Mode::Full
    };
    let credentials = match (conn, &s3.profile) {
        (Some(c), _) => c.credentials_source(),
        (None, Some(p)) => format!("profile {p:?}"),
        (None, None) => std::env::var("AWS_ACCESS_KEY_ID")
            .map(|id| format!("access key {} from the environment", mask_key_id(&id)))
            .unwrap_or_else(|_| "the default AWS credential chain".into()),
    };
    let target = CheckTarget {
        label: resolved.connection.as_ref().map(|(l, _)| l.clone()),
        bucket: resolved.source.bucket.clone(),
        subfolder,
        s3,
        need,
        policy_form: if a.bucket_policy {
            PolicyForm::Bucket
        } else {
            PolicyForm::User
        },
        credentials,
    };
    let rt = crate::config::command_runtime()?;
    let r = rt.block_on(run(&target));
    if a.json {
        println!("{}", report::json(&r));
    } else {
        print!("{}", report::text(&r));
    }
    Ok(if r.ok { 0 } else { 1 })
}
