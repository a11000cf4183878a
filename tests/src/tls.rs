//! HTTPS for repository tests: a throwaway CA and server certificate made with the `openssl`
//! CLI, and `openssl s_server -WWW` serving a directory (optionally demanding a client
//! certificate signed by the same CA).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::cmd::{command, run};

/// A CA with a server certificate for 127.0.0.1 and a client certificate.
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let d = |n: &str| dir.join(n).display().to_string();
        let openssl = |args: &[&str]| run(command("openssl", args));
        openssl(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &d("ca.key"), "-out", &d("ca.pem"), "-days", "2", "-subj", "/CN=layerd test CA"])?;
        std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n")?;
        // X.509 v3 for both (rustls refuses v1 certificates): the extensions make it so
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")?;
        for (who, subj, ext) in [("server", "/CN=127.0.0.1", Some("server.ext")), ("client", "/CN=layerd test client", Some("client.ext"))] {
            openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", &d(&format!("{who}.key")), "-out", &d(&format!("{who}.csr")), "-subj", subj])?;
            let mut args = vec!["x509", "-req", "-in"];
            let csr = d(&format!("{who}.csr"));
            let pem = d(&format!("{who}.pem"));
            let (ca, cakey, ext_path) = (d("ca.pem"), d("ca.key"), ext.map(d));
            args.extend([csr.as_str(), "-CA", ca.as_str(), "-CAkey", cakey.as_str(), "-CAcreateserial", "-out", pem.as_str(), "-days", "2"]);
            if let Some(e) = &ext_path {
                args.extend(["-extfile", e.as_str()]);
            }
            openssl(&args)?;
        }
        Ok(Certs { dir: dir.to_path_buf() })
    }
}

/// `openssl s_server -WWW` on 127.0.0.1, serving `root`.
pub struct TlsServer {
    pub port: u16,
    child: Child,
}

impl TlsServer {
    pub fn serve(root: &Path, certs: &Certs, require_client_cert: bool) -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut c = Command::new("openssl");
        c.current_dir(root)
            .args(["s_server", "-quiet", "-WWW", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(certs.dir.join("server.pem"))
            .arg("-key")
            .arg(certs.dir.join("server.key"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if require_client_cert {
            c.arg("-Verify").arg("1").arg("-CAfile").arg(certs.dir.join("ca.pem"));
        }
        let child = c.spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("openssl s_server did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(TlsServer { port, child })
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
