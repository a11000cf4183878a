//! rpm-md repositories for tests: real RPMs (built with the `rpm` crate) and metadata written
//! by `createrepo_c`, as a distribution's mirror has them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cmd::{command, run};
use crate::rpmbuild::RpmSpec;

pub struct YumRepo {
    pub dir: PathBuf,
}

impl YumRepo {
    /// Build `packages` into `dir` and generate its metadata.
    pub fn create(dir: &Path, packages: &[RpmSpec]) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let r = YumRepo { dir: dir.to_path_buf() };
        r.add(packages)?;
        Ok(r)
    }

    /// Add (or rebuild) packages and regenerate the metadata.
    pub fn add(&self, packages: &[RpmSpec]) -> Result<()> {
        for p in packages {
            p.write(&self.dir)?;
        }
        run(command("createrepo_c", ["-q", "--general-compress-type=gz"]).arg(&self.dir))
            .context("generating repository metadata with createrepo_c")?;
        Ok(())
    }

    /// Remove a package file and regenerate the metadata.
    pub fn remove(&self, nevra: &str) -> Result<()> {
        std::fs::remove_file(self.dir.join(format!("{nevra}.rpm")))?;
        run(command("createrepo_c", ["-q", "--general-compress-type=gz"]).arg(&self.dir))?;
        Ok(())
    }
}

/// A `.repo` file for repository `id` at `baseurl`.
pub fn repo_file(id: &str, baseurl: &str, extra: &str) -> String {
    format!("[{id}]\nname=Fixture repository {id}\nbaseurl={baseurl}\nenabled=1\ngpgcheck=0\n{extra}")
}
