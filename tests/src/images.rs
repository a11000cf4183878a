//! Bootable container images of the fixture OS: a fixture commit encapsulated with
//! `ostree-ext` (the encapsulation bootc and rpm-ostree deploy) into an `oci:` directory, and a
//! real registry (Debian's `docker-registry`) on 127.0.0.1 to push them to with skopeo.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ostree_ext::container::{Config, ImageReference, Transport};

use crate::cmd::{command, run};

/// Encapsulate commit `rev` of the ostree repo at `repo` as an OCI image in the directory
/// `dest` (created); returns the manifest digest.
pub fn encapsulate(repo: &Path, rev: &str, dest: &Path) -> Result<String> {
    std::fs::create_dir_all(dest.parent().unwrap_or(Path::new("/")))?;
    let r = ostree_ext::ostree::Repo::new_for_path(repo);
    r.open(ostree_ext::gio::Cancellable::NONE).with_context(|| format!("opening {}", repo.display()))?;
    let imgref = ImageReference { transport: Transport::OciDir, name: dest.display().to_string() };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let digest = rt
        .block_on(ostree_ext::container::encapsulate(&r, rev, &Config::default(), None, &imgref))
        .with_context(|| format!("encapsulating {rev}"))?;
    Ok(digest.to_string())
}

/// A `docker-registry` on 127.0.0.1 (plain http), its storage under `dir`.
pub struct Registry {
    pub port: u16,
    child: Child,
}

impl Registry {
    pub fn start(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir.join("storage"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("storage").display()
            ),
        )?;
        // Debian ships the registry as `docker-registry`, Fedora (docker-distribution) as `registry`
        let program = ["docker-registry", "registry"]
            .into_iter()
            .find(|p| Command::new(p).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok())
            .context("no container registry binary (docker-registry or registry) installed")?;
        let child = Command::new(program)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting docker-registry")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("docker-registry did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Registry { port, child })
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Push the `oci:` directory `src` as `name:tag`.
    pub fn push(&self, src: &Path, name_tag: &str) -> Result<()> {
        run(command("skopeo", ["copy", "--dest-tls-verify=false"])
            .arg(format!("oci:{}", src.display()))
            .arg(format!("docker://{}/{name_tag}", self.host())))
        .with_context(|| format!("pushing {name_tag}"))?;
        Ok(())
    }

    /// `/etc/containers/registries.conf` text marking this registry insecure (plain http).
    pub fn registries_conf(&self) -> String {
        format!("[[registry]]\nlocation = \"{}\"\ninsecure = true\n", self.host())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where images of a test live: `<host dir>/images/<name>`.
pub fn image_dir(base: &Path, name: &str) -> PathBuf {
    base.join("images").join(name)
}

/// Add a layer made from the directory `content` (a tar.gz of its entries) on top of the image
/// in the OCI layout `oci` (the first manifest of its index): what a `FROM base` + `COPY` build
/// produces. Returns the new manifest digest.
pub fn add_layer(oci: &Path, content: &Path, created_by: &str) -> Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let blobs = oci.join("blobs/sha256");
    let blob = |digest: &str| -> Result<Vec<u8>> {
        Ok(std::fs::read(blobs.join(digest.trim_start_matches("sha256:")))?)
    };
    let put = |bytes: &[u8]| -> Result<String> {
        let hex = format!("{:x}", sha2::Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes)?;
        Ok(format!("sha256:{hex}"))
    };
    // the layer: uncompressed (diff id) and gzip-compressed (blob)
    let tar = oci.join("layer.tar");
    run(command("tar", ["--owner=0", "--group=0", "--numeric-owner", "-cf"]).arg(&tar).arg("-C").arg(content).arg("."))?;
    let mut raw = Vec::new();
    std::fs::File::open(&tar)?.read_to_end(&mut raw)?;
    std::fs::remove_file(&tar)?;
    let diff_id = format!("sha256:{:x}", sha2::Sha256::digest(&raw));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &raw)?;
    let gz = gz.finish()?;
    let layer_digest = put(&gz)?;

    let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(oci.join("index.json"))?)?;
    let mdigest = index["manifests"][0]["digest"].as_str().context("index has no manifest")?.to_string();
    let mut manifest: serde_json::Value = serde_json::from_slice(&blob(&mdigest)?)?;
    let cdigest = manifest["config"]["digest"].as_str().context("manifest has no config")?.to_string();
    let mut config: serde_json::Value = serde_json::from_slice(&blob(&cdigest)?)?;
    config["rootfs"]["diff_ids"].as_array_mut().context("config has no diff_ids")?.push(serde_json::json!(diff_id));
    if let Some(h) = config["history"].as_array_mut() {
        h.push(serde_json::json!({ "created_by": created_by }));
    }
    let config_bytes = serde_json::to_vec(&config)?;
    let config_digest = put(&config_bytes)?;
    manifest["config"]["digest"] = serde_json::json!(config_digest);
    manifest["config"]["size"] = serde_json::json!(config_bytes.len());
    manifest["layers"].as_array_mut().context("manifest has no layers")?.push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": layer_digest,
        "size": gz.len(),
    }));
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let manifest_digest = put(&manifest_bytes)?;
    index["manifests"][0]["digest"] = serde_json::json!(manifest_digest);
    index["manifests"][0]["size"] = serde_json::json!(manifest_bytes.len());
    std::fs::write(oci.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(manifest_digest)
}
