//! Reading the sysroot into the typed status every client sees.

use std::path::Path;

use layerd_interfaces::Deployment;

use crate::error::{Context, Result};
use crate::origin::Origin;
use crate::sysroot::{deployment_id, same_deployment, SysrootPath};
use crate::{glib, ostree};

/// Everything status shows, read in one go from one loaded sysroot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub sysroot: String,
    /// The sysroot is the running system (deployments are staged, not written directly).
    pub is_booted: bool,
    /// Id of the booted deployment; empty offline.
    pub booted_id: String,
    /// Boot order.
    pub deployments: Vec<Deployment>,
}


/// Load the sysroot and describe it.
pub fn read(path: &SysrootPath) -> Result<Snapshot> {
    let sysroot = path.load(None)?;
    describe(&sysroot, path.path())
}

/// Describe an already loaded sysroot.
pub fn describe(sysroot: &ostree::Sysroot, path: &Path) -> Result<Snapshot> {
    let repo = sysroot.repo();
    let booted = sysroot.booted_deployment();
    let finalization_locked = sysroot.is_booted() && Path::new(crate::finalize::LOCK).exists();
    let mut deployments = Vec::new();
    for d in sysroot.deployments() {
        let is_booted = booted.as_ref().is_some_and(|b| same_deployment(b, &d));
        deployments.push(deployment(&repo, &d, is_booted, finalization_locked)?);
    }
    Ok(Snapshot {
        sysroot: path.display().to_string(),
        is_booted: booted.is_some(),
        booted_id: booted.as_ref().map(deployment_id).unwrap_or_default(),
        deployments,
    })
}

/// Commit facts: metadata, version, timestamp, parent.
struct CommitInfo {
    meta: glib::Variant,
    version: Option<String>,
    timestamp: u64,
    parent: Option<String>,
}

/// The version label of an imported container image (ostree-ext keeps the image configuration
/// in the merge commit's metadata): `org.opencontainers.image.version`, or the legacy `version`.
fn image_version(meta: &glib::VariantDict) -> Option<String> {
    let config = meta.lookup::<String>("ostree.container.image-config").ok().flatten()?;
    let v: serde_json::Value = serde_json::from_str(&config).ok()?;
    let labels = &v["config"]["Labels"];
    labels["org.opencontainers.image.version"].as_str().or(labels["version"].as_str()).map(str::to_string)
}

/// A commit's version: its `version` metadata, or the label of the image it was imported from.
pub fn commit_version(meta: &glib::VariantDict) -> Option<String> {
    meta.lookup::<String>("version").ok().flatten().or_else(|| image_version(meta))
}

fn commit_info(repo: &ostree::Repo, checksum: &str) -> Result<CommitInfo> {
    let (commit, _state) = repo
        .load_commit(checksum)
        .with_context(|| format!("loading commit {checksum}"))?;
    let meta = commit.child_value(0);
    let version = commit_version(&glib::VariantDict::new(Some(&meta)));
    Ok(CommitInfo {
        timestamp: ostree::commit_get_timestamp(&commit),
        parent: ostree::commit_get_parent(&commit).map(|p| p.to_string()),
        meta,
        version,
    })
}

fn deployment(
    repo: &ostree::Repo,
    d: &ostree::Deployment,
    booted: bool,
    finalization_locked: bool,
) -> Result<Deployment> {
    let checksum = d.csum().to_string();
    let commit = commit_info(repo, &checksum)?;
    let origin = d.origin().map(|kf| Origin::from_keyfile(&kf)).unwrap_or_default();
    let layered = origin.is_layered();
    // For a locally built commit the base is its parent; otherwise the commit is the base.
    let base = if layered {
        match &commit.parent {
            Some(p) => Some((p.clone(), commit_info(repo, p)?)),
            None => None,
        }
    } else {
        None
    };
    let base_meta = base.as_ref().map_or(&commit.meta, |(_, b)| &b.meta);
    let layered_packages = glib::VariantDict::new(Some(&commit.meta))
        .lookup::<Vec<String>>("layerd.packages")
        .ok()
        .flatten()
        .unwrap_or_default();
    let kernel_arguments = d
        .bootconfig()
        .and_then(|b| b.get("options"))
        .map(|o| crate::kargs::split_args(&o))
        .unwrap_or_default();
    let staged = d.is_staged();
    // what `apply-live` put on the running system (only the booted deployment of `/` has it)
    let live = if booted { crate::live::read_state().filter(|s| s.booted == d.csum().as_str()) } else { None };
    Ok(Deployment {
        id: deployment_id(d),
        osname: d.osname().to_string(),
        serial: d.deployserial(),
        checksum,
        // a layered commit written before it carried its base's version shows the base's
        version: commit.version.clone().or_else(|| base.as_ref().and_then(|(_, b)| b.version.clone())),
        timestamp: commit.timestamp,
        booted,
        staged,
        pinned: d.is_pinned(),
        unlocked: ostree::Deployment::unlocked_state_to_string(d.unlocked()).to_string(),
        finalization_locked: staged && finalization_locked,
        origin: origin.base_refspec().map(str::to_string),
        container_image_reference: origin.container_image_reference.clone(),
        // the image's merge commit records its manifest digest (ostree-ext)
        container_image_reference_digest: origin
            .container_image_reference
            .as_ref()
            .and_then(|_| glib::VariantDict::new(Some(base_meta)).lookup::<String>("ostree.manifest-digest").ok().flatten()),
        custom_origin: origin
            .custom_url
            .clone()
            .map(|u| vec![u, origin.custom_description.clone().unwrap_or_default()]),
        base_checksum: base.as_ref().map(|(c, _)| c.clone()),
        base_version: base.as_ref().and_then(|(_, b)| b.version.clone()),
        base_timestamp: base.as_ref().map(|(_, b)| b.timestamp),
        base_commit_meta: crate::gvariant::dict_to_map(base_meta),
        packages: layered_packages,
        requested_packages: origin.requested_packages.clone(),
        requested_local_packages: origin.requested_local_nevras(),
        requested_local_fileoverride_packages: Vec::new(),
        base_removals: glib::VariantDict::new(Some(&commit.meta)).lookup::<Vec<String>>("layerd.base-removals").ok().flatten().unwrap_or_default(),
        requested_base_removals: origin.override_remove.clone(),
        base_local_replacements: glib::VariantDict::new(Some(&commit.meta))
            .lookup::<Vec<(String, String)>>("layerd.base-replacements")
            .ok()
            .flatten()
            .unwrap_or_default(),
        requested_base_local_replacements: origin.override_replace_local.iter().map(|e| crate::origin::entry_nevra(e).to_string()).collect(),
        regenerate_initramfs: false,
        initramfs_args: Vec::new(),
        kernel_arguments,
        live_replaced: live.as_ref().map(|l| l.applied.clone()),
        live_packages_added: live.as_ref().map(|l| l.added.clone()).unwrap_or_default(),
        live_packages_replaced: live.map(|l| l.replaced).unwrap_or_default(),
    })
}

/// A cheap summary of the on-disk places every deployment change touches: the `loader`
/// symlink (swapped by every bootloader config write: new deployments, reorders, pins), the
/// stateroots' `deploy` directories (deployments and origin files come and go) and, on a
/// booted system, the staged-deployment markers in `/run/ostree`. A handful of `stat` calls,
/// so every status read can check it and re-read the sysroot only when something changed,
/// which keeps reads consistent with changes other tools finished just before.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint(Vec<(String, Option<(i64, i64)>, Option<String>)>);

pub fn fingerprint(sysroot: &Path) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    let mut v = Vec::new();
    let mut add = |p: &Path| {
        let m = std::fs::symlink_metadata(p).ok();
        let link = if m.as_ref().is_some_and(|m| m.file_type().is_symlink()) {
            std::fs::read_link(p).ok().map(|l| l.display().to_string())
        } else {
            None
        };
        v.push((p.display().to_string(), m.map(|m| (m.mtime(), m.mtime_nsec())), link));
    };
    add(&sysroot.join("boot/loader"));
    let deploy = sysroot.join("ostree/deploy");
    add(&deploy);
    if let Ok(rd) = std::fs::read_dir(&deploy) {
        let mut dirs: Vec<_> = rd.flatten().map(|e| e.path().join("deploy")).collect();
        dirs.sort();
        for d in dirs {
            add(&d);
        }
    }
    if sysroot == Path::new("/") {
        add(Path::new("/run/ostree/staged-deployment"));
        add(Path::new(crate::finalize::LOCK));
        add(Path::new(crate::live::STATE));
    }
    Fingerprint(v)
}
