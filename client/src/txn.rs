//! Running a transaction from the client: subscribe to its events, start it, replay what
//! happened before (a joined transaction may be well under way), show progress, cancel it on
//! Ctrl-C, and turn its result into an exit code.

use std::collections::HashMap;

use futures_util::StreamExt;
use layerd_interfaces::proxy::TransactionProxy;
use layerd_interfaces::{EventData, EventKind, TransactionResult, BUS_NAME, TRANSACTION_INTERFACE};
use zbus::zvariant::{OwnedObjectPath, Value};
use zbus::{Connection, MatchRule, MessageStream};

use crate::connect::api_error;
use crate::progress::Renderer;
use crate::EXIT_UNCHANGED;

pub async fn run(conn: &Connection, path: OwnedObjectPath, wait: bool, unchanged_exit_77: bool) -> anyhow::Result<u8> {
    // Subscribe before Start; events that happened before we subscribed come from Events(0),
    // and the sequence numbers let us drop the overlap.
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(BUS_NAME)?
        .path(path.as_str())?
        .interface(TRANSACTION_INTERFACE)?
        .member("Event")?
        .build();
    let mut signals = MessageStream::for_match_rule(rule, conn, Some(256)).await?;
    // notice the daemon going away (crash, stop) instead of waiting forever
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    let mut owner_changes = dbus.receive_name_owner_changed_with_args(&[(0, BUS_NAME)]).await?;
    let txn = TransactionProxy::builder(conn)
        .path(path.clone())?
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    let mut opts: HashMap<&str, Value<'_>> = HashMap::new();
    if wait {
        opts.insert("wait", Value::from(true));
    }
    txn.start(opts).await.map_err(api_error)?;

    let mut ui = Renderer::new();
    let mut last_seq = 0u64;
    let mut result: Option<TransactionResult> = None;
    for (seq, kind, data) in txn.events(0).await.map_err(api_error)? {
        if let Some(r) = handle(&mut ui, &mut last_seq, seq, &kind, data) {
            result = Some(r);
        }
    }
    let mut cancelled = false;
    while result.is_none() {
        tokio::select! {
            msg = signals.next() => {
                let Some(msg) = msg else { anyhow::bail!("lost the connection to layerd before the transaction finished") };
                let (seq, kind, data): (u64, String, EventData) = msg?.body().deserialize()?;
                result = handle(&mut ui, &mut last_seq, seq, &kind, data);
            }
            change = owner_changes.next() => {
                if let Some(c) = change {
                    if c.args().map(|a| a.new_owner().is_none()).unwrap_or(false) {
                        ui.finish();
                        anyhow::bail!("layerd stopped before the transaction finished; `layerctl status` shows how it ended");
                    }
                }
            }
            _ = tokio::signal::ctrl_c(), if !cancelled => {
                ui.event(&EventKind::Message("Cancelling...".into()));
                cancelled = true;
                txn.cancel().await.map_err(api_error)?;
            }
        }
    }
    ui.finish();
    let result = result.unwrap_or_default();
    if result.success {
        if result.unchanged {
            println!("No change.");
            return Ok(if unchanged_exit_77 { EXIT_UNCHANGED } else { 0 });
        }
        return Ok(0);
    }
    anyhow::bail!("{}", result.error_message)
}

/// Show one event unless already seen; returns the result when it is the last one.
fn handle(ui: &mut Renderer, last_seq: &mut u64, seq: u64, kind: &str, data: EventData) -> Option<TransactionResult> {
    if seq <= *last_seq {
        return None;
    }
    *last_seq = seq;
    match EventKind::from_wire(kind, data) {
        EventKind::Finished(r) => Some(r),
        other => {
            ui.event(&other);
            None
        }
    }
}
