//! The gRPC API (`layerd.v1`, see `dbus-interfaces/proto/layerd/v1/layerd.proto`): the same
//! engine and transactions as D-Bus; this layer only translates requests into
//! [`Operation`]s, checks who may change things, and streams transaction events.
//!
//! Who is calling: on the unix socket, the peer's credentials (`SO_PEERCRED`): root, or a
//! member of the configured group, may change the system; anyone who can connect may read. On
//! TCP, mutual TLS: the TLS layer only lets clients with a certificate from the configured CA
//! in, and those may change the system (a controller's identity is its certificate).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use layerd_interfaces::grpc as pb;
use layerd_interfaces::grpc::layerd_server::{Layerd, LayerdServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::base::BaseChange;
use crate::cleanup::CleanupOptions;
use crate::engine::{Engine, Operation};
use crate::error::Error;
use crate::kargs::KargsEdit;
use crate::layering::{LayerOptions, LayerRequest, LocalInput};
use crate::overrides::OverrideChange;
use crate::txn::{Caller, Transaction};
use layerd_interfaces::EventKind;

/// Largest request accepted: local RPMs travel inside requests (tonic's default is 4 MiB).
const MAX_MESSAGE: usize = 1 << 30;

/// Where and how the gRPC API is served.
#[derive(Clone, Debug, Default)]
pub struct GrpcConfig {
    /// The unix socket (created by layerd), unless systemd passed one (socket activation).
    pub socket: Option<PathBuf>,
    /// Mode of the socket file (who may connect at all).
    pub socket_mode: u32,
    /// Members of this group may change the system over the unix socket (root always may);
    /// the socket file is given to this group.
    pub group: Option<String>,
    /// TCP listener with mutual TLS.
    pub tcp: Option<TcpConfig>,
}

#[derive(Clone, Debug)]
pub struct TcpConfig {
    pub listen: std::net::SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

/// Start serving; returns once the listeners are bound (serving continues in tasks). An
/// activated socket (`LISTEN_FDS` from systemd) is used instead of creating `config.socket`.
pub async fn serve(engine: Arc<Engine>, config: GrpcConfig, activated: Option<std::os::unix::net::UnixListener>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let writers_gid = match &config.group {
        Some(g) => Some(group_gid(g).with_context(|| format!("grpc-group {g:?}"))?),
        None => None,
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<LayerdServer<Api>>().await;
    let unix = match activated {
        Some(l) => {
            l.set_nonblocking(true)?;
            Some(tokio::net::UnixListener::from_std(l)?)
        }
        None => match &config.socket {
            Some(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                }
                let _ = std::fs::remove_file(path);
                let l = tokio::net::UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(config.socket_mode))
                    .with_context(|| format!("setting the mode of {}", path.display()))?;
                if let Some(gid) = writers_gid {
                    rustix::fs::chown(path, None, Some(rustix::fs::Gid::from_raw(gid))).with_context(|| format!("chown {}", path.display()))?;
                }
                Some(l)
            }
            None => None,
        },
    };
    if let Some(l) = unix {
        let api = Api { engine: engine.clone(), writers_gid };
        let incoming = futures_util::StreamExt::map(tokio_stream::wrappers::UnixListenerStream::new(l), |r| r.map(PeerStream::new));
        let health_service = health_service.clone();
        tokio::spawn(async move {
            let r = tonic::transport::Server::builder()
                .add_service(health_service)
                .add_service(ReadersGate::new(api))
                .serve_with_incoming(incoming)
                .await;
            if let Err(e) = r {
                log::error!("gRPC on the unix socket stopped: {e}");
            }
        });
    }
    if let Some(tcp) = &config.tcp {
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let identity = tonic::transport::Identity::from_pem(read(&tcp.cert)?, read(&tcp.key)?);
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(identity)
            .client_ca_root(tonic::transport::Certificate::from_pem(read(&tcp.client_ca)?))
            .client_auth_optional(false);
        let api = Api { engine, writers_gid };
        let mut server = tonic::transport::Server::builder().tls_config(tls).context("TLS configuration of grpc-tcp-listen")?;
        let listener = tokio::net::TcpListener::bind(tcp.listen).await.with_context(|| format!("binding {}", tcp.listen))?;
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let router = server.add_service(health_service).add_service(ReadersGate::new(api));
        tokio::spawn(async move {
            if let Err(e) = router.serve_with_incoming(incoming).await {
                log::error!("gRPC on TCP stopped: {e}");
            }
        });
    }
    Ok(())
}

/// The methods anyone who can connect may call; every other one changes the system.
const READ_ONLY_METHODS: &[&str] = &["GetStatus", "WatchStatus", "GetTransaction", "WatchTransaction"];

/// The `layerd.v1.Layerd` service behind a gate that refuses calls changing the system from
/// unix-socket peers who may only read, from the request's path and the connection's
/// credentials alone: before tonic reads the request body, which may be up to
/// [`MAX_MESSAGE`] bytes (local RPMs travel inside requests), so a reader cannot make layerd
/// buffer large messages. [`Api::writer`] checks each call again.
#[derive(Clone)]
struct ReadersGate {
    inner: LayerdServer<Api>,
    writers_gid: Option<u32>,
}

impl ReadersGate {
    fn new(api: Api) -> Self {
        let writers_gid = api.writers_gid;
        ReadersGate { inner: LayerdServer::new(api).max_decoding_message_size(MAX_MESSAGE), writers_gid }
    }
}

impl tonic::server::NamedService for ReadersGate {
    const NAME: &'static str = <LayerdServer<Api> as tonic::server::NamedService>::NAME;
}

impl<B> tower_service::Service<http::Request<B>> for ReadersGate
where
    LayerdServer<Api>: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = std::convert::Infallible>,
    <LayerdServer<Api> as tower_service::Service<http::Request<B>>>::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        tower_service::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().rsplit('/').next().unwrap_or_default();
        if !READ_ONLY_METHODS.contains(&method) {
            let denied = match req.extensions().get::<PeerInfo>() {
                Some(PeerInfo(Some(p))) => may_write(p, self.writers_gid, method).err(),
                Some(PeerInfo(None)) => Some(Status::unauthenticated("the unix socket peer's credentials are unavailable")),
                // TLS: the handshake already asked for a client certificate
                None => None,
            };
            if let Some(denied) = denied {
                return Box::pin(std::future::ready(Ok(denied.into_http())));
            }
        }
        Box::pin(tower_service::Service::call(&mut self.inner, req))
    }
}

/// Package names of a request field, each checked, errors naming `field[i]`.
fn check_names(field: &str, names: &[String]) -> Result<(), Status> {
    for (i, n) in names.iter().enumerate() {
        crate::layering::check_package_name(n).map_err(|e| Status::invalid_argument(format!("{field}[{i}]: {e}")))?;
    }
    Ok(())
}

/// Whether a unix-socket peer may change the system: root, or a member of the writers' group.
fn may_write(p: &Peer, writers_gid: Option<u32>, what: &str) -> Result<(), Status> {
    match p {
        Peer::Tls { .. } | Peer::Local { uid: 0, .. } => Ok(()),
        Peer::Local { uid, gid, groups, .. } => {
            if writers_gid.is_some_and(|g| *gid == g || groups.contains(&g)) {
                return Ok(());
            }
            Err(Status::permission_denied(format!(
                "{what}: uid {uid} (gid {gid}) may read the status but not change the system (root{} may)",
                match writers_gid {
                    Some(g) => format!(" or members of group {g}"),
                    None => String::new(),
                }
            )))
        }
    }
}

/// A socket systemd passed (`LISTEN_FDS`, first descriptor), taken once.
pub fn activated_socket() -> Option<std::os::unix::net::UnixListener> {
    use std::os::fd::FromRawFd;
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    // SAFETY: systemd passes listening sockets from fd 3 on and nothing else owns fd 3.
    Some(unsafe { std::os::unix::net::UnixListener::from_raw_fd(3) })
}

/// A group's id by name (through NSS, so groups from /usr/lib/group on CoreOS are found too)
/// or a number.
fn group_gid(name: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let c = std::ffi::CString::new(name)?;
    let mut buf = vec![0 as libc::c_char; 16384];
    // SAFETY: zeroed plain-data struct filled by getgrnam_r; all pointers are valid.
    unsafe {
        let mut grp: libc::group = std::mem::zeroed();
        let mut result: *mut libc::group = std::ptr::null_mut();
        let r = libc::getgrnam_r(c.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut result);
        if r == 0 && !result.is_null() {
            return Ok(grp.gr_gid);
        }
    }
    anyhow::bail!("no such group")
}

/// Who is calling.
#[derive(Clone, Debug)]
enum Peer {
    /// Unix socket peer credentials.
    Local { uid: u32, gid: u32, pid: Option<i32>, groups: Vec<u32> },
    /// A TLS client (its certificate was checked against the client CA).
    Tls { addr: String },
}

impl Peer {
    fn describe(&self) -> String {
        match self {
            Peer::Local { uid, pid: Some(pid), .. } => format!("grpc uid {uid} pid {pid}"),
            Peer::Local { uid, .. } => format!("grpc uid {uid}"),
            Peer::Tls { addr } => format!("grpc tls {addr}"),
        }
    }

    fn uid(&self) -> u32 {
        match self {
            Peer::Local { uid, .. } => *uid,
            Peer::Tls { .. } => u32::MAX,
        }
    }
}

pub struct Api {
    engine: Arc<Engine>,
    writers_gid: Option<u32>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::TransactionEvent, Status>> + Send>>;
type StatusStream = Pin<Box<dyn Stream<Item = Result<pb::Status, Status>> + Send>>;

fn peer<T>(req: &Request<T>) -> Result<Peer, Status> {
    if let Some(info) = req.extensions().get::<PeerInfo>() {
        return match &info.0 {
            Some(p) => Ok(p.clone()),
            None => Err(Status::unauthenticated("the unix socket peer's credentials are unavailable")),
        };
    }
    if let Some(info) = req.extensions().get::<tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>>() {
        if info.peer_certs().is_some_and(|c| !c.is_empty()) {
            let addr = info.get_ref().remote_addr().map(|a| a.to_string()).unwrap_or_default();
            return Ok(Peer::Tls { addr });
        }
        return Err(Status::unauthenticated("a client certificate is required"));
    }
    Err(Status::unauthenticated("unknown transport"))
}

/// A unix socket connection with its peer's credentials, taken when it is accepted
/// (`SO_PEERCRED` and `SO_PEERGROUPS`): looking them up later by pid could find another
/// process that got the pid after the peer exited.
pub struct PeerStream {
    inner: tokio::net::UnixStream,
    info: PeerInfo,
}

/// What [`PeerStream`] hands to each request.
#[derive(Clone, Debug)]
pub struct PeerInfo(Option<Peer>);

impl PeerStream {
    fn new(inner: tokio::net::UnixStream) -> Self {
        use std::os::fd::AsRawFd;
        let info = inner.peer_cred().ok().map(|c| Peer::Local {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid(),
            groups: peer_groups(inner.as_raw_fd()),
        });
        PeerStream { inner, info: PeerInfo(info) }
    }
}

/// The peer's supplementary groups (`SO_PEERGROUPS`, Linux 4.13+); empty if unavailable.
fn peer_groups(fd: std::os::fd::RawFd) -> Vec<u32> {
    let mut n: usize = 64;
    loop {
        let mut buf = vec![0u32; n];
        let mut len = (n * std::mem::size_of::<u32>()) as libc::socklen_t;
        // SAFETY: the buffer holds `len` bytes; the fd is a connected unix socket.
        let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERGROUPS, buf.as_mut_ptr().cast(), &mut len) };
        if r == 0 {
            buf.truncate(len as usize / std::mem::size_of::<u32>());
            return buf;
        }
        let needed = len as usize / std::mem::size_of::<u32>();
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE) && needed > n && needed <= 65536 {
            n = needed;
            continue;
        }
        return Vec::new();
    }
}

impl tonic::transport::server::Connected for PeerStream {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl tokio::io::AsyncRead for PeerStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for PeerStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Api {
    /// The caller, if it may change the system.
    fn writer<T>(&self, req: &Request<T>, what: &str) -> Result<Peer, Status> {
        let p = peer(req)?;
        may_write(&p, self.writers_gid, what)?;
        Ok(p)
    }

    /// Create and start a transaction for `op`; stream its events.
    /// `wait`: None follows the daemon's `wait-by-default`.
    async fn run(&self, op: Operation, caller: Caller, wait: Option<bool>) -> Result<Response<EventStream>, Status> {
        self.engine.touch();
        let sender = caller.sender.clone();
        let (txn, joined) = self.engine.create_or_join(op, caller).map_err(status_of)?;
        // subscribe before starting: no event is missed
        let (history, rx) = txn.subscribe();
        if let Err(e) = self.engine.start(&txn, wait) {
            // nobody will start what this call created: drop it (one it joined is left alone)
            if !joined && txn.state() == crate::txn::TxnState::Created {
                self.engine.cancel(&txn);
            }
            let mut s = status_of(e);
            if let Some(r) = self.engine.running() {
                if let Ok(v) = r.id.parse() {
                    s.metadata_mut().insert("layerd-running-transaction", v);
                }
            }
            return Err(s);
        }
        // a caller that goes away before its change started takes it back, as over D-Bus
        let owner = Some((self.engine.clone(), sender));
        Ok(Response::new(event_stream(txn, history, rx, 0, owner)))
    }

    /// The caller of one call. Its `sender` is unique to the call (as a D-Bus unique name is
    /// to a connection), so the transaction it created or joined knows when this caller left.
    fn caller(peer: &Peer, o: &Option<pb::ChangeOptions>) -> Caller {
        static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Caller {
            sender: format!("{} call {n}", peer.describe()),
            uid: peer.uid(),
            client_id: o.as_ref().map(|o| o.client_id.clone()).unwrap_or_default(),
        }
    }

    /// Read local packages: bytes, or a host path the caller may read (unix socket only).
    async fn local_packages(&self, peer: &Peer, list: Vec<pb::LocalPackage>, field: &str) -> Result<Vec<LocalInput>, Status> {
        let peer = peer.clone();
        let field = field.to_string();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for (i, p) in list.into_iter().enumerate() {
                let (label, rpm) = match p.source {
                    Some(pb::local_package::Source::Content(bytes)) => {
                        let label = if p.label.is_empty() { format!("local package #{}", i + 1) } else { p.label };
                        let rpm = crate::rpmfile::read(&label, std::io::Cursor::new(bytes), std::env::consts::ARCH).map_err(status_of)?;
                        (label, rpm)
                    }
                    Some(pb::local_package::Source::HostPath(path)) => {
                        let label = if p.label.is_empty() { path.clone() } else { p.label };
                        let rpm = read_as(&peer, Path::new(&path), &label).map_err(|e| Status::invalid_argument(format!("{field}[{i}].host_path {path}: {e}")))?;
                        (label, rpm)
                    }
                    None => return Err(Status::invalid_argument(format!("{field}[{i}]: give content or host_path"))),
                };
                out.push(LocalInput { label, rpm: Arc::new(rpm) });
            }
            Ok(out)
        })
        .await
        .map_err(|e| Status::internal(format!("reading local packages: {e}")))?
    }
}

/// Read a local RPM at `path` on behalf of `peer`: as root directly; for anyone else a child
/// process with the caller's uid, gid and groups reads it, so the kernel applies exactly the
/// caller's rights (modes, ACLs, every directory on the way), with no window between a check
/// and the open. Only regular files; a stuck read is stopped after a minute.
fn read_as(peer: &Peer, path: &Path, label: &str) -> Result<crate::rpmfile::LocalRpm, String> {
    let (uid, gid, groups) = match peer {
        Peer::Local { uid, gid, groups, .. } => (*uid, *gid, groups.clone()),
        Peer::Tls { .. } => return Err("host paths are only accepted on the unix socket; send the content".into()),
    };
    if !path.is_absolute() {
        return Err("must be an absolute path".into());
    }
    let arch = std::env::consts::ARCH;
    if uid == 0 {
        let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
        if !meta.is_file() {
            return Err("not a regular file".into());
        }
        let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
        return crate::rpmfile::read(label, f, arch).map_err(|e| e.to_string());
    }
    use std::os::unix::process::CommandExt;
    let mut c = std::process::Command::new("/bin/sh");
    c.args(["-c", r#"test -f "$1" || { echo "not a regular file (or not readable)" >&2; exit 2; }; exec timeout 60 cat -- "$1""#, "sh"])
        .arg(path)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec, on data prepared before.
    unsafe {
        c.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = c.spawn().map_err(|e| format!("reading as uid {uid}: {e}"))?;
    let out = child.stdout.take().ok_or("no output pipe")?;
    let read = crate::rpmfile::read(label, out, arch);
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    let st = child.wait().map_err(|e| e.to_string())?;
    if !st.success() {
        let why = err.trim();
        return Err(if why.contains("Permission denied") || why.is_empty() { format!("uid {uid} may not read it") } else { why.to_string() });
    }
    read.map_err(|e| e.to_string())
}

fn status_of(e: Error) -> Status {
    let text = e.to_string();
    match e {
        Error::InvalidArgument(_) => Status::invalid_argument(text),
        Error::Busy(_) => Status::aborted(text),
        Error::NotFound(_) => Status::not_found(text),
        Error::InvalidState(_) => Status::failed_precondition(text),
        Error::AccessDenied(_) => Status::permission_denied(text),
        Error::Cancelled => Status::cancelled(text),
        _ => Status::internal(text),
    }
}

fn info_of(t: &Transaction) -> pb::Transaction {
    pb::Transaction {
        id: t.id.clone(),
        title: t.title.clone(),
        state: t.state().as_str().to_string(),
        client: t.caller.describe(),
        result: t.result().map(result_of),
    }
}

fn result_of(r: layerd_interfaces::TransactionResult) -> pb::TransactionResult {
    pb::TransactionResult { success: r.success, unchanged: r.unchanged, error_name: r.error_name, error_message: r.error_message }
}

fn event_of(txn_id: &str, e: &crate::txn::Event) -> Option<pb::TransactionEvent> {
    use pb::transaction_event::Event as E;
    let event = match &e.kind {
        EventKind::Message(m) => E::Message(m.clone()),
        EventKind::TaskBegin(t) => E::TaskBegin(t.clone()),
        EventKind::TaskEnd(t) => E::TaskEnd(t.clone()),
        EventKind::Percent { text, percent } => E::Percent(pb::Percent { text: text.clone(), percent: *percent }),
        EventKind::Progress(p) => E::Progress(pb::Progress {
            text: p.text.clone(),
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
            items_done: p.items_done,
            items_total: p.items_total,
        }),
        EventKind::Finished(r) => E::Finished(result_of(r.clone())),
        EventKind::Unknown(_) => return None,
    };
    Some(pb::TransactionEvent { transaction_id: txn_id.to_string(), seq: e.seq, event: Some(event) })
}

/// `started`, the history, then live events until `finished`.
/// The events of `txn` after `since`, ending with its result. `owner` (engine, caller) is
/// the call that created or joined it: when that client goes away before the end, it is
/// treated like a D-Bus peer leaving the bus (a change not started yet is cancelled unless
/// someone else waits for it).
fn event_stream(
    txn: Arc<Transaction>,
    history: Vec<crate::txn::Event>,
    rx: tokio::sync::broadcast::Receiver<crate::txn::Event>,
    since: u64,
    owner: Option<(Arc<Engine>, String)>,
) -> EventStream {
    let (tx, out) = mpsc::channel(64);
    tokio::spawn(async move {
        let client_left = forward_events(&txn, history, rx, since, &tx).await;
        if let (true, Some((engine, sender))) = (client_left, owner) {
            engine.peer_vanished(&sender);
        }
    });
    Box::pin(ReceiverStream::new(out))
}

/// Send one event of transaction `id`. `Some(client_left)` when the stream is over: the client
/// went away (`true`), or that was the result (`false`).
async fn send_event(tx: &mpsc::Sender<Result<pb::TransactionEvent, Status>>, id: &str, e: &crate::txn::Event) -> Option<bool> {
    let finished = matches!(e.kind, EventKind::Finished(_));
    if let Some(ev) = event_of(id, e) {
        if tx.send(Ok(ev)).await.is_err() {
            return Some(true);
        }
    }
    finished.then_some(false)
}

/// Send `txn`'s events to `tx`; returns whether the client went away before the end.
async fn forward_events(
    txn: &Arc<Transaction>,
    history: Vec<crate::txn::Event>,
    mut rx: tokio::sync::broadcast::Receiver<crate::txn::Event>,
    since: u64,
    tx: &mpsc::Sender<Result<pb::TransactionEvent, Status>>,
) -> bool {
    let started = pb::TransactionEvent {
        transaction_id: txn.id.clone(),
        seq: 0,
        event: Some(pb::transaction_event::Event::Started(info_of(txn))),
    };
    if tx.send(Ok(started)).await.is_err() {
        return true;
    }
    let mut last = since;
    for e in history.iter().filter(|e| e.seq > since) {
        last = e.seq;
        if let Some(left) = send_event(tx, &txn.id, e).await {
            return left;
        }
    }
    // asked for events after the end (a client resuming from its last seen event): the
    // result is all there is left to send
    if txn.state().is_finished() && !history.iter().any(|e| e.seq > since) {
        if let Some(r) = txn.result() {
            let ev = pb::TransactionEvent { transaction_id: txn.id.clone(), seq: last, event: Some(pb::transaction_event::Event::Finished(result_of(r))) };
            let _ = tx.send(Ok(ev)).await;
        }
        return false;
    }
    loop {
        let next = tokio::select! {
            r = rx.recv() => r,
            // the client went away: stop following
            _ = tx.closed() => return true,
        };
        match next {
            Ok(e) if e.seq <= last => continue,
            Ok(e) => {
                last = e.seq;
                if let Some(left) = send_event(tx, &txn.id, &e).await {
                    return left;
                }
            }
            // fell behind: replay what was missed from the history
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                for e in txn.events_since(last) {
                    last = e.seq;
                    if let Some(left) = send_event(tx, &txn.id, &e).await {
                        return left;
                    }
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return false,
        }
    }
}

fn deployment_of(d: &layerd_interfaces::Deployment) -> pb::Deployment {
    pb::Deployment {
        id: d.id.clone(),
        osname: d.osname.clone(),
        serial: d.serial,
        checksum: d.checksum.clone(),
        version: d.version.clone().unwrap_or_default(),
        timestamp: d.timestamp,
        booted: d.booted,
        staged: d.staged,
        pinned: d.pinned,
        unlocked: d.unlocked.clone(),
        finalization_locked: d.finalization_locked,
        origin: d.origin.clone().unwrap_or_default(),
        container_image_reference: d.container_image_reference.clone().unwrap_or_default(),
        container_image_reference_digest: d.container_image_reference_digest.clone().unwrap_or_default(),
        base_checksum: d.base_checksum.clone().unwrap_or_default(),
        base_version: d.base_version.clone().unwrap_or_default(),
        base_timestamp: d.base_timestamp.unwrap_or_default(),
        base_commit_meta_json: d
            .base_commit_meta
            .iter()
            .map(|(k, v)| (k.clone(), layerd_interfaces::json::value_to_json(v).to_string()))
            .collect::<HashMap<_, _>>(),
        packages: d.packages.clone(),
        requested_packages: d.requested_packages.clone(),
        requested_local_packages: d.requested_local_packages.clone(),
        base_removals: d.base_removals.clone(),
        requested_base_removals: d.requested_base_removals.clone(),
        base_local_replacements: d
            .base_local_replacements
            .iter()
            .map(|(n, o)| pb::Replacement { new_nevra: n.clone(), old_nevra: o.clone() })
            .collect(),
        requested_base_local_replacements: d.requested_base_local_replacements.clone(),
        kernel_arguments: d.kernel_arguments.clone(),
        custom_origin: d.custom_origin.clone().unwrap_or_default(),
        requested_local_fileoverride_packages: d.requested_local_fileoverride_packages.clone(),
        regenerate_initramfs: d.regenerate_initramfs,
        initramfs_args: d.initramfs_args.clone(),
        live_replaced: d.live_replaced.clone().unwrap_or_default(),
        live_packages_added: d.live_packages_added.clone(),
        live_packages_replaced: d.live_packages_replaced.clone(),
    }
}

async fn status(engine: &Engine) -> Result<pb::Status, Status> {
    let snap = engine.snapshot().await.map_err(status_of)?;
    let transactions = engine
        .active()
        .into_iter()
        .map(|t| pb::Transaction { id: t.id, title: t.title, state: t.state, client: t.client, result: None })
        .collect();
    let last_transaction = engine.last_transaction().map(|r| pb::LastTransaction {
        id: r.id,
        title: r.title,
        client: r.client,
        state: r.state,
        error_message: r.error_message,
        time: r.time,
    });
    Ok(pb::Status { deployments: snap.deployments.iter().map(deployment_of).collect(), transactions, last_transaction })
}

fn package_options(o: Option<pb::PackageOptions>, change: &Option<pb::ChangeOptions>) -> LayerOptions {
    let o = o.unwrap_or_default();
    LayerOptions {
        dry_run: o.dry_run,
        idempotent: o.idempotent,
        allow_inactive: o.allow_inactive,
        force_replacefiles: o.force_replacefiles,
        download_only: o.download_only,
        cache_only: o.cache_only,
        apply_live: o.apply_live,
        allow_replacement: o.allow_replacement,
        reboot: change.as_ref().is_some_and(|c| c.reboot),
        ..Default::default()
    }
}

fn base_options(o: Option<pb::BaseOptions>, change: &Option<pb::ChangeOptions>) -> LayerOptions {
    let o = o.unwrap_or_default();
    LayerOptions {
        download_only: o.download_only,
        lock_finalization: o.lock_finalization,
        reboot: change.as_ref().is_some_and(|c| c.reboot),
        ..Default::default()
    }
}

fn wait(o: &Option<pb::ChangeOptions>) -> Option<bool> {
    o.as_ref().and_then(|o| o.wait)
}

fn reboot(o: &Option<pb::ChangeOptions>) -> bool {
    o.as_ref().is_some_and(|o| o.reboot)
}

#[tonic::async_trait]
impl Layerd for Api {
    async fn get_status(&self, _req: Request<pb::GetStatusRequest>) -> Result<Response<pb::Status>, Status> {
        self.engine.touch();
        Ok(Response::new(status(&self.engine).await?))
    }

    type WatchStatusStream = StatusStream;

    async fn watch_status(&self, _req: Request<pb::WatchStatusRequest>) -> Result<Response<StatusStream>, Status> {
        let engine = self.engine.clone();
        let (tx, out) = mpsc::channel(8);
        // a watcher keeps layerd from exiting idle, as a registered D-Bus client does
        static WATCHERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let watcher = format!("grpc-watch-{}", WATCHERS.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        engine.register_client(&watcher);
        let mut snaps = engine.subscribe_snapshot();
        let mut txns = engine.subscribe_transactions();
        tokio::spawn(async move {
            let mut last: Option<pb::Status> = None;
            loop {
                engine.touch();
                match status(&engine).await {
                    Ok(s) if last.as_ref() != Some(&s) => {
                        last = Some(s.clone());
                        if tx.send(Ok(s)).await.is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        break;
                    }
                }
                tokio::select! {
                    r = snaps.changed() => if r.is_err() { break },
                    r = txns.changed() => if r.is_err() { break },
                    _ = tx.closed() => break,
                }
            }
            engine.unregister_client(&watcher);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    type InstallStream = EventStream;

    async fn install(&self, req: Request<pb::InstallRequest>) -> Result<Response<EventStream>, Status> {
        let peer = self.writer(&req, "Install")?;
        let r = req.into_inner();
        check_names("packages", &r.packages)?;
        let install_local = self.local_packages(&peer, r.local_packages, "local_packages").await?;
        let opts = package_options(r.package_options, &r.options);
        let op = Operation::Layer(LayerRequest { install_local, install: r.packages, opts, ..Default::default() });
        self.run(op, Self::caller(&peer, &r.options), wait(&r.options)).await
    }

    type UninstallStream = EventStream;

    async fn uninstall(&self, req: Request<pb::UninstallRequest>) -> Result<Response<EventStream>, Status> {
        let peer = self.writer(&req, "Uninstall")?;
        let r = req.into_inner();
        if r.packages.is_empty() && !r.all {
            return Err(Status::invalid_argument("packages: name the packages to uninstall, or set all"));
        }
        check_names("packages", &r.packages)?;
        check_names("install", &r.install)?;
        let install_local = self.local_packages(&peer, r.install_local, "install_local").await?;
        let opts = package_options(r.package_options, &r.options);
        let op = Operation::Layer(LayerRequest {
            install_local,
            install: r.install,
            uninstall: r.packages,
            uninstall_all: r.all,
            opts,
            ..Default::default()
        });
        self.run(op, Self::caller(&peer, &r.options), wait(&r.options)).await
    }

    type OverrideStream = EventStream;

    async fn r#override(&self, req: Request<pb::OverrideRequest>) -> Result<Response<EventStream>, Status> {
        let peer = self.writer(&req, "Override")?;
        let r = req.into_inner();
        if r.remove.is_empty() && r.replace.is_empty() && r.reset.is_empty() && !r.reset_all {
            return Err(Status::invalid_argument("override: set remove, replace, reset or reset_all"));
        }
        for (field, names) in [("remove", &r.remove), ("reset", &r.reset), ("install", &r.install), ("uninstall", &r.uninstall)] {
            check_names(field, names)?;
        }
        let replace_local = self.local_packages(&peer, r.replace, "replace").await?;
        let opts = package_options(r.package_options, &r.options);
        let op = Operation::Layer(LayerRequest {
            install: r.install,
            uninstall: r.uninstall,
            overrides: OverrideChange { remove: r.remove, replace_local, reset: r.reset, reset_all: r.reset_all },
            opts,
            ..Default::default()
        });
        self.run(op, Self::caller(&peer, &r.options), wait(&r.options)).await
    }

    type RebaseStream = EventStream;

    async fn rebase(&self, req: Request<pb::RebaseRequest>) -> Result<Response<EventStream>, Status> {
        let peer = self.writer(&req, "Rebase")?;
        let r = req.into_inner();
        if r.target.is_empty() {
            return Err(Status::invalid_argument("target: give an ostree refspec, a checksum or a container image reference"));
        }
        let revision = (!r.revision.is_empty()).then_some(r.revision);
        let op = Operation::Layer(LayerRequest {
            base: BaseChange::Rebase { refspec: r.target, revision },
            opts: base_options(r.base_options, &r.options),
            ..Default::default()
        });
        self.run(op, Self::caller(&peer, &r.options), wait(&r.options)).await
    }

    type UpgradeStream = EventStream;

    async fn upgrade(&self, req: Request<pb::UpgradeRequest>) -> Result<Response<EventStream>, Status> {
        let peer = self.writer(&req, "Upgrade")?;
        let r = req.into_inner();
        if r.preview && !r.check_only {
            return Err(Status::invalid_argument("preview: only with check_only"));
        }
        let mut opts = base_options(r.base_options, &r.options);
        opts.check = r.check_only;
        opts.preview = r.preview;
        let op = Operation::Layer(LayerRequest { base: BaseChange::Upgrade { allow_downgrade: r.allow_downgrade }, opts, ..Default::default() });
        self.run(op, Self::caller(&peer, &r.options), wait(&r.options)).await
    }

    type DeployStream = EventStream;

    async fn deploy(&self, req: Request<pb::DeployRequest>) -> Result<Response<EventStream>, Status> {
        let peer = self.writer(&req, "Deploy")?;
        let r = req.into_inner();
        if r.revision.is_empty() {
            return Err(Status::invalid_argument("revision: give a commit checksum, a version or an image digest"));
        }
        let op = Operation::Layer(LayerRequest {
            base: BaseChange::Deploy { revision: r.revision },
            opts: base_options(r.base_options, &r.options),
            ..Default::default()
        });
        self.run(op, Self::caller(&peer, &r.options), wait(&r.options)).await
    }

    type RollbackStream = EventStream;

    async fn rollback(&self, req: Request<pb::RollbackRequest>) -> Result<Response<EventStream>, Status> {
        let peer = self.writer(&req, "Rollback")?;
        let r = req.into_inner();
        self.run(Operation::Rollback { reboot: reboot(&r.options) }, Self::caller(&peer, &r.options), wait(&r.options)).await
    }

    type CleanupStream = EventStream;

    async fn cleanup(&self, req: Request<pb::CleanupRequest>) -> Result<Response<EventStream>, Status> {
        let peer = self.writer(&req, "Cleanup")?;
        let r = req.into_inner();
        let o = CleanupOptions { pending: r.pending, rollback: r.rollback, base: r.base, repomd: r.repomd };
        self.run(Operation::Cleanup(o), Self::caller(&peer, &r.options), wait(&r.options)).await
    }

    type KernelArgsStream = EventStream;

    async fn kernel_args(&self, req: Request<pb::KernelArgsRequest>) -> Result<Response<EventStream>, Status> {
        let peer = self.writer(&req, "KernelArgs")?;
        let r = req.into_inner();
        let edit = KargsEdit {
            append: r.append,
            append_if_missing: r.append_if_missing,
            delete: r.delete,
            delete_if_present: r.delete_if_present,
            replace: r.replace,
            import_proc_cmdline: r.import_proc_cmdline,
        };
        if edit.is_empty() {
            return Err(Status::invalid_argument("kernel_args: give at least one edit (append, delete, replace, …)"));
        }
        self.run(Operation::Kargs { edit, reboot: reboot(&r.options) }, Self::caller(&peer, &r.options), wait(&r.options)).await
    }

    type RefreshMetadataStream = EventStream;

    async fn refresh_metadata(&self, req: Request<pb::RefreshMetadataRequest>) -> Result<Response<EventStream>, Status> {
        let peer = self.writer(&req, "RefreshMetadata")?;
        let r = req.into_inner();
        self.run(Operation::RefreshMd { force: r.force }, Self::caller(&peer, &r.options), wait(&r.options)).await
    }

    type FinalizeDeploymentStream = EventStream;

    async fn finalize_deployment(&self, req: Request<pb::FinalizeDeploymentRequest>) -> Result<Response<EventStream>, Status> {
        let peer = self.writer(&req, "FinalizeDeployment")?;
        let r = req.into_inner();
        if r.checksum.is_empty() {
            return Err(Status::invalid_argument("checksum: give the staged deployment's commit checksum"));
        }
        let op = Operation::Finalize { checksum: r.checksum, allow_unlocked: r.allow_unlocked };
        self.run(op, Self::caller(&peer, &r.options), wait(&r.options)).await
    }

    type PinStream = EventStream;

    async fn pin(&self, req: Request<pb::PinRequest>) -> Result<Response<EventStream>, Status> {
        let peer = self.writer(&req, "Pin")?;
        let r = req.into_inner();
        self.run(Operation::Pin { index: r.index, unpin: r.unpin }, Self::caller(&peer, &r.options), wait(&r.options)).await
    }

    type ApplyStream = EventStream;

    async fn apply(&self, req: Request<pb::ApplyRequest>) -> Result<Response<EventStream>, Status> {
        let peer = self.writer(&req, "Apply")?;
        let r = req.into_inner();
        let snap = self.engine.snapshot().await.map_err(status_of)?;
        // the deployment changes start from: the pending one if any, else the booted one
        let current = snap
            .deployments
            .iter()
            .find(|d| d.booted)
            .and_then(|b| snap.deployments.iter().find(|d| d.osname == b.osname))
            .or(snap.deployments.first())
            .ok_or_else(|| Status::failed_precondition("the node has no deployment"))?;
        let base = match r.base.as_str() {
            "" => BaseChange::Keep,
            b if Some(b) == current.container_image_reference.as_deref() || Some(b) == current.origin.as_deref() => BaseChange::Keep,
            b => BaseChange::Rebase { refspec: b.to_string(), revision: None },
        };
        let (install, uninstall) = match &r.packages {
            None => (Vec::new(), Vec::new()),
            Some(set) => {
                check_names("packages.names", &set.names)?;
                let have = &current.requested_packages;
                (
                    set.names.iter().filter(|n| !have.contains(n)).cloned().collect(),
                    have.iter().filter(|n| !set.names.contains(n)).cloned().collect(),
                )
            }
        };
        // always stated (an empty edit when not asked for): the request is declarative, so
        // "already like this" is an answer, not an error
        let kargs = Some(match &r.kernel_arguments {
            None => KargsEdit::default(),
            Some(want) => {
                let have: Vec<String> = current.kernel_arguments.iter().filter(|a| !a.starts_with("ostree=")).cloned().collect();
                KargsEdit {
                    delete: have.iter().filter(|a| !want.args.contains(a)).cloned().collect(),
                    append: want.args.iter().filter(|a| !have.contains(a) && !a.starts_with("ostree=")).cloned().collect(),
                    ..Default::default()
                }
            }
        });
        let opts = LayerOptions { dry_run: r.dry_run, reboot: reboot(&r.options), ..Default::default() };
        let request = LayerRequest { install, uninstall, base, kargs, opts, ..Default::default() };
        self.run(Operation::Layer(request), Self::caller(&peer, &r.options), wait(&r.options)).await
    }

    type ApplyLiveStream = EventStream;

    async fn apply_live(&self, req: Request<pb::ApplyLiveRequest>) -> Result<Response<EventStream>, Status> {
        let peer = self.writer(&req, "ApplyLive")?;
        let r = req.into_inner();
        if r.reset && r.allow_replacement {
            return Err(Status::invalid_argument("reset and allow_replacement exclude each other"));
        }
        let op = Operation::ApplyLive { reset: r.reset, allow_replacement: r.allow_replacement };
        self.run(op, Self::caller(&peer, &r.options), wait(&r.options)).await
    }

    async fn cancel(&self, req: Request<pb::CancelRequest>) -> Result<Response<pb::CancelResponse>, Status> {
        let peer = self.writer(&req, "Cancel")?;
        let id = req.into_inner().transaction_id;
        let txn = self.engine.transaction(&id).ok_or_else(|| Status::not_found(format!("transaction_id: no transaction {id:?}")))?;
        if txn.state().is_finished() {
            return Ok(Response::new(pb::CancelResponse { cancelled: false }));
        }
        // as over D-Bus: the starter (same uid), root, or a TLS-authenticated controller
        if let Peer::Local { uid, .. } = &peer {
            if *uid != 0 && *uid != txn.caller.uid {
                return Err(Status::permission_denied(format!(
                    "Cancel: transaction {} was started by {}; uid {uid} may only cancel its own",
                    txn.id,
                    txn.caller.describe()
                )));
            }
        }
        log::info!("txn {} ({}): cancel requested by {}", txn.id, txn.title, peer.describe());
        // false when it finished meanwhile
        let cancelled = self.engine.cancel(&txn);
        Ok(Response::new(pb::CancelResponse { cancelled }))
    }

    async fn get_transaction(&self, req: Request<pb::GetTransactionRequest>) -> Result<Response<pb::Transaction>, Status> {
        let id = req.into_inner().transaction_id;
        let txn = self.engine.transaction(&id).ok_or_else(|| Status::not_found(format!("transaction_id: no transaction {id:?}")))?;
        Ok(Response::new(info_of(&txn)))
    }

    type WatchTransactionStream = EventStream;

    async fn watch_transaction(&self, req: Request<pb::WatchTransactionRequest>) -> Result<Response<EventStream>, Status> {
        let r = req.into_inner();
        let txn = self
            .engine
            .transaction(&r.transaction_id)
            .ok_or_else(|| Status::not_found(format!("transaction_id: no transaction {:?}", r.transaction_id)))?;
        let (history, rx) = txn.subscribe();
        Ok(Response::new(event_stream(txn, history, rx, r.since, None)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn host_paths_are_read_with_the_callers_rights() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("x.rpm");
        std::fs::write(&f, b"not an rpm").unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let me = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&f).unwrap());
        if me != 0 {
            return; // needs root to act as another user
        }
        let stranger = Peer::Local { uid: 65534, gid: 65534, pid: None, groups: vec![] };
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = read_as(&stranger, &f, "x").unwrap_err();
        assert!(e.contains("may not read it") || e.contains("not readable"), "{e}");
        // readable: read as the caller, then checked as an RPM
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_as(&stranger, &f, "x").unwrap_err();
        assert!(e.contains("x:"), "read, then refused as an RPM: {e}");
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = read_as(&stranger, &f, "x").unwrap_err();
        assert!(e.contains("not readable") || e.contains("may not"), "{e}");
        assert!(read_as(&stranger, Path::new("relative.rpm"), "x").unwrap_err().contains("absolute"));
        assert!(read_as(&Peer::Tls { addr: "x".into() }, &f, "x").unwrap_err().contains("only accepted on the unix socket"));
    }
}
