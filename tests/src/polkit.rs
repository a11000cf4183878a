//! A real `polkitd` on a virtual host's private system bus, with layerd's shipped actions
//! (`systemd/org.layerd.Layerd1.policy`) and rules the test writes. polkitd reads actions and
//! rules only from fixed system paths, so it runs in its own mount namespace with test
//! directories bound over them (the machine's own polkit configuration is never touched).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::command;

pub struct Polkitd {
    child: Child,
    /// Rules directory (JavaScript `*.rules`), picked up live by polkitd.
    pub rules: PathBuf,
}

/// Where Debian and Fedora install the daemon.
const POLKITD: &str = "/usr/lib/polkit-1/polkitd";

impl Polkitd {
    /// Start polkitd on the bus at `address`; returns once it owns org.freedesktop.PolicyKit1.
    pub fn start(dir: &Path, address: &str) -> Result<Polkitd> {
        let actions = dir.join("polkit-actions");
        let rules = dir.join("polkit-rules");
        let empty = dir.join("polkit-empty");
        for d in [&actions, &rules, &empty] {
            fs::create_dir_all(d)?;
            fs::set_permissions(d, fs::Permissions::from_mode(0o755))?;
        }
        let policy = crate::workspace_dir().join("systemd/org.layerd.Layerd1.policy");
        fs::copy(&policy, actions.join("org.layerd.Layerd1.policy")).with_context(|| format!("copying {}", policy.display()))?;
        fs::set_permissions(actions.join("org.layerd.Layerd1.policy"), fs::Permissions::from_mode(0o644))?;
        let script = format!(
            "set -e; mount --bind {a} /usr/share/polkit-1/actions; mount --bind {r} /etc/polkit-1/rules.d; \
             mount --bind {e} /usr/share/polkit-1/rules.d; exec {POLKITD} --no-debug",
            a = actions.display(),
            r = rules.display(),
            e = empty.display()
        );
        let log = fs::File::create(dir.join("polkitd.log"))?;
        let child = command("unshare", ["--mount", "--propagation", "private", "sh", "-c", &script])
            .env("DBUS_SYSTEM_BUS_ADDRESS", address)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting polkitd")?;
        let mut p = Polkitd { child, rules };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = std::process::Command::new("busctl").args(["--address", address, "status", "org.freedesktop.PolicyKit1"]).output()?;
            if out.status.success() {
                break;
            }
            if let Some(st) = p.child.try_wait()? {
                bail!("polkitd exited ({st}); see {}", dir.join("polkitd.log").display());
            }
            if Instant::now() > deadline {
                bail!("polkitd did not appear on the bus; see {}", dir.join("polkitd.log").display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(p)
    }

    /// Add a rule file (JavaScript); polkitd reloads its rules when the directory changes.
    pub fn add_rule(&self, name: &str, js: &str) -> Result<()> {
        let f = self.rules.join(name);
        fs::write(&f, js)?;
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644))?;
        // polkitd notices changes with inotify; give it a moment to re-read
        std::thread::sleep(Duration::from_millis(500));
        Ok(())
    }
}

impl Drop for Polkitd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
