//! The `roster` binary: `roster serve`, `roster token`, `roster status`.

mod allocator;
mod serve;

use clap::Parser;
use roster_server::{status_command, token_command, Cli, Command, API_KEY_ENV, SECRET_ENV};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Logs go to stderr, so `roster token`'s stdout is exactly the token.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: a log collected from a pipe stays plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();

    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Token(args) => {
            let env_secret = std::env::var(SECRET_ENV).ok();
            let now_unix_s = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
            println!("{}", token_command(&args, env_secret.as_deref(), now_unix_s)?);
            Ok(())
        }
        Command::Status(args) => {
            let env_api_key = std::env::var(API_KEY_ENV).ok();
            print!("{}", status_command(&args, env_api_key.as_deref())?);
            Ok(())
        }
    }
}
