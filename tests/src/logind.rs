//! A stand-in for systemd-logind on a virtual host's private bus: logind cannot run without
//! systemd, and layerd only needs two of its calls — `ListInhibitors` (to respect block
//! inhibitors) and `Reboot`. Tests set the inhibitors and read which reboots were asked for.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

/// `(what, who, why, mode, uid, pid)`, as logind lists inhibitors.
pub type Inhibitor = (String, String, String, String, u32, u32);

#[derive(Default)]
struct State {
    inhibitors: Vec<Inhibitor>,
    reboots: Vec<bool>,
}

struct Manager(Arc<Mutex<State>>);

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl Manager {
    fn list_inhibitors(&self) -> Vec<Inhibitor> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).inhibitors.clone()
    }

    fn reboot(&self, interactive: bool) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).reboots.push(interactive);
    }
}

/// The stand-in, serving `org.freedesktop.login1` until dropped.
pub struct Logind {
    state: Arc<Mutex<State>>,
    _conn: zbus::Connection,
    /// Runs the connection's tasks.
    _rt: tokio::runtime::Runtime,
}

impl Logind {
    /// Serve on the bus at `address` (a virtual host's `bus.address()`).
    pub fn serve(address: &str) -> Result<Logind> {
        let state = Arc::new(Mutex::new(State::default()));
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let conn = rt.block_on(async {
            zbus::connection::Builder::address(address)
                .context("bus address")?
                .serve_at("/org/freedesktop/login1", Manager(state.clone()))?
                .name("org.freedesktop.login1")?
                .build()
                .await
                .context("serving org.freedesktop.login1")
        })?;
        Ok(Logind { state, _conn: conn, _rt: rt })
    }

    /// Hold (or with `None`, release) a block inhibitor on shutdown.
    pub fn block_shutdown(&self, who_why: Option<(&str, &str)>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.inhibitors.clear();
        // a delay inhibitor never blocks
        s.inhibitors.push(("shutdown".into(), "delayer".into(), "saving state".into(), "delay".into(), 0, 1));
        if let Some((who, why)) = who_why {
            s.inhibitors.push(("sleep:shutdown".into(), who.into(), why.into(), "block".into(), 0, 42));
        }
    }

    /// The `interactive` argument of every `Reboot` call so far.
    pub fn reboots(&self) -> Vec<bool> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).reboots.clone()
    }
}
