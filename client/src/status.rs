//! `layerctl status`: human layout (rpm-ostree's) and rpm-ostree-compatible JSON.

use std::fmt::Write as _;

use layerd_interfaces::{json, Deployment, LastTransaction, TransactionInfo};
use zbus::Connection;

use crate::connect::{daemon, zbus_error};
use crate::timefmt::rfc3339;
use crate::EXIT_UNCHANGED;

pub struct Mode {
    pub json: bool,
    pub booted: bool,
    pub verbose: bool,
    pub pending_exit_77: bool,
}

pub async fn run(conn: &Connection, mode: Mode) -> anyhow::Result<u8> {
    let d = daemon(conn).await?;
    let deployments = d.deployments().await.map_err(zbus_error)?;
    let txns = d.transactions().await.map_err(zbus_error)?;
    let last = d.last_transaction().await.map_err(zbus_error)?;
    let anchor = deployments.iter().position(|d| d.booted).unwrap_or(0);
    let shown: Vec<Deployment> = if mode.booted {
        deployments.get(anchor).cloned().into_iter().collect()
    } else {
        deployments.clone()
    };
    let running = txns.iter().find(|t| t.state == "running");
    if mode.json {
        let doc = json::status(&shown, running);
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", render(&shown, &txns, &last, mode.verbose));
    }
    let pending = deployments.iter().position(|d| d.booted).is_some_and(|b| b > 0);
    Ok(if mode.pending_exit_77 && pending { EXIT_UNCHANGED } else { 0 })
}

/// The human layout: a state line, then each deployment with right-aligned labels.
pub fn render(deployments: &[Deployment], txns: &[TransactionInfo], last: &LastTransaction, verbose: bool) -> String {
    let mut out = String::new();
    match txns.iter().find(|t| t.state == "running") {
        Some(t) => {
            let _ = writeln!(out, "State: busy");
            let _ = writeln!(out, "Transaction: {} (started by {}){}", t.title, t.client, if verbose { format!(" id {}", t.id) } else { String::new() });
        }
        None => {
            let _ = writeln!(out, "State: idle");
        }
    }
    for t in txns.iter().filter(|t| t.state == "queued") {
        let _ = writeln!(out, "Queued: {} (started by {}){}", t.title, t.client, if verbose { format!(" id {}", t.id) } else { String::new() });
    }
    // a failed or cancelled last transaction stays visible until the next one ends
    if !last.state.is_empty() && last.state != "succeeded" {
        let _ = writeln!(
            out,
            "LastTransaction: {} {} ({}) — {}",
            last.title,
            last.state,
            rfc3339(last.time),
            last.error_message
        );
    }
    let _ = writeln!(out, "Deployments:");
    for (i, d) in deployments.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let marker = if d.booted { '●' } else { ' ' };
        let origin = d.origin_description().unwrap_or("(no origin)");
        let _ = writeln!(out, "{marker} {origin}");
        let mut field = |label: &str, value: &str| {
            let _ = writeln!(out, "{label:>25}: {value}");
        };
        if let Some(digest) = &d.container_image_reference_digest {
            field("Digest", digest);
        }
        let version = match &d.version {
            Some(v) => format!("{v} ({})", rfc3339(d.timestamp)),
            None => rfc3339(d.timestamp),
        };
        match &d.base_checksum {
            Some(base) => {
                if let Some(bv) = &d.base_version {
                    field("BaseVersion", &format!("{bv} ({})", d.base_timestamp.map(rfc3339).unwrap_or_default()));
                }
                field("BaseCommit", base);
                field("Commit", &d.checksum);
            }
            None => {
                field("Version", &version);
                field("Commit", &d.checksum);
            }
        }
        if d.staged {
            field("Staged", "yes");
        }
        if d.finalization_locked {
            field("Finalization", "locked (run `layerctl finalize-deployment` to apply it at reboot)");
        }
        if d.pinned {
            field("Pinned", "yes");
        }
        if d.unlocked != "none" && !d.unlocked.is_empty() {
            field("Unlocked", &d.unlocked);
        }
        if !d.requested_base_removals.is_empty() {
            // what is removed, then requests this base makes pointless
            let mut shown = d.base_removals.clone();
            for name in &d.requested_base_removals {
                if !d.base_removals.iter().any(|n| name_of(n) == name) {
                    shown.push(format!("{name} (inactive)"));
                }
            }
            field("RemovedBasePackages", &shown.join(" "));
        }
        if !d.requested_base_local_replacements.is_empty() {
            let mut shown: Vec<String> = d.base_local_replacements.iter().map(|(new, old)| format!("{old} -> {new}")).collect();
            for nevra in &d.requested_base_local_replacements {
                if !d.base_local_replacements.iter().any(|(n, _)| n == nevra) {
                    shown.push(format!("{nevra} (inactive)"));
                }
            }
            field("ReplacedBasePackages", &shown.join(", "));
        }
        if d.live_replaced.is_some() {
            let mut text = format!("{} added", d.live_packages_added.len());
            if !d.live_packages_replaced.is_empty() {
                text.push_str(&format!(", {} changed or removed", d.live_packages_replaced.len()));
            }
            if !d.live_packages_added.is_empty() {
                text.push_str(&format!(" ({})", d.live_packages_added.join(" ")));
            }
            field("LiveDiff", &text);
        }
        if !d.requested_packages.is_empty() {
            field("LayeredPackages", &d.requested_packages.join(" "));
        }
        if !d.requested_local_packages.is_empty() {
            field("LocalPackages", &d.requested_local_packages.join(" "));
        }
        if verbose {
            field("Id", &d.id);
            field("StateRoot", &d.osname);
            field("Timestamp", &rfc3339(d.timestamp));
            if !d.kernel_arguments.is_empty() {
                field("KernelArguments", &d.kernel_arguments.join(" "));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_marks_booted_staged_pinned() {
        let a = Deployment {
            id: "f-b.0".into(),
            checksum: "bbbb".into(),
            version: Some("2.0".into()),
            origin: Some("fixture:ref".into()),
            staged: true,
            unlocked: "none".into(),
            ..Default::default()
        };
        let b = Deployment {
            id: "f-a.0".into(),
            checksum: "aaaa".into(),
            version: Some("1.0".into()),
            origin: Some("fixture:ref".into()),
            booted: true,
            pinned: true,
            unlocked: "none".into(),
            ..Default::default()
        };
        let s = render(&[a, b], &[], &LastTransaction::default(), false);
        assert!(s.starts_with("State: idle\nDeployments:\n  fixture:ref\n"), "{s}");
        assert!(s.contains("\n● fixture:ref\n"), "{s}");
        assert!(s.contains("Staged: yes"));
        assert!(s.contains("Pinned: yes"));
        assert!(s.contains("Version: 2.0 (1970-01-01T00:00:00Z)"));
    }
}

/// `name` of a `name-[epoch:]version-release.arch` string.
fn name_of(nevra: &str) -> &str {
    let mut it = nevra.rsplitn(3, '-');
    let _release_arch = it.next();
    let _version = it.next();
    it.next().unwrap_or(nevra)
}
