//! Command line and `PARLOR_*` environment variables.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

/// `parlor --version`: the crate's version and the store format this build
/// reads and writes (`store::FORMAT_VERSION`), e.g. `0.1.0 (store format 1)`.
pub fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        format!(
            "{} (store format {})",
            env!("CARGO_PKG_VERSION"),
            crate::store::FORMAT_VERSION
        )
    })
}

#[derive(Parser, Debug)]
#[command(
    name = "parlor",
    version = version(),
    about = "A single-node chat daemon speaking several chat APIs over one store"
)]
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

impl Cli {
    /// Parses `std::env::args`, exiting with clap's message on an error.
    pub fn parse_args() -> Cli {
        Self::parse_from_args(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// Parses a command line. `--data-dir` goes before or after the
    /// subcommand; `serve`'s flags, which parlor also takes with no
    /// subcommand, are refused before one (`parlor --listen X user add` would
    /// otherwise drop `--listen` silently). Their `PARLOR_*` variables are
    /// not flags given, so they never conflict.
    pub fn parse_from_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut cmd = Cli::command();
        let matches = cmd.try_get_matches_from_mut(args)?;
        if let Some(sub) = matches.subcommand_name() {
            if let Some(flag) = serve_flag_given(&cmd, &matches) {
                let hint = if sub == "serve" {
                    format!("give it after '{sub}'")
                } else {
                    "it is a flag of 'serve'".to_owned()
                };
                return Err(cmd.error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!("the argument '--{flag}' cannot be used before the subcommand '{sub}': {hint}"),
                ));
            }
        }
        Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))
    }
}

/// The first top-level flag given on the command line that is not global
/// (not `--data-dir`, so one of `serve`'s), by its long name.
fn serve_flag_given(cmd: &clap::Command, matches: &ArgMatches) -> Option<String> {
    cmd.get_arguments()
        .filter(|a| !a.is_global_set())
        .find(|a| matches.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine))
        .map(|a| a.get_long().unwrap_or(a.get_id().as_str()).to_owned())
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
    /// Manage webhooks.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Manage API clients (integrations that exchange a name and secret
    /// for tokens, as Welkin's SDK does).
    #[command(subcommand)]
    ApiClient(ApiClientCommand),
    /// Export or verify the audit trail (who read or changed what; also
    /// while the daemon runs).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Set how long a workspace keeps its messages.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Set or clear a legal hold (retention and erasure stop there).
    #[command(subcommand)]
    Hold(HoldCommand),
    /// Load-test a running daemon (or the no-storage baseline).
    Bench(Box<crate::bench::BenchArgs>),
    /// Write a backup of the store to DEST (while the daemon runs, too).
    Backup {
        /// The backup file to write (JSON lines; replaced atomically).
        dest: PathBuf,
    },
    /// Check the store's write-ahead log in --data-dir (also while the
    /// daemon runs) and report what it holds, changing nothing: exits 1
    /// if it is damaged so that the daemon would refuse to start.
    Check,
    /// Rebuild a store in --data-dir from a backup (the daemon stopped, the
    /// data directory without a store).
    Restore {
        /// The backup file to read.
        src: PathBuf,
        /// Export the restored store again and compare it with the backup.
        #[arg(long)]
        verify: bool,
    },
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
    /// The longest wait between two attempts at a webhook delivery, in
    /// seconds (the backoff doubles from 1 s up to this).
    #[arg(
        long,
        env = "PARLOR_WEBHOOK_MAX_BACKOFF_SECS",
        default_value_t = 300,
        value_parser = within(1, 86_400)
    )]
    pub webhook_max_backoff_secs: u64,
    /// Hours a webhook delivery may keep failing before it is set aside as
    /// dead (counted from its message; fractions allowed). Dead deliveries
    /// are kept, listed by `parlor webhook pending --dead` and sent again
    /// by `parlor webhook retry`.
    #[arg(
        long,
        env = "PARLOR_WEBHOOK_GIVE_UP_HOURS",
        default_value_t = 72.0,
        value_parser = parse_hours,
        value_name = "HOURS"
    )]
    pub webhook_give_up_hours: f64,
    /// Reverse proxies whose `X-Forwarded-For` is believed: addresses and
    /// networks, comma-separated (`127.0.0.1,10.0.0.0/8`). Default: none,
    /// the header is ignored and the client is the TCP peer.
    #[arg(
        long,
        env = "PARLOR_TRUSTED_PROXIES",
        default_value = "",
        value_parser = crate::net::proxy::parse_list,
        value_name = "LIST"
    )]
    pub trusted_proxies: crate::net::proxy::TrustedProxies,
    /// Failed logins in a row before an account is slowed down (then 1 s,
    /// doubling up to 5 min; a success resets it).
    #[arg(
        long,
        env = "PARLOR_LOGIN_FAILS_PER_ACCOUNT",
        default_value_t = 10,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub login_fails_per_account: u32,
    /// Failed logins per client address per minute before that address is
    /// refused for the rest of the minute.
    #[arg(
        long,
        env = "PARLOR_LOGIN_FAILS_PER_ADDR",
        default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub login_fails_per_addr: u32,
    /// Threads hashing passwords (logins, new users), at the lowest CPU
    /// priority, 19 MiB of memory each [default: the number of cores].
    #[arg(long, env = "PARLOR_ARGON2_THREADS", value_parser = clap::value_parser!(u16).range(1..), value_name = "N")]
    pub argon2_threads: Option<u16>,
    /// Seconds a client has to send a request's headers (API.md §1: 30).
    #[arg(
        long,
        env = "PARLOR_HEADER_TIMEOUT_SECS",
        default_value_t = 30,
        value_parser = within(1, 600)
    )]
    pub header_timeout_secs: u64,
    /// Seconds a WebSocket has to authenticate before it is closed (1008).
    #[arg(
        long,
        env = "PARLOR_AUTH_DEADLINE_SECS",
        default_value_t = 10,
        value_parser = within(1, 600)
    )]
    pub auth_deadline_secs: u64,
    /// Serve TLS (HTTPS, `wss://`) with this PEM certificate chain, leaf
    /// first (needs --tls-key).
    #[arg(
        long,
        env = "PARLOR_TLS_CERT",
        requires = "tls_key",
        value_name = "PATH"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key (PKCS#8, RSA or EC) of --tls-cert.
    #[arg(
        long,
        env = "PARLOR_TLS_KEY",
        requires = "tls_cert",
        value_name = "PATH"
    )]
    pub tls_key: Option<PathBuf>,
    /// sled's page cache bound, MiB (the store's main memory use).
    #[arg(long, env = "PARLOR_CACHE_MIB", default_value_t = 64, value_parser = within(4, 65_536))]
    pub cache_mib: u64,
    /// Seconds between checkpoints (sled made durable, the write-ahead
    /// log trimmed); also after --checkpoint-mib of log.
    #[arg(
        long,
        env = "PARLOR_CHECKPOINT_SECS",
        default_value_t = 5,
        value_parser = within(1, 3600)
    )]
    pub checkpoint_secs: u64,
    /// Seconds between retention purges (messages past their workspace's
    /// retention go within this much of crossing it, plus the run; a run
    /// that deleted anything compacts the store, whose cost follows the
    /// live data).
    #[arg(
        long,
        env = "PARLOR_PURGE_INTERVAL_SECS",
        default_value_t = 1800,
        value_parser = within(1, 3600)
    )]
    pub purge_interval_secs: u64,
    /// MiB of write-ahead log that trigger a checkpoint before its time.
    #[arg(
        long,
        env = "PARLOR_CHECKPOINT_MIB",
        default_value_t = 64,
        value_parser = within(1, 65_536)
    )]
    pub checkpoint_mib: u64,
    /// Size of each preallocated write-ahead log segment, MiB.
    #[arg(
        long,
        env = "PARLOR_WAL_SEGMENT_MIB",
        default_value_t = 16,
        value_parser = within(1, 1024)
    )]
    pub wal_segment_mib: u64,
    /// Serve the conformance echo WebSocket at `/conformance/echo` (no
    /// authentication; for protocol test suites such as `.ci/autobahn`).
    /// Hidden: never for production.
    #[arg(long, env = "PARLOR_CONFORMANCE_ECHO", hide = true)]
    pub conformance_echo: bool,
}

/// `--webhook-give-up-hours`: more than 0, at most ten years.
fn parse_hours(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(h) if h > 0.0 && h <= 87_600.0 => Ok(h),
        _ => Err("expected a number of hours above 0 and at most 87600".into()),
    }
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
    /// Erase a user: their name, login and tokens; for a patient, their
    /// care-team chat's messages too. Prints how many messages went.
    Erase {
        /// The user's id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RetentionCommand {
    /// Keep a workspace's messages --days days (older ones are purged
    /// within an hour), or --forever (the default).
    #[command(group = clap::ArgGroup::new("how_long").required(true))]
    Set {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        instance: String,
        #[arg(long, group = "how_long")]
        days: Option<u64>,
        #[arg(long, group = "how_long")]
        forever: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum HoldCommand {
    /// Put a patient's chat (--patient) or the whole workspace under a
    /// legal hold.
    Set {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        instance: String,
        /// The patient's user id (without: the whole workspace).
        #[arg(long)]
        patient: Option<String>,
        #[arg(long)]
        reason: String,
    },
    /// Lift a legal hold.
    Clear {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        instance: String,
        #[arg(long)]
        patient: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ApiClientCommand {
    /// Create an API client and print its secret (shown this once); with
    /// --rotate, print a new secret for an existing one and revoke every
    /// token issued with the old.
    Add {
        /// 1 to 64 of A-Z a-z 0-9 . _ - (unique within the tenant).
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        instance: String,
        /// How its messages are signed (default: the name).
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long)]
        rotate: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Write the audit records to stdout as JSON lines, oldest first.
    Export {
        /// Only records made at or after this time (RFC 3339, e.g.
        /// 2026-01-31T00:00:00Z).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only records of this workspace (with --instance).
        #[arg(long, requires = "instance")]
        tenant: Option<String>,
        #[arg(long, requires = "tenant")]
        instance: Option<String>,
    },
    /// Recompute the hash chain of every record; exits 1 naming the first
    /// record (its seq) that is missing, damaged or altered.
    Verify,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Print a fresh bearer token for a user.
    Issue { username: String },
}

#[derive(Subcommand, Debug)]
pub enum WebhookCommand {
    /// Set (replace) a workspace's webhook; the API secret is read from
    /// stdin (one line).
    Set {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        instance: String,
        #[arg(long)]
        url: String,
        #[arg(long)]
        api_key: String,
    },
    /// Delete a workspace's webhook; its pending and dead deliveries are
    /// dropped.
    Delete {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        instance: String,
    },
    /// List deliveries not yet accepted by their receiver, oldest first
    /// (with --dead: those set aside as dead).
    Pending {
        /// List the dead deliveries instead (given up after
        /// --webhook-give-up-hours of failures).
        #[arg(long)]
        dead: bool,
        /// List after this delivery (an externalId), to page on.
        #[arg(long)]
        after: Option<String>,
        /// At most this many (1..=1000).
        #[arg(long, default_value_t = 100, value_parser = within(1, 1000))]
        limit: u64,
        /// Print the listing as JSON (as `GET /admin/webhooks/pending`).
        #[arg(long)]
        json: bool,
    },
    /// Send dead deliveries again: move them back into the outbox, each in
    /// its place in its patient's order.
    #[command(group = clap::ArgGroup::new("which").required(true))]
    Retry {
        /// Every dead delivery.
        #[arg(long, group = "which")]
        all: bool,
        /// One dead delivery, by its message's externalId.
        #[arg(long, group = "which", value_name = "EXTERNAL_ID")]
        message: Option<String>,
    },
}

/// A flag's whole number within `lo..=hi`.
fn within(lo: u64, hi: u64) -> clap::builder::RangedU64ValueParser {
    clap::value_parser!(u64).range(lo..=hi)
}
