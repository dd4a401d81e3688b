//! `parlor serve`: open the store, bind, start the webhook worker, serve,
//! and shut down cleanly on SIGTERM/SIGINT (stop accepting, close sockets
//! with 1001, let webhook attempts in flight finish, finish queued writes,
//! sync, exit 0).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::app::{self, App};
use crate::config::ServeArgs;
use crate::core::limits::Limits;
use crate::core::Core;
use crate::{control, net, systemd, webhooks};

const GRACE: Duration = Duration::from_secs(4);

pub fn limits(args: &ServeArgs) -> Limits {
    Limits {
        msg_burst: args.msg_burst,
        msg_rate: args.msg_rate,
        conns_per_user: args.conns_per_user,
        max_connections: args.max_connections,
        chat_history: args.chat_history,
        login_fails_per_account: args.login_fails_per_account,
        login_fails_per_addr: args.login_fails_per_addr,
        argon2_threads: args
            .argon2_threads
            .map_or_else(crate::core::limits::cores, usize::from),
        auth_deadline: Duration::from_secs(args.auth_deadline_secs),
        store: crate::store::Options {
            cache_bytes: args.cache_mib << 20,
            segment_bytes: args.wal_segment_mib << 20,
        },
        checkpoint: crate::store::checkpoint::Every {
            interval: Duration::from_secs(args.checkpoint_secs),
            bytes: args.checkpoint_mib << 20,
        },
        ..Limits::default()
    }
}

pub async fn run(data_dir: &Path, args: ServeArgs) -> anyhow::Result<()> {
    // A bad certificate or key stops the daemon before it touches the store.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(net::tls::acceptor(cert, key)?),
        _ => None,
    };
    // So does an address it cannot listen on.
    let listener = bind(&args.listen).await?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        store_format = crate::store::FORMAT_VERSION,
        data_dir = %data_dir.display(),
        "starting"
    );
    let core = Core::open(&data_dir.join("store"), limits(&args))
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("opening the store in {}", data_dir.display()))?;
    let addr = listener.local_addr()?;
    let public_url = args.public_url.clone().unwrap_or_else(|| {
        let scheme = if tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{addr}")
    });
    let monitor = webhooks::Monitor::new();
    let hooks = webhooks::Worker::start(
        core.clone(),
        webhooks::Settings {
            max_backoff: Duration::from_secs(args.webhook_max_backoff_secs),
            give_up: Duration::from_secs_f64(args.webhook_give_up_hours * 3600.0),
            ..webhooks::Settings::new(public_url.trim_end_matches('/'))
        },
        monitor.clone(),
    );
    let purge = tokio::spawn(crate::core::retention::run(
        core.clone(),
        Duration::from_secs(args.purge_interval_secs),
    ));
    let control = control::bind(data_dir).context("binding the control socket")?;
    let control_task = tokio::spawn(control::serve(core.clone(), monitor.clone(), control));

    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down");
        systemd::stopping();
        let _ = stop.send(true);
    });

    tracing::info!(%addr, %public_url, tls = tls.is_some(), "serving");
    // Tools and tests read the bound address (port 0 picks a free one).
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    systemd::ready(addr);
    let watchdog = systemd::watchdog_interval().map(|every| {
        tracing::info!(?every, "systemd watchdog");
        tokio::spawn(systemd::watchdog(core.clone(), every))
    });

    let front = net::Front {
        tls,
        proxies: args.trusted_proxies.clone(),
        max_connections: core.limits.max_connections,
        header_timeout: Duration::from_secs(args.header_timeout_secs),
    };
    let app = App {
        core: core.clone(),
        webhooks: monitor,
        conformance_echo: args.conformance_echo,
    };
    app::serve(app, listener, front, stopped, GRACE).await;
    hooks.stop().await;
    purge.abort();
    control_task.abort();
    if let Some(w) = watchdog {
        w.abort();
    }
    let _ = std::fs::remove_file(control::socket_path(data_dir));
    finish(core);
    Ok(())
}

/// Binds `--listen`. `:PORT` (or a bare port) is refused with a hint, not
/// guessed: other servers read it as every interface, so taking it as
/// loopback would leave a daemon meant for the network unreachable, and
/// taking it as every interface would expose one meant for this machine.
async fn bind(listen: &str) -> anyhow::Result<TcpListener> {
    let port = listen.strip_prefix(':').unwrap_or(listen);
    if port.parse::<u16>().is_ok() {
        anyhow::bail!(
            "could not listen on '{listen}': give a host, e.g. 127.0.0.1:{port} (this machine only) or 0.0.0.0:{port} (every interface)"
        );
    }
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("could not listen on '{listen}'"))
}

/// Finishes queued writes and syncs; the last thing before exit.
fn finish(core: Arc<Core>) {
    core.shutdown();
    tracing::info!("stopped");
}
