//! Issue 8 (units and packaging): the shipped systemd units pass `systemd-analyze verify`, the
//! tmpfiles.d and sysusers.d files do what they say in a scratch root, and the RPM spec builds a
//! package holding everything (with Debian's rpmbuild, from the test build's binaries: `make rpm`
//! runs the same spec on the release ones), which layerd then layers onto a CentOS-like node
//! (dogfooding): its dependencies come from a repository of CentOS Stream 9 packages, and after
//! the reboot its files are where the spec puts them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// Where the spec puts the package's files (what an admin finds on the node).
const SHIPPED: &[&str] = &[
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
];

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
fn the_rpm_spec_builds_a_package_that_layerd_layers_onto_a_node() {
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
    for f in SHIPPED {
        assert!(files.lines().any(|l| l == *f), "{f} missing from the package:\n{files}");
    }
    let scripts = stdout(&run(Command::new("rpm").args(["-qp", "--scripts"]).arg(&rpm)));
    assert!(scripts.contains("preset layerd.service layerd.socket"), "{scripts}");
    assert!(scripts.contains("groupadd -r layerd"), "{scripts}");
    // the example Containerfile copies the file `make rpm` writes (same spec, same name)
    let containerfile = std::fs::read_to_string(ws.join("packaging/Containerfile")).unwrap();
    let name = rpm.file_name().unwrap().to_str().unwrap();
    assert!(containerfile.contains(&format!("ARG RPM=target/rpmbuild/RPMS/x86_64/{name}")), "packaging/Containerfile does not name {name}");
    let config = stdout(&run(Command::new("rpm").args(["-qp", "--configfiles"]).arg(&rpm)));
    assert!(config.contains("/etc/layerd/config.toml"), "{config}");

    // dogfooding: a node whose base is CentOS-like, a repository with the CentOS Stream 9
    // packages the RPM needs (ostree-libs, libsolv, skopeo, polkit, … as stubs with their real
    // names and dependencies), and layerd layering its own package
    let requires = stdout(&run(Command::new("rpm").args(["-qp", "--requires"]).arg(&rpm)));
    let wanted: Vec<String> = requires
        .lines()
        .map(|l| l.split(" <= ").next().unwrap_or(l).trim().to_string())
        .filter(|r| !r.is_empty() && !r.starts_with("rpmlib(") && !r.starts_with("config("))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let data = layerd_tests::centos::data().unwrap();
    let mut pool = layerd::solve::Pool::new("x86_64").unwrap();
    for r in ["baseos", "appstream"] {
        pool.add_rpmmd(r, &layerd_tests::centos::primary_path(r).unwrap(), None, None, 99).unwrap();
    }
    let picks = pool.solve(&wanted, layerd::solve::SolveOptions::default()).unwrap().unwrap();
    let specs: Vec<layerd_tests::rpmbuild::RpmSpec> = picks.iter().map(|p| data.by_nevra[&p.nevra()].stub(&data.file_requires, false)).collect();
    let mut h = layerd_tests::VirtualHost::with_os(Path::new(env!("CARGO_TARGET_TMPDIR")), "dogfood", &layerd_tests::OsSpec::centos("1.0")).unwrap();
    let repo = layerd_tests::yumrepo::YumRepo::create(&h.dir.join("centos-platform"), &specs).unwrap();
    let httpd = layerd_tests::httpd::Httpd::serve(&repo.dir).unwrap();
    h.boot().unwrap();
    h.start_layerd().unwrap();
    let text = layerd_tests::yumrepo::repo_file("centos-platform", &httpd.url(), "");
    h.exec_ok(&["sh", "-c", &format!("mkdir -p /etc/yum.repos.d && printf '%s' '{text}' > /etc/yum.repos.d/centos-platform.repo")]).unwrap();
    let out = h.layerctl_ok(&["install", rpm.to_str().unwrap()]).unwrap();
    for dep in ["ostree-libs-", "skopeo-", "bubblewrap-", "polkit-"] {
        assert!(out.contains(&format!("Adding: {dep}")), "{dep} comes from the repository: {out}");
    }
    let s = h.status_json().unwrap();
    assert_eq!(s["deployments"][0]["requested-local-packages"][0], "layerd-0.1.0-1.x86_64", "{s}");
    h.reboot().unwrap();
    for f in SHIPPED {
        assert!(h.exec(&["test", "-f", f]).unwrap().status.success(), "{f} is not on the node after the reboot");
    }
    // the shipped files are the workspace's, and the layered client runs on the node
    assert_eq!(h.exec_ok(&["cat", "/usr/lib/systemd/system/layerd.service"]).unwrap(), std::fs::read_to_string(ws.join("systemd/layerd.service")).unwrap());
    assert!(h.exec_ok(&["/usr/bin/layerctl", "--version"]).unwrap().contains("0.1.0"));
    let q = h.exec_ok(&["/usr/bin/rpm", "--dbpath", "/usr/share/rpm", "-q", "layerd", "ostree-libs"]).unwrap();
    assert!(q.starts_with("layerd-0.1.0-1.x86_64\nostree-libs-"), "{q}");
    // the dependencies stay with the package through later changes
    let extra = layerd_tests::rpmbuild::RpmSpec::new("extra", "1")
        .entry(layerd_tests::rpmbuild::Entry::file("/usr/share/extra", "x", 0o644))
        .write(&h.dir)
        .unwrap();
    h.layerctl_ok(&["install", extra.to_str().unwrap()]).unwrap();
    h.layerctl_ok(&["uninstall", "extra"]).unwrap();
    let packages = h.status_json().unwrap()["deployments"][0]["packages"].to_string();
    assert!(packages.contains("ostree-libs-") && packages.contains("skopeo-"), "{packages}");
    // asking again for what is there needs no repository: answered from what was built
    drop(httpd);
    let again = h.layerctl(&["install", "--idempotent", "--unchanged-exit-77", rpm.to_str().unwrap()]).unwrap();
    assert_eq!(again.status.code(), Some(77), "{}{}", stdout(&again), stderr(&again));
    let _ = std::fs::remove_dir_all(&top);
}
