//! The `pailfs` binary: parse the command line, run the command, turn the result into an
//! exit status. Errors reach the user as one line on standard error.

use pailfs::error::CliError;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use pailfs::cli::{Cli, Command};
use pailfs::config::MountConfig;

/// Where the log goes.
enum LogTo<'a> {
    Stderr,
    File(&'a std::path::Path),
    /// syslog / the journal, for a mount running in the background.
    Syslog,
}

fn init_logging(level: &str, to: LogTo) -> Result<(), CliError> {
    use std::io::Write;
    // At debug level (`--debug`) the S3 client's own events (aws-smithy, forwarded from
    // `tracing`) show too: requests, retries and why they failed; trace adds aws-config's
    // search for credentials and a region. Below debug, aws-config's warnings are that search
    // (instance metadata that is not there, on every machine but EC2); what was missing is
    // said once by pailfs itself.
    let sdk = match level {
        "trace" => "aws_smithy_runtime=debug,aws_sdk_s3=debug,aws_config=debug,",
        "debug" => "aws_smithy_runtime=debug,aws_sdk_s3=debug,aws_config=error,",
        _ => "aws_config=error,",
    };
    let default = format!("pailfs={level},fuser=error,{sdk}warn");
    let mut b =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default));
    // Keys come from whoever writes to the bucket: control characters in them are escaped,
    // so a key cannot forge log lines or terminal escapes.
    b.format(|buf, rec| {
        writeln!(
            buf,
            "[{} {:<5} {}] {}",
            buf.timestamp_millis(),
            rec.level(),
            rec.target(),
            pailfs::syslog::escape_controls(&rec.args().to_string())
        )
    });
    match to {
        // Under systemd: the journal keeps the time; a `<N>` prefix gives each line its
        // priority, so `journalctl -p warning` shows the warnings (sd-daemon(3)).
        LogTo::Stderr if pailfs::syslog::stderr_is_journal() => {
            b.format(|buf, rec| {
                writeln!(
                    buf,
                    "<{}>{}: {}",
                    pailfs::syslog::priority(rec.level()) & 7,
                    rec.target(),
                    pailfs::syslog::escape_controls(&rec.args().to_string())
                )
            });
        }
        LogTo::Stderr => {}
        LogTo::File(path) => {
            let f = pailfs::logfile::LogFile::open(path.to_path_buf()).map_err(|e| {
                CliError::failed(format!("cannot open log file {}", path.display()), e)
            })?;
            b.target(env_logger::Target::Pipe(Box::new(f)));
        }
        LogTo::Syslog => {
            let w = pailfs::syslog::SyslogWriter::connect(std::path::Path::new(
                pailfs::syslog::DEV_LOG,
            ))
            .map_err(|e| {
                CliError::failed(format!("cannot log to {}", pailfs::syslog::DEV_LOG), e)
            })?;
            b.format(|buf, rec| {
                writeln!(
                    buf,
                    "<{}>pailfs[{}]: {}: {}",
                    pailfs::syslog::priority(rec.level()),
                    std::process::id(),
                    rec.target(),
                    pailfs::syslog::escape_controls(&rec.args().to_string())
                )
            });
            b.target(env_logger::Target::Pipe(Box::new(w)));
        }
    }
    b.try_init()
        .map_err(|e| CliError::Invalid(format!("cannot set up logging: {e}")))
}

fn run(cli: Cli) -> Result<i32, CliError> {
    match cli.command {
        Command::Mount(args) => {
            let to = match (&args.log_file, args.foreground) {
                (Some(f), _) => LogTo::File(f),
                (None, false) if std::path::Path::new(pailfs::syslog::DEV_LOG).exists() => {
                    LogTo::Syslog
                }
                (None, _) => LogTo::Stderr,
            };
            let level = if args.debug { "debug" } else { &args.log_level };
            init_logging(level, to)?;
            let cfg = MountConfig::from_args(&args)?;
            pailfs::run::mount_command(cfg).map(|_| 0)
        }
        Command::Connection(cmd) => {
            init_logging("warn", LogTo::Stderr)?;
            pailfs::connections::commands::connection(cmd)
        }
        Command::Check(args) => {
            init_logging("warn", LogTo::Stderr)?;
            pailfs::connections::commands::check(args)
        }
        Command::Collisions(args) => {
            init_logging("warn", LogTo::Stderr)?;
            pailfs::collisions::command(args)
        }
        Command::Doctor(args) => {
            init_logging("warn", LogTo::Stderr)?;
            pailfs::doctor::command(args)
        }
        Command::Stats(args) => pailfs::metrics::command(args),
        Command::Ls(args) => {
            init_logging("warn", LogTo::Stderr)?;
            pailfs::ls::command(args)
        }
        Command::Completions(a) => {
            clap_complete::generate(
                a.shell,
                &mut Cli::command(),
                "pailfs",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
        Command::Manpages(a) => write_manpages(&a.dir).map(|_| 0),
    }
}

/// `pailfs.1` and `pailfs-COMMAND.1` for each command, from the command line definition.
fn write_manpages(dir: &std::path::Path) -> Result<(), CliError> {
    let err = |e: std::io::Error| {
        CliError::failed(format!("cannot write man pages into {}", dir.display()), e)
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let cmd = Cli::command();
    let page = |c: clap::Command, file: String| -> Result<(), CliError> {
        let mut out = Vec::new();
        clap_mangen::Man::new(c).render(&mut out).map_err(err)?;
        std::fs::write(dir.join(file), out).map_err(err)
    };
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("pailfs-{}", sub.get_name());
        let c = sub
            .clone()
            .name(name.clone())
            .bin_name(format!("pailfs {}", sub.get_name()));
        page(c, format!("{name}.1"))?;
    }
    page(cmd, "pailfs.1".into())
}

fn main() -> ExitCode {
    // A panic in a request would only show as EIO to the application; make it visible.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        log::error!("internal error (please report): {info}");
        default_hook(info);
    }));
    // `mount -t fuse.pailfs` and fstab run `pailfs SOURCE MOUNTPOINT -o opts`.
    let args = match pailfs::mount_opts::rewrite(std::env::args_os().collect(), &Cli::command()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pailfs: {e}");
            return ExitCode::FAILURE;
        }
    };
    for notice in &args.notices {
        eprintln!("pailfs: {notice}");
    }
    let cli = Cli::parse_from(args.args);
    match run(cli) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(code.clamp(1, 255) as u8),
        Err(e) => {
            eprintln!("pailfs: {e}");
            ExitCode::FAILURE
        }
    }
}
