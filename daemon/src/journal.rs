//! The transaction journal: what was running when layerd stopped, and how the last
//! transaction ended.
//!
//! `running.json` is written (atomically) when a transaction starts and removed when it ends,
//! so finding it at start-up means layerd was killed mid-transaction: the next start cleans up
//! the leftovers and records the interrupted transaction as failed in `last.json`, which status
//! shows.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One journal record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub title: String,
    pub client: String,
    /// `running`, `succeeded`, `failed`, `cancelled`.
    pub state: String,
    #[serde(default)]
    pub error_message: String,
    /// Seconds since the epoch of the last change of this record.
    pub time: u64,
}

pub struct Journal {
    dir: PathBuf,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Journal {
    pub fn new(dir: &Path) -> Self {
        Journal { dir: dir.to_path_buf() }
    }

    fn write(&self, name: &str, rec: &Record) -> std::io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(rec)?)?;
        f.sync_all()?;
        fs::rename(&tmp, self.dir.join(name))?;
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn read(&self, name: &str) -> Option<Record> {
        let text = fs::read(self.dir.join(name)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// A transaction starts changing the system.
    pub fn begin(&self, id: &str, title: &str, client: &str) {
        let rec = Record { id: id.into(), title: title.into(), client: client.into(), state: "running".into(), error_message: String::new(), time: now() };
        if let Err(e) = self.write("running.json", &rec) {
            log::warn!("transaction journal {}: {e}", self.dir.display());
        }
    }

    /// It ended: record the outcome as the last transaction.
    pub fn end(&self, id: &str, title: &str, client: &str, state: &str, error_message: &str) {
        let rec = Record { id: id.into(), title: title.into(), client: client.into(), state: state.into(), error_message: error_message.into(), time: now() };
        if let Err(e) = self.write("last.json", &rec) {
            log::warn!("transaction journal {}: {e}", self.dir.display());
        }
        let _ = fs::remove_file(self.dir.join("running.json"));
    }

    /// Drop `running.json` (its transaction is already recorded in `last.json`).
    pub fn forget_running(&self) {
        let _ = fs::remove_file(self.dir.join("running.json"));
    }

    /// The transaction that was running when layerd last stopped, if it never ended.
    pub fn interrupted(&self) -> Option<Record> {
        self.read("running.json")
    }

    /// Record an interrupted transaction as failed and forget it.
    pub fn record_interrupted(&self, rec: &Record) {
        self.end(
            &rec.id,
            &rec.title,
            &rec.client,
            "failed",
            "interrupted: layerd stopped while it ran; its leftovers were removed",
        );
    }

    /// How the last transaction ended.
    pub fn last(&self) -> Option<Record> {
        self.read("last.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupted_then_recorded() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::new(d.path());
        assert!(j.interrupted().is_none());
        j.begin("1_1", "rollback", "agent");
        let r = j.interrupted().unwrap();
        assert_eq!(r.title, "rollback");
        j.record_interrupted(&r);
        assert!(j.interrupted().is_none());
        let last = j.last().unwrap();
        assert_eq!(last.state, "failed");
        assert!(last.error_message.starts_with("interrupted"));
    }
}
