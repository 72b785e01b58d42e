//! The `pailfs` binary: parse the command line, run the command, turn the result into an
//! exit status. Errors reach the user as one line on standard error.

use std::process::ExitCode;

use clap::Parser;
use pailfs::cli::{Cli, Command};
use pailfs::config::MountConfig;

fn init_logging(level: &str, file: Option<&std::path::Path>) -> Result<(), String> {
    let default = format!("pailfs={level},fuser=error,warn");
    let mut b =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default));
    b.format_timestamp_millis();
    if let Some(path) = file {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
        b.target(env_logger::Target::Pipe(Box::new(f)));
    }
    b.try_init()
        .map_err(|e| format!("cannot set up logging: {e}"))
}

fn run(cli: Cli) -> Result<i32, String> {
    match cli.command {
        Command::Mount(args) => {
            init_logging(&args.log_level, args.log_file.as_deref())?;
            let cfg = MountConfig::from_args(&args)?;
            pailfs::run::mount_command(cfg).map(|_| 0)
        }
        Command::Connection(cmd) => {
            init_logging("warn", None)?;
            pailfs::connections::commands::connection(cmd)
        }
        Command::Check(args) => {
            init_logging("warn", None)?;
            pailfs::connections::commands::check(args)
        }
        Command::Collisions(args) => {
            init_logging("warn", None)?;
            pailfs::collisions::command(args)
        }
        Command::Doctor(args) => {
            init_logging("warn", None)?;
            pailfs::doctor::command(args)
        }
    }
}

fn main() -> ExitCode {
    // A panic in a request would only show as EIO to the application; make it visible.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        log::error!("internal error (please report): {info}");
        default_hook(info);
    }));
    let cli = Cli::parse();
    match run(cli) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(code.clamp(1, 255) as u8),
        Err(e) => {
            eprintln!("pailfs: {e}");
            ExitCode::FAILURE
        }
    }
}
