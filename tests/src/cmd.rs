//! Running external commands with errors that say what failed and what it printed.

use std::borrow::BorrowMut;
use std::ffi::OsStr;
use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

/// Build a command from a program and arguments.
pub fn command<I, S>(program: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// Run to completion; fail unless it exits 0. Returns stdout.
pub fn run(mut cmd: impl BorrowMut<Command>) -> Result<String> {
    let cmd = cmd.borrow_mut();
    let out = output(cmd)?;
    check(cmd, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run to completion and return the output whatever the exit status.
pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.output()
        .with_context(|| format!("starting {}", describe(cmd)))
}

/// Fail with the command line, exit status and both streams unless `out` is a success.
pub fn check(cmd: &Command, out: &Output) -> Result<()> {
    if !out.status.success() {
        bail!(
            "{} failed ({}):\nstdout: {}\nstderr: {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim_end(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(())
}

/// `program arg arg ...` for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}
