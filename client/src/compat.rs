//! `rpm-ostree` compatibility: layerctl started through a link named `rpm-ostree` (the
//! `layerd-rpm-ostree-compat` package ships one) answers what controllers and updaters that shell
//! out to rpm-ostree expect. Most of rpm-ostree's argv is layerctl's own; what differs lives here.

use std::ffi::OsString;
use std::path::Path;

/// Whether this process was started as `rpm-ostree`.
pub fn invoked_as_rpm_ostree(argv0: Option<&OsString>) -> bool {
    argv0.and_then(|a| Path::new(a).file_name()).is_some_and(|n| n == "rpm-ostree")
}

/// `rpm-ostree --version` in rpm-ostree's YAML shape, which rpmostree-client-go parses (the MCO
/// checks `Features` for `container` before rebasing to images).
pub fn version_yaml() -> String {
    format!(
        "rpm-ostree:\n Version: '{}'\n Git: layerd-{}\n Features:\n  - rust\n  - container\n  - layerd\n",
        env!("CARGO_PKG_VERSION"),
        env!("CARGO_PKG_VERSION")
    )
}
