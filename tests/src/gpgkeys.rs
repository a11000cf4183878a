//! OpenPGP signing keys for signed-repository tests, made by the host's `gpg` in a throwaway
//! home directory (never the user's keyring).

use std::path::Path;

use anyhow::{Context, Result};

use crate::cmd::{command, run};

/// An ASCII-armoured key pair, and the throwaway gpg home holding it.
pub struct TestKey {
    pub secret: Vec<u8>,
    pub public: Vec<u8>,
    home: std::path::PathBuf,
    uid: String,
}

impl TestKey {
    /// Write `<file>.asc`, an armoured detached signature of `file` (as repomd.xml.asc).
    pub fn detach_sign(&self, file: &Path) -> Result<()> {
        let mut asc = file.as_os_str().to_owned();
        asc.push(".asc");
        let mut c = command("gpg", ["--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "", "--armor", "--detach-sign"]);
        c.env("GNUPGHOME", &self.home).args(["--local-user", &self.uid, "--output"]).arg(&asc).arg(file);
        run(c).context("signing with gpg")?;
        let _ = std::process::Command::new("gpgconf").env("GNUPGHOME", &self.home).args(["--kill", "all"]).status();
        Ok(())
    }
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
    Ok(TestKey { secret, public, home, uid: uid.to_string() })
}
