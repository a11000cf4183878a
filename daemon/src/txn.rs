//! Transactions: one requested change, its state, its event stream and its result.
//!
//! A transaction is created in state `created` and does nothing until started, so a client can
//! subscribe to its events first. Every event carries a sequence number and is kept in the
//! transaction's history: [`Transaction::subscribe`] hands out that history together with a live
//! receiver, atomically, and the API layers offer the same replay (`Events(since)` on D-Bus), so a
//! subscriber that attaches late, or joins a running transaction, still sees every event once.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use layerd_interfaces::{TransactionInfo, TransactionResult};
use tokio::sync::broadcast;

use crate::error::Error;
use crate::gio;
use crate::gio::prelude::*;

/// Lifecycle of a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnState {
    /// Created by a request; waits for `Start`.
    Created,
    /// Started with `wait`, behind the running transaction.
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl TxnState {
    pub fn as_str(self) -> &'static str {
        match self {
            TxnState::Created => "created",
            TxnState::Queued => "queued",
            TxnState::Running => "running",
            TxnState::Succeeded => "succeeded",
            TxnState::Failed => "failed",
            TxnState::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, TxnState::Succeeded | TxnState::Failed | TxnState::Cancelled)
    }
}

pub use layerd_interfaces::{EventKind, Progress};

/// One event with its position in the transaction's stream (from 1).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub seq: u64,
    pub kind: EventKind,
}

/// Who asked.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// Unique bus name (or another API's peer description).
    pub sender: String,
    pub uid: u32,
    /// `--client-id` / `RPMOSTREE_CLIENT_ID`; empty if the client gave none.
    pub client_id: String,
}

impl Caller {
    /// How the caller is shown to humans: its client id, else its bus name.
    pub fn describe(&self) -> String {
        if self.client_id.is_empty() {
            self.sender.clone()
        } else {
            format!("{} ({})", self.client_id, self.sender)
        }
    }
}

struct Inner {
    state: TxnState,
    history: Vec<Event>,
    result: Option<TransactionResult>,
    finished_at: Option<SystemTime>,
    /// Peers that asked for this transaction (its creator and any joiners). When all of them
    /// have gone before it started, nobody is waiting for it and it is cancelled.
    owners: BTreeSet<String>,
}

pub struct Transaction {
    pub id: String,
    pub title: String,
    pub caller: Caller,
    pub created_at: SystemTime,
    inner: Mutex<Inner>,
    events: broadcast::Sender<Event>,
    cancellable: gio::Cancellable,
    cancel_requested: AtomicBool,
}

impl Transaction {
    pub fn new(id: String, title: String, caller: Caller) -> Self {
        let (events, _) = broadcast::channel(1024);
        let owners = [caller.sender.clone()].into_iter().filter(|s| !s.is_empty()).collect();
        Transaction {
            id,
            title,
            caller,
            created_at: SystemTime::now(),
            inner: Mutex::new(Inner { state: TxnState::Created, history: Vec::new(), result: None, finished_at: None, owners }),
            events,
            cancellable: gio::Cancellable::new(),
            cancel_requested: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The D-Bus object path of this transaction.
    pub fn path(&self) -> String {
        format!("{}{}", layerd_interfaces::TRANSACTION_PATH_PREFIX, self.id)
    }

    pub fn state(&self) -> TxnState {
        self.lock().state
    }

    /// Move to `state` unless already finished (a finished transaction never comes back).
    pub(crate) fn set_state(&self, state: TxnState) -> bool {
        let mut inner = self.lock();
        if inner.state.is_finished() {
            return false;
        }
        inner.state = state;
        true
    }

    pub fn result(&self) -> Option<TransactionResult> {
        self.lock().result.clone()
    }

    pub fn finished_at(&self) -> Option<SystemTime> {
        self.lock().finished_at
    }

    /// Add a peer interested in this transaction (a joiner).
    pub fn add_owner(&self, sender: &str) {
        if !sender.is_empty() {
            self.lock().owners.insert(sender.to_string());
        }
    }

    /// Whether `sender` created or joined this transaction (and so was authorized for it).
    pub fn is_owner(&self, sender: &str) -> bool {
        !sender.is_empty() && self.lock().owners.contains(sender)
    }

    /// A peer went away; returns true when nobody is left waiting for the transaction.
    pub fn remove_owner(&self, sender: &str) -> bool {
        let mut inner = self.lock();
        inner.owners.remove(sender) && inner.owners.is_empty()
    }

    /// Record and broadcast an event.
    fn emit_locked(&self, inner: &mut Inner, kind: EventKind) {
        let ev = Event { seq: inner.history.len() as u64 + 1, kind };
        inner.history.push(ev.clone());
        let _ = self.events.send(ev);
    }

    fn emit(&self, kind: EventKind) {
        let mut inner = self.lock();
        if !inner.state.is_finished() {
            self.emit_locked(&mut inner, kind);
        }
    }

    /// Send a progress line (also logged).
    pub fn message(&self, text: impl Into<String>) {
        let text = text.into();
        log::info!("txn {} ({}): {}", self.id, self.title, text);
        self.emit(EventKind::Message(text));
    }

    /// Run `f` as a named step, with begin/end events around it.
    pub fn task<T>(&self, name: &str, f: impl FnOnce() -> T) -> T {
        self.emit(EventKind::TaskBegin(name.to_string()));
        let r = f();
        self.emit(EventKind::TaskEnd(name.to_string()));
        r
    }

    pub fn percent(&self, text: &str, percent: u32) {
        self.emit(EventKind::Percent { text: text.to_string(), percent: percent.min(100) });
    }

    pub fn progress(&self, p: Progress) {
        self.emit(EventKind::Progress(p));
    }

    /// Past events plus a receiver for the rest, taken atomically.
    pub fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let inner = self.lock();
        (inner.history.clone(), self.events.subscribe())
    }

    /// Events after `since` (0 for all).
    pub fn events_since(&self, since: u64) -> Vec<Event> {
        self.lock().history.iter().filter(|e| e.seq > since).cloned().collect()
    }

    /// Finish with an outcome: `Ok(changed)` or an error. Idempotent: the first call wins.
    pub(crate) fn finish(&self, outcome: Result<bool, &Error>) {
        let mut inner = self.lock();
        if inner.state.is_finished() {
            return;
        }
        let (state, result) = match outcome {
            Ok(changed) => (
                TxnState::Succeeded,
                TransactionResult { success: true, unchanged: !changed, ..Default::default() },
            ),
            Err(e) => {
                let api: layerd_interfaces::Error = e.into();
                let state = if matches!(e, Error::Cancelled) { TxnState::Cancelled } else { TxnState::Failed };
                (
                    state,
                    TransactionResult {
                        success: false,
                        unchanged: false,
                        error_name: api.short_name().to_string(),
                        error_message: api.message(),
                    },
                )
            }
        };
        match &outcome {
            Ok(_) => log::info!("txn {} ({}) succeeded", self.id, self.title),
            Err(e) => log::warn!("txn {} ({}) {}: {e}", self.id, self.title, state.as_str()),
        }
        inner.state = state;
        inner.result = Some(result.clone());
        inner.finished_at = Some(SystemTime::now());
        self.emit_locked(&mut inner, EventKind::Finished(result));
    }

    /// Ask the transaction to stop: a running operation notices through its cancellable (child
    /// processes are killed, partial work undone); the engine finishes a created or queued one.
    pub(crate) fn request_cancel(&self) {
        self.cancel_requested.store(true, Ordering::SeqCst);
        self.cancellable.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel_requested.load(Ordering::SeqCst)
    }

    /// Cancellable handed to libostree calls.
    pub fn cancellable(&self) -> &gio::Cancellable {
        &self.cancellable
    }

    /// Fail with [`Error::Cancelled`] if cancel was requested.
    pub fn check_cancelled(&self) -> Result<(), Error> {
        if self.is_cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }

    pub fn info(&self) -> TransactionInfo {
        TransactionInfo {
            id: self.id.clone(),
            path: self.path(),
            title: self.title.clone(),
            state: self.state().as_str().to_string(),
            client: self.caller.describe(),
            sender: self.caller.sender.clone(),
            uid: self.caller.uid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_subscriber_sees_history_then_live_events() {
        let t = Transaction::new("1".into(), "test".into(), Caller::default());
        t.set_state(TxnState::Running);
        t.message("one");
        let (past, mut rx) = t.subscribe();
        assert_eq!(past, vec![Event { seq: 1, kind: EventKind::Message("one".into()) }]);
        t.task("step", || t.percent("step", 50));
        t.finish(Ok(true));
        assert_eq!(rx.try_recv().unwrap().kind, EventKind::TaskBegin("step".into()));
        assert_eq!(rx.try_recv().unwrap().kind, EventKind::Percent { text: "step".into(), percent: 50 });
        assert_eq!(rx.try_recv().unwrap().kind, EventKind::TaskEnd("step".into()));
        let fin = rx.try_recv().unwrap();
        assert_eq!(fin.seq, 5);
        assert!(matches!(fin.kind, EventKind::Finished(r) if r.success && !r.unchanged));
        assert_eq!(t.events_since(3).len(), 2);
        assert_eq!(t.state(), TxnState::Succeeded);
        // finishing twice keeps the first outcome, and nothing is emitted after the end
        t.finish(Err(&Error::Failed("late".into())));
        t.message("after");
        assert_eq!(t.state(), TxnState::Succeeded);
        assert_eq!(t.events_since(0).len(), 5);
    }

    #[test]
    fn owners_leaving() {
        let t = Transaction::new("2".into(), "t".into(), Caller { sender: ":1.1".into(), ..Default::default() });
        t.add_owner(":1.2");
        assert!(!t.remove_owner(":1.1"));
        assert!(!t.remove_owner(":1.9"), "a stranger leaving changes nothing");
        assert!(t.remove_owner(":1.2"));
    }
}
