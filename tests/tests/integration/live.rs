//! Issue 10: `install --apply-live` and `apply-live` — the new packages usable at once in the
//! running host, /usr still read-only, local /etc edits kept, replacements refused without the
//! flag, reset back to the booted tree, and the reboot into the staged deployment.

use layerd_tests::fixture::OsSpec;
use layerd_tests::rpmbuild::{Entry, RpmSpec, Script};

use crate::common::*;

fn os_version(h: &layerd_tests::VirtualHost) -> String {
    h.exec_ok(&["sh", "-c", ". /usr/lib/os-release; echo $VERSION_ID"]).unwrap().trim().to_string()
}

#[test]
fn apply_live_adds_now_refuses_replacements_resets_and_reboots() {
    let mut h = booted_host("live");
    let e = h.layerctl(&["apply-live"]).unwrap();
    assert!(!e.status.success());
    assert!(stderr(&e).contains("no staged deployment to apply live"), "{}", stderr(&e));

    let dir = h.dir.join("rpms");
    std::fs::create_dir_all(&dir).unwrap();
    let rpm = RpmSpec::new("livetool", "1")
        .entry(Entry::file("/usr/bin/livetool", "#!/bin/sh\necho live\n", 0o755))
        .entry(Entry::file("/etc/livetool.conf", "packaged\n", 0o644))
        .entry(Entry::file("/etc/livetool.d/extra.conf", "extra\n", 0o644))
        .entry(Entry::file("/usr/lib/tmpfiles.d/livetool.conf", "d /var/lib/livetool 0755 root root -\n", 0o644))
        .script(Script::Post, "echo post-ran > /usr/share/livetool.post")
        .write(&dir)
        .unwrap();
    // a local edit made before the package arrives is kept
    h.exec_ok(&["sh", "-c", "echo local > /etc/livetool.conf"]).unwrap();
    assert!(h.exec(&["livetool"]).unwrap().status.code() != Some(0));

    let out = h.layerctl_ok(&["install", "-A", rpm.to_str().unwrap()]).unwrap();
    assert!(out.contains("Applied live: 1 package added"), "{out}");
    assert!(out.contains("Scriptlets are not run on the live system"), "{out}");
    // usable now, no reboot
    assert_eq!(h.exec_ok(&["livetool"]).unwrap(), "live\n");
    assert_eq!(h.exec_ok(&["/usr/bin/rpm", "--dbpath", "/usr/share/rpm", "-q", "livetool"]).unwrap().trim(), "livetool-1-1.x86_64");
    assert_eq!(h.exec_ok(&["cat", "/etc/livetool.conf"]).unwrap(), "local\n", "local edits win");
    assert_eq!(h.exec_ok(&["cat", "/etc/livetool.d/extra.conf"]).unwrap(), "extra\n");
    assert!(h.exec(&["test", "-d", "/var/lib/livetool"]).unwrap().status.success(), "tmpfiles.d applied");
    // the scriptlet's output is in the staged tree, applied like any file it added
    assert_eq!(h.exec_ok(&["cat", "/usr/share/livetool.post"]).unwrap(), "post-ran\n");
    // /usr stays read-only, for everyone
    let w = h.exec(&["touch", "/usr/bin/intruder"]).unwrap();
    assert!(!w.status.success(), "/usr must stay read-only");
    let s = h.status_json().unwrap();
    let booted = s["deployments"].as_array().unwrap().iter().find(|d| d["booted"] == true).unwrap().clone();
    assert_eq!(booted["live-replaced"], s["deployments"][0]["checksum"], "{s}");
    assert_eq!(booted["live-packages-added"], serde_json::json!(["livetool-1-1.x86_64"]));
    let text = h.layerctl_ok(&["status"]).unwrap();
    assert!(text.contains("LiveDiff: 1 added (livetool-1-1.x86_64)"), "{text}");
    let again = h.layerctl(&["apply-live", "--unchanged-exit-77"]).unwrap();
    assert_eq!(again.status.code(), Some(77), "{}{}", stdout(&again), stderr(&again));
    // a second package on top of the first live one
    let second = RpmSpec::new("livetool2", "1").entry(Entry::file("/usr/bin/livetool2", "#!/bin/sh\necho live2\n", 0o755)).write(&dir).unwrap();
    h.layerctl_ok(&["install", "--apply-live", second.to_str().unwrap()]).unwrap();
    assert_eq!(h.exec_ok(&["livetool2"]).unwrap(), "live2\n");
    assert_eq!(h.exec_ok(&["livetool"]).unwrap(), "live\n");
    // dropping it again changes what runs: refused live unless allowed
    let e = h.layerctl(&["uninstall", "-A", "livetool2"]).unwrap();
    assert!(stderr(&e).contains("/usr/bin/livetool2") && stderr(&e).contains("--allow-replacement"), "{}", stderr(&e));
    h.layerctl_ok(&["apply-live", "--allow-replacement"]).unwrap();
    assert!(!h.exec(&["livetool2"]).unwrap().status.success(), "removed live");

    // a new base changes running packages: refused live unless allowed
    h.publish(&OsSpec::new("2.0")).unwrap();
    h.layerctl_ok(&["upgrade"]).unwrap();
    let e = h.layerctl(&["apply-live"]).unwrap();
    assert!(!e.status.success());
    assert!(
        stderr(&e).contains("packages would be changed or removed: fixture-release-1.0-1.x86_64 -> fixture-release-2.0-1.x86_64")
            && stderr(&e).contains("--allow-replacement"),
        "{}",
        stderr(&e)
    );
    assert_eq!(os_version(&h), "1.0");
    h.layerctl_ok(&["apply-live", "--allow-replacement"]).unwrap();
    assert_eq!(os_version(&h), "2.0", "applied live");
    assert_eq!(h.exec_ok(&["livetool"]).unwrap(), "live\n");

    // reset: the booted tree again
    h.layerctl_ok(&["apply-live", "--reset"]).unwrap();
    assert_eq!(os_version(&h), "1.0");
    assert!(!h.exec(&["livetool"]).unwrap().status.success());
    assert!(!h.layerctl_ok(&["status"]).unwrap().contains("LiveDiff"));

    // the reboot boots the staged deployment, which has the same packages
    h.reboot().unwrap();
    assert_eq!(os_version(&h), "2.0");
    assert_eq!(h.exec_ok(&["livetool"]).unwrap(), "live\n");
    assert!(!h.layerctl_ok(&["status"]).unwrap().contains("LiveDiff"));
}

/// The mounts on /usr in the running host, as `mountinfo` shows them (source and type).
fn usr_mounts(h: &layerd_tests::VirtualHost) -> Vec<String> {
    h.exec_ok(&["cat", "/proc/1/mountinfo"])
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().nth(4) == Some("/usr"))
        .map(|l| l.split(" - ").nth(1).unwrap_or_default().split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

fn live_layers(h: &layerd_tests::VirtualHost) -> String {
    h.exec_ok(&["sh", "-c", "ls -A /run/layerd/live 2>/dev/null | grep '^layer-' || true"]).unwrap()
}

#[test]
fn apply_live_failures_leave_the_running_system_as_it_was() {
    let h = booted_host("live-fail");
    let dir = h.dir.join("rpms");
    std::fs::create_dir_all(&dir).unwrap();
    let rpm = RpmSpec::new("midtool", "1").entry(Entry::file("/usr/bin/midtool", "#!/bin/sh\necho mid\n", 0o755)).write(&dir).unwrap();
    let mounts = usr_mounts(&h);

    // the apply fails after its layer is complete, just before the overlay would be mounted
    // (the place for the bind mount of the original /usr is taken by a file)
    h.exec_ok(&["sh", "-c", "mkdir -p /run/layerd/live && : > /run/layerd/live/base"]).unwrap();
    let e = h.layerctl(&["install", "--apply-live", rpm.to_str().unwrap()]).unwrap();
    assert!(!e.status.success(), "{}", stdout(&e));
    assert!(stderr(&e).contains("/run/layerd/live/base"), "the error names the problem: {}", stderr(&e));
    // the running system: as it was
    assert!(!h.exec(&["midtool"]).unwrap().status.success(), "nothing of the package is visible");
    assert_eq!(usr_mounts(&h), mounts, "no mount left behind");
    assert_eq!(live_layers(&h), "", "no half-made layer left behind");
    assert!(!h.exec(&["test", "-e", "/run/layerd/live.json"]).unwrap().status.success());
    assert!(!h.layerctl_ok(&["status"]).unwrap().contains("LiveDiff"));
    // the staged deployment is there, and applying it works once the obstacle is gone
    assert_eq!(h.status_json().unwrap()["deployments"][0]["requested-local-packages"][0], "midtool-1-1.x86_64");
    h.exec_ok(&["rm", "/run/layerd/live/base"]).unwrap();
    h.layerctl_ok(&["apply-live"]).unwrap();
    assert_eq!(h.exec_ok(&["midtool"]).unwrap(), "mid\n");
    assert_eq!(usr_mounts(&h).len(), mounts.len() + 1, "one live overlay");

    // somebody else's mount on top of the live overlay: reset refuses and takes nothing away
    // (the booted /usr bound over it: not a live layer)
    h.exec_ok(&["mount", "--bind", "/run/layerd/live/base", "/usr"]).unwrap();
    let e = h.layerctl(&["apply-live", "--reset"]).unwrap();
    assert!(!e.status.success());
    assert!(stderr(&e).contains("another mount sits on /usr"), "{}", stderr(&e));
    assert!(h.layerctl_ok(&["status"]).unwrap().contains("LiveDiff: 1 added"));
    assert_ne!(live_layers(&h), "", "the layer under the mounted overlay is kept");
    // once it is gone, the live files are there as before, and reset works
    h.exec_ok(&["umount", "--lazy", "/usr"]).unwrap();
    assert_eq!(h.exec_ok(&["midtool"]).unwrap(), "mid\n", "the live files are still there");
    h.layerctl_ok(&["apply-live", "--reset"]).unwrap();
    assert!(!h.exec(&["midtool"]).unwrap().status.success());
    assert_eq!(usr_mounts(&h), mounts, "back to the booted mounts");
    assert_eq!(live_layers(&h), "");
}
