//! Transactions: one requested change, its state, its event stream and its result.
//!
//! A transaction is created in state `created` and does nothing until started, so a client can
//! subscribe to its events first and miss none. Every event is also kept in the transaction's
//! history, and [`Transaction::subscribe`] hands a late subscriber that history together with a
//! live receiver, atomically, so even a subscriber that attaches mid-run sees everything.

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
    Created,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl TxnState {
    pub fn as_str(self) -> &'static str {
        match self {
            TxnState::Created => "created",
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

/// What a transaction streams.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A human-readable progress line.
    Message(String),
    /// The final outcome; always the last event.
    Finished(TransactionResult),
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
        Transaction {
            id,
            title,
            caller,
            created_at: SystemTime::now(),
            inner: Mutex::new(Inner { state: TxnState::Created, history: Vec::new(), result: None, finished_at: None }),
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

    pub(crate) fn set_running(&self) {
        self.lock().state = TxnState::Running;
    }

    pub fn result(&self) -> Option<TransactionResult> {
        self.lock().result.clone()
    }

    pub fn finished_at(&self) -> Option<SystemTime> {
        self.lock().finished_at
    }

    /// Record and broadcast an event.
    fn emit(&self, inner: &mut Inner, ev: Event) {
        inner.history.push(ev.clone());
        let _ = self.events.send(ev);
    }

    /// Send a progress line (also logged).
    pub fn message(&self, text: impl Into<String>) {
        let text = text.into();
        log::info!("txn {} ({}): {}", self.id, self.title, text);
        let mut inner = self.lock();
        self.emit(&mut inner, Event::Message(text));
    }

    /// Past events plus a receiver for the rest, taken atomically.
    pub fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let inner = self.lock();
        (inner.history.clone(), self.events.subscribe())
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
        self.emit(&mut inner, Event::Finished(result));
    }

    /// Ask the transaction to stop. A running operation notices through its cancellable and
    /// undoes its partial work; a transaction not started yet is finished as cancelled at once.
    pub fn cancel(&self) {
        self.cancel_requested.store(true, Ordering::SeqCst);
        self.cancellable.cancel();
        if self.state() == TxnState::Created {
            self.finish(Err(&Error::Cancelled));
        }
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
        t.set_running();
        t.message("one");
        let (past, mut rx) = t.subscribe();
        assert_eq!(past, vec![Event::Message("one".into())]);
        t.message("two");
        t.finish(Ok(true));
        assert_eq!(rx.try_recv().unwrap(), Event::Message("two".into()));
        assert!(matches!(rx.try_recv().unwrap(), Event::Finished(r) if r.success && !r.unchanged));
        assert_eq!(t.state(), TxnState::Succeeded);
        // finishing twice keeps the first outcome
        t.finish(Err(&Error::Failed("late".into())));
        assert_eq!(t.state(), TxnState::Succeeded);
    }

    #[test]
    fn cancel_before_start_finishes_cancelled() {
        let t = Transaction::new("2".into(), "test".into(), Caller::default());
        t.cancel();
        assert_eq!(t.state(), TxnState::Cancelled);
        let r = t.result().unwrap();
        assert_eq!(r.error_name, "Cancelled");
        assert!(t.cancellable().is_cancelled());
    }
}
