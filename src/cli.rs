//! The operator's subcommands (`user add`, `token issue`, `api-client add`, `webhook set`,
//! `webhook delete`, `webhook pending [--dead]`, `webhook retry`, `audit export|verify`,
//! `retention set`, `hold set|clear`, `user erase`,
//! `backup`, `restore`, `check`): through the
//! running daemon's control socket when there is one, else on the store
//! directly. Both run the same core operation (`control::execute`).

use std::io::BufRead;
use std::path::Path;

use anyhow::{bail, Context};

use crate::config::{
    ApiClientCommand, AuditCommand, HoldCommand, RetentionCommand, TokenCommand, UserCommand,
    WebhookCommand,
};
use crate::control::{self, Reply, Request};
use crate::core::limits::Limits;
use crate::core::Core;
use crate::dialects::accounts::AddUser;
use crate::dialects::retention::{SetHold, SetRetention};
use crate::store::OpenError;
use crate::webhooks;

pub fn user(data_dir: &Path, cmd: UserCommand) -> anyhow::Result<()> {
    let (username, role, tenant, instance, display_name) = match cmd {
        UserCommand::Add {
            username,
            role,
            tenant,
            instance,
            display_name,
        } => (username, role, tenant, instance, display_name),
        UserCommand::Erase { id } => {
            let deleted = run(data_dir, Request::UserErase { id })?;
            println!("erased; {deleted} messages deleted");
            return Ok(());
        }
    };
    let password = stdin_line("the password")?;
    let id = run(
        data_dir,
        Request::UserAdd(AddUser {
            username,
            password,
            role,
            tenant,
            instance,
            display_name,
        }),
    )?;
    println!("{id}");
    Ok(())
}

/// `parlor retention set --tenant T --instance I --days N|--forever`.
pub fn retention(data_dir: &Path, cmd: RetentionCommand) -> anyhow::Result<()> {
    let RetentionCommand::Set {
        tenant,
        instance,
        days,
        forever: _,
    } = cmd;
    let set = SetRetention {
        tenant,
        instance,
        days: days.map_or(serde_json::Value::Null, serde_json::Value::from),
    };
    run(data_dir, Request::RetentionSet(set))?;
    Ok(())
}

/// `parlor hold set|clear --tenant T --instance I [--patient ID]`.
pub fn hold(data_dir: &Path, cmd: HoldCommand) -> anyhow::Result<()> {
    let set = match cmd {
        HoldCommand::Set {
            tenant,
            instance,
            patient,
            reason,
        } => SetHold {
            tenant,
            instance,
            patient: patient.map(serde_json::Value::from),
            hold: true,
            reason: Some(reason),
        },
        HoldCommand::Clear {
            tenant,
            instance,
            patient,
        } => SetHold {
            tenant,
            instance,
            patient: patient.map(serde_json::Value::from),
            hold: false,
            reason: None,
        },
    };
    run(data_dir, Request::HoldSet(set))?;
    Ok(())
}

pub fn token(data_dir: &Path, cmd: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Issue { username } = cmd;
    println!("{}", run(data_dir, Request::TokenIssue { username })?);
    Ok(())
}

/// `parlor api-client add NAME --tenant T --instance I [--display-name S]
/// [--rotate]`: prints the secret.
pub fn api_client(data_dir: &Path, cmd: ApiClientCommand) -> anyhow::Result<()> {
    let ApiClientCommand::Add {
        name,
        tenant,
        instance,
        display_name,
        rotate,
    } = cmd;
    let secret = run(
        data_dir,
        Request::ApiClientAdd {
            name,
            tenant,
            instance,
            display_name,
            rotate,
        },
    )?;
    println!("{secret}");
    Ok(())
}

pub fn webhook(data_dir: &Path, cmd: WebhookCommand) -> anyhow::Result<()> {
    match cmd {
        WebhookCommand::Set {
            tenant,
            instance,
            url,
            api_key,
        } => {
            let api_secret = stdin_line("the API secret")?;
            run(
                data_dir,
                Request::WebhookSet {
                    tenant,
                    instance,
                    url,
                    api_key,
                    api_secret,
                },
            )?;
        }
        WebhookCommand::Delete { tenant, instance } => {
            let answer = run(data_dir, Request::WebhookDelete { tenant, instance })?;
            let dropped: serde_json::Value =
                serde_json::from_str(&answer).context("reading the daemon's answer")?;
            println!(
                "deleted; dropped {} pending and {} dead deliveries",
                dropped["pending"], dropped["dead"]
            );
        }
        WebhookCommand::Pending {
            dead,
            after,
            limit,
            json,
        } => {
            let limit = usize::try_from(limit).unwrap_or(webhooks::MAX_LIST);
            let answer = run(data_dir, Request::WebhookPending { after, limit, dead })?;
            if json {
                println!("{answer}");
            } else {
                let list: serde_json::Value =
                    serde_json::from_str(&answer).context("reading the daemon's listing")?;
                print!(
                    "{}",
                    if dead {
                        table(
                            &list,
                            "dead",
                            &[
                                "external_id",
                                "patient_id",
                                "workspace",
                                "created_ms",
                                "dead_ms",
                                "failed_attempts",
                                "last_error",
                            ],
                        )
                    } else {
                        table(
                            &list,
                            "pending",
                            &[
                                "external_id",
                                "patient_id",
                                "workspace",
                                "state",
                                "failed_attempts",
                                "next_attempt_in_ms",
                                "last_error",
                            ],
                        )
                    }
                );
            }
        }
        // clap takes exactly one of --all and --message: no message, all.
        WebhookCommand::Retry { message, .. } => {
            let moved = run(data_dir, Request::WebhookRetry { message })?;
            println!("{moved} dead deliveries back in the outbox");
        }
    }
    Ok(())
}

/// `parlor audit export [--since T] [--tenant T --instance I]`: JSON lines
/// on stdout, streamed from the running daemon or read from the store;
/// `parlor audit verify`: the chain recomputed, exit 1 naming the first
/// bad seq.
pub fn audit(data_dir: &Path, cmd: AuditCommand) -> anyhow::Result<()> {
    use std::io::Write;
    match cmd {
        AuditCommand::Export {
            since,
            tenant,
            instance,
        } => {
            let since_ms = since
                .map(|s| {
                    crate::model::time::parse_rfc3339(&s)
                        .map(|ms| u64::try_from(ms).unwrap_or(0))
                        .context("--since must be an RFC 3339 time, e.g. 2026-01-31T00:00:00Z")
                })
                .transpose()?;
            let filter = control::export_filter(since_ms, tenant, instance);
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            match std::os::unix::net::UnixStream::connect(control::socket_path(data_dir)) {
                Ok(mut sock) => {
                    let req = Request::AuditExport {
                        since_ms: filter.since_ms,
                        tenant: filter.tenant,
                        instance: filter.instance,
                    };
                    let mut line = serde_json::to_vec(&req)?;
                    line.push(b'\n');
                    sock.write_all(&line)?;
                    std::io::copy(&mut sock, &mut out)
                        .context("receiving the audit trail from the daemon")?;
                }
                Err(_) => {
                    let core = open_core(data_dir)?;
                    let result = core.audit_export(&filter, &mut out);
                    core.shutdown();
                    result.map_err(|e| anyhow::anyhow!("{e}"))?;
                }
            }
            out.flush()?;
        }
        AuditCommand::Verify => {
            let answer = run(data_dir, Request::AuditVerify)?;
            let v: crate::core::audit::Verdict =
                serde_json::from_str(&answer).context("reading the daemon's verdict")?;
            match v.bad {
                None => println!(
                    "ok: {} audit records, the hash chain verifies (last hash {})",
                    v.records, v.head
                ),
                Some(bad) => bail!(
                    "the audit trail does not verify: first bad seq {}: {} ({} records before it verify)",
                    bad.seq,
                    bad.why,
                    v.records
                ),
            }
        }
    }
    Ok(())
}

/// One line of stdin without its line ending.
fn stdin_line(what: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .with_context(|| format!("reading {what} from stdin"))?;
    Ok(line
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&line)
        .to_owned())
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A listing for a terminal: a header and one tab-separated line per
/// delivery of `list[key]`, one column per field (`workspace` is
/// `tenant/instance`); `-` where the daemon is not running and so knows
/// no attempts.
fn table(list: &serde_json::Value, key: &str, fields: &[&str]) -> String {
    let header: Vec<String> = fields.iter().map(|f| f.to_uppercase()).collect();
    let mut out = header.join("\t") + "\n";
    for d in list[key].as_array().into_iter().flatten() {
        let row: Vec<String> = fields
            .iter()
            .map(|&f| match f {
                "workspace" => format!("{}/{}", text(&d["tenant"]), text(&d["instance"])),
                f => text(&d[f]),
            })
            .collect();
        out.push_str(&(row.join("\t") + "\n"));
    }
    out.push_str(more(list));
    out
}

fn more(list: &serde_json::Value) -> &'static str {
    if list["more"] == serde_json::Value::Bool(true) {
        "… more: page on with --after <last EXTERNAL_ID>\n"
    } else {
        ""
    }
}

fn run(data_dir: &Path, req: Request) -> anyhow::Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        if let Some(reply) = control::call(data_dir, &req).await {
            return match reply.context("talking to the running daemon")? {
                Reply::Ok(s) => Ok(s),
                Reply::Error(e) => bail!("{e}"),
            };
        }
        let core = open_core(data_dir)?;
        let result = control::execute(&core, None, req).await;
        core.shutdown();
        result.map_err(|e| anyhow::anyhow!("{e}"))
    })
}

/// The store of `data_dir`, opened by this process (no daemon holds it).
fn open_core(data_dir: &Path) -> anyhow::Result<std::sync::Arc<Core>> {
    match Core::open(&data_dir.join("store"), Limits::default()) {
        Ok(c) => Ok(c),
        Err(OpenError::Locked) => bail!(
            "the store in {} is held by a running daemon whose control socket does not answer",
            data_dir.display()
        ),
        Err(e) => bail!("{e}"),
    }
}

/// `parlor backup DEST`: from the running daemon (streamed over the control
/// socket) or from the store directly; written to `DEST.partial`, checked,
/// fsynced, then renamed over DEST.
pub fn backup(data_dir: &Path, dest: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let partial = dest.with_extension("partial");
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?,
    );
    match std::os::unix::net::UnixStream::connect(control::socket_path(data_dir)) {
        Ok(mut sock) => {
            sock.write_all(b"{\"op\":\"backup\"}\n")?;
            std::io::copy(&mut sock, &mut file).context("receiving the backup from the daemon")?;
        }
        Err(_) => {
            let core = open_core(data_dir)?;
            let result = core.backup(&mut file);
            core.shutdown();
            result.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    let file = file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let summary =
        crate::core::backup::check(&mut std::io::BufReader::new(std::fs::File::open(&partial)?))
            .map_err(|e| {
                anyhow::anyhow!(
                    "the backup written is not valid ({e}); kept as {}",
                    partial.display()
                )
            })?;
    std::fs::rename(&partial, dest)?;
    println!(
        "{}: {} records, messages up to {}, sha256 {}",
        dest.display(),
        summary.records,
        summary.last_message,
        summary.sha256
    );
    Ok(())
}

/// `parlor restore SRC [--verify]`: rebuilds `DATA_DIR/store` from a backup.
pub fn restore(data_dir: &Path, src: &Path, verify: bool) -> anyhow::Result<()> {
    if std::os::unix::net::UnixStream::connect(control::socket_path(data_dir)).is_ok() {
        bail!(
            "a daemon is serving {}: stop it before restoring",
            data_dir.display()
        );
    }
    let summary = crate::core::backup::restore(src, &data_dir.join("store"), verify)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "restored {} records (messages up to {}){}",
        summary.records,
        summary.last_message,
        if verify {
            ", verified: the restored store exports the same records and checksum"
        } else {
            ""
        }
    );
    Ok(())
}

/// `parlor check`: reads the write-ahead log as the daemon's open would,
/// and says what it found; writes nothing.
pub fn check(data_dir: &Path) -> anyhow::Result<()> {
    let store = data_dir.join("store");
    if !store.is_dir() {
        bail!("{} holds no store", data_dir.display());
    }
    let wal = crate::store::wal_dir(&store);
    // After a compaction the history starts at a base, then the records
    // after it.
    let base = crate::store::wal::latest_base(&wal)?;
    if let Some((_, path)) = &base {
        crate::store::wal::read_base(path, &mut |_, _| Ok(()))?;
    }
    let after = base.as_ref().map_or(0, |b| b.0);
    let scan = crate::store::wal::scan(&wal, after, &mut |_, _| Ok(()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("store format: {}", crate::store::FORMAT_VERSION);
    println!("write-ahead log: {}", wal.display());
    match &base {
        Some((seq, path)) => println!("base: the state as of record {seq} ({})", path.display()),
        None => println!("base: none (the history starts at record 1)"),
    }
    println!("segments: {}", scan.segments);
    match (scan.first_seq, scan.last_seq) {
        (Some(a), Some(b)) => println!("records: {} (seq {a}..={b})", scan.records),
        _ => println!("records: 0"),
    }
    match &scan.torn {
        Some(t) => println!(
            "torn end: {} bytes at offset {} of {} (a write cut short by a crash, never \
             acknowledged; the daemon cuts it at its next start)",
            t.len,
            t.offset,
            t.path.display()
        ),
        None => println!("torn end: none"),
    }
    println!("ok");
    Ok(())
}
