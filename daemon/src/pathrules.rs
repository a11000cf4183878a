//! Where a package's payload paths land in an ostree tree (groundwork for layering, issue 4).
//!
//! An ostree OS is `/usr` plus state: `/etc` is shipped as `usr/etc` and merged at deploy time,
//! `/var` belongs to the machine (never to a commit), `/opt` and `/usr/local` are links into
//! `/var`. So package content is placed the way rpm-ostree places it, and anything that cannot
//! be placed safely is refused with a reason naming the path:
//!
//! | package path | in the new tree |
//! |---|---|
//! | `/usr/…` | `usr/…` |
//! | `/etc/…` | `usr/etc/…` |
//! | `/bin`, `/sbin`, `/lib`, `/lib64` `/…` | `usr/bin/…` etc. (those are links into `/usr`) |
//! | `/opt/…` | `usr/lib/opt/…`, reached through a `/var/opt/<dir>` link |
//! | `/boot/…` | `usr/lib/ostree-boot/…` |
//! | `/var/…`, `/run/…`, `/home/…`, `/root/…`, `/srv/…`, `/mnt/…`, `/media/…` | not in the tree: becomes a tmpfiles.d entry |
//! | `/usr/local/…` | refused (`/usr/local` is `/var/usrlocal`, machine state) |
//! | `/proc`, `/sys`, `/dev`, `/tmp`, anything else | refused |
//!
//! Paths are checked lexically here (absolute, UTF-8, no `.`/`..`/empty components, no NUL);
//! writing then opens every path with `openat2(RESOLVE_BENEATH)` so symlinks cannot lead out.

use std::fmt;

/// Where one payload path goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// A path relative to the new tree's root, e.g. `usr/bin/htop`.
    Tree {
        path: String,
        /// For `/opt/<dir>/…`: `<dir>`, which needs a `/var/opt/<dir>` link to `usr/lib/opt/<dir>`.
        opt_dir: Option<String>,
    },
    /// Machine state (the normalised absolute path, e.g. `/var/lib/foo`): expressed as a
    /// tmpfiles.d entry so it is created on the machine, never shipped in the commit.
    State(String),
}

/// Why a payload path is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathRefused {
    pub path: String,
    pub reason: &'static str,
}

impl fmt::Display for PathRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.path, self.reason)
    }
}

impl std::error::Error for PathRefused {}

/// Place one payload path (as it appears in the package header).
pub fn place(raw: &[u8]) -> Result<Placement, PathRefused> {
    let shown = String::from_utf8_lossy(raw).into_owned();
    let refuse = |reason| Err(PathRefused { path: shown.clone(), reason });
    let Ok(path) = std::str::from_utf8(raw) else { return refuse("is not valid UTF-8") };
    if path.contains('\0') {
        return refuse("contains a NUL byte");
    }
    let Some(rest) = path.strip_prefix('/') else { return refuse("is not absolute") };
    if rest.contains("//") {
        return refuse("has an empty component");
    }
    // a trailing slash (directories) is fine
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut parts: Vec<&str> = Vec::new();
    for c in rest.split('/').filter(|c| !c.is_empty()) {
        match c {
            "." => return refuse("has a '.' component"),
            ".." => return refuse("has a '..' component (would escape)"),
            c => parts.push(c),
        }
    }
    let Some((&top, below)) = parts.split_first() else { return refuse("is the root directory") };
    let join = |prefix: &str, rest: &[&str]| {
        let mut p = prefix.to_string();
        for r in rest {
            p.push('/');
            p.push_str(r);
        }
        p
    };
    let tree = |path: String| Ok(Placement::Tree { path, opt_dir: None });
    match top {
        "usr" => {
            if below.first() == Some(&"local") {
                return refuse("is under /usr/local, which is machine state (/var/usrlocal) on an ostree system");
            }
            tree(join("usr", below))
        }
        "etc" => tree(join("usr/etc", below)),
        "bin" | "sbin" | "lib" | "lib64" => tree(join(&format!("usr/{top}"), below)),
        "boot" => tree(join("usr/lib/ostree-boot", below)),
        "opt" => Ok(Placement::Tree {
            path: join("usr/lib/opt", below),
            opt_dir: below.first().map(|d| d.to_string()),
        }),
        "var" | "run" | "home" | "root" | "srv" | "mnt" | "media" => Ok(Placement::State(format!("/{}", parts.join("/")))),
        "proc" | "sys" | "dev" | "tmp" => refuse("is in a runtime filesystem (/proc, /sys, /dev, /tmp), not part of an OS image"),
        _ => refuse("is outside the OS image layout (/usr, /etc, /opt, /boot, /var)"),
    }
}

/// The tmpfiles.d line that creates a directory of machine state.
pub fn tmpfiles_dir(path: &str, mode: u32, user: &str, group: &str) -> String {
    format!("d {} {:04o} {user} {group} - -", escape(path), mode & 0o7777)
}

/// The tmpfiles.d line that creates a symlink in machine state.
pub fn tmpfiles_symlink(path: &str, target: &str) -> String {
    format!("L {} - - - - {}", escape(path), escape(target))
}

/// tmpfiles.d separates fields by whitespace: escape it (and backslashes) C-style.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            ' ' => out.push_str("\\x20"),
            '\t' => out.push_str("\\x09"),
            '\n' => out.push_str("\\x0a"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(p: &str) -> Placement {
        Placement::Tree { path: p.into(), opt_dir: None }
    }

    #[test]
    fn os_paths_land_under_usr() {
        assert_eq!(place(b"/usr/bin/htop").unwrap(), tree("usr/bin/htop"));
        assert_eq!(place(b"/etc/htoprc").unwrap(), tree("usr/etc/htoprc"));
        assert_eq!(place(b"/sbin/tcpdump").unwrap(), tree("usr/sbin/tcpdump"));
        assert_eq!(place(b"/boot/efi/x").unwrap(), tree("usr/lib/ostree-boot/efi/x"));
        assert_eq!(place(b"/usr/share/doc/").unwrap(), tree("usr/share/doc"));
        assert_eq!(
            place(b"/opt/vendor/bin/tool").unwrap(),
            Placement::Tree { path: "usr/lib/opt/vendor/bin/tool".into(), opt_dir: Some("vendor".into()) }
        );
    }

    #[test]
    fn state_becomes_tmpfiles() {
        assert_eq!(place(b"/var/lib/foo").unwrap(), Placement::State("/var/lib/foo".into()));
        assert_eq!(place(b"/run/foo").unwrap(), Placement::State("/run/foo".into()));
        assert_eq!(tmpfiles_dir("/var/lib/my dir", 0o40750, "root", "wheel"), "d /var/lib/my\\x20dir 0750 root wheel - -");
        assert_eq!(tmpfiles_symlink("/var/opt/vendor", "/usr/lib/opt/vendor"), "L /var/opt/vendor - - - - /usr/lib/opt/vendor");
    }

    #[test]
    fn hostile_and_misplaced_paths_are_refused_with_a_reason() {
        for (p, why) in [
            (&b"../../etc/shadow"[..], "not absolute"),
            (b"/usr/../../etc/shadow", "'..'"),
            (b"/usr/./bin/x", "'.'"),
            (b"/usr//bin/x", "empty component"),
            (b"/usr/local/bin/x", "/usr/local"),
            (b"/proc/x", "runtime"),
            (b"/foo/bar", "outside"),
            (b"/", "root directory"),
            (b"/usr/bin/\xff", "UTF-8"),
            (b"/usr/bin/a\0b", "NUL"),
        ] {
            let e = place(p).unwrap_err();
            assert!(e.reason.contains(why), "{e} should say {why}");
            let shown = format!("{:?}", String::from_utf8_lossy(p));
            assert!(e.to_string().contains(&shown), "{e} names the path (escaped)");
        }
    }
}
