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
    /// gpg-agent's socket lives in the home: it must be short (108-byte socket paths), so the
    /// home is a temporary directory under /tmp, removed with the key.
    _home: tempfile::TempDir,
}

impl TestKey {
    /// Sign ostree commit `commit` of the repository at `repo` with this key.
    pub fn sign_ostree_commit(&self, repo: &Path, commit: &str) -> Result<()> {
        run(command("ostree", ["gpg-sign".to_string(), format!("--repo={}", repo.display()), format!("--gpg-homedir={}", self.home.display()), commit.to_string(), self.uid.clone()]))
            .context("signing the commit with ostree gpg-sign")?;
        let _ = std::process::Command::new("gpgconf").env("GNUPGHOME", &self.home).args(["--kill", "all"]).status();
        Ok(())
    }

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

/// Generate a passphrase-less RSA signing key for `uid` with its own GNUPGHOME (`_dir` is kept
/// for callers; the home must be short, see [`TestKey`]).
pub fn generate(_dir: &Path, uid: &str) -> Result<TestKey> {
    let tmp = tempfile::Builder::new().prefix("lgpg").tempdir_in("/tmp")?;
    let home = tmp.path().to_path_buf();
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
    Ok(TestKey { secret, public, home, uid: uid.to_string(), _home: tmp })
}
