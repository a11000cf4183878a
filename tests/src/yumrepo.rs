//! rpm-md repositories for tests: real RPMs (built with the `rpm` crate) and metadata written
//! by `createrepo_c`, as a distribution's mirror has them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cmd::{command, run};
use crate::rpmbuild::RpmSpec;

pub struct YumRepo {
    pub dir: PathBuf,
    /// Metadata compression: `gz`, `xz`, `bz2` (createrepo_c) or `zstd` (recompressed here).
    pub compress: String,
}

impl YumRepo {
    /// Build `packages` into `dir` and generate its metadata.
    pub fn create(dir: &Path, packages: &[RpmSpec]) -> Result<Self> {
        Self::create_compressed(dir, packages, "gz")
    }

    /// [`YumRepo::create`] with metadata compressed as `compress`.
    pub fn create_compressed(dir: &Path, packages: &[RpmSpec], compress: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let r = YumRepo { dir: dir.to_path_buf(), compress: compress.into() };
        r.add(packages)?;
        Ok(r)
    }

    fn createrepo(&self) -> Result<()> {
        let kind = if self.compress == "zstd" { "gz" } else { self.compress.as_str() };
        run(command("createrepo_c", ["-q".to_string(), "--no-database".to_string(), format!("--general-compress-type={kind}")]).arg(&self.dir))
            .context("generating repository metadata with createrepo_c")?;
        if self.compress == "zstd" {
            self.recompress_zstd()?;
        }
        Ok(())
    }

    /// createrepo_c 0.17 cannot write zstd: recompress primary and filelists and rewrite their
    /// entries in repomd.xml (location, checksum, size).
    fn recompress_zstd(&self) -> Result<()> {
        use sha2::Digest;
        let repodata = self.dir.join("repodata");
        let mut repomd = std::fs::read_to_string(repodata.join("repomd.xml"))?;
        for kind in ["primary", "filelists"] {
            let Some(gz) = std::fs::read_dir(&repodata)?.flatten().map(|e| e.path()).find(|p| p.to_string_lossy().ends_with(&format!("{kind}.xml.gz"))) else { continue };
            let mut xml = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(std::fs::File::open(&gz)?), &mut xml)?;
            let plain = repodata.join(format!("{kind}.xml"));
            std::fs::write(&plain, &xml)?;
            run(command("zstd", ["-q", "-f", "--rm"]).arg(&plain))?;
            let zst_bytes = std::fs::read(repodata.join(format!("{kind}.xml.zst")))?;
            let sum = format!("{:x}", sha2::Sha256::digest(&zst_bytes));
            let name = format!("{sum}-{kind}.xml.zst");
            std::fs::rename(repodata.join(format!("{kind}.xml.zst")), repodata.join(&name))?;
            let old_name = gz.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let old_sum = old_name.split('-').next().unwrap_or_default().to_string();
            let old_size = std::fs::metadata(&gz)?.len();
            std::fs::remove_file(&gz)?;
            repomd = repomd
                .replace(&format!("repodata/{old_name}"), &format!("repodata/{name}"))
                .replacen(&format!(">{old_sum}<"), &format!(">{sum}<"), 1)
                .replacen(&format!("<size>{old_size}</size>"), &format!("<size>{}</size>", zst_bytes.len()), 1);
        }
        std::fs::write(repodata.join("repomd.xml"), repomd)?;
        Ok(())
    }

    /// Add (or rebuild) packages and regenerate the metadata.
    pub fn add(&self, packages: &[RpmSpec]) -> Result<()> {
        for p in packages {
            p.write(&self.dir)?;
        }
        self.createrepo()
    }

    /// Replace the primary metadata with `xml` (gzip-compressed), keeping repomd.xml consistent
    /// (location, checksum, size): hostile metadata that passes the checksum check.
    pub fn replace_primary(&self, xml: &[u8]) -> Result<()> {
        use sha2::Digest;
        use std::io::Write;
        let repodata = self.dir.join("repodata");
        let old = std::fs::read_dir(&repodata)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().contains("primary.xml"))
            .context("no primary metadata")?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(xml)?;
        let bytes = gz.finish()?;
        let sum = format!("{:x}", sha2::Sha256::digest(&bytes));
        let name = format!("{sum}-primary.xml.gz");
        std::fs::write(repodata.join(&name), &bytes)?;
        let old_name = old.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let old_sum = old_name.split('-').next().unwrap_or_default().to_string();
        let old_size = std::fs::metadata(&old)?.len();
        std::fs::remove_file(&old)?;
        let repomd = std::fs::read_to_string(repodata.join("repomd.xml"))?
            .replace(&format!("repodata/{old_name}"), &format!("repodata/{name}"))
            .replacen(&format!(">{old_sum}<"), &format!(">{sum}<"), 1)
            .replacen(&format!("<size>{old_size}</size>"), &format!("<size>{}</size>", bytes.len()), 1);
        std::fs::write(repodata.join("repomd.xml"), repomd)?;
        Ok(())
    }

    /// Remove a package file and regenerate the metadata.
    pub fn remove(&self, nevra: &str) -> Result<()> {
        std::fs::remove_file(self.dir.join(format!("{nevra}.rpm")))?;
        self.createrepo()
    }
}

/// A `.repo` file for repository `id` at `baseurl`.
pub fn repo_file(id: &str, baseurl: &str, extra: &str) -> String {
    format!("[{id}]\nname=Fixture repository {id}\nbaseurl={baseurl}\nenabled=1\ngpgcheck=0\n{extra}")
}
