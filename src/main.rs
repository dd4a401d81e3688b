//! Thin: flags → logging → the subcommand. See `lib.rs` for the map.

use std::io::IsTerminal;
use std::process::ExitCode;

use parlor::config::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    // The daemon logs at info; a one-off subcommand (its answer is on
    // stdout) only at warn, unless RUST_LOG says otherwise.
    let default_filter = match cli.command {
        None | Some(Command::Serve(_)) => "info",
        Some(_) => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        None => serve(&cli.data_dir, cli.serve),
        Some(Command::Serve(args)) => serve(&cli.data_dir, args),
        Some(Command::User(cmd)) => parlor::cli::user(&cli.data_dir, cmd),
        Some(Command::Token(cmd)) => parlor::cli::token(&cli.data_dir, cmd),
        Some(Command::Webhook(cmd)) => parlor::cli::webhook(&cli.data_dir, cmd),
        Some(Command::ApiClient(cmd)) => parlor::cli::api_client(&cli.data_dir, cmd),
        Some(Command::Audit(cmd)) => parlor::cli::audit(&cli.data_dir, cmd),
        Some(Command::Retention(cmd)) => parlor::cli::retention(&cli.data_dir, cmd),
        Some(Command::Hold(cmd)) => parlor::cli::hold(&cli.data_dir, cmd),
        Some(Command::Bench(args)) => parlor::bench::run(*args),
        Some(Command::Check) => parlor::cli::check(&cli.data_dir),
        Some(Command::Backup { dest }) => parlor::cli::backup(&cli.data_dir, &dest),
        Some(Command::Restore { src, verify }) => parlor::cli::restore(&cli.data_dir, &src, verify),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("parlor: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(data_dir: &std::path::Path, args: parlor::config::ServeArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(parlor::daemon::run(data_dir, args));
    // Everything acknowledged is synced by now; don't wait on stragglers.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}
