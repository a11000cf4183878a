//! OpenPGP signing keys for signed-repository tests, made by the host's `gpg` in a throwaway
//! home directory (never the user's keyring).

use std::path::Path;

use anyhow::{Context, Result};

use crate::cmd::{command, run};

/// An ASCII-armoured key pair.
pub struct TestKey {
    pub secret: Vec<u8>,
    pub public: Vec<u8>,
}

/// Generate a passphrase-less RSA signing key for `uid` with its own GNUPGHOME under `dir`.
pub fn generate(dir: &Path, uid: &str) -> Result<TestKey> {
    let home = dir.join(format!("gnupg-{}", uid.replace(|c: char| !c.is_ascii_alphanumeric(), "_")));
    std::fs::create_dir_all(&home)?;
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let gpg = |args: &[&str]| {
        let mut c = command("gpg", ["--batch", "--pinentry-mode", "loopback", "--passphrase", ""]);
        c.env("GNUPGHOME", &home).args(args);
        run(c)
    };
    gpg(&["--quick-gen-key", uid, "rsa2048", "sign", "never"]).context("generating a test key with gpg")?;
    let secret = gpg(&["--armor", "--export-secret-keys", uid])?.into_bytes();
    let public = gpg(&["--armor", "--export", uid])?.into_bytes();
    // stop the agent this home started
    let _ = std::process::Command::new("gpgconf").env("GNUPGHOME", &home).args(["--kill", "all"]).status();
    Ok(TestKey { secret, public })
}
