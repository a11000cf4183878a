//! Issue 8 (authorization): a system-like bus with layerd's shipped bus policy, a real polkitd
//! with layerd's shipped actions; non-root callers read freely, are stopped by the bus when
//! they are not in the layerd group, and are decided by polkit when they are.

use std::process::{Command, Output};

use layerd_tests::VirtualHost;

use crate::common::*;

/// `layerctl` as uid/gid (no supplementary groups).
fn layerctl_as(h: &VirtualHost, uid: u32, gid: u32, args: &[&str]) -> Output {
    let mut c = Command::new("setpriv");
    c.args([format!("--reuid={uid}"), format!("--regid={gid}"), "--clear-groups".into(), "--".into()])
        .arg(layerd_tests::bin_dir().join("layerctl"))
        .args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", h.bus.address())
        .env_remove("RPMOSTREE_CLIENT_ID");
    c.output().unwrap()
}

/// The name of gid 65534 (nobody's group: `nogroup` on Debian, `nobody` on Fedora).
fn nobody_group() -> String {
    let out = Command::new("getent").args(["group", "65534"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split(':').next().unwrap_or("nogroup").to_string()
}

#[test]
fn polkit_decides_for_group_members_and_the_bus_stops_everyone_else() {
    let mut h = new_host("polkit");
    // layerd's bus policy lets its group through; here the group is gid 65534 (nobody's)
    h.use_system_like_bus("65534").unwrap();
    h.boot().unwrap();
    h.start_layerd().unwrap();
    traversable(&h.bus.socket_dir.join("system_bus_socket"));
    let before = h.ostree_admin_status().unwrap();

    // anyone may read
    for (uid, gid) in [(1, 1), (65534, 65534)] {
        let o = layerctl_as(&h, uid, gid, &["status", "--json"]);
        assert!(o.status.success(), "uid {uid}: {}", stderr(&o));
        assert!(stdout(&o).contains("\"booted\": true") || stdout(&o).contains("\"booted\":true"), "{}", stdout(&o));
    }
    // not in the group: the bus itself refuses the call (no polkit running at all)
    let o = layerctl_as(&h, 1, 1, &["kargs", "--append", "x=1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("AccessDenied") || stderr(&o).contains("Rejected send message"), "{}", stderr(&o));
    // in the group but polkit absent: layerd refuses, naming the action
    let o = layerctl_as(&h, 65534, 65534, &["kargs", "--append", "x=1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("org.layerd.Layerd1.kernel-args") && stderr(&o).contains("polkit is not available"), "{}", stderr(&o));
    assert_eq!(h.ostree_admin_status().unwrap(), before);

    // a real polkitd with layerd's actions: without a rule, a non-root caller without a
    // session is refused
    let polkit = layerd_tests::polkit::Polkitd::start(&h.dir, &h.bus.address()).unwrap();
    let o = layerctl_as(&h, 65534, 65534, &["kargs", "--append", "x=1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not authorized") && stderr(&o).contains("org.layerd.Layerd1.kernel-args"), "{}", stderr(&o));
    let o = layerctl_as(&h, 65534, 65534, &["install", "nothing-here"]);
    assert!(stderr(&o).contains("org.layerd.Layerd1.install-uninstall-packages"), "{}", stderr(&o));
    assert_eq!(h.ostree_admin_status().unwrap(), before);

    // a rule granting the group: its member may install packages and change kernel arguments
    // (and only that)
    let group = nobody_group();
    polkit
        .add_rule(
            "50-layerd-test.rules",
            &format!(
                "polkit.addRule(function(action, subject) {{\n  if ((action.id == \"org.layerd.Layerd1.kernel-args\" || action.id == \"org.layerd.Layerd1.install-uninstall-packages\") && subject.isInGroup(\"{group}\"))\n    return polkit.Result.YES;\n}});\n"
            ),
        )
        .unwrap();
    let rpms = h.dir.join("user-rpms");
    std::fs::create_dir_all(&rpms).unwrap();
    let rpm = layerd_tests::rpmbuild::RpmSpec::new("usertool", "1")
        .entry(layerd_tests::rpmbuild::Entry::file("/usr/bin/usertool", "#!/bin/sh\necho usertool\n", 0o755))
        .write(&rpms)
        .unwrap();
    traversable(&rpm);
    let o = layerctl_as(&h, 65534, 65534, &["install", rpm.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = h.status_json().unwrap();
    assert_eq!(s["deployments"][0]["requested-local-packages"][0], "usertool-1-1.x86_64", "{s}");
    let o = layerctl_as(&h, 65534, 65534, &["kargs", "--append", "x=1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = h.status_json().unwrap();
    assert!(s["deployments"][0]["kernel-arguments"].as_array().unwrap().iter().any(|a| a == "x=1"), "{s}");
    let o = layerctl_as(&h, 65534, 65534, &["rollback"]);
    assert!(stderr(&o).contains("org.layerd.Layerd1.rollback"), "{}", stderr(&o));
    // root is never asked
    h.layerctl_ok(&["kargs", "--append", "y=2"]).unwrap();

    // cancelling someone else's transaction needs the cancel action: a rollback by root that
    // stays running (it waits for the sysroot lock the test holds)
    let lock = SysrootLock::take(&h).unwrap();
    let mut txn = h.layerctl_command(&["rollback"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    wait_until("the rollback runs", || h.layerctl_ok(&["status"]).unwrap().contains("State: busy"));
    let o = layerctl_as(&h, 65534, 65534, &["cancel"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("org.layerd.Layerd1.cancel"), "{}", stderr(&o));
    h.layerctl_ok(&["cancel"]).unwrap();
    let _ = txn.wait();
    drop(lock);
}
