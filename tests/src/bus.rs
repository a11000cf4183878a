//! A private, system-bus-like `dbus-daemon` for one virtual host.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::command;

/// The test default: anyone may do anything (most tests are about layerd, not bus policy).
const OPEN_POLICY: &str = r#"  <policy context="default">
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
"#;

/// What a distribution's system bus allows by default (cf. dbus's system.conf).
const SYSTEM_POLICY: &str = r#"  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.PolicyKit1"/>
  </policy>
  <policy user="root">
    <allow own="*"/>
    <allow send_type="method_call"/>
  </policy>
  <policy user="polkitd">
    <allow own="org.freedesktop.PolicyKit1"/>
  </policy>
"#;

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
        Self::start_with(dir, "dbus", OPEN_POLICY)
    }

    /// A bus with the policy of a real system bus (method calls denied unless a policy file
    /// allows them; root may do anything; polkitd may own its name) and layerd's shipped bus
    /// policy (`systemd/org.layerd.Layerd1.conf`) with its `layerd` group set to `group`. For the
    /// authorization tests. Lives in `dir/<sub>`.
    pub fn start_system_like(dir: &Path, sub: &str, group: &str) -> Result<Bus> {
        let bus = Self::start_with(&dir.join(sub), "dbus", SYSTEM_POLICY)?;
        let shipped = fs::read_to_string(crate::workspace_dir().join("systemd/org.layerd.Layerd1.conf"))?;
        fs::write(bus.policy_dir.join("org.layerd.Layerd1.conf"), shipped.replace(r#"group="layerd""#, &format!(r#"group="{group}""#)))?;
        bus.reload()?;
        Ok(bus)
    }

    /// Make dbus-daemon re-read its configuration (policy files added after start).
    pub fn reload(&self) -> Result<()> {
        let out = std::process::Command::new("busctl")
            .args(["--address", &self.address(), "call", "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "ReloadConfig"])
            .output()?;
        if !out.status.success() {
            bail!("reloading the bus configuration: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    fn start_with(dir: &Path, socket_sub: &str, policy: &str) -> Result<Bus> {
        fs::create_dir_all(dir)?;
        let socket_dir = dir.join(socket_sub);
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
{policy}  <includedir>{policies}</includedir>
</busconfig>
"#,
                socket = socket.display(),
                services = service_dir.display(),
                policies = policy_dir.display(),
                policy = policy,
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
