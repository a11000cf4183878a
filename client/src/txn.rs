//! Running a transaction from the client: subscribe to its signals, start it, print progress,
//! cancel it on Ctrl-C, and turn its result into an exit code.

use futures_util::StreamExt;
use layerd_interfaces::proxy::TransactionProxy;
use layerd_interfaces::{TransactionResult, BUS_NAME, TRANSACTION_INTERFACE};
use zbus::zvariant::OwnedObjectPath;
use zbus::{Connection, MatchRule, MessageStream};

use crate::connect::api_error;
use crate::EXIT_UNCHANGED;

pub async fn run(conn: &Connection, path: OwnedObjectPath, unchanged_exit_77: bool) -> anyhow::Result<u8> {
    // One ordered stream for all of this transaction's signals, subscribed before Start so no
    // event can be missed.
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(BUS_NAME)?
        .path(path.as_str())?
        .interface(TRANSACTION_INTERFACE)?
        .build();
    let mut events = MessageStream::for_match_rule(rule, conn, Some(64)).await?;
    let txn = TransactionProxy::builder(conn)
        .path(path.clone())?
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    txn.start().await.map_err(api_error)?;

    let mut cancelled = false;
    let result: TransactionResult = loop {
        tokio::select! {
            msg = events.next() => {
                let Some(msg) = msg else { anyhow::bail!("lost the connection to layerd before the transaction finished") };
                let msg = msg?;
                let header = msg.header();
                match header.member().map(|m| m.as_str()) {
                    Some("Message") => {
                        let text: String = msg.body().deserialize()?;
                        println!("{text}");
                    }
                    Some("Finished") => break msg.body().deserialize()?,
                    _ => {}
                }
            }
            _ = tokio::signal::ctrl_c(), if !cancelled => {
                eprintln!("Cancelling...");
                cancelled = true;
                txn.cancel().await.map_err(api_error)?;
            }
        }
    };
    if result.success {
        if result.unchanged {
            println!("No change.");
            return Ok(if unchanged_exit_77 { EXIT_UNCHANGED } else { 0 });
        }
        return Ok(0);
    }
    anyhow::bail!("{}", result.error_message)
}
