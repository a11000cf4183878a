//! The engine: the one place that changes the system.
//!
//! - Status is read on a blocking thread from a freshly loaded sysroot and cached; readers get
//!   the cached snapshot at once and are never blocked by a running transaction. It is
//!   refreshed after every transaction and whenever the sysroot watcher sees the sysroot change
//!   (including changes by `ostree admin`, rpm-ostree or bootc).
//! - Exactly one transaction changes the sysroot at a time (the writer slot); it also holds
//!   the ostree sysroot lock for its whole run, so other ostree tools are serialised with us.
//! - The API layers (D-Bus now, gRPC later) only create, start, cancel and observe
//!   transactions through this type.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use layerd_interfaces::TransactionInfo;
use tokio::sync::watch;

use crate::cleanup::{self, CleanupOptions};
use crate::error::{Error, Result};
use crate::rollback;
use crate::status::{self, Snapshot};
use crate::sysroot::SysrootPath;
use crate::txn::{Caller, Transaction, TxnState};

/// A change a client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    Rollback { reboot: bool },
    Cleanup(CleanupOptions),
}

impl Operation {
    /// Short human title, shown in status and busy errors.
    pub fn title(&self) -> String {
        match self {
            Operation::Rollback { .. } => "rollback".into(),
            Operation::Cleanup(o) => o.title(),
        }
    }

    fn wants_reboot(&self) -> bool {
        matches!(self, Operation::Rollback { reboot: true })
    }

    /// Check arguments before a transaction is created, so bad input fails the call itself.
    fn validate(&self) -> Result<()> {
        match self {
            Operation::Cleanup(o) if o.is_empty() => Err(Error::InvalidArgument(
                "cleanup needs at least one of: pending (-p), rollback (-r), base (-b), repomd (-m)".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// Daemon settings the engine needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Command run to reboot after a transaction asked for it (`systemctl reboot` on a node).
    pub reboot_command: Vec<String>,
    /// How long a finished transaction's result stays readable, and how long a created
    /// transaction may wait for `Start` before it is cancelled.
    pub result_ttl: Duration,
    /// Cached repository metadata (`cleanup -m` removes it).
    pub repomd_cache: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            reboot_command: vec!["systemctl".into(), "reboot".into()],
            result_ttl: Duration::from_secs(300),
            repomd_cache: PathBuf::from("/var/cache/layerd/repomd"),
        }
    }
}

/// One load of the sysroot: the status (or the load error, kept as text so every reader gets
/// the same clear message) and the fingerprint taken just before loading.
#[derive(Debug)]
pub struct Loaded {
    pub status: std::result::Result<Snapshot, String>,
    pub fingerprint: status::Fingerprint,
}

/// The cached status: `None` until the first load.
pub type SnapshotState = Option<Arc<Loaded>>;

pub struct Engine {
    sysroot: SysrootPath,
    config: Config,
    snapshot: watch::Sender<SnapshotState>,
    refresh_lock: tokio::sync::Mutex<()>,
    txns: Mutex<HashMap<String, (Arc<Transaction>, Operation)>>,
    writer: Mutex<Option<Arc<Transaction>>>,
    /// Bumped whenever the set or state of transactions changes.
    txn_changes: watch::Sender<u64>,
    next_id: AtomicU64,
    epoch: u64,
}

impl Engine {
    pub fn new(sysroot: SysrootPath, config: Config) -> Arc<Self> {
        let epoch = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Arc::new(Engine {
            sysroot,
            config,
            snapshot: watch::channel(None).0,
            refresh_lock: tokio::sync::Mutex::new(()),
            txns: Mutex::new(HashMap::new()),
            writer: Mutex::new(None),
            txn_changes: watch::channel(0).0,
            next_id: AtomicU64::new(1),
            epoch,
        })
    }

    pub fn sysroot(&self) -> &SysrootPath {
        &self.sysroot
    }

    fn txns(&self) -> MutexGuard<'_, HashMap<String, (Arc<Transaction>, Operation)>> {
        self.txns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn writer(&self) -> MutexGuard<'_, Option<Arc<Transaction>>> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- status ----

    /// Re-read the sysroot; returns whether the status changed (watchers are only told then).
    pub async fn refresh(&self) -> bool {
        let _serial = self.refresh_lock.lock().await;
        let path = self.sysroot.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let fingerprint = status::fingerprint(path.path());
            let status = status::read(&path).map_err(|e| e.to_string());
            Loaded { status, fingerprint }
        })
        .await
        .unwrap_or_else(|e| Loaded { status: Err(format!("status reader panicked: {e}")), fingerprint: Default::default() });
        let new = Arc::new(loaded);
        self.snapshot.send_if_modified(|cur| {
            let changed = cur.as_ref().map_or(true, |c| c.status != new.status);
            *cur = Some(new);
            changed
        })
    }

    /// The current status. Waits for the first load, and re-reads the sysroot first when its
    /// fingerprint shows a change the watcher has not delivered yet.
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>> {
        let current = self.snapshot.borrow().clone();
        let stale = match &current {
            None => true,
            Some(l) => l.fingerprint != status::fingerprint(self.sysroot.path()),
        };
        if stale {
            self.refresh().await;
        }
        let state = self.snapshot.borrow().clone();
        match state.as_deref().map(|l| &l.status) {
            Some(Ok(s)) => Ok(Arc::new(s.clone())),
            Some(Err(e)) => Err(Error::Sysroot(e.clone())),
            None => Err(Error::Failed("status unavailable".into())),
        }
    }

    /// Watch status changes.
    pub fn subscribe_snapshot(&self) -> watch::Receiver<SnapshotState> {
        self.snapshot.subscribe()
    }

    // ---- transactions ----

    /// Create a transaction for `op` (checked now; nothing runs until [`Engine::start`]).
    pub fn create(&self, op: Operation, caller: Caller) -> Result<Arc<Transaction>> {
        op.validate()?;
        let n = self.next_id.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}_{n}", self.epoch);
        let txn = Arc::new(Transaction::new(id.clone(), op.title(), caller));
        self.txns().insert(id, (txn.clone(), op));
        self.txn_changes.send_modify(|n| *n += 1);
        Ok(txn)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Transaction>> {
        self.txns().get(id).map(|(t, _)| t.clone())
    }

    /// Running and not-yet-started transactions.
    pub fn active(&self) -> Vec<TransactionInfo> {
        let mut v: Vec<_> = self
            .txns()
            .values()
            .filter(|(t, _)| !t.state().is_finished())
            .map(|(t, _)| t.clone())
            .collect();
        v.sort_by_key(|t| t.created_at);
        v.iter().map(|t| t.info()).collect()
    }

    /// The transaction changing the sysroot now.
    pub fn running(&self) -> Option<Arc<Transaction>> {
        self.writer().clone()
    }

    pub fn subscribe_transactions(&self) -> watch::Receiver<u64> {
        self.txn_changes.subscribe()
    }

    /// Run a created transaction. Fails with `Busy` (naming the running transaction and who
    /// started it) when another one holds the writer slot.
    pub fn start(self: &Arc<Self>, txn: &Arc<Transaction>) -> Result<()> {
        let op = self
            .txns()
            .get(&txn.id)
            .map(|(_, op)| op.clone())
            .ok_or_else(|| Error::NotFound(format!("transaction {} no longer exists", txn.id)))?;
        {
            let mut w = self.writer();
            match txn.state() {
                TxnState::Created => {}
                TxnState::Running => return Err(Error::InvalidState(format!("transaction {} is already running", txn.id))),
                s => return Err(Error::InvalidState(format!("transaction {} already finished ({})", txn.id, s.as_str()))),
            }
            if let Some(r) = w.as_ref() {
                return Err(Error::Busy(format!(
                    "busy: transaction {} ({}) started by {} is changing the system",
                    r.id,
                    r.title,
                    r.caller.describe()
                )));
            }
            *w = Some(txn.clone());
            txn.set_running();
        }
        self.txn_changes.send_modify(|n| *n += 1);
        let engine = self.clone();
        let txn = txn.clone();
        tokio::spawn(async move { engine.execute(txn, op).await });
        Ok(())
    }

    async fn execute(self: Arc<Self>, txn: Arc<Transaction>, op: Operation) {
        log::info!("txn {} ({}) started by {}", txn.id, txn.title, txn.caller.describe());
        let path = self.sysroot.clone();
        let repomd = self.config.repomd_cache.clone();
        let t = txn.clone();
        let op2 = op.clone();
        let mut res = tokio::task::spawn_blocking(move || match &op2 {
            Operation::Rollback { .. } => rollback::run(&t, &path),
            Operation::Cleanup(o) => cleanup::run(&t, &path, o, &repomd),
        })
        .await
        .unwrap_or_else(|e| Err(Error::Failed(format!("transaction panicked: {e}"))));
        // status first, so a client reading it after `Finished` sees the new state
        self.refresh().await;
        if res.is_ok() && op.wants_reboot() {
            if let Err(e) = self.reboot(&txn) {
                res = Err(e);
            }
        }
        txn.finish(res.as_ref().map(|c| *c));
        *self.writer() = None;
        self.txn_changes.send_modify(|n| *n += 1);
    }

    fn reboot(&self, txn: &Transaction) -> Result<()> {
        let Some((prog, args)) = self.config.reboot_command.split_first() else {
            return Err(Error::Failed("no reboot command configured".into()));
        };
        txn.message("Rebooting");
        let st = std::process::Command::new(prog)
            .args(args)
            .status()
            .map_err(|e| Error::Failed(format!("the change is done, but running {prog} to reboot failed: {e}")))?;
        if !st.success() {
            return Err(Error::Failed(format!("the change is done, but the reboot command {prog} failed ({st})")));
        }
        Ok(())
    }

    /// Cancel a transaction (queued or running).
    pub fn cancel(&self, txn: &Transaction) {
        txn.cancel();
        self.txn_changes.send_modify(|n| *n += 1);
    }

    /// Drop finished transactions whose result has been readable for `result_ttl`, and cancel
    /// created ones nobody started within it. Returns the ids removed.
    pub fn expire(&self) -> Vec<String> {
        let ttl = self.config.result_ttl;
        let now = SystemTime::now();
        let old = |t: SystemTime| now.duration_since(t).map(|d| d >= ttl).unwrap_or(false);
        let mut removed = Vec::new();
        let mut txns = self.txns();
        for (t, _) in txns.values() {
            if t.state() == TxnState::Created && old(t.created_at) {
                t.cancel();
            }
        }
        txns.retain(|id, (t, _)| {
            let keep = !t.finished_at().is_some_and(old);
            if !keep {
                removed.push(id.clone());
            }
            keep
        });
        drop(txns);
        if !removed.is_empty() {
            self.txn_changes.send_modify(|n| *n += 1);
        }
        removed
    }

    pub fn result_ttl(&self) -> Duration {
        self.config.result_ttl
    }

    /// On daemon stop: cancel the running transaction and wait (bounded) for it to undo its
    /// partial work.
    pub async fn shutdown(&self, timeout: Duration) {
        let Some(t) = self.running() else { return };
        log::info!("stopping: cancelling transaction {} ({})", t.id, t.title);
        self.cancel(&t);
        let deadline = tokio::time::Instant::now() + timeout;
        while !t.state().is_finished() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
