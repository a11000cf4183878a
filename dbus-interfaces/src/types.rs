//! Typed status structures shared by daemon and client.
//!
//! They travel over D-Bus as `a{sv}` dictionaries. The dictionary keys are exactly the keys of
//! `rpm-ostree status --json` (plus a few `layerd`-specific ones, documented in the XML), so a
//! `layerctl status --json` is a direct rendering of what the daemon sends and scripts written
//! for rpm-ostree keep working.

use std::collections::HashMap;

use zbus::zvariant::{DeserializeDict, OwnedValue, SerializeDict, Type, Value};

/// One deployment, in boot order position given by its index in the `Deployments` property.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type, Value, OwnedValue)]
#[zvariant(signature = "a{sv}", rename_all = "kebab-case")]
pub struct Deployment {
    /// `<osname>-<checksum>.<serial>`, unique in the sysroot.
    pub id: String,
    pub osname: String,
    pub serial: i32,
    /// Checksum of the deployed commit.
    pub checksum: String,
    /// `version` from the deployed commit's metadata, if any.
    pub version: Option<String>,
    /// Commit timestamp, seconds since the epoch (UTC).
    pub timestamp: u64,
    pub booted: bool,
    pub staged: bool,
    pub pinned: bool,
    /// ostree's unlock state: `none`, `development`, `hotfix`, `transient`.
    pub unlocked: String,
    /// A staged deployment that a reboot will not apply until finalized.
    pub finalization_locked: bool,
    /// The ostree refspec the deployment tracks (`origin` in rpm-ostree's JSON); absent for
    /// container-image bases.
    pub origin: Option<String>,
    pub container_image_reference: Option<String>,
    pub container_image_reference_digest: Option<String>,
    /// `[url, description]` when the origin carries a custom origin.
    pub custom_origin: Option<Vec<String>>,
    /// Present when the deployment is a locally built commit on top of a base commit.
    pub base_checksum: Option<String>,
    pub base_version: Option<String>,
    pub base_timestamp: Option<u64>,
    /// Metadata of the base commit (of the deployed commit when not layered).
    pub base_commit_meta: HashMap<String, OwnedValue>,
    /// Layered packages actually present (NEVRAs).
    pub packages: Vec<String>,
    /// Package names/provides requested from repositories.
    pub requested_packages: Vec<String>,
    /// Local RPMs requested, as NEVRAs.
    pub requested_local_packages: Vec<String>,
    pub requested_local_fileoverride_packages: Vec<String>,
    /// Base packages this deployment's commit leaves out (`override remove`), as NEVRAs.
    pub base_removals: Vec<String>,
    /// Package names the origin asks to remove (some may be inactive on this base).
    pub requested_base_removals: Vec<String>,
    /// `(new, old)` NEVRAs: local RPMs standing in for base packages.
    pub base_local_replacements: Vec<(String, String)>,
    /// NEVRAs of the local replacements the origin asks for.
    pub requested_base_local_replacements: Vec<String>,
    pub regenerate_initramfs: bool,
    pub initramfs_args: Vec<String>,
    /// Kernel arguments of the deployment's boot entry (layerd extension).
    pub kernel_arguments: Vec<String>,
    /// Booted deployment only: the commit whose content is applied live on top of it
    /// (`apply-live`), as rpm-ostree's `live-replaced`.
    pub live_replaced: Option<String>,
    /// Packages added live (NEVRAs).
    pub live_packages_added: Vec<String>,
    /// Packages changed or removed live (`--allow-replacement`).
    pub live_packages_replaced: Vec<String>,
}

impl Deployment {
    /// The base reference as shown to humans: the image reference or the ostree refspec.
    pub fn origin_description(&self) -> Option<&str> {
        self.container_image_reference
            .as_deref()
            .or(self.origin.as_deref())
    }
}

/// A queued or running transaction, as listed by the daemon's `Transactions` property.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type, Value, OwnedValue)]
#[zvariant(signature = "a{sv}", rename_all = "kebab-case")]
pub struct TransactionInfo {
    pub id: String,
    /// D-Bus object path of the transaction.
    pub path: String,
    /// What it does, e.g. `rollback`, `cleanup -r`.
    pub title: String,
    /// `created`, `queued`, `running`, `succeeded`, `failed`, `cancelled`.
    pub state: String,
    /// The agent that asked (`--client-id` / `RPMOSTREE_CLIENT_ID`), or its bus name.
    pub client: String,
    /// Unique bus name of the caller.
    pub sender: String,
    pub uid: u32,
}

/// The outcome of a finished transaction.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type, Value, OwnedValue)]
#[zvariant(signature = "a{sv}", rename_all = "kebab-case")]
pub struct TransactionResult {
    pub success: bool,
    /// True when the request was valid but nothing needed to change ("No change.").
    pub unchanged: bool,
    /// Short error name (see [`crate::Error::short_name`]), empty on success.
    pub error_name: String,
    pub error_message: String,
}

/// How the last transaction ended (kept across daemon restarts, including crashes).
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type, Value, OwnedValue)]
#[zvariant(signature = "a{sv}", rename_all = "kebab-case")]
pub struct LastTransaction {
    pub id: String,
    pub title: String,
    pub client: String,
    /// `succeeded`, `failed` or `cancelled`; empty when there was none.
    pub state: String,
    pub error_message: String,
    /// When it ended, seconds since the epoch.
    pub time: u64,
}
