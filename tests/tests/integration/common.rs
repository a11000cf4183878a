//! Shared helpers for the integration tests.

use std::path::Path;
use std::time::{Duration, Instant};

use layerd_tests::fixture::{OsSpec, OSNAME, REF, REMOTE};
pub use layerd_tests::vhost::SysrootLock;
use layerd_tests::VirtualHost;
use serde_json::Value;

/// A virtual host (not booted yet) in cargo's scratch directory for tests.
pub fn new_host(name: &str) -> VirtualHost {
    VirtualHost::new(Path::new(env!("CARGO_TARGET_TMPDIR")), name).expect("creating the virtual host")
}

/// A booted virtual host with layerd running.
pub fn booted_host(name: &str) -> VirtualHost {
    let mut h = new_host(name);
    h.boot().expect("booting");
    h.start_layerd().expect("starting layerd");
    h
}

/// Publish fixture OS `version` and deploy it inside the host with `ostree admin` (not layerd),
/// optionally staged.
pub fn deploy_version(h: &VirtualHost, version: &str, stage: bool) {
    h.publish(&OsSpec::new(version)).expect("publishing");
    h.exec_ok(&["ostree", "pull", REMOTE, REF]).expect("pull");
    let os = format!("--os={OSNAME}");
    let refspec = format!("{REMOTE}:{REF}");
    // --retain: keep every existing deployment (the default drops a pending one)
    let mut args = vec!["ostree", "admin", "deploy", "--retain", os.as_str()];
    if stage {
        args.push("--stage");
    }
    args.push(refspec.as_str());
    h.exec_ok(&args).expect("ostree admin deploy");
}

/// Versions of the deployments in boot order, from `layerctl status --json`.
pub fn versions(status: &Value) -> Vec<String> {
    status["deployments"]
        .as_array()
        .expect("deployments array")
        .iter()
        .map(|d| d["version"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Index of the booted deployment.
pub fn booted_index(status: &Value) -> Option<usize> {
    status["deployments"].as_array()?.iter().position(|d| d["booted"] == Value::Bool(true))
}

pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Let other users reach `path` (the harness's directories are root's).
pub fn traversable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut p = path.parent().map(Path::to_path_buf);
    while let Some(d) = p {
        if d == Path::new("/") {
            break;
        }
        let mode = std::fs::metadata(&d).unwrap().permissions().mode();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode | 0o011)).unwrap();
        p = d.parent().map(Path::to_path_buf);
    }
}
