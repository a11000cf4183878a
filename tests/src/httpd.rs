//! A small HTTP/1.1 file server on 127.0.0.1 for repository tests: GET with `Range: bytes=N-`,
//! a log of requested paths, and switches to make the repository go away (refuse everything,
//! or cut responses off after some bytes) so failure paths are real network failures.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;

#[derive(Default)]
struct State {
    /// Answer every request with 503.
    down: AtomicBool,
    /// Cut the connection after this many body bytes (0: never).
    cut_after: AtomicU64,
    stop: AtomicBool,
    log: Mutex<Vec<String>>,
    /// `(path, first byte)` of requests with a `Range` header.
    ranges: Mutex<Vec<(String, u64)>>,
    /// Absolute URLs requested through us as a proxy.
    proxied: Mutex<Vec<String>>,
}

pub struct Httpd {
    pub port: u16,
    state: Arc<State>,
}

impl Httpd {
    /// Serve `root` on an ephemeral port.
    pub fn serve(root: &Path) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(State::default());
        let s = state.clone();
        let root = root.to_path_buf();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                let root = root.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, &root, &s);
                });
            }
        });
        Ok(Httpd { port, state })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Make every request fail (the repository went away) or work again.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Cut responses off after `bytes` body bytes (0: serve whole files).
    pub fn cut_after(&self, bytes: u64) {
        self.state.cut_after.store(bytes, Ordering::SeqCst);
    }

    /// Paths requested so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// URLs requested through this server as an HTTP proxy.
    pub fn proxied_requests(&self) -> Vec<String> {
        self.state.proxied.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Requests that continued a download (`Range: bytes=N-`), as `(path, N)`.
    pub fn ranged_requests(&self) -> Vec<(String, u64)> {
        self.state.ranges.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn clear_log(&self) {
        if let Ok(mut l) = self.state.log.lock() {
            l.clear();
        }
    }
}

impl Drop for Httpd {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // wake the accept loop
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn handle(conn: TcpStream, root: &Path, s: &State) -> Result<()> {
    handle_via(conn, root, s, None)
}

/// Serve one request; `tunnel` is the `host:port` of a CONNECT this connection came through.
fn handle_via(conn: TcpStream, root: &Path, s: &State, tunnel: Option<String>) -> Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("").to_string();
    let target = words.next().unwrap_or("/").to_string();
    if method == "CONNECT" {
        // a forward proxy's tunnel: accept it, then answer the request inside as the origin
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
                break;
            }
        }
        let mut out = conn.try_clone()?;
        write!(out, "HTTP/1.1 200 Connection established\r\n\r\n")?;
        return handle_via(conn, root, s, Some(target));
    }
    if let Some(t) = &tunnel {
        if let Ok(mut p) = s.proxied.lock() {
            p.push(format!("http://{}{target}", t.trim_end_matches(":80")));
        }
    }
    // acting as a forward proxy: `GET http://host/path` serves `/path` from here
    let path = match target.strip_prefix("http://") {
        Some(rest) => {
            if let Ok(mut p) = s.proxied.lock() {
                p.push(target.clone());
            }
            format!("/{}", rest.split_once('/').map_or("", |(_, p)| p))
        }
        None => target.clone(),
    };
    let mut range_start = 0u64;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(r) = lower.strip_prefix("range: bytes=") {
            range_start = r.trim().trim_end_matches('-').parse().unwrap_or(0);
        }
    }
    if let Ok(mut l) = s.log.lock() {
        l.push(path.clone());
    }
    if range_start > 0 {
        if let Ok(mut r) = s.ranges.lock() {
            r.push((path.clone(), range_start));
        }
    }
    let mut out = conn;
    if s.down.load(Ordering::SeqCst) {
        write!(out, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        return Ok(());
    }
    let rel = path.trim_start_matches('/');
    let file: PathBuf = root.join(rel);
    if rel.split('/').any(|c| c == "..") || !file.is_file() {
        write!(out, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        return Ok(());
    }
    let mut data = Vec::new();
    std::fs::File::open(&file)?.read_to_end(&mut data)?;
    let start = (range_start as usize).min(data.len());
    let body = &data[start..];
    if range_start > 0 {
        write!(
            out,
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\nConnection: close\r\n\r\n",
            body.len(),
            data.len().saturating_sub(1),
            data.len()
        )?;
    } else {
        write!(out, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())?;
    }
    let cut = s.cut_after.load(Ordering::SeqCst) as usize;
    if cut > 0 && body.len() > cut {
        out.write_all(&body[..cut])?;
        out.flush()?;
        return Ok(()); // the connection drops mid-body
    }
    out.write_all(body)?;
    Ok(())
}
