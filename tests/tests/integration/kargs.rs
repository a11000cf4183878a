//! Issue 9 (kernel arguments part): `layerctl kargs`.

use crate::common::*;

fn kargs_of(s: &serde_json::Value, i: usize) -> Vec<String> {
    s["deployments"][i]["kernel-arguments"].as_array().unwrap().iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
}

#[test]
fn kargs_round_trip_through_a_reboot() {
    let mut h = booted_host("kargs");
    let shown = h.layerctl_ok(&["kargs"]).unwrap();
    assert!(shown.contains("console=ttyS0") && shown.contains("rw"), "{shown}");
    let out = h.layerctl_ok(&["kargs", "--append", "foo=bar", "--append", "nosmt", "--delete", "rw", "--replace", "root=LABEL=boot"]).unwrap();
    assert!(out.contains("Kernel arguments:"), "{out}");
    let s = h.status_json().unwrap();
    assert_eq!(s["deployments"][0]["staged"], true);
    let k = kargs_of(&s, 0);
    assert!(k.contains(&"foo=bar".to_string()) && k.contains(&"nosmt".to_string()) && !k.contains(&"rw".to_string()), "{k:?}");
    assert!(k.contains(&"root=LABEL=boot".to_string()), "{k:?}");
    let same = h.layerctl(&["kargs", "--append-if-missing", "foo=bar", "--delete-if-present", "absent", "--unchanged-exit-77"]).unwrap();
    assert_eq!(same.status.code(), Some(77), "{}{}", stdout(&same), stderr(&same));
    // the boot entry of the staged deployment carries them (what the boot loader reads)
    h.reboot().unwrap();
    let entries = h.exec_ok(&["sh", "-c", "grep -h '^options' /boot/loader/entries/*.conf"]).unwrap();
    let booted_entry = entries.lines().find(|l| l.contains("foo=bar")).unwrap_or_else(|| panic!("no boot entry has the new arguments:\n{entries}"));
    assert!(booted_entry.contains("nosmt") && !booted_entry.split_whitespace().any(|a| a == "rw"), "{booted_entry}");
    let cmdline = h.exec_ok(&["cat", "/proc/cmdline"]).unwrap();
    assert!(cmdline.contains("foo=bar") && cmdline.contains("nosmt") && !cmdline.split_whitespace().any(|a| a == "rw"), "{cmdline}");
    // --import-proc-cmdline starts from what the kernel was booted with (here the boot loader
    // added an argument the boot entry does not have), without the per-boot ones
    let cmdline_file = h.rundir().unwrap().parent().unwrap().join("cmdline");
    let booted_with = std::fs::read_to_string(&cmdline_file).unwrap();
    std::fs::write(&cmdline_file, format!("{} fromloader=1\n", booted_with.trim())).unwrap();
    h.layerctl_ok(&["kargs", "--import-proc-cmdline", "--append", "imported=1"]).unwrap();
    let k = kargs_of(&h.status_json().unwrap(), 0);
    assert!(k.contains(&"fromloader=1".to_string()) && k.contains(&"imported=1".to_string()) && k.contains(&"foo=bar".to_string()), "{k:?}");
    assert!(!k.iter().any(|a| a.starts_with("BOOT_IMAGE=")), "{k:?}");
    h.layerctl_ok(&["cleanup", "-p"]).unwrap();
    // bad input: clear errors, nothing staged
    let before = h.ostree_admin_status().unwrap();
    for (args, want) in [
        (vec!["kargs", "--delete", "nope"], "no such kernel argument"),
        (vec!["kargs", "--append", "=x"], "empty key"),
        (vec!["kargs", "--append", "a=\"b"], "unbalanced quotes"),
    ] {
        let e = h.layerctl(&args).unwrap();
        assert!(!e.status.success() && stderr(&e).contains(want), "{args:?}: {}", stderr(&e));
    }
    assert_eq!(h.ostree_admin_status().unwrap(), before);
}

#[test]
fn kargs_keep_layered_packages_and_work_offline() {
    let mut h = new_host("kargs-offline");
    h.start_layerd_offline().unwrap();
    let dir = h.dir.join("rpms");
    std::fs::create_dir_all(&dir).unwrap();
    let f = layerd_tests::rpmbuild::RpmSpec::new("tool", "1")
        .entry(layerd_tests::rpmbuild::Entry::file("/usr/bin/tool", "t", 0o755))
        .write(&dir)
        .unwrap();
    h.layerctl_ok(&["install", f.to_str().unwrap()]).unwrap();
    h.layerctl_ok(&["kargs", "--append", "quiet"]).unwrap();
    // the machine running layerd is not the one this sysroot boots
    let e = h.layerctl(&["kargs", "--import-proc-cmdline"]).unwrap();
    assert!(stderr(&e).contains("not the booted one"), "{}", stderr(&e));
    let s = h.status_json().unwrap();
    assert!(kargs_of(&s, 0).contains(&"quiet".to_string()));
    let pkgs = s["deployments"][0]["requested-local-packages"].as_array().unwrap();
    assert_eq!(pkgs.len(), 1, "the layered package stays: {s}");
    h.stop_layerd().unwrap();
    h.boot().unwrap();
    assert!(h.exec_ok(&["cat", "/proc/cmdline"]).unwrap().contains("quiet"));
}

#[test]
fn pinning_and_locked_finalization() {
    let mut h = new_host("pin-finalize");
    h.layerd_args = vec!["--reboot-command".into(), "/usr/bin/busybox touch /run/reboot-requested".into()];
    h.boot().unwrap();
    h.start_layerd().unwrap();
    // pin the booted 1.0, move to 2.0: cleanup keeps the pinned rollback
    deploy_version(&h, "2.0", false);
    h.layerctl_ok(&["pin", "1"]).unwrap();
    assert_eq!(h.status_json().unwrap()["deployments"][1]["pinned"], true);
    let again = h.layerctl(&["pin", "1", "--unchanged-exit-77"]).unwrap();
    assert_eq!(again.status.code(), Some(77));
    h.reboot().unwrap();
    let out = h.layerctl_ok(&["cleanup", "-r"]).unwrap();
    assert!(out.contains("Keeping pinned deployment"), "{out}");
    assert_eq!(versions(&h.status_json().unwrap()), ["2.0", "1.0"]);
    h.layerctl_ok(&["pin", "--unpin", "1"]).unwrap();
    h.layerctl_ok(&["cleanup", "-r"]).unwrap();
    assert_eq!(versions(&h.status_json().unwrap()), ["2.0"]);
    let e = h.layerctl(&["pin", "7"]).unwrap();
    assert!(stderr(&e).contains("no deployment at index 7"), "{}", stderr(&e));

    // a locked staged deployment is not applied by a reboot
    h.publish(&layerd_tests::fixture::OsSpec::new("3.0")).unwrap();
    h.layerctl_ok(&["upgrade", "--lock-finalization"]).unwrap();
    let s = h.status_json().unwrap();
    assert_eq!(s["deployments"][0]["finalization-locked"], true, "{s}");
    h.reboot().unwrap();
    assert_eq!(versions(&h.status_json().unwrap())[0], "2.0", "the locked deployment was not applied");
    // staged again, locked; finalize-deployment needs the right checksum, then reboots
    h.layerctl_ok(&["upgrade", "--lock-finalization"]).unwrap();
    let csum = h.status_json().unwrap()["deployments"][0]["checksum"].as_str().unwrap().to_string();
    let e = h.layerctl(&["finalize-deployment", &"0".repeat(64)]).unwrap();
    assert!(stderr(&e).contains("refusing to finalize something else"), "{}", stderr(&e));
    h.layerctl_ok(&["finalize-deployment", &csum]).unwrap();
    assert!(h.rundir().unwrap().join("reboot-requested").exists(), "the reboot command ran");
    h.reboot().unwrap();
    assert_eq!(h.exec_ok(&["sh", "-c", ". /usr/lib/os-release; echo $VERSION_ID"]).unwrap().trim(), "3.0");

    // pinning belongs to a deployment: a new deployment made from a pinned one is not pinned
    h.layerctl_ok(&["pin", "0"]).unwrap();
    let flag = h.rundir().unwrap().join("reboot-requested");
    let _ = std::fs::remove_file(&flag);
    h.layerctl_ok(&["kargs", "--append", "pinned=test", "--reboot"]).unwrap();
    let s = h.status_json().unwrap();
    assert_eq!(s["deployments"][0]["pinned"], false, "{s}");
    assert_eq!(s["deployments"][1]["pinned"], true, "{s}");
    assert!(flag.exists(), "--reboot after a change reboots");
    // --reboot reboots into a change only, and never with a flag that applies nothing
    std::fs::remove_file(&flag).unwrap();
    let out = h.layerctl_ok(&["kargs", "--append-if-missing", "pinned=test", "--reboot"]).unwrap();
    assert!(out.contains("No change"), "{out}");
    assert!(!flag.exists(), "no change, no reboot");
    let e = h.layerctl(&["upgrade", "--check", "--reboot"]).unwrap();
    assert!(stderr(&e).contains("--reboot cannot be combined with --check"), "{}", stderr(&e));

    // finalizing a staged deployment nobody locked is refused unless allowed
    h.reboot().unwrap();
    h.layerctl_ok(&["kargs", "--append", "unlocked=1"]).unwrap();
    let csum = h.status_json().unwrap()["deployments"][0]["checksum"].as_str().unwrap().to_string();
    let e = h.layerctl(&["finalize-deployment", &csum]).unwrap();
    assert!(stderr(&e).contains("is not locked") && stderr(&e).contains("--allow-unlocked"), "{}", stderr(&e));
    let flag = h.rundir().unwrap().join("reboot-requested");
    h.layerctl_ok(&["finalize-deployment", "--allow-unlocked", &csum]).unwrap();
    assert!(flag.exists(), "finalizing reboots");
    h.reboot().unwrap();

    // a held-back node stays held back: a change staged meanwhile (here kernel arguments) is
    // locked too, and says so, until the orchestrator finalizes
    h.publish(&layerd_tests::fixture::OsSpec::new("4.0")).unwrap();
    h.layerctl_ok(&["upgrade", "--lock-finalization"]).unwrap();
    let out = h.layerctl_ok(&["kargs", "--append", "after-lock=1"]).unwrap();
    assert!(out.contains("Still locked (an earlier --lock-finalization)"), "{out}");
    let s = h.status_json().unwrap();
    assert_eq!(s["deployments"][0]["finalization-locked"], true, "{s}");
    h.reboot().unwrap();
    assert!(!h.exec_ok(&["cat", "/proc/cmdline"]).unwrap().contains("after-lock=1"), "the locked deployment was not applied");

    // --reboot works the same on the other changes: an upgrade, then a rollback
    h.publish(&layerd_tests::fixture::OsSpec::new("5.0")).unwrap();
    let flag = h.rundir().unwrap().join("reboot-requested");
    h.layerctl_ok(&["cleanup", "-p"]).unwrap();
    h.layerctl_ok(&["upgrade", "--reboot"]).unwrap();
    assert!(flag.exists(), "upgrade --reboot reboots");
    h.reboot().unwrap();
    assert_eq!(h.exec_ok(&["sh", "-c", ". /usr/lib/os-release; echo $VERSION_ID"]).unwrap().trim(), "5.0");
    let flag = h.rundir().unwrap().join("reboot-requested");
    h.layerctl_ok(&["rollback", "--reboot"]).unwrap();
    assert!(flag.exists(), "rollback --reboot reboots");
}

#[test]
fn reboot_goes_through_logind_and_respects_block_inhibitors() {
    // no reboot command configured: layerd asks logind (a stand-in on the private bus)
    let h = booted_host("reboot-logind");
    let logind = layerd_tests::logind::Logind::serve(&h.bus.address()).unwrap();
    logind.block_shutdown(Some(("node-drain", "draining workloads")));
    let before = h.ostree_admin_status().unwrap();
    let e = h.layerctl(&["kargs", "--append", "a=1", "--reboot"]).unwrap();
    assert!(!e.status.success());
    assert!(stderr(&e).contains("shutdown is blocked by node-drain (pid 42: draining workloads)"), "{}", stderr(&e));
    assert_eq!(h.ostree_admin_status().unwrap(), before, "a blocked reboot request changes nothing");
    assert!(logind.reboots().is_empty());
    // a delay inhibitor does not block; the reboot is a non-interactive logind Reboot
    logind.block_shutdown(None);
    h.layerctl_ok(&["kargs", "--append", "a=1", "--reboot"]).unwrap();
    assert_eq!(logind.reboots(), [false]);
    let s = h.status_json().unwrap();
    assert!(strs_of(&s["deployments"][0]["kernel-arguments"]).contains(&"a=1".to_string()), "{s}");
}

fn strs_of(v: &serde_json::Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default()
}
