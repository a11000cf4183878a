//! Reaching layerd, with messages that say what to do when it cannot be reached.

use anyhow::{anyhow, Context};
use layerd_interfaces::proxy::Layerd1Proxy;
use layerd_interfaces::Error as ApiError;
use zbus::proxy::CacheProperties;
use zbus::Connection;

pub async fn system_bus() -> anyhow::Result<Connection> {
    let addr = std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
        .unwrap_or_else(|_| "unix:path=/run/dbus/system_bus_socket".into());
    Connection::system()
        .await
        .with_context(|| format!("cannot connect to the system bus at {addr}"))
}

/// A proxy for the daemon that reads properties directly (no cache, no GetAll at build).
pub async fn daemon(conn: &Connection) -> anyhow::Result<Layerd1Proxy<'static>> {
    Ok(Layerd1Proxy::builder(conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await?)
}

/// Turn a D-Bus error into a message for humans; unreachable-daemon and permission errors get
/// a hint.
pub fn api_error(e: ApiError) -> anyhow::Error {
    match e {
        ApiError::ZBus(z) => zbus_error(z),
        ApiError::AccessDenied(m) => anyhow!("permission denied: {m} (run as root, or ask for a polkit grant)"),
        other => anyhow!("{}", other.message()),
    }
}

pub fn zbus_error(e: zbus::Error) -> anyhow::Error {
    if let zbus::Error::MethodError(name, msg, _) = &e {
        let msg = msg.clone().unwrap_or_default();
        match name.as_str() {
            "org.freedesktop.DBus.Error.ServiceUnknown" | "org.freedesktop.DBus.Error.NameHasNoOwner" => {
                return anyhow!(
                    "layerd is not running and could not be started on the system bus ({msg}); \
                     check `systemctl status layerd`"
                )
            }
            "org.freedesktop.DBus.Error.AccessDenied" => {
                return anyhow!("permission denied by the bus policy: {msg} (run as root)")
            }
            _ => {
                if let Some(short) = name.as_str().strip_prefix("org.layerd.Layerd1.Error.") {
                    return anyhow!("{msg} ({short})");
                }
            }
        }
    }
    if let zbus::Error::FDO(f) = &e {
        if let zbus::fdo::Error::ServiceUnknown(m) | zbus::fdo::Error::NameHasNoOwner(m) = &**f {
            return anyhow!(
                "layerd is not running and could not be started on the system bus ({m}); \
                 check `systemctl status layerd`"
            );
        }
        if let zbus::fdo::Error::AccessDenied(m) = &**f {
            return anyhow!("permission denied by the bus policy: {m} (run as root)");
        }
        if let zbus::fdo::Error::Failed(m) = &**f {
            return anyhow!("{m}");
        }
    }
    anyhow!(e)
}
