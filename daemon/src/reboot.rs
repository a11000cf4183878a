//! Rebooting after a change that asked for it (`--reboot`, `finalize-deployment`).
//!
//! The reboot goes through systemd-logind (`org.freedesktop.login1.Manager.Reboot`), which
//! is what `systemctl reboot` asks too. Block inhibitors are respected: logind lets root
//! override them, so layerd lists them first and refuses to reboot while one blocks shutdown
//! (a node draining, a firmware update running); the change itself stays staged and the
//! next reboot applies it. Without logind on the bus, `systemctl reboot` is run. A configured
//! `reboot-command` replaces the logind call (inhibitors are still checked when logind is
//! there), which is how the virtual test host simulates a reboot.

use crate::error::{Error, Result};

const LOGIND: &str = "org.freedesktop.login1";
const LOGIND_PATH: &str = "/org/freedesktop/login1";
const MANAGER: &str = "org.freedesktop.login1.Manager";

/// One inhibitor lock as logind lists it: (what, who, why, mode, uid, pid).
type Inhibitor = (String, String, String, String, u32, u32);

/// The block inhibitors that stop a shutdown, as `who (why)`; `None` when logind is not on
/// the system bus.
async fn shutdown_blockers(conn: &zbus::Connection) -> Option<Vec<String>> {
    let reply = conn.call_method(Some(LOGIND), LOGIND_PATH, Some(MANAGER), "ListInhibitors", &()).await.ok()?;
    let list: Vec<Inhibitor> = reply.body().deserialize().ok()?;
    Some(
        list.into_iter()
            .filter(|(what, _, _, mode, _, _)| mode == "block" && what.split(':').any(|w| w == "shutdown"))
            .map(|(_, who, why, _, _, pid)| format!("{who} (pid {pid}: {why})"))
            .collect(),
    )
}

/// Refuse a change that asks for a reboot while a block inhibitor would stop that reboot:
/// checked before the change starts, so nothing is staged that the caller meant to apply at
/// once (and checked again at reboot time).
pub async fn check_not_blocked() -> Result<()> {
    let Ok(conn) = zbus::Connection::system().await else { return Ok(()) };
    match shutdown_blockers(&conn).await {
        Some(b) if !b.is_empty() => Err(Error::InvalidState(format!(
            "a reboot was asked for, but shutdown is blocked by {}; nothing was changed (retry when it is released)",
            b.join(", ")
        ))),
        _ => Ok(()),
    }
}

/// Reboot now, unless a block inhibitor stops it. `command` is the configured reboot command
/// (empty: logind).
pub async fn reboot(command: &[String]) -> Result<()> {
    let conn = zbus::Connection::system().await.ok();
    let logind = match &conn {
        Some(c) => shutdown_blockers(c).await,
        None => None,
    };
    if let Some(blockers) = &logind {
        if !blockers.is_empty() {
            return Err(Error::InvalidState(format!(
                "the change is done and applies at the next reboot, but rebooting now is blocked by {}",
                blockers.join(", ")
            )));
        }
    }
    match (command.split_first(), &conn, &logind) {
        (Some((prog, args)), _, _) => run(prog, args).await,
        (None, Some(c), Some(_)) => c
            .call_method(Some(LOGIND), LOGIND_PATH, Some(MANAGER), "Reboot", &(false,))
            .await
            .map(|_| ())
            .map_err(|e| Error::Failed(format!("the change is done, but logind refused to reboot: {e}"))),
        (None, _, _) => run("systemctl", &["reboot".to_string()]).await,
    }
}

async fn run(prog: &str, args: &[String]) -> Result<()> {
    let st = tokio::process::Command::new(prog)
        .args(args)
        .status()
        .await
        .map_err(|e| Error::Failed(format!("the change is done, but running {prog} to reboot failed: {e}")))?;
    if !st.success() {
        return Err(Error::Failed(format!("the change is done, but the reboot command {prog} failed ({st})")));
    }
    Ok(())
}
