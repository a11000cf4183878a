//! A private, system-bus-like `dbus-daemon` for one virtual host.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::command;

pub struct Bus {
    child: Child,
    /// Directory holding `system_bus_socket` (bound at `/run/dbus` inside the host).
    pub socket_dir: PathBuf,
    /// Extra policy files (`system.d`), e.g. layerd's own policy.
    pub policy_dir: PathBuf,
}

impl Bus {
    /// Start `dbus-daemon` with a `<type>system</type>` configuration; returns once its socket
    /// accepts connections.
    pub fn start(dir: &Path) -> Result<Bus> {
        let socket_dir = dir.join("dbus");
        let policy_dir = dir.join("dbus-system.d");
        let service_dir = dir.join("dbus-services");
        for d in [&socket_dir, &policy_dir, &service_dir] {
            fs::create_dir_all(d)?;
        }
        let socket = socket_dir.join("system_bus_socket");
        let config = dir.join("dbus-system.conf");
        fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{services}</servicedir>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
  <includedir>{policies}</includedir>
</busconfig>
"#,
                socket = socket.display(),
                services = service_dir.display(),
                policies = policy_dir.display(),
            ),
        )?;
        let log = fs::File::create(dir.join("dbus-daemon.log"))?;
        let child = command("dbus-daemon", ["--nofork", "--nopidfile"])
            .arg(format!("--config-file={}", config.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dbus-daemon")?;
        let mut bus = Bus { child, socket_dir, policy_dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Some(status) = bus.child.try_wait()? {
                bail!("dbus-daemon exited ({status}); see {}", dir.join("dbus-daemon.log").display());
            }
            if Instant::now() > deadline {
                bail!("dbus-daemon did not open {}", socket.display());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(bus)
    }

    /// The address clients outside the host use (`DBUS_SYSTEM_BUS_ADDRESS`).
    pub fn address(&self) -> String {
        format!("unix:path={}", self.socket_dir.join("system_bus_socket").display())
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
