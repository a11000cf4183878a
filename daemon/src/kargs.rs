//! Kernel arguments: editing the boot entry options of a new deployment of the same tree.
//!
//! Edits follow rpm-ostree's `kargs` flags and the kernel's view of the command line: keys may
//! repeat (`console=tty0 console=ttyS0`), so deleting or replacing a key with several values
//! needs the value. The change stages a new deployment of the pending-or-booted commit with
//! the same origin (nothing is rebuilt).

use crate::error::{Error, Result};
use crate::sysroot::{deployment_id, SysrootPath};
use crate::txn::Transaction;

/// One request's edits, applied in this order: replace, delete, append.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KargsEdit {
    pub append: Vec<String>,
    pub append_if_missing: Vec<String>,
    pub delete: Vec<String>,
    pub delete_if_present: Vec<String>,
    /// `KEY=OLD=NEW`, or `KEY=NEW` when the key has one value.
    pub replace: Vec<String>,
    /// Start from the running kernel's `/proc/cmdline` (without the boot-specific `ostree=`,
    /// `BOOT_IMAGE=`, `initrd=` arguments).
    pub import_proc_cmdline: bool,
}

impl KargsEdit {
    pub fn is_empty(&self) -> bool {
        self.append.is_empty()
            && self.append_if_missing.is_empty()
            && self.delete.is_empty()
            && self.delete_if_present.is_empty()
            && self.replace.is_empty()
            && !self.import_proc_cmdline
    }

    pub fn title(&self) -> String {
        let mut parts = vec!["kargs".to_string()];
        for (flag, list) in [
            ("--append", &self.append),
            ("--append-if-missing", &self.append_if_missing),
            ("--delete", &self.delete),
            ("--delete-if-present", &self.delete_if_present),
            ("--replace", &self.replace),
        ] {
            for v in list {
                parts.push(format!("{flag}={v}"));
            }
        }
        if self.import_proc_cmdline {
            parts.push("--import-proc-cmdline".into());
        }
        parts.join(" ")
    }

    /// Check every argument's syntax (before a transaction exists).
    /// Errors name the list (`append`, `delete`, … as the options are called over D-Bus and
    /// gRPC, `--append` … on the command line) and the argument.
    pub fn validate(&self) -> Result<()> {
        let lists = [
            ("append", &self.append),
            ("append-if-missing", &self.append_if_missing),
            ("delete", &self.delete),
            ("delete-if-present", &self.delete_if_present),
            ("replace", &self.replace),
        ];
        for (name, list) in lists {
            for v in list {
                check_arg(v).map_err(|e| Error::InvalidArgument(format!("{name}: {e}")))?;
            }
        }
        for r in &self.replace {
            if !r.contains('=') {
                return Err(Error::InvalidArgument(format!("replace: {r:?}: expected KEY=VALUE or KEY=OLD=NEW")));
            }
        }
        Ok(())
    }
}

fn key(arg: &str) -> &str {
    arg.split_once('=').map_or(arg, |(k, _)| k)
}

/// One argument as the kernel parses it: a non-empty key, balanced double quotes, no spaces
/// outside quotes.
fn check_arg(arg: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::InvalidArgument(format!("kernel argument {arg:?}: {why}")));
    if arg.is_empty() {
        return bad("is empty");
    }
    if key(arg).is_empty() {
        return bad("has an empty key");
    }
    if arg.matches('"').count() % 2 != 0 {
        return bad("has unbalanced quotes");
    }
    let mut quoted = false;
    for c in arg.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return bad("contains whitespace outside quotes"),
            _ => {}
        }
    }
    Ok(())
}

/// Split a command line into arguments the way the kernel does: at whitespace outside double
/// quotes (`foo="a b"` is one argument).
pub(crate) fn split_args(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    args.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        args.push(cur);
    }
    args
}

/// Apply `edit` to `current`; the result, in order.
pub fn apply(current: &[String], edit: &KargsEdit) -> Result<Vec<String>> {
    edit.validate()?;
    let mut args: Vec<String> = current.to_vec();
    for r in &edit.replace {
        let (k, rest) = r.split_once('=').unwrap_or((r.as_str(), ""));
        let matching: Vec<usize> = args.iter().enumerate().filter(|(_, a)| key(a) == k).map(|(i, _)| i).collect();
        // KEY=OLD=NEW when KEY=OLD exists; otherwise the whole rest is the new value of a
        // single-valued key (values may contain '=': root=LABEL=boot)
        let as_old_new = rest
            .split_once('=')
            .and_then(|(old, new)| args.iter().position(|a| *a == format!("{k}={old}")).map(|i| (i, new)));
        let (i, new) = match as_old_new {
            Some(found) => found,
            None if matching.len() > 1 => {
                return Err(Error::InvalidArgument(format!("--replace {r}: {k} has several values; give KEY=OLD=NEW")));
            }
            // the whole rest is the new value only when it cannot be OLD=NEW: it has no '='
            // or the current value has one too (root=LABEL=root → root=LABEL=boot)
            None => match (matching.first(), rest.split_once('=')) {
                (Some(&i), None) => (i, rest),
                (Some(&i), Some(_)) if args[i].split_once('=').is_some_and(|(_, v)| v.contains('=')) => (i, rest),
                (_, Some((old, _))) => {
                    return Err(Error::InvalidArgument(format!("--replace {r}: no kernel argument {k}={old} to replace")));
                }
                (None, None) => return Err(Error::InvalidArgument(format!("--replace {r}: no kernel argument {k} to replace"))),
            },
        };
        args[i] = format!("{k}={new}");
    }
    for (d, must) in edit.delete.iter().map(|d| (d, true)).chain(edit.delete_if_present.iter().map(|d| (d, false))) {
        let found: Vec<usize> = if d.contains('=') {
            args.iter().enumerate().filter(|(_, a)| *a == d).map(|(i, _)| i).collect()
        } else {
            args.iter().enumerate().filter(|(_, a)| key(a) == d).map(|(i, _)| i).collect()
        };
        match found.as_slice() {
            [] if must => return Err(Error::InvalidArgument(format!("--delete {d}: no such kernel argument"))),
            [] => {}
            [i] => {
                args.remove(*i);
            }
            _ if !d.contains('=') => {
                return Err(Error::InvalidArgument(format!("--delete {d}: {d} has several values; give KEY=VALUE")));
            }
            many => {
                // the same KEY=VALUE several times: remove one
                args.remove(many[0]);
            }
        }
    }
    for a in &edit.append {
        args.push(a.clone());
    }
    for a in &edit.append_if_missing {
        if !args.contains(a) {
            args.push(a.clone());
        }
    }
    Ok(args)
}

/// The running kernel's arguments minus those that belong to one boot.
fn proc_cmdline() -> Result<Vec<String>> {
    let text = std::fs::read_to_string("/proc/cmdline").map_err(|e| Error::Failed(format!("reading /proc/cmdline: {e}")))?;
    Ok(split_args(&text)
        .into_iter()
        .filter(|a| !["ostree", "BOOT_IMAGE", "initrd"].contains(&key(a)))
        .collect())
}

/// Run a kargs transaction: stage the pending-or-booted commit again with the edited arguments.
pub fn run(txn: &Transaction, path: &SysrootPath, edit: &KargsEdit) -> Result<bool> {
    let locked = path.lock_for(txn)?;
    let source = crate::layering::origin_source(&locked)?;
    if edit.import_proc_cmdline && !locked.sysroot.is_booted() {
        return Err(Error::InvalidArgument(
            "--import-proc-cmdline takes the running kernel's arguments; this sysroot is not the booted one".into(),
        ));
    }
    let current = if edit.import_proc_cmdline { proc_cmdline()? } else { crate::deploy::kargs_of(&source) };
    let new = apply(&current, edit)?;
    // the boot-specific ostree= argument is written by libostree itself
    let new: Vec<String> = new.into_iter().filter(|a| key(a) != "ostree").collect();
    let before: Vec<String> = crate::deploy::kargs_of(&source).into_iter().filter(|a| key(a) != "ostree").collect();
    if new == before {
        return Ok(false);
    }
    txn.message(format!("Kernel arguments: {}", new.join(" ")));
    let origin = source
        .origin()
        .ok_or_else(|| Error::InvalidState(format!("deployment {} has no origin file", deployment_id(&source))))?;
    // a copy without the source's per-deployment state (pinning), keeping what it deploys
    let origin = crate::deploy::copy_origin(&origin)?;
    crate::deploy::stage(txn, &locked, source.osname().as_str(), source.csum().as_str(), &origin, &new, false)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn edits_like_the_kernel_sees_them() {
        let cur = v("root=LABEL=root rw console=tty0 console=ttyS0 quiet");
        let e = KargsEdit { append: v("foo=bar"), delete: v("quiet"), replace: v("root=LABEL=boot"), ..Default::default() };
        assert_eq!(apply(&cur, &e).unwrap(), v("root=LABEL=boot rw console=tty0 console=ttyS0 foo=bar"));
        let e = KargsEdit { replace: v("console=ttyS0=ttyS1"), delete: v("console=tty0"), ..Default::default() };
        assert_eq!(apply(&cur, &e).unwrap(), v("root=LABEL=root rw console=ttyS1 quiet"));
        let e = KargsEdit { append_if_missing: v("rw nosmt"), delete_if_present: v("absent"), ..Default::default() };
        assert_eq!(apply(&cur, &e).unwrap(), v("root=LABEL=root rw console=tty0 console=ttyS0 quiet nosmt"));
    }

    #[test]
    fn bad_edits_say_why() {
        let cur = v("console=tty0 console=ttyS0 quiet");
        for (e, want) in [
            (KargsEdit { delete: v("console"), ..Default::default() }, "several values"),
            (KargsEdit { replace: v("console=x"), ..Default::default() }, "several values"),
            (KargsEdit { delete: v("nope"), ..Default::default() }, "no such kernel argument"),
            (KargsEdit { replace: v("nope=1=2"), ..Default::default() }, "no kernel argument nope=1"),
            (KargsEdit { append: v("=x"), ..Default::default() }, "empty key"),
            (KargsEdit { append: vec!["a=\"b".into()], ..Default::default() }, "unbalanced quotes"),
            (KargsEdit { append: vec!["a=b c".into()], ..Default::default() }, "whitespace"),
            (KargsEdit { replace: v("quiet"), ..Default::default() }, "expected KEY=VALUE"),
        ] {
            let err = apply(&cur, &e).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should say {want}");
        }
        assert!(apply(&cur, &KargsEdit { append: vec!["a=\"b c\"".into()], ..Default::default() }).is_ok());
        // a single-valued key: KEY=OLD=NEW with a wrong OLD is an error, not a new value "OLD=NEW"
        let one = v("foo=1 root=LABEL=root");
        let err = apply(&one, &KargsEdit { replace: v("foo=2=3"), ..Default::default() }).unwrap_err().to_string();
        assert!(err.contains("no kernel argument foo=2"), "{err}");
        assert_eq!(apply(&one, &KargsEdit { replace: v("foo=1=3"), ..Default::default() }).unwrap(), v("foo=3 root=LABEL=root"));
        assert_eq!(apply(&one, &KargsEdit { replace: v("foo=7"), ..Default::default() }).unwrap(), v("foo=7 root=LABEL=root"));
    }

    #[test]
    fn splits_like_the_kernel() {
        assert_eq!(split_args(" a=\"x y\"  b\tc=\"\" "), vec!["a=\"x y\"", "b", "c=\"\""]);
    }
}
