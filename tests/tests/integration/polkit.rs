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

/// One `busctl call` on layerd as uid/gid (no supplementary groups).
fn busctl_as(h: &VirtualHost, uid: u32, gid: u32, path: &str, interface: &str, call: &[&str]) -> Output {
    let mut c = Command::new("setpriv");
    c.args([format!("--reuid={uid}"), format!("--regid={gid}"), "--clear-groups".into(), "--".into(), "busctl".into()])
        .arg(format!("--address={}", h.bus.address()))
        .args(["call", "org.layerd.Layerd1", path, interface])
        .args(call);
    c.output().unwrap()
}

/// Every method that changes something, with arguments layerd accepts, and the polkit action
/// it needs.
const MUTATING: &[(&[&str], &str)] = &[
    (&["Rollback", "a{sv}", "0"], "rollback"),
    (&["Cleanup", "a{sv}", "1", "rollback", "b", "true"], "cleanup"),
    (&["UpdateDeployment", "a{sv}aha{sv}", "1", "install-packages", "as", "1", "htop", "0", "0"], "install-uninstall-packages"),
    (&["UpdateDeployment", "a{sv}aha{sv}", "1", "uninstall-all", "b", "true", "0", "0"], "install-uninstall-packages"),
    (&["UpdateDeployment", "a{sv}aha{sv}", "1", "override-remove", "as", "1", "busybox", "0", "0"], "override"),
    (&["Upgrade", "a{sv}", "0"], "deploy"),
    (&["Rebase", "sa{sv}", "other:ref", "0"], "deploy"),
    (&["Deploy", "sa{sv}", "1.0", "0"], "deploy"),
    (&["ApplyLive", "a{sv}", "0"], "install-uninstall-packages"),
    (&["RefreshMd", "a{sv}", "0"], "repo-refresh"),
    (&["KernelArgs", "a{sv}", "1", "append", "as", "1", "x=1"], "kernel-args"),
    (&["Pin", "ua{sv}", "0", "0"], "deploy"),
    (&["FinalizeDeployment", "sa{sv}", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "0"], "deploy"),
];

#[test]
fn every_method_as_a_non_root_caller_and_malformed_calls() {
    let mut h = new_host("dbus-security");
    h.use_system_like_bus("65534").unwrap();
    h.boot().unwrap();
    h.start_layerd().unwrap();
    traversable(&h.bus.socket_dir.join("system_bus_socket"));
    let _polkit = layerd_tests::polkit::Polkitd::start(&h.dir, &h.bus.address()).unwrap();
    let before = h.ostree_admin_status().unwrap();
    const OBJ: &str = "/org/layerd/Layerd1";
    const IFACE: &str = "org.layerd.Layerd1";

    for (call, action) in MUTATING {
        // not in the layerd group: the bus refuses before layerd sees anything
        let o = busctl_as(&h, 1, 1, OBJ, IFACE, call);
        assert!(!o.status.success(), "{call:?} went through for uid 1");
        assert!(stderr(&o).contains("Access denied") || stderr(&o).contains("Rejected send message"), "{call:?}: {}", stderr(&o));
        // in the group: layerd asks polkit, which grants nothing here; the error names the action
        let o = busctl_as(&h, 65534, 65534, OBJ, IFACE, call);
        assert!(!o.status.success(), "{call:?} went through for a group member without a grant");
        let want = format!("org.layerd.Layerd1.{action}");
        assert!(stderr(&o).contains(&want) && stderr(&o).contains("not authorized"), "{call:?}: want {want}: {}", stderr(&o));
    }
    // Reload only re-reads the sysroot: the group may, others may not
    assert!(!busctl_as(&h, 1, 1, OBJ, IFACE, &["Reload"]).status.success());
    let o = busctl_as(&h, 65534, 65534, OBJ, IFACE, &["Reload"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // reading needs nothing, for anyone
    for (uid, gid) in [(1, 1), (65534, 65534)] {
        let o = busctl_as(&h, uid, gid, OBJ, "org.freedesktop.DBus.Properties", &["GetAll", "s", IFACE]);
        assert!(o.status.success() && stdout(&o).contains("Deployments"), "uid {uid}: {}", stderr(&o));
        let o = busctl_as(&h, uid, gid, OBJ, "org.freedesktop.DBus.Introspectable", &["Introspect"]);
        assert!(o.status.success() && stdout(&o).contains("UpdateDeployment"), "uid {uid}: {}", stderr(&o));
        let o = busctl_as(&h, uid, gid, OBJ, IFACE, &["RegisterClient", "a{sv}", "1", "id", "s", "watcher"]);
        assert!(o.status.success(), "uid {uid}: {}", stderr(&o));
    }

    // a transaction root prepared cannot be started or cancelled by a group member; root's
    // own client keeps it alive (a creator leaving before the start cancels it)
    let lock = SysrootLock::take(&h).unwrap();
    let mut txn = h.layerctl_command(&["kargs", "--append", "root=1"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    wait_until("root's change runs", || h.layerctl_ok(&["status"]).unwrap().contains("State: busy"));
    // rpm-ostree's shape: [title, client, object path]
    let path = h.status_json().unwrap()["transaction"][2].as_str().expect("the running transaction's path").to_string();
    let o = busctl_as(&h, 65534, 65534, &path, "org.layerd.Layerd1.Transaction", &["Start", "a{sv}", "0"]);
    assert!(!o.status.success() && stderr(&o).contains("only its creator or root"), "{}", stderr(&o));
    let o = busctl_as(&h, 65534, 65534, &path, "org.layerd.Layerd1.Transaction", &["Cancel"]);
    assert!(!o.status.success() && stderr(&o).contains("org.layerd.Layerd1.cancel"), "{}", stderr(&o));
    let o = busctl_as(&h, 1, 1, &path, "org.layerd.Layerd1.Transaction", &["Cancel"]);
    assert!(!o.status.success(), "uid 1 cancelled root's transaction");
    h.layerctl_ok(&["cancel"]).unwrap();
    let _ = txn.wait();
    drop(lock);
    assert_eq!(h.ostree_admin_status().unwrap(), before, "nothing changed");

    // malformed calls (as root, who passes every check but the arguments'): clear errors, and
    // the daemon keeps answering. (D-Bus strings cannot carry NUL bytes, the bus refuses such
    // messages; the gRPC test sends them.)
    let long = "x".repeat(100_000);
    let malformed: Vec<(Vec<&str>, &str)> = vec![
        (vec!["Rollback", "s", "yes"], "Signature mismatch"),
        (vec!["Pin", "sa{sv}", "zero", "0"], "Signature mismatch"),
        (vec!["KernelArgs", "a{sv}", "1", "append", "s", "x=1"], "must be a string array"),
        (vec!["UpdateDeployment", "a{sv}aha{sv}", "1", "install-packages", "as", "1", "", "0", "0"], "empty package name"),
        (vec!["UpdateDeployment", "a{sv}aha{sv}", "1", "uninstall-packages", "as", "1", "", "0", "0"], "empty package name"),
        (vec!["UpdateDeployment", "a{sv}aha{sv}", "1", "install-packages", "as", "1", &long, "0", "0"], "at most 4096"),
        (vec!["UpdateDeployment", "a{sv}aha{sv}", "1", "override-remove", "as", "1", "two words", "0", "0"], "not a valid package name"),
        (vec!["UpdateDeployment", "a{sv}aha{sv}", "0", "0", "0"], "nothing to do"),
        (vec!["Rebase", "sa{sv}", "", "0"], "is not an ostree refspec"),
        (vec!["Rebase", "sa{sv}", &long, "0"], "bytes long"),
        (vec!["Rebase", "sa{sv}", "remote:a\tb", "0"], "is not an ostree refspec"),
        (vec!["Deploy", "sa{sv}", "", "0"], "needs a revision"),
        (vec!["Deploy", "sa{sv}", "1.0\u{1}", "0"], "not a commit checksum, version or digest"),
        (vec!["KernelArgs", "a{sv}", "1", "append", "as", "1", "=x"], "empty key"),
        (vec!["FinalizeDeployment", "sa{sv}", "", "0"], "is not a commit checksum"),
    ];
    let mut wrong = Vec::new();
    for (call, want) in &malformed {
        let o = busctl_as(&h, 0, 0, OBJ, IFACE, call);
        // refused by the call itself, before any transaction exists
        let text = stderr(&o);
        if o.status.success() || !text.contains(want) {
            wrong.push(format!("{:?}: want {want:?}: {}", &call[..call.len().min(5)].iter().map(|a| &a[..a.len().min(40)]).collect::<Vec<_>>(), &text[..text.len().min(300)]));
        }
        assert!(h.layerd_running(), "layerd died on {:?}", &call[0]);
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    wait_until("no transaction left", || h.status_json().unwrap()["transaction"].is_null());
    assert_eq!(h.ostree_admin_status().unwrap(), before, "nothing changed");
    h.layerctl_ok(&["status"]).unwrap();

    // layerd itself refuses to run as anyone but root, before touching anything
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(layerd_tests::bin_dir().join("layerd"))
        .args(["--sysroot", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("layerd must run as root"), "{}", stderr(&o));
}
