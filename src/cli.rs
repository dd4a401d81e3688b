//! The operator's subcommands (`user add`, `token issue`): through the
//! running daemon's control socket when there is one, else on the store
//! directly. Both run the same core operation (`control::execute`).

use std::io::BufRead;
use std::path::Path;

use anyhow::{bail, Context};

use crate::config::{TokenCommand, UserCommand};
use crate::control::{self, Reply, Request};
use crate::core::limits::Limits;
use crate::core::Core;
use crate::store::OpenError;

pub fn user(data_dir: &Path, cmd: UserCommand) -> anyhow::Result<()> {
    let UserCommand::Add {
        username,
        role,
        tenant,
        instance,
        display_name,
    } = cmd;
    let mut password = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut password)
        .context("reading the password from stdin")?;
    let password = password
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&password)
        .to_owned();
    let id = run(
        data_dir,
        Request::UserAdd {
            username,
            password,
            role,
            tenant,
            instance,
            display_name,
        },
    )?;
    println!("{id}");
    Ok(())
}

pub fn token(data_dir: &Path, cmd: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Issue { username } = cmd;
    println!("{}", run(data_dir, Request::TokenIssue { username })?);
    Ok(())
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
        let core = match Core::open(&data_dir.join("store"), Limits::default()) {
            Ok(c) => c,
            Err(OpenError::Locked) => bail!(
                "the store in {} is held by a running daemon whose control socket does not answer",
                data_dir.display()
            ),
            Err(e) => bail!("{e}"),
        };
        let result = control::execute(&core, req).await;
        core.shutdown();
        result.map_err(|e| anyhow::anyhow!("{e}"))
    })
}
