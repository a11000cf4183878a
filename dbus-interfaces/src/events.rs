//! Transaction events and their wire form.
//!
//! On D-Bus every event is one `Event(t seq, s kind, a{sv} data)` signal, and the same triple
//! comes back from `Events(since)` for replay. One generic signal keeps the interface stable as
//! kinds are added; clients ignore kinds they do not know.

use zbus::zvariant::{DeserializeDict, SerializeDict, Type};

use crate::TransactionResult;

/// Download progress: bytes and items (packages, layers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub text: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub items_done: u64,
    pub items_total: u64,
}

/// What a transaction streams.
#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// A human-readable progress line. Data: `text`.
    Message(String),
    /// A named step starts. Data: `task`.
    TaskBegin(String),
    /// A named step ended. Data: `task`.
    TaskEnd(String),
    /// Completion of the current step. Data: `text`, `percent` (u, 0..=100).
    Percent { text: String, percent: u32 },
    /// Download progress. Data: `text`, `bytes-done`, `bytes-total`, `items-done`, `items-total` (t).
    Progress(Progress),
    /// The outcome; always the last event. Data: `success`, `unchanged` (b), `error-name`,
    /// `error-message` (s).
    Finished(TransactionResult),
    /// A kind this client does not know.
    Unknown(String),
}

/// The data dictionary of an event (`a{sv}`); which keys are set depends on the kind.
#[derive(Clone, Debug, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zvariant(signature = "a{sv}", rename_all = "kebab-case")]
pub struct EventData {
    pub text: Option<String>,
    pub task: Option<String>,
    pub percent: Option<u32>,
    pub bytes_done: Option<u64>,
    pub bytes_total: Option<u64>,
    pub items_done: Option<u64>,
    pub items_total: Option<u64>,
    pub success: Option<bool>,
    pub unchanged: Option<bool>,
    pub error_name: Option<String>,
    pub error_message: Option<String>,
}

impl EventKind {
    /// Short name used on the wire.
    pub fn name(&self) -> &str {
        match self {
            EventKind::Message(_) => "message",
            EventKind::TaskBegin(_) => "task-begin",
            EventKind::TaskEnd(_) => "task-end",
            EventKind::Percent { .. } => "percent",
            EventKind::Progress(_) => "progress",
            EventKind::Finished(_) => "finished",
            EventKind::Unknown(k) => k,
        }
    }

    pub fn to_wire(&self) -> (String, EventData) {
        let mut d = EventData::default();
        match self {
            EventKind::Message(t) => d.text = Some(t.clone()),
            EventKind::TaskBegin(t) | EventKind::TaskEnd(t) => d.task = Some(t.clone()),
            EventKind::Percent { text, percent } => {
                d.text = Some(text.clone());
                d.percent = Some(*percent);
            }
            EventKind::Progress(p) => {
                d.text = Some(p.text.clone());
                d.bytes_done = Some(p.bytes_done);
                d.bytes_total = Some(p.bytes_total);
                d.items_done = Some(p.items_done);
                d.items_total = Some(p.items_total);
            }
            EventKind::Finished(r) => {
                d.success = Some(r.success);
                d.unchanged = Some(r.unchanged);
                d.error_name = Some(r.error_name.clone());
                d.error_message = Some(r.error_message.clone());
            }
            EventKind::Unknown(_) => {}
        }
        (self.name().to_string(), d)
    }

    pub fn from_wire(kind: &str, d: EventData) -> Self {
        let s = |o: Option<String>| o.unwrap_or_default();
        match kind {
            "message" => EventKind::Message(s(d.text)),
            "task-begin" => EventKind::TaskBegin(s(d.task)),
            "task-end" => EventKind::TaskEnd(s(d.task)),
            "percent" => EventKind::Percent { text: s(d.text), percent: d.percent.unwrap_or(0) },
            "progress" => EventKind::Progress(Progress {
                text: s(d.text),
                bytes_done: d.bytes_done.unwrap_or(0),
                bytes_total: d.bytes_total.unwrap_or(0),
                items_done: d.items_done.unwrap_or(0),
                items_total: d.items_total.unwrap_or(0),
            }),
            "finished" => EventKind::Finished(TransactionResult {
                success: d.success.unwrap_or(false),
                unchanged: d.unchanged.unwrap_or(false),
                error_name: s(d.error_name),
                error_message: s(d.error_message),
            }),
            other => EventKind::Unknown(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let kinds = [
            EventKind::Message("hi".into()),
            EventKind::TaskBegin("t".into()),
            EventKind::TaskEnd("t".into()),
            EventKind::Percent { text: "x".into(), percent: 42 },
            EventKind::Progress(Progress { text: "dl".into(), bytes_done: 1, bytes_total: 2, items_done: 3, items_total: 4 }),
            EventKind::Finished(TransactionResult { success: false, unchanged: false, error_name: "Busy".into(), error_message: "m".into() }),
        ];
        for k in kinds {
            let (name, data) = k.to_wire();
            assert_eq!(EventKind::from_wire(&name, data), k);
        }
        assert_eq!(EventKind::from_wire("future-kind", EventData::default()), EventKind::Unknown("future-kind".into()));
    }
}
