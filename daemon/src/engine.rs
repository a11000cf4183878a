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

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use layerd_interfaces::TransactionInfo;
use tokio::sync::watch;

use crate::cleanup::{self, CleanupOptions};
use crate::error::{Context, Error, Result};
use crate::journal::{self, Journal};
use crate::layering::{self, LayerRequest};
use crate::rollback;
use crate::status::{self, Snapshot};
use crate::sysroot::SysrootPath;
use crate::txn::{Caller, Transaction, TxnState};

/// A change a client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    Rollback { reboot: bool },
    Cleanup(CleanupOptions),
    /// Install / uninstall layered packages.
    Layer(LayerRequest),
    /// Download repository metadata.
    RefreshMd { force: bool },
    /// Edit kernel arguments (a new deployment of the same tree).
    Kargs { edit: crate::kargs::KargsEdit, reboot: bool },
    /// Pin or unpin the deployment at this boot-order index.
    Pin { index: u32, unpin: bool },
    /// Unlock the staged deployment with this checksum and reboot.
    Finalize { checksum: String, allow_unlocked: bool },
    /// Apply the staged deployment to the running system, or undo that (`reset`).
    ApplyLive { reset: bool, allow_replacement: bool },
    /// Internal: clean up after a transaction interrupted by a crash (first thing at start-up).
    Recover { interrupted: journal::Record },
}

impl Operation {
    /// Short human title, shown in status and busy errors.
    pub fn title(&self) -> String {
        match self {
            Operation::Rollback { .. } => "rollback".into(),
            Operation::Cleanup(o) => o.title(),
            Operation::Layer(r) => r.title(),
            Operation::RefreshMd { force: true } => "refresh-md -f".into(),
            Operation::RefreshMd { force: false } => "refresh-md".into(),
            Operation::Kargs { edit, .. } => edit.title(),
            Operation::Pin { index, unpin: false } => format!("pin {index}"),
            Operation::Pin { index, unpin: true } => format!("pin --unpin {index}"),
            Operation::Finalize { checksum, .. } => format!("finalize-deployment {checksum}"),
            Operation::ApplyLive { reset: true, .. } => "apply-live --reset".into(),
            Operation::ApplyLive { allow_replacement: true, .. } => "apply-live --allow-replacement".into(),
            Operation::ApplyLive { .. } => "apply-live".into(),
            Operation::Recover { .. } => "recover interrupted transaction".into(),
        }
    }

    fn wants_reboot(&self) -> bool {
        match self {
            Operation::Rollback { reboot } => *reboot,
            Operation::Layer(r) => r.opts.reboot && !r.opts.dry_run,
            Operation::Kargs { reboot, .. } => *reboot,
            Operation::Finalize { .. } => true,
            _ => false,
        }
    }

    /// Check arguments before a transaction is created, so bad input fails the call itself.
    fn validate(&self) -> Result<()> {
        match self {
            Operation::Cleanup(o) if o.is_empty() => Err(Error::InvalidArgument(
                "cleanup needs at least one of: pending (-p), rollback (-r), base (-b), repomd (-m)".into(),
            )),
            Operation::Layer(r) => r.validate(),
            Operation::Kargs { edit, .. } if edit.is_empty() => Err(Error::InvalidArgument(
                "kargs: nothing to change (append, append-if-missing, delete, delete-if-present, replace, import-proc-cmdline)".into(),
            )),
            Operation::Kargs { edit, .. } => edit.validate(),
            _ => Ok(()),
        }
    }
}

/// Daemon settings the engine needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Command run to reboot after a transaction asked for it; empty: systemd-logind (see
    /// [`crate::reboot`]).
    pub reboot_command: Vec<String>,
    /// How long a finished transaction's result stays readable, and how long a created
    /// transaction may wait for `Start` before it is cancelled.
    pub result_ttl: Duration,
    /// Cached repository metadata (`cleanup -m` removes it).
    pub repomd_cache: PathBuf,
    /// `/var/cache/layerd`: repository metadata (`repomd/`) and solver caches (`solv/`).
    pub cache_dir: PathBuf,
    /// Install weak dependencies (Recommends) of repository packages, as dnf does.
    pub weak_deps: bool,
    /// Where the transaction journal lives.
    pub state_dir: PathBuf,
    /// Queue behind a running transaction when the caller did not say (`wait` option).
    pub wait_by_default: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            reboot_command: Vec::new(),
            result_ttl: Duration::from_secs(300),
            repomd_cache: PathBuf::from("/var/cache/layerd/repomd"),
            cache_dir: PathBuf::from("/var/cache/layerd"),
            weak_deps: true,
            state_dir: PathBuf::from("/var/lib/layerd"),
            wait_by_default: false,
        }
    }
}

/// The writer slot and the queue behind it.
#[derive(Default)]
struct Writer {
    running: Option<Arc<Transaction>>,
    queue: VecDeque<Arc<Transaction>>,
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
    writer: Mutex<Writer>,
    /// Bumped whenever the set or state of transactions changes.
    txn_changes: watch::Sender<u64>,
    next_id: AtomicU64,
    epoch: u64,
    journal: Journal,
    /// Peers that asked to be counted as watchers (`RegisterClient`): layerd stays up for them.
    clients: Mutex<BTreeSet<String>>,
    last_activity: Mutex<Instant>,
    /// Set when the daemon stops: no new transaction is created or started.
    stopping: std::sync::atomic::AtomicBool,
}

impl Engine {
    pub fn new(sysroot: SysrootPath, config: Config) -> Arc<Self> {
        let epoch = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Arc::new(Engine {
            sysroot,
            snapshot: watch::channel(None).0,
            refresh_lock: tokio::sync::Mutex::new(()),
            txns: Mutex::new(HashMap::new()),
            writer: Mutex::new(Writer::default()),
            txn_changes: watch::channel(0).0,
            next_id: AtomicU64::new(1),
            epoch,
            journal: Journal::new(&config.state_dir),
            clients: Mutex::new(BTreeSet::new()),
            last_activity: Mutex::new(Instant::now()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            config,
        })
    }

    pub fn sysroot(&self) -> &SysrootPath {
        &self.sysroot
    }

    fn txns(&self) -> MutexGuard<'_, HashMap<String, (Arc<Transaction>, Operation)>> {
        self.txns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
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

    /// Create a transaction for `op` (checked now; nothing runs until [`Engine::start`]). A
    /// request identical to one already created, queued or running joins it: the caller gets
    /// that transaction back and is counted among the peers waiting for it.
    pub fn create(&self, op: Operation, caller: Caller) -> Result<Arc<Transaction>> {
        self.create_or_join(op, caller).map(|(t, _)| t)
    }

    /// [`Engine::create`], also saying whether an identical transaction was joined.
    pub fn create_or_join(&self, op: Operation, caller: Caller) -> Result<(Arc<Transaction>, bool)> {
        op.validate()?;
        self.touch();
        self.refuse_if_stopping()?;
        let mut txns = self.txns();
        if let Some((t, _)) = txns.values().find(|(t, o)| *o == op && !t.state().is_finished() && !t.is_cancelled()) {
            log::info!("txn {} ({}): joined by {}", t.id, t.title, caller.describe());
            t.add_owner(&caller.sender);
            return Ok((t.clone(), true));
        }
        let n = self.next_id.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}_{n}", self.epoch);
        let txn = Arc::new(Transaction::new(id.clone(), op.title(), caller));
        txns.insert(id, (txn.clone(), op));
        drop(txns);
        self.txn_changes.send_modify(|n| *n += 1);
        Ok((txn, false))
    }

    /// A transaction by id: created, queued, running, or finished within the result lifetime.
    pub fn transaction(&self, id: &str) -> Option<Arc<Transaction>> {
        self.txns().get(id).map(|(t, _)| t.clone())
    }

    /// Running, queued and not-yet-started transactions, oldest first.
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
        self.writer().running.clone()
    }

    pub fn subscribe_transactions(&self) -> watch::Receiver<u64> {
        self.txn_changes.subscribe()
    }

    /// How the last transaction ended (kept across restarts).
    pub fn last_transaction(&self) -> Option<journal::Record> {
        self.journal.last()
    }

    /// Run a created transaction. When another one holds the writer slot: queue behind it if
    /// `wait` (or the configured default) says so, else fail with `Busy` naming the running
    /// transaction and who started it. Starting a transaction that is already queued, running or
    /// finished (a joiner's start) is not an error: its events tell the rest.
    pub fn start(self: &Arc<Self>, txn: &Arc<Transaction>, wait: Option<bool>) -> Result<()> {
        let wait = wait.unwrap_or(self.config.wait_by_default);
        self.touch();
        let op = self
            .txns()
            .get(&txn.id)
            .map(|(_, op)| op.clone())
            .ok_or_else(|| Error::NotFound(format!("transaction {} no longer exists", txn.id)))?;
        self.refuse_if_stopping()?;
        let run_now = {
            let mut w = self.writer();
            // queued, running, finished (a joiner's start) or cancelled meanwhile: nothing to do
            if txn.state() != TxnState::Created || txn.is_cancelled() {
                return Ok(());
            }
            let ahead = w.running.clone().or_else(|| w.queue.back().cloned());
            match ahead {
                None => {
                    if !txn.set_state(TxnState::Running) {
                        return Ok(());
                    }
                    w.running = Some(txn.clone());
                    true
                }
                Some(r) if wait => {
                    if !txn.set_state(TxnState::Queued) {
                        return Ok(());
                    }
                    w.queue.push_back(txn.clone());
                    txn.message(format!("Waiting for {} (started by {})", r.title, r.caller.describe()));
                    false
                }
                Some(r) => {
                    return Err(Error::Busy(format!(
                        "busy: transaction {} ({}) started by {} is changing the system; \
                         retry later or pass --wait to queue behind it",
                        r.id,
                        r.title,
                        r.caller.describe()
                    )))
                }
            }
        };
        self.txn_changes.send_modify(|n| *n += 1);
        if run_now {
            let engine = self.clone();
            let txn = txn.clone();
            tokio::spawn(async move { engine.execute(txn, op).await });
        }
        Ok(())
    }

    async fn execute(self: Arc<Self>, txn: Arc<Transaction>, op: Operation) {
        log::info!("txn {} ({}) started by {}", txn.id, txn.title, txn.caller.describe());
        let journaled = !matches!(op, Operation::Recover { .. });
        if journaled {
            self.journal.begin(&txn.id, &txn.title, &txn.caller.describe());
        }
        let path = self.sysroot.clone();
        let repomd = self.config.repomd_cache.clone();
        let settings = crate::resolve::Settings {
            cache_dir: self.config.cache_dir.clone(),
            weak_deps: self.config.weak_deps,
            freshness: crate::repomd::Freshness::Normal,
        };
        let t = txn.clone();
        let op2 = op.clone();
        let blocked = if op.wants_reboot() { crate::reboot::check_not_blocked().await.err() } else { None };
        let mut res = match blocked {
            Some(e) => Err(e),
            None => tokio::task::spawn_blocking(move || {
            t.check_cancelled()?;
            match &op2 {
                Operation::Rollback { .. } => rollback::run(&t, &path),
                Operation::Cleanup(o) => cleanup::run(&t, &path, o, &repomd),
                // --apply-live: the staged deployment (new or already there) goes live too
                Operation::Layer(r) => layering::run(&t, &path, r, &settings).and_then(|changed| {
                    if r.opts.apply_live {
                        crate::live::apply(&t, &path, r.opts.allow_replacement).map(|live| changed || live).map_err(|e| {
                            // the change itself is staged; say so beside why it is not live
                            let staged = if changed { "the new deployment is staged (it applies at the next reboot), but not live: " } else { "" };
                            match e {
                                Error::InvalidState(m) => Error::InvalidState(format!("{staged}{m}")),
                                Error::InvalidArgument(m) => Error::InvalidArgument(format!("{staged}{m}")),
                                Error::Failed(m) => Error::Failed(format!("{staged}{m}")),
                                other => other,
                            }
                        })
                    } else {
                        Ok(changed)
                    }
                }),
                Operation::ApplyLive { reset: true, .. } => crate::live::reset(&t),
                Operation::ApplyLive { allow_replacement, .. } => crate::live::apply(&t, &path, *allow_replacement),
                Operation::RefreshMd { force } => layering::refresh_md(&t, &path, *force, &settings),
                Operation::Kargs { edit, .. } => crate::kargs::run(&t, &path, edit),
                Operation::Pin { index, unpin } => crate::finalize::pin(&t, &path, *index, *unpin),
                Operation::Finalize { checksum, allow_unlocked } => crate::finalize::finalize(&t, &path, checksum, *allow_unlocked),
                Operation::Recover { interrupted } => recover(&t, &path, interrupted),
            }
        })
            .await
            .unwrap_or_else(|e| Err(Error::Failed(format!("transaction panicked: {e}")))),
        };
        // status first, so a client reading it after `Finished` sees the new state
        self.refresh().await;
        // reboot only into a change: "No change." never reboots (finalize-deployment always
        // does, that is its purpose)
        let changed = matches!(res, Ok(true)) || (res.is_ok() && matches!(op, Operation::Finalize { .. }));
        if changed && op.wants_reboot() {
            // the outcome is on disk before the reboot can stop layerd (else the next start
            // would call a finished change interrupted)
            if journaled {
                self.journal.end(&txn.id, &txn.title, &txn.caller.describe(), TxnState::Succeeded.as_str(), "");
            }
            txn.message("Rebooting");
            if let Err(e) = crate::reboot::reboot(&self.config.reboot_command).await {
                res = Err(e);
            }
        }
        // the journal first: the next transaction's begin must not be undone by this end
        if journaled {
            let (state, message) = match &res {
                Ok(_) => (TxnState::Succeeded, String::new()),
                Err(e) => {
                    let api: layerd_interfaces::Error = e.into();
                    (if matches!(e, Error::Cancelled) { TxnState::Cancelled } else { TxnState::Failed }, api.message())
                }
            };
            self.journal.end(&txn.id, &txn.title, &txn.caller.describe(), state.as_str(), &message);
        } else if let Operation::Recover { interrupted } = &op {
            if res.is_ok() {
                self.journal.record_interrupted(interrupted);
            }
        }
        self.touch();
        // finishing and freeing the writer slot happen under one lock: a client that saw
        // `Finished` and asks for the next change never finds this transaction still running
        let next = {
            let mut w = self.writer();
            txn.finish(res.as_ref().map(|c| *c));
            Self::take_next(&mut w)
        };
        self.start_next(next);
    }

    /// The next queued transaction, made the running one (the caller holds the writer lock).
    fn take_next(w: &mut Writer) -> Option<Arc<Transaction>> {
        w.running = None;
        loop {
            match w.queue.pop_front() {
                Some(t) if t.state() == TxnState::Queued && !t.is_cancelled() && t.set_state(TxnState::Running) => {
                    w.running = Some(t.clone());
                    break Some(t);
                }
                Some(_) => continue,
                None => break None,
            }
        }
    }

    /// Hand the writer slot to the next queued transaction, if any.
    fn run_next(self: &Arc<Self>) {
        let next = Self::take_next(&mut self.writer());
        self.start_next(next);
    }

    fn start_next(self: &Arc<Self>, next: Option<Arc<Transaction>>) {
        self.txn_changes.send_modify(|n| *n += 1);
        if let Some(t) = next {
            let op = self.txns().get(&t.id).map(|(_, op)| op.clone());
            match op {
                Some(op) => {
                    let engine = self.clone();
                    tokio::spawn(async move { engine.execute(t, op).await });
                }
                None => {
                    t.finish(Err(&Error::Failed("transaction vanished from the table".into())));
                    self.run_next();
                }
            }
        }
    }

    /// Cancel a transaction. A created or queued one ends at once; a running one stops at its
    /// next cancellation point and undoes its partial work.
    /// Cancel `txn` unless it already finished; returns whether this call cancelled it.
    pub fn cancel(&self, txn: &Transaction) -> bool {
        self.cancel_if(txn, |_| true)
    }

    /// Cancel under the writer lock, so it cannot race `start`/`run_next`, and only when
    /// `allowed(state)` (e.g. only while still waiting). Returns whether it cancelled.
    fn cancel_if(&self, txn: &Transaction, allowed: impl FnOnce(TxnState) -> bool) -> bool {
        {
            let mut w = self.writer();
            let state = txn.state();
            if state.is_finished() || !allowed(state) {
                return false;
            }
            txn.request_cancel();
            match state {
                TxnState::Created => txn.finish(Err(&Error::Cancelled)),
                TxnState::Queued => {
                    w.queue.retain(|t| t.id != txn.id);
                    txn.finish(Err(&Error::Cancelled));
                }
                _ => {}
            }
        }
        self.txn_changes.send_modify(|n| *n += 1);
        true
    }

    fn refuse_if_stopping(&self) -> Result<()> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err(Error::InvalidState("layerd is stopping; retry in a moment".into()));
        }
        Ok(())
    }

    /// A peer left the bus: transactions it created or joined that have not started yet, and
    /// that nobody else is waiting for, are cancelled; its watcher registration ends.
    pub fn peer_vanished(&self, sender: &str) {
        self.clients_lock().remove(sender);
        let txns: Vec<Arc<Transaction>> = self.txns().values().map(|(t, _)| t.clone()).collect();
        for t in txns {
            if t.remove_owner(sender)
                && self.cancel_if(&t, |s| matches!(s, TxnState::Created | TxnState::Queued))
            {
                log::info!("txn {} ({}): its caller {sender} left before it started; cancelled", t.id, t.title);
            }
        }
    }

    /// Drop finished transactions whose result has been readable for `result_ttl`, and cancel
    /// created ones nobody started within it. Returns the ids removed.
    pub fn expire(&self) -> Vec<String> {
        let ttl = self.config.result_ttl;
        let now = SystemTime::now();
        let old = |t: SystemTime| now.duration_since(t).map(|d| d >= ttl).unwrap_or(false);
        let stale: Vec<Arc<Transaction>> = self
            .txns()
            .values()
            .filter(|(t, _)| t.state() == TxnState::Created && old(t.created_at))
            .map(|(t, _)| t.clone())
            .collect();
        for t in stale {
            self.cancel_if(&t, |s| s == TxnState::Created);
        }
        let mut removed = Vec::new();
        self.txns().retain(|id, (t, _)| {
            let keep = !t.finished_at().is_some_and(old);
            if !keep {
                removed.push(id.clone());
            }
            keep
        });
        if !removed.is_empty() {
            self.txn_changes.send_modify(|n| *n += 1);
        }
        removed
    }

    // ---- liveness (idle exit) ----

    fn clients_lock(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Note that someone used the API just now.
    pub fn touch(&self) {
        *self.last_activity.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// Count `sender` as a watcher until it unregisters or leaves the bus.
    pub fn register_client(&self, sender: &str) {
        self.touch();
        self.clients_lock().insert(sender.to_string());
    }

    pub fn unregister_client(&self, sender: &str) {
        self.touch();
        self.clients_lock().remove(sender);
    }

    /// How long layerd has had nothing to do: no transaction created, queued or running, no
    /// registered watcher, no API call. `None` while something is going on.
    pub fn idle_for(&self) -> Option<Duration> {
        if !self.clients_lock().is_empty() {
            return None;
        }
        if self.txns().values().any(|(t, _)| !t.state().is_finished()) {
            return None;
        }
        Some(self.last_activity.lock().unwrap_or_else(|p| p.into_inner()).elapsed())
    }

    /// At start-up: if the journal shows a transaction was interrupted by a crash, queue the
    /// recovery as the first transaction.
    pub fn recover_if_interrupted(self: &Arc<Self>) {
        let Some(rec) = self.journal.interrupted() else { return };
        if self.journal.last().is_some_and(|l| l.id == rec.id) {
            // it ended and was recorded; only removing running.json was cut short
            self.journal.forget_running();
            return;
        }
        log::warn!("transaction {} ({}) was interrupted when layerd stopped; recovering", rec.id, rec.title);
        let caller = Caller { sender: String::new(), uid: 0, client_id: "layerd".into() };
        match self.create(Operation::Recover { interrupted: rec }, caller) {
            Ok(t) => {
                if let Err(e) = self.start(&t, Some(true)) {
                    log::error!("starting the recovery: {e}");
                }
            }
            Err(e) => log::error!("creating the recovery: {e}"),
        }
    }

    pub fn result_ttl(&self) -> Duration {
        self.config.result_ttl
    }

    /// On daemon stop: cancel queued and running transactions and wait (bounded) for the
    /// running one to undo its partial work.
    pub async fn shutdown(&self, timeout: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        let queued: Vec<Arc<Transaction>> = self.writer().queue.drain(..).collect();
        for t in queued {
            self.cancel(&t);
        }
        let Some(t) = self.running() else { return };
        log::info!("stopping: cancelling transaction {} ({})", t.id, t.title);
        self.cancel(&t);
        let deadline = tokio::time::Instant::now() + timeout;
        while !t.state().is_finished() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Clean up after an interrupted transaction: libostree's cleanup removes deployment
/// directories no boot entry references (a half-written deployment) and unreferenced objects
/// and temporary files in the repository.
fn recover(txn: &Transaction, path: &SysrootPath, interrupted: &journal::Record) -> Result<bool> {
    txn.message(format!(
        "Transaction '{}' ({}) was interrupted; removing its leftovers",
        interrupted.title, interrupted.client
    ));
    let locked = path.lock_for(txn)?;
    crate::build::remove_leftovers(path.path());
    txn.task("Removing leftovers", || locked.sysroot.cleanup(Some(txn.cancellable())))
        .context("cleaning up after the interrupted transaction")?;
    crate::pkgcache::prune_unused(&locked, None);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> (tempfile::TempDir, Arc<Engine>) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("ostree/repo")).unwrap();
        std::fs::create_dir_all(d.path().join("ostree/deploy")).unwrap();
        std::fs::write(d.path().join("ostree/repo/config"), "").unwrap();
        let config = Config { state_dir: d.path().join("state"), ..Config::default() };
        let e = Engine::new(SysrootPath::check(d.path()).unwrap(), config);
        (d, e)
    }

    #[test]
    fn a_cancelled_transaction_is_not_started_again() {
        let (_d, e) = engine();
        let t = e.create(Operation::Rollback { reboot: false }, Caller::default()).unwrap();
        e.cancel(&t);
        assert_eq!(t.state(), TxnState::Cancelled);
        e.start(&t, Some(false)).unwrap();
        assert_eq!(t.state(), TxnState::Cancelled, "Start after Cancel must not resurrect it");
        assert!(e.running().is_none());
        assert_eq!(t.events_since(0).len(), 1, "exactly one Finished event");
    }

    #[test]
    fn identical_requests_join_and_different_ones_do_not() {
        let (_d, e) = engine();
        let a = e.create(Operation::Rollback { reboot: false }, Caller { sender: ":1.1".into(), ..Default::default() }).unwrap();
        let b = e.create(Operation::Rollback { reboot: false }, Caller { sender: ":1.2".into(), ..Default::default() }).unwrap();
        assert_eq!(a.id, b.id);
        let c = e.create(Operation::Rollback { reboot: true }, Caller::default()).unwrap();
        assert_ne!(a.id, c.id);
        // the creator leaving does not cancel it while the joiner waits
        e.peer_vanished(":1.1");
        assert_eq!(a.state(), TxnState::Created);
        e.peer_vanished(":1.2");
        assert_eq!(a.state(), TxnState::Cancelled);
    }

    #[test]
    fn nothing_new_while_stopping() {
        let (_d, e) = engine();
        e.stopping.store(true, Ordering::SeqCst);
        assert!(matches!(e.create(Operation::Rollback { reboot: false }, Caller::default()), Err(Error::InvalidState(_))));
    }
}
