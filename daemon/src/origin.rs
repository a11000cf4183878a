//! The origin file of a deployment: what the admin asked for.
//!
//! The layout is rpm-ostree's, so rpm-ostree, bootc and `ostree admin status` keep reading
//! deployments layerd wrote: `[origin]` with `refspec=` (plain ostree base), `baserefspec=`
//! (ostree base with local changes) or `container-image-reference=`, optional
//! `override-commit=`, `custom-url=`/`custom-description=`; `[packages]` with `requested=` and
//! `requested-local=` (`<sha256>:<nevra>` entries); `[overrides]` with `remove=` and
//! `replace-local=`.

use crate::glib;

/// The sha256 of a `<sha256>:<nevra>` entry (`requested-local=`, and layerd's commit metadata).
pub fn entry_sha(entry: &str) -> &str {
    entry.split_once(':').map_or(entry, |(s, _)| s)
}

/// The NEVRA of a `<sha256>:<nevra>` entry.
pub fn entry_nevra(entry: &str) -> &str {
    entry.split_once(':').map_or(entry, |(_, n)| n)
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub refspec: Option<String>,
    pub baserefspec: Option<String>,
    pub container_image_reference: Option<String>,
    pub override_commit: Option<String>,
    pub custom_url: Option<String>,
    pub custom_description: Option<String>,
    pub requested_packages: Vec<String>,
    /// `<sha256>:<nevra>` entries.
    pub requested_local: Vec<String>,
    pub override_remove: Vec<String>,
    pub override_replace_local: Vec<String>,
}

impl Origin {
    pub fn from_keyfile(kf: &glib::KeyFile) -> Self {
        let s = |g: &str, k: &str| kf.string(g, k).ok().map(|v| v.to_string()).filter(|v| !v.is_empty());
        let l = |g: &str, k: &str| {
            kf.string_list(g, k)
                .map(|v| v.iter().map(|x| x.to_string()).filter(|x| !x.is_empty()).collect())
                .unwrap_or_default()
        };
        Origin {
            refspec: s("origin", "refspec"),
            baserefspec: s("origin", "baserefspec"),
            container_image_reference: s("origin", "container-image-reference"),
            override_commit: s("origin", "override-commit"),
            custom_url: s("origin", "custom-url"),
            custom_description: s("origin", "custom-description"),
            requested_packages: l("packages", "requested"),
            requested_local: l("packages", "requested-local"),
            override_remove: l("overrides", "remove"),
            override_replace_local: l("overrides", "replace-local"),
        }
    }

    /// Parse origin file text.
    pub fn parse(text: &str) -> Result<Self, glib::Error> {
        let kf = glib::KeyFile::new();
        kf.load_from_data(text, glib::KeyFileFlags::NONE)?;
        Ok(Self::from_keyfile(&kf))
    }

    /// The ostree refspec the base comes from, layered or not.
    pub fn base_refspec(&self) -> Option<&str> {
        self.refspec.as_deref().or(self.baserefspec.as_deref())
    }

    /// NEVRAs of the requested local packages (the part after `<sha256>:`).
    pub fn requested_local_nevras(&self) -> Vec<String> {
        self.requested_local
            .iter()
            .map(|e| entry_nevra(e).to_string())
            .collect()
    }

    /// Whether the deployment carries local changes on top of its base.
    pub fn is_layered(&self) -> bool {
        self.baserefspec.is_some()
            || !self.requested_packages.is_empty()
            || !self.requested_local.is_empty()
            || !self.override_remove.is_empty()
            || !self.override_replace_local.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rpm_ostree_layout() {
        let o = Origin::parse(
            "[origin]\nbaserefspec=fedora:fedora/x86_64/coreos/stable\n\n[packages]\nrequested=htop;tcpdump;\nrequested-local=0123abcd:foo-1.0-1.x86_64;\n\n[overrides]\nremove=nano;\n",
        )
        .unwrap();
        assert_eq!(o.base_refspec(), Some("fedora:fedora/x86_64/coreos/stable"));
        assert_eq!(o.requested_packages, vec!["htop", "tcpdump"]);
        assert_eq!(o.requested_local_nevras(), vec!["foo-1.0-1.x86_64"]);
        assert_eq!(o.override_remove, vec!["nano"]);
        assert!(o.is_layered());
        let plain = Origin::parse("[origin]\nrefspec=fixture:a/b\n").unwrap();
        assert!(!plain.is_layered());
        assert_eq!(plain.base_refspec(), Some("fixture:a/b"));
    }
}
