//! `layerctl`: the command-line client of layerd.
//!
//! Speaks D-Bus only (no libostree): every command is a property read or a transaction on
//! `org.layerd.Layerd1`. Exit codes: 0 done, 1 failed, 77 nothing changed (with
//! `--unchanged-exit-77`) or a pending deployment exists (with `status --pending-exit-77`).

mod connect;
mod progress;
mod status;
mod timefmt;
mod txn;

use std::collections::HashMap;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use zbus::zvariant::Value;

/// Exit code for "nothing changed" / "pending deployment", as rpm-ostree uses.
pub const EXIT_UNCHANGED: u8 = 77;

#[derive(Parser, Debug)]
#[command(name = "layerctl", version, about = "Change this node's operating system safely (client of layerd)")]
struct Cli {
    /// Name of the calling agent, shown in status and logs (default: $RPMOSTREE_CLIENT_ID).
    #[arg(long, global = true, env = "RPMOSTREE_CLIENT_ID")]
    client_id: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Options shared by every command that changes the system.
#[derive(Args, Debug, Clone)]
struct ChangeOpts {
    /// Exit with 77 when nothing changed.
    #[arg(long)]
    unchanged_exit_77: bool,
    /// If another change is running, queue behind it instead of failing.
    #[arg(long)]
    wait: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Show deployments and the running transaction.
    Status {
        /// Print JSON with the keys of `rpm-ostree status --json`.
        #[arg(long)]
        json: bool,
        /// Only the booted deployment.
        #[arg(short, long)]
        booted: bool,
        /// More detail per deployment.
        #[arg(short, long)]
        verbose: bool,
        /// Exit with 77 when a deployment is pending (will boot next instead of the booted one).
        #[arg(long)]
        pending_exit_77: bool,
    },
    /// Make the previous deployment the default for the next boot.
    Rollback {
        /// Reboot once the rollback is done.
        #[arg(short, long)]
        reboot: bool,
        #[command(flatten)]
        change: ChangeOpts,
    },
    /// Remove pending or rollback deployments, temporary data, cached metadata.
    Cleanup {
        /// Remove the staged or pending deployment.
        #[arg(short, long)]
        pending: bool,
        /// Remove rollback deployments (pinned ones are kept).
        #[arg(short, long)]
        rollback: bool,
        /// Remove temporary data and prune unreferenced objects.
        #[arg(short, long)]
        base: bool,
        /// Remove cached repository metadata.
        #[arg(short = 'm', long)]
        repomd: bool,
        #[command(flatten)]
        change: ChangeOpts,
    },
    /// Cancel the running transaction (or the one with the given id).
    Cancel {
        /// Transaction id, as `layerctl status -v` shows it.
        id: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let conn = connect::system_bus().await?;
    let mut opts: HashMap<&str, Value<'_>> = HashMap::new();
    if let Some(id) = cli.client_id.as_deref() {
        opts.insert("client-id", Value::from(id));
    }
    match cli.cmd {
        Cmd::Status { json, booted, verbose, pending_exit_77 } => {
            status::run(&conn, status::Mode { json, booted, verbose, pending_exit_77 }).await
        }
        Cmd::Rollback { reboot, change } => {
            if reboot {
                opts.insert("reboot", Value::from(true));
            }
            let daemon = connect::daemon(&conn).await?;
            let path = daemon.rollback(opts).await.map_err(connect::api_error)?;
            txn::run(&conn, path, change.wait, change.unchanged_exit_77).await
        }
        Cmd::Cleanup { pending, rollback, base, repomd, change } => {
            if !(pending || rollback || base || repomd) {
                anyhow::bail!("cleanup needs at least one of -p/--pending, -r/--rollback, -b/--base, -m/--repomd");
            }
            for (k, on) in [("pending", pending), ("rollback", rollback), ("base", base), ("repomd", repomd)] {
                if on {
                    opts.insert(k, Value::from(true));
                }
            }
            let daemon = connect::daemon(&conn).await?;
            let path = daemon.cleanup(opts).await.map_err(connect::api_error)?;
            txn::run(&conn, path, change.wait, change.unchanged_exit_77).await
        }
        Cmd::Cancel { id } => cancel(&conn, id).await,
    }
}

/// `layerctl cancel [ID]`: cancel the running transaction, or a given one.
async fn cancel(conn: &zbus::Connection, id: Option<String>) -> anyhow::Result<u8> {
    let daemon = connect::daemon(conn).await?;
    let txns = daemon.transactions().await.map_err(connect::zbus_error)?;
    let target = match &id {
        Some(id) => txns.iter().find(|t| &t.id == id),
        None => txns.iter().find(|t| t.state == "running").or_else(|| txns.first()),
    };
    let Some(t) = target else {
        match id {
            Some(id) => anyhow::bail!("no transaction {id} is queued or running"),
            None => anyhow::bail!("no transaction is running"),
        }
    };
    let proxy = layerd_interfaces::proxy::TransactionProxy::builder(conn)
        .path(t.path.clone())?
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    proxy.cancel().await.map_err(connect::api_error)?;
    println!("Cancelled {} ({}, started by {})", t.title, t.id, t.client);
    Ok(0)
}
