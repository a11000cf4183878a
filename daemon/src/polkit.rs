//! Authorization of D-Bus callers: root may do anything; anyone else needs polkit's yes for the
//! action of the change (`systemd/org.layerd.Layerd1.policy`), asked with `CheckAuthorization`
//! on the caller's unique bus name (polkit then knows the process, its user and session).
//! Reading status needs nothing. The bus policy already keeps out callers who are neither root
//! nor in the `layerd` group; this is the second gate, for those who are.

use crate::engine::Operation;
use crate::error::{Error, Result};

const POLKIT: &str = "org.freedesktop.PolicyKit1";
const AUTHORITY_PATH: &str = "/org/freedesktop/PolicyKit1/Authority";
const AUTHORITY: &str = "org.freedesktop.PolicyKit1.Authority";

/// One polkit action per class of change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Packages,
    Override,
    Deploy,
    Rollback,
    Cleanup,
    KernelArgs,
    RepoRefresh,
    Cancel,
}

impl Action {
    pub fn id(self) -> &'static str {
        match self {
            Action::Packages => "org.layerd.Layerd1.install-uninstall-packages",
            Action::Override => "org.layerd.Layerd1.override",
            Action::Deploy => "org.layerd.Layerd1.deploy",
            Action::Rollback => "org.layerd.Layerd1.rollback",
            Action::Cleanup => "org.layerd.Layerd1.cleanup",
            Action::KernelArgs => "org.layerd.Layerd1.kernel-args",
            Action::RepoRefresh => "org.layerd.Layerd1.repo-refresh",
            Action::Cancel => "org.layerd.Layerd1.cancel",
        }
    }

    /// The actions a change needs: every class of change it makes (a layering request that
    /// also moves the base, touches overrides or edits kernel arguments needs each of those).
    pub fn for_operation(op: &Operation) -> Vec<Action> {
        match op {
            Operation::Layer(r) => {
                let mut actions = Vec::new();
                if r.base != crate::base::BaseChange::Keep {
                    actions.push(Action::Deploy);
                }
                if !r.overrides.is_empty() {
                    actions.push(Action::Override);
                }
                if r.kargs.is_some() {
                    actions.push(Action::KernelArgs);
                }
                let packages = !r.install.is_empty() || !r.install_local.is_empty() || !r.uninstall.is_empty() || r.uninstall_all;
                if packages || actions.is_empty() {
                    actions.push(Action::Packages);
                }
                actions
            }
            Operation::ApplyLive { .. } => vec![Action::Packages],
            Operation::Rollback { .. } => vec![Action::Rollback],
            Operation::Cleanup(_) => vec![Action::Cleanup],
            Operation::RefreshMd { .. } => vec![Action::RepoRefresh],
            Operation::Kargs { .. } => vec![Action::KernelArgs],
            Operation::Pin { .. } | Operation::Finalize { .. } | Operation::Recover { .. } => vec![Action::Deploy],
        }
    }
}

/// Allow `uid` (bus name `sender`) to do `action`, or say clearly why not.
pub async fn authorize(conn: &zbus::Connection, sender: &str, uid: u32, action: Action) -> Result<()> {
    if uid == 0 {
        return Ok(());
    }
    use std::collections::HashMap;
    use zbus::zvariant::Value;
    let mut subject_details: HashMap<&str, Value<'_>> = HashMap::new();
    subject_details.insert("name", Value::from(sender));
    let subject = ("system-bus-name", subject_details);
    let details: HashMap<&str, &str> = HashMap::new();
    // no interaction: layerd has no way to show an authentication dialog to the caller
    let flags: u32 = 0;
    let reply = conn
        .call_method(Some(POLKIT), AUTHORITY_PATH, Some(AUTHORITY), "CheckAuthorization", &(subject, action.id(), details, flags, ""))
        .await;
    let reply = match reply {
        Ok(r) => r,
        Err(e) => {
            log::warn!("polkit CheckAuthorization for uid {uid}: {e}");
            return Err(Error::AccessDenied(format!(
                "not authorized: {} needs root, or polkit's permission, and polkit is not available ({e})",
                action.id()
            )));
        }
    };
    let (authorized, challenge, _details): (bool, bool, HashMap<String, String>) = reply
        .body()
        .deserialize()
        .map_err(|e| Error::Failed(format!("reading polkit's answer: {e}")))?;
    if authorized {
        return Ok(());
    }
    Err(Error::AccessDenied(if challenge {
        format!(
            "not authorized: {} for uid {uid} needs an administrator's authentication, which layerd cannot ask for; \
             run it as root (sudo) or grant it with a polkit rule",
            action.id()
        )
    } else {
        format!("not authorized: polkit refuses {} to uid {uid}", action.id())
    }))
}
