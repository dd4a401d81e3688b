//! Command line and `PARLOR_*` environment variables.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "parlor",
    version,
    about = "A single-node chat daemon speaking several chat APIs over one store"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Where the store and the control socket live.
    #[arg(long, env = "PARLOR_DATA_DIR", default_value = "data", global = true)]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: Option<Command>,
    /// With no subcommand, parlor serves.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon (the default).
    Serve(ServeArgs),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PARLOR_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The base URL the daemon names itself by (default `http://<listen>`).
    #[arg(long, env = "PARLOR_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Messages a user or a connection may send in a burst.
    #[arg(long, env = "PARLOR_MSG_BURST", default_value_t = 200)]
    pub msg_burst: u32,
    /// Messages per second a user or a connection may send steadily.
    #[arg(long, env = "PARLOR_MSG_RATE", default_value_t = 50)]
    pub msg_rate: u32,
    /// Open WebSocket connections per user.
    #[arg(long, env = "PARLOR_CONNS_PER_USER", default_value_t = 32)]
    pub conns_per_user: usize,
    /// Open TCP connections in all (keep below the process's file limit).
    #[arg(long, env = "PARLOR_MAX_CONNECTIONS", default_value_t = 16_384)]
    pub max_connections: usize,
    /// Messages per chat in a whole-chat view (the actions dialect's
    /// `get_messages`): the newest this many.
    #[arg(long, env = "PARLOR_CHAT_HISTORY", default_value_t = 100)]
    pub chat_history: usize,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user; the password is read from stdin (one line).
    Add {
        username: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        instance: Option<String>,
        #[arg(long)]
        display_name: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Print a fresh bearer token for a user.
    Issue { username: String },
}
