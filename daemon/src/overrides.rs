//! Base package overrides: `override remove NAME…` takes base packages out of the new
//! deployment, `override replace ./x.rpm` puts a local RPM in place of the base package of the
//! same name, `override reset NAME|--all` undoes either. They live in the origin's
//! `[overrides]` group (`remove=` names, `replace-local=` `sha256:nevra` entries, as rpm-ostree
//! writes them) and are re-applied on every build, so they survive upgrades and rebases; one a
//! new base makes pointless (the package is gone, or already at the replacement's version) is
//! kept but inactive, and shown so.

use crate::error::{Error, Result};
use crate::layering::{name_of_nevra, LocalInput};
use crate::origin::entry_nevra;

/// What a request changes in the overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OverrideChange {
    /// Base package names to remove.
    pub remove: Vec<String>,
    /// Local RPMs replacing the base packages of the same name.
    pub replace_local: Vec<LocalInput>,
    /// Names (or NEVRAs) whose override is dropped.
    pub reset: Vec<String>,
    pub reset_all: bool,
}

impl OverrideChange {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.replace_local.is_empty() && self.reset.is_empty() && !self.reset_all
    }

    /// Words for the transaction title.
    pub fn title(&self) -> Vec<String> {
        let mut parts = Vec::new();
        if self.reset_all {
            parts.push("override reset --all".to_string());
        }
        if !self.reset.is_empty() {
            parts.push(format!("override reset {}", self.reset.join(" ")));
        }
        if !self.remove.is_empty() {
            parts.push(format!("override remove {}", self.remove.join(" ")));
        }
        if !self.replace_local.is_empty() {
            let n: Vec<String> = self.replace_local.iter().map(|i| i.rpm.nevra()).collect();
            parts.push(format!("override replace {}", n.join(" ")));
        }
        parts
    }
}

/// The overrides a new deployment asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requested {
    /// `[overrides] remove=`: package names.
    pub remove: Vec<String>,
    /// `[overrides] replace-local=`: `sha256:nevra` entries.
    pub replace_local: Vec<String>,
}

impl Requested {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.replace_local.is_empty()
    }
}

/// What the overrides do to one base.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Active {
    /// `(name, base NEVRA)` of base packages removed.
    pub removals: Vec<(String, String)>,
    /// `(entry, base NEVRA it replaces)`.
    pub replacements: Vec<(String, String)>,
    /// Overrides that do nothing on this base, as shown to the admin.
    pub inactive: Vec<String>,
}

impl Active {
    pub fn is_empty(&self) -> bool {
        self.removals.is_empty() && self.replacements.is_empty()
    }

    /// NEVRAs of the base packages taken out of the tree.
    pub fn taken_out(&self) -> Vec<String> {
        self.removals.iter().map(|(_, n)| n.clone()).chain(self.replacements.iter().map(|(_, o)| o.clone())).collect()
    }
}

/// Apply `change` to the source's overrides. `base` lists `(name, nevra)` of the base's
/// packages; errors name the package and the problem.
pub fn plan(current: &Requested, change: &OverrideChange, base: &[(String, String)], idempotent: bool) -> Result<Requested> {
    let mut new = current.clone();
    if change.reset_all {
        new = Requested::default();
    }
    for r in &change.reset {
        let by_remove = new.remove.iter().position(|n| n == r);
        let by_replace = new.replace_local.iter().position(|e| entry_nevra(e) == r || name_of_nevra(entry_nevra(e)) == r);
        match (by_remove, by_replace) {
            (None, None) if idempotent || change.reset_all => {}
            (None, None) => {
                let mut have: Vec<&str> = current.remove.iter().map(String::as_str).collect();
                have.extend(current.replace_local.iter().map(|e| entry_nevra(e)));
                return Err(Error::InvalidArgument(format!(
                    "{r} has no override{}",
                    if have.is_empty() { " (there are none)".to_string() } else { format!(" (overridden: {})", have.join(", ")) }
                )));
            }
            (a, b) => {
                if let Some(i) = a {
                    new.remove.remove(i);
                }
                if let Some(i) = b {
                    new.replace_local.remove(i);
                }
            }
        }
    }
    let in_base = |name: &str| base.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    for name in &change.remove {
        if new.remove.contains(name) {
            if idempotent {
                continue;
            }
            return Err(Error::InvalidArgument(format!("{name} is already removed")));
        }
        if in_base(name).is_none() {
            return Err(Error::InvalidArgument(format!("{name} is not a base package; only base packages can be removed (layered ones: uninstall)")));
        }
        if new.replace_local.iter().any(|e| name_of_nevra(entry_nevra(e)) == name) {
            return Err(Error::InvalidArgument(format!("{name} is replaced by a local package; reset that override first")));
        }
        new.remove.push(name.clone());
    }
    for i in &change.replace_local {
        let nevra = i.rpm.nevra();
        let entry = format!("{}:{nevra}", i.rpm.sha256);
        if new.replace_local.contains(&entry) {
            if idempotent {
                continue;
            }
            return Err(Error::InvalidArgument(format!("{}: {nevra} already replaces the base package", i.label)));
        }
        let Some(old) = in_base(&i.rpm.name) else {
            return Err(Error::InvalidArgument(format!(
                "{}: the base has no package {} to replace (to add a package, use install)",
                i.label, i.rpm.name
            )));
        };
        if old == nevra {
            return Err(Error::InvalidArgument(format!("{}: the base already has {nevra}", i.label)));
        }
        if new.remove.contains(&i.rpm.name) {
            return Err(Error::InvalidArgument(format!("{}: {} is removed by an override; reset it first", i.label, i.rpm.name)));
        }
        new.replace_local.retain(|e| name_of_nevra(entry_nevra(e)) != i.rpm.name);
        new.replace_local.push(entry);
    }
    Ok(new)
}

/// What `requested` does on a base with packages `base` (`(name, nevra)`).
pub fn active(requested: &Requested, base: &[(String, String)]) -> Active {
    let mut a = Active::default();
    for name in &requested.remove {
        match base.iter().find(|(n, _)| n == name) {
            Some((_, nevra)) => a.removals.push((name.clone(), nevra.clone())),
            None => a.inactive.push(format!("{name} (removal: not in the base)")),
        }
    }
    for e in &requested.replace_local {
        let nevra = entry_nevra(e);
        match base.iter().find(|(n, _)| n == name_of_nevra(nevra)) {
            Some((_, old)) if old != nevra => a.replacements.push((e.clone(), old.clone())),
            Some(_) => a.inactive.push(format!("{nevra} (replacement: the base has it)")),
            None => a.inactive.push(format!("{nevra} (replacement: the base has no {})", name_of_nevra(nevra))),
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<(String, String)> {
        [("kernel", "kernel-1-1.x86_64"), ("kernel-core", "kernel-core-1-1.x86_64"), ("nano", "nano-5-1.x86_64")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn remove_reset_and_inactive() {
        let none = Requested::default();
        let ch = OverrideChange { remove: vec!["kernel".into(), "kernel-core".into()], ..Default::default() };
        let r = plan(&none, &ch, &base(), false).unwrap();
        assert_eq!(r.remove, ["kernel", "kernel-core"]);
        assert!(plan(&r, &ch, &base(), false).unwrap_err().to_string().contains("kernel is already removed"));
        assert_eq!(plan(&r, &ch, &base(), true).unwrap(), r);
        let e = plan(&none, &OverrideChange { remove: vec!["htop".into()], ..Default::default() }, &base(), false).unwrap_err();
        assert!(e.to_string().contains("htop is not a base package"), "{e}");
        let back = plan(&r, &OverrideChange { reset: vec!["kernel".into()], ..Default::default() }, &base(), false).unwrap();
        assert_eq!(back.remove, ["kernel-core"]);
        let e = plan(&back, &OverrideChange { reset: vec!["nano".into()], ..Default::default() }, &base(), false).unwrap_err();
        assert!(e.to_string().contains("nano has no override (overridden: kernel-core)"), "{e}");
        assert!(plan(&r, &OverrideChange { reset_all: true, ..Default::default() }, &base(), false).unwrap().is_empty());
        // on a base without nano, removing it does nothing and says so
        let a = active(&Requested { remove: vec!["nano".into(), "gone".into()], ..Default::default() }, &base());
        assert_eq!(a.removals, [("nano".to_string(), "nano-5-1.x86_64".to_string())]);
        assert_eq!(a.inactive, ["gone (removal: not in the base)"]);
        let a = active(&Requested { replace_local: vec!["s:nano-5-1.x86_64".into(), "t:nano2-1-1.x86_64".into()], ..Default::default() }, &base());
        assert!(a.replacements.is_empty());
        assert_eq!(a.inactive.len(), 2);
        let a = active(&Requested { replace_local: vec!["s:nano-6-1.x86_64".into()], ..Default::default() }, &base());
        assert_eq!(a.replacements, [("s:nano-6-1.x86_64".to_string(), "nano-5-1.x86_64".to_string())]);
        assert_eq!(a.taken_out(), ["nano-5-1.x86_64"]);
    }
}
