//! `make demo`: a guided run of layerd on a virtual host, printing each command and its output.

use std::path::Path;

use anyhow::{bail, Result};

use crate::fixture::{OsSpec, REF, REMOTE};
use crate::rpmbuild::{Entry, RpmSpec, Script};
use crate::VirtualHost;

fn step(title: &str) {
    println!("\n\x1b[1m== {title}\x1b[0m");
}

fn show(host: &VirtualHost, args: &[&str]) -> Result<()> {
    println!("\x1b[36m$ layerctl {}\x1b[0m", args.join(" "));
    let out = host.layerctl(args)?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("layerctl {} failed ({})", args.join(" "), out.status);
    }
    Ok(())
}

fn inside(host: &VirtualHost, args: &[&str]) -> Result<()> {
    println!("\x1b[36m[node]# {}\x1b[0m", args.join(" "));
    print!("{}", host.exec_ok(args)?);
    Ok(())
}

/// Run the demo in a scratch directory under `base`.
pub fn run(base: &Path) -> Result<()> {
    step("Building a fixture OS (busybox userland, kernel, rpmdb) and an ostree sysroot");
    let mut host = VirtualHost::new(base, "demo")?;
    println!("virtual host in {}", host.dir.display());

    step("Booting the virtual host and starting layerd on its system bus");
    host.boot()?;
    host.start_layerd()?;
    show(&host, &["status"])?;

    step("An update (OS 2.0) is published; the node deploys it (ostree admin deploy)");
    host.publish(&OsSpec::new("2.0"))?;
    inside(&host, &["ostree", "pull", REMOTE, REF])?;
    inside(&host, &["ostree", "admin", "deploy", "--os=fixture", &format!("{REMOTE}:{REF}")])?;
    show(&host, &["status"])?;

    step("Changed our mind: roll back, so the booted 1.0 stays the default");
    show(&host, &["rollback"])?;
    show(&host, &["status"])?;

    step("Roll back again (swap back to 2.0) and reboot into it");
    show(&host, &["rollback"])?;
    println!("\x1b[36m[node]# reboot\x1b[0m   (stop layerd, finalize any staged deployment, boot the new default)");
    host.reboot()?;
    show(&host, &["status"])?;

    step("Drop the old deployment");
    show(&host, &["cleanup", "-r"])?;

    step("Layer troubleshooting tools from local RPM files (passed to layerd as descriptors)");
    let rpms = host.dir.join("rpms");
    std::fs::create_dir_all(&rpms)?;
    let mut files = Vec::new();
    for (name, version) in [("htop", "3.2.1"), ("tcpdump", "4.99.4")] {
        let spec = RpmSpec::new(name, version)
            .release("1.el9")
            .entry(Entry::file(&format!("/usr/bin/{name}"), format!("#!/bin/sh\necho '{name} {version} (demo build)'\n"), 0o755))
            .script(Script::Post, &format!("echo '{name} installed' > /usr/share/{name}.installed"));
        files.push(spec.write(&rpms)?.display().to_string());
    }
    let mut args = vec!["install"];
    args.extend(files.iter().map(String::as_str));
    show(&host, &args)?;
    show(&host, &["status"])?;
    println!("\x1b[36m[node]# reboot\x1b[0m");
    host.reboot()?;
    inside(&host, &["htop"])?;
    inside(&host, &["/usr/bin/rpm", "--dbpath", "/usr/share/rpm", "-q", "htop", "tcpdump"])?;
    show(&host, &["status", "--json", "--booted"])?;

    step("Remove one of them again (the other stays layered)");
    show(&host, &["uninstall", "tcpdump"])?;
    show(&host, &["status"])?;
    host.shutdown()?;
    println!("\nDemo complete.");
    Ok(())
}
