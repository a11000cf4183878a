//! Issue 8 (units and packaging): the shipped systemd units pass `systemd-analyze verify`, the
//! tmpfiles.d and sysusers.d files do what they say in a scratch root, and the RPM spec builds a
//! package holding everything (with Debian's rpmbuild, from the test build's binaries).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(c: &mut Command) -> std::process::Output {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{c:?}: {}{}", stdout(&o), stderr(&o));
    o
}

#[test]
fn units_tmpfiles_and_sysusers_verify() {
    let ws = layerd_tests::workspace_dir();
    let root = scratch("units-root");
    // the machine's own units (targets the ours depend on), then ours, and the binary they start
    let host_units = ["/usr/lib/systemd/system", "/lib/systemd/system"].into_iter().find(|p| Path::new(p).join("sysinit.target").exists()).unwrap();
    std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
    run(Command::new("cp").arg("-a").arg(host_units).arg(root.join("usr/lib/systemd/system")));
    for u in ["layerd.service", "layerd.socket"] {
        std::fs::copy(ws.join("systemd").join(u), root.join("usr/lib/systemd/system").join(u)).unwrap();
    }
    std::fs::create_dir_all(root.join("usr/libexec")).unwrap();
    std::fs::copy(layerd_tests::bin_dir().join("layerd"), root.join("usr/libexec/layerd")).unwrap();
    let o = run(Command::new("systemd-analyze").arg("verify").arg(format!("--root={}", root.display())).args(["layerd.service", "layerd.socket"]));
    // warnings (unknown settings, bad values) do not fail verify: none may mention our units
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!out.contains("layerd"), "systemd-analyze verify complained:\n{out}");

    // tmpfiles.d creates the state, cache and runtime directories
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy(ws.join("systemd/layerd.tmpfiles"), root.join("layerd-tmpfiles.conf")).unwrap();
    run(Command::new("systemd-tmpfiles").arg(format!("--root={}", root.display())).arg("--create").arg(root.join("layerd-tmpfiles.conf")));
    use std::os::unix::fs::PermissionsExt;
    for (d, mode) in [("var/lib/layerd", 0o700), ("var/cache/layerd", 0o700), ("run/layerd", 0o755)] {
        let m = std::fs::metadata(root.join(d)).unwrap_or_else(|e| panic!("{d}: {e}"));
        assert!(m.is_dir() && m.permissions().mode() & 0o7777 == mode, "{d}: {:o}", m.permissions().mode());
    }
    // sysusers.d creates the layerd group
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    run(Command::new("systemd-sysusers").arg(format!("--root={}", root.display())).arg(ws.join("systemd/layerd.sysusers")));
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(group.lines().any(|l| l.starts_with("layerd:")), "{group}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn the_rpm_spec_builds_a_package_with_everything() {
    let ws = layerd_tests::workspace_dir();
    let top = scratch("rpmbuild");
    run(Command::new("rpmbuild")
        .arg("-bb")
        .arg(ws.join("packaging/layerd.spec"))
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .arg("--define")
        .arg(format!("prebuilt {}", ws.display()))
        .arg("--define")
        .arg(format!("prebuilt_bin {}", layerd_tests::bin_dir().display()))
        .args(["--define", "_build_id_links none"]));
    let rpm = std::fs::read_dir(top.join("RPMS/x86_64")).unwrap().flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|e| e == "rpm")).unwrap();
    let files = stdout(&run(Command::new("rpm").arg("-qlp").arg(&rpm)));
    for f in [
        "/usr/libexec/layerd",
        "/usr/bin/layerctl",
        "/usr/lib/systemd/system/layerd.service",
        "/usr/lib/systemd/system/layerd.socket",
        "/usr/lib/tmpfiles.d/layerd.conf",
        "/usr/lib/sysusers.d/layerd.conf",
        "/usr/share/dbus-1/system-services/org.layerd.Layerd1.service",
        "/usr/share/dbus-1/system.d/org.layerd.Layerd1.conf",
        "/usr/share/polkit-1/actions/org.layerd.Layerd1.policy",
        "/usr/share/layerd/proto/layerd/v1/layerd.proto",
        "/etc/layerd/config.toml",
    ] {
        assert!(files.lines().any(|l| l == f), "{f} missing from the package:\n{files}");
    }
    let scripts = stdout(&run(Command::new("rpm").args(["-qp", "--scripts"]).arg(&rpm)));
    assert!(scripts.contains("preset layerd.service layerd.socket"), "{scripts}");
    assert!(scripts.contains("groupadd -r layerd"), "{scripts}");
    let config = stdout(&run(Command::new("rpm").args(["-qp", "--configfiles"]).arg(&rpm)));
    assert!(config.contains("/etc/layerd/config.toml"), "{config}");
    let _ = std::fs::remove_dir_all(&top);
}
