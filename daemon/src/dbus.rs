//! The D-Bus API: `org.layerd.Layerd1` and its transaction objects.
//!
//! This layer only translates: it parses options into an [`Operation`], identifies the caller,
//! and mirrors engine state and transaction events as properties and signals. All behaviour
//! lives in the engine so gRPC can share it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use layerd_interfaces::{
    Deployment, Error as ApiError, EventData, EventKind, LastTransaction, TransactionInfo, TransactionResult, OBJECT_PATH,
};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};
use zbus::{fdo, Connection, ObjectServer};

use crate::cleanup::CleanupOptions;
use crate::engine::{Engine, Operation};
use crate::base::BaseChange;
use crate::layering::{LayerOptions, LayerRequest, LocalInput};
use crate::rpmfile;
use crate::txn::{Caller, Event, Transaction};

/// Options shared by the calls that change the base (Upgrade, Rebase, Deploy).
fn base_options(o: &mut Options) -> Result<LayerOptions, ApiError> {
    Ok(LayerOptions {
        reboot: o.bool("reboot")?,
        lock_finalization: o.bool("lock-finalization")?,
        check: o.bool("check")?,
        preview: o.bool("preview")?,
        download_only: o.bool("download-only")?,
        ..Default::default()
    })
}

/// Options of `Start`.
fn start_options(map: HashMap<String, OwnedValue>) -> Result<Option<bool>, ApiError> {
    let mut o = Options::new("Start", map);
    let wait = if o.map.contains_key("wait") { Some(o.bool("wait")?) } else { None };
    o.finish()?;
    Ok(wait)
}

/// The options dictionary of one call: typed accessors that name the bad option, and a check
/// that nothing unknown was passed.
struct Options {
    method: &'static str,
    map: HashMap<String, OwnedValue>,
}

impl Options {
    fn new(method: &'static str, map: HashMap<String, OwnedValue>) -> Self {
        Options { method, map }
    }

    fn bool(&mut self, key: &str) -> Result<bool, ApiError> {
        match self.map.remove(key) {
            None => Ok(false),
            Some(v) => match &*v {
                Value::Bool(b) => Ok(*b),
                other => Err(ApiError::InvalidArgument(format!(
                    "option '{key}' of {} must be a boolean (b), not '{}'",
                    self.method,
                    other.value_signature()
                ))),
            },
        }
    }

    fn string(&mut self, key: &str) -> Result<Option<String>, ApiError> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(v) => match &*v {
                Value::Str(s) => Ok(Some(s.to_string())),
                other => Err(ApiError::InvalidArgument(format!(
                    "option '{key}' of {} must be a string (s), not '{}'",
                    self.method,
                    other.value_signature()
                ))),
            },
        }
    }

    fn strings(&mut self, key: &str) -> Result<Vec<String>, ApiError> {
        match self.map.remove(key) {
            None => Ok(Vec::new()),
            Some(v) => match &*v {
                Value::Array(a) if a.element_signature() == "s" => Ok(a
                    .iter()
                    .filter_map(|x| match x {
                        Value::Str(s) => Some(s.to_string()),
                        _ => None,
                    })
                    .collect()),
                other => Err(ApiError::InvalidArgument(format!(
                    "option '{key}' of {} must be a string array (as), not '{}'",
                    self.method,
                    other.value_signature()
                ))),
            },
        }
    }

    fn u32s(&mut self, key: &str) -> Result<Vec<u32>, ApiError> {
        match self.map.remove(key) {
            None => Ok(Vec::new()),
            Some(v) => match &*v {
                Value::Array(a) if a.element_signature() == "u" => Ok(a
                    .iter()
                    .filter_map(|x| match x {
                        Value::U32(n) => Some(*n),
                        _ => None,
                    })
                    .collect()),
                other => Err(ApiError::InvalidArgument(format!(
                    "option '{key}' of {} must be an array of indexes (au), not '{}'",
                    self.method,
                    other.value_signature()
                ))),
            },
        }
    }

    /// Refuse leftovers: a misspelt option must not be silently ignored.
    fn finish(self) -> Result<(), ApiError> {
        let mut unknown: Vec<&String> = self.map.keys().collect();
        unknown.sort();
        match unknown.as_slice() {
            [] => Ok(()),
            keys => Err(ApiError::InvalidArgument(format!(
                "unknown option{} for {}: {}",
                if keys.len() > 1 { "s" } else { "" },
                self.method,
                keys.iter().map(|k| format!("'{k}'")).collect::<Vec<_>>().join(", ")
            ))),
        }
    }
}

/// The caller's unique bus name and uid (asked from the bus; `u32::MAX` if it cannot say).
async fn sender_and_uid(conn: &Connection, header: &Header<'_>) -> (String, u32) {
    let sender = header.sender().map(|s| s.to_string()).unwrap_or_default();
    let mut uid = u32::MAX;
    if let Some(s) = header.sender() {
        if let Ok(proxy) = fdo::DBusProxy::new(conn).await {
            if let Ok(u) = proxy.get_connection_unix_user(s.clone().into()).await {
                uid = u;
            }
        }
    }
    (sender, uid)
}

/// `org.layerd.Layerd1` at `/org/layerd/Layerd1`.
pub struct Layerd1 {
    engine: Arc<Engine>,
}

impl Layerd1 {
    pub fn new(engine: Arc<Engine>) -> Self {
        Layerd1 { engine }
    }

    async fn caller(&self, conn: &Connection, header: &Header<'_>, client_id: Option<String>) -> Caller {
        let (sender, uid) = sender_and_uid(conn, header).await;
        Caller { sender, uid, client_id: client_id.unwrap_or_default() }
    }

    /// Create the transaction and publish its object; returns its path.
    async fn submit(
        &self,
        op: Operation,
        caller: Caller,
        conn: &Connection,
        server: &ObjectServer,
    ) -> Result<OwnedObjectPath, ApiError> {
        // root passes; others need polkit's yes for each class of change the request makes
        for action in crate::polkit::Action::for_operation(&op) {
            crate::polkit::authorize(conn, &caller.sender, caller.uid, action).await?;
        }
        let txn = self.engine.create(op, caller)?;
        let path = OwnedObjectPath::try_from(txn.path())
            .map_err(|e| ApiError::Failed(format!("transaction path: {e}")))?;
        let new = server
            .at(path.clone(), TransactionObject { txn: txn.clone(), engine: self.engine.clone() })
            .await?;
        // a joiner gets the existing object, whose events are already being forwarded
        if new {
            tokio::spawn(forward_events(conn.clone(), path.clone(), txn));
        }
        Ok(path)
    }
}

#[zbus::interface(name = "org.layerd.Layerd1")]
impl Layerd1 {
    async fn rollback(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        options: HashMap<String, OwnedValue>,
    ) -> Result<OwnedObjectPath, ApiError> {
        self.engine.touch();
        let mut o = Options::new("Rollback", options);
        let reboot = o.bool("reboot")?;
        let client_id = o.string("client-id")?;
        o.finish()?;
        let caller = self.caller(conn, &header, client_id).await;
        self.submit(Operation::Rollback { reboot }, caller, conn, server).await
    }

    async fn cleanup(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        options: HashMap<String, OwnedValue>,
    ) -> Result<OwnedObjectPath, ApiError> {
        self.engine.touch();
        let mut o = Options::new("Cleanup", options);
        let opts = CleanupOptions {
            pending: o.bool("pending")?,
            rollback: o.bool("rollback")?,
            base: o.bool("base")?,
            repomd: o.bool("repomd")?,
        };
        let client_id = o.string("client-id")?;
        o.finish()?;
        let caller = self.caller(conn, &header, client_id).await;
        self.submit(Operation::Cleanup(opts), caller, conn, server).await
    }

    async fn update_deployment(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        modifiers: HashMap<String, OwnedValue>,
        local_packages: Vec<zbus::zvariant::OwnedFd>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<OwnedObjectPath, ApiError> {
        self.engine.touch();
        let mut m = Options::new("UpdateDeployment (modifiers)", modifiers);
        let labels = m.strings("install-local-labels")?;
        let uninstall = m.strings("uninstall-packages")?;
        let uninstall_all = m.bool("uninstall-all")?;
        let repo_pkgs = m.strings("install-packages")?;
        let override_remove = m.strings("override-remove")?;
        let override_reset = m.strings("override-reset")?;
        let override_reset_all = m.bool("override-reset-all")?;
        let replace_idx = m.u32s("override-replace-local")?;
        m.finish()?;
        let mut o = Options::new("UpdateDeployment", options);
        let opts = LayerOptions {
            dry_run: o.bool("dry-run")?,
            idempotent: o.bool("idempotent")?,
            allow_inactive: o.bool("allow-inactive")?,
            force_replacefiles: o.bool("force-replacefiles")?,
            reboot: o.bool("reboot")?,
            download_only: o.bool("download-only")?,
            cache_only: o.bool("cache-only")?,
            apply_live: o.bool("apply-live")?,
            allow_replacement: o.bool("allow-replacement")?,
            ..Default::default()
        };
        let client_id = o.string("client-id")?;
        o.finish()?;
        if !labels.is_empty() && labels.len() != local_packages.len() {
            return Err(ApiError::InvalidArgument(format!(
                "install-local-labels has {} names for {} files",
                labels.len(),
                local_packages.len()
            )));
        }
        // Read and check every RPM now, so a bad file fails the call itself.
        let files: Vec<(String, std::os::fd::OwnedFd)> = local_packages
            .into_iter()
            .enumerate()
            .map(|(i, fd)| (labels.get(i).cloned().unwrap_or_else(|| format!("local package #{}", i + 1)), fd.into()))
            .collect();
        let install_local = tokio::task::spawn_blocking(move || {
            files
                .into_iter()
                .map(|(label, fd)| {
                    let rpm = rpmfile::read(&label, std::fs::File::from(fd), std::env::consts::ARCH)?;
                    Ok(LocalInput { label, rpm: Arc::new(rpm) })
                })
                .collect::<crate::Result<Vec<_>>>()
        })
        .await
        .map_err(|e| ApiError::Failed(format!("reading the packages: {e}")))??;
        for &i in &replace_idx {
            if i as usize >= install_local.len() {
                return Err(ApiError::InvalidArgument(format!(
                    "override-replace-local: index {i} is beyond the {} local packages passed",
                    install_local.len()
                )));
            }
        }
        // the local packages named by index replace base packages; the others are layered
        let (replace_local, install_local): (Vec<_>, Vec<_>) =
            install_local.into_iter().enumerate().partition(|(i, _)| replace_idx.contains(&(*i as u32)));
        let overrides = crate::overrides::OverrideChange {
            remove: override_remove,
            replace_local: replace_local.into_iter().map(|(_, p)| p).collect(),
            reset: override_reset,
            reset_all: override_reset_all,
        };
        let install_local = install_local.into_iter().map(|(_, p)| p).collect();
        let req = LayerRequest { install_local, install: repo_pkgs, uninstall, uninstall_all, base: BaseChange::Keep, overrides, kargs: None, opts };
        let caller = self.caller(conn, &header, client_id).await;
        self.submit(Operation::Layer(req), caller, conn, server).await
    }

    async fn upgrade(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        options: HashMap<String, OwnedValue>,
    ) -> Result<OwnedObjectPath, ApiError> {
        self.engine.touch();
        let mut o = Options::new("Upgrade", options);
        let allow_downgrade = o.bool("allow-downgrade")?;
        let opts = base_options(&mut o)?;
        let client_id = o.string("client-id")?;
        o.finish()?;
        let req = LayerRequest { base: BaseChange::Upgrade { allow_downgrade }, opts, ..Default::default() };
        let caller = self.caller(conn, &header, client_id).await;
        self.submit(Operation::Layer(req), caller, conn, server).await
    }

    async fn rebase(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        refspec: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<OwnedObjectPath, ApiError> {
        self.engine.touch();
        let mut o = Options::new("Rebase", options);
        let revision = o.string("revision")?;
        let opts = base_options(&mut o)?;
        let client_id = o.string("client-id")?;
        o.finish()?;
        // refuse a malformed reference at once, before a transaction exists
        if crate::container::is_image_reference(&refspec) {
            if revision.is_some() {
                return Err(ApiError::InvalidArgument("a revision applies to ostree refs, not to image references (use a tag or @digest)".into()));
            }
            crate::container::parse(&refspec)?;
        } else {
            crate::base::resolve_refspec(&refspec, None)?;
        }
        let req = LayerRequest { base: BaseChange::Rebase { refspec, revision }, opts, ..Default::default() };
        let caller = self.caller(conn, &header, client_id).await;
        self.submit(Operation::Layer(req), caller, conn, server).await
    }

    async fn deploy(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        revision: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<OwnedObjectPath, ApiError> {
        self.engine.touch();
        let mut o = Options::new("Deploy", options);
        let opts = base_options(&mut o)?;
        let client_id = o.string("client-id")?;
        o.finish()?;
        if revision.trim().is_empty() {
            return Err(ApiError::InvalidArgument("deploy needs a revision: a commit checksum or a version".into()));
        }
        if revision.len() > 4096 || revision.contains(char::is_control) {
            return Err(ApiError::InvalidArgument(format!(
                "revision {:?}: not a commit checksum, version or digest (control characters or over 4096 bytes)",
                revision.chars().take(32).collect::<String>()
            )));
        }
        let req = LayerRequest { base: BaseChange::Deploy { revision }, opts, ..Default::default() };
        let caller = self.caller(conn, &header, client_id).await;
        self.submit(Operation::Layer(req), caller, conn, server).await
    }

    async fn refresh_md(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        options: HashMap<String, OwnedValue>,
    ) -> Result<OwnedObjectPath, ApiError> {
        self.engine.touch();
        let mut o = Options::new("RefreshMd", options);
        let force = o.bool("force")?;
        let client_id = o.string("client-id")?;
        o.finish()?;
        let caller = self.caller(conn, &header, client_id).await;
        self.submit(Operation::RefreshMd { force }, caller, conn, server).await
    }

    async fn apply_live(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        options: HashMap<String, OwnedValue>,
    ) -> Result<OwnedObjectPath, ApiError> {
        self.engine.touch();
        let mut o = Options::new("ApplyLive", options);
        let reset = o.bool("reset")?;
        let allow_replacement = o.bool("allow-replacement")?;
        let client_id = o.string("client-id")?;
        o.finish()?;
        if reset && allow_replacement {
            return Err(ApiError::InvalidArgument("ApplyLive: \"reset\" and \"allow-replacement\" exclude each other".into()));
        }
        let caller = self.caller(conn, &header, client_id).await;
        self.submit(Operation::ApplyLive { reset, allow_replacement }, caller, conn, server).await
    }

    async fn kernel_args(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        options: HashMap<String, OwnedValue>,
    ) -> Result<OwnedObjectPath, ApiError> {
        self.engine.touch();
        let mut o = Options::new("KernelArgs", options);
        let edit = crate::kargs::KargsEdit {
            append: o.strings("append")?,
            append_if_missing: o.strings("append-if-missing")?,
            delete: o.strings("delete")?,
            delete_if_present: o.strings("delete-if-present")?,
            replace: o.strings("replace")?,
            import_proc_cmdline: o.bool("import-proc-cmdline")?,
        };
        let reboot = o.bool("reboot")?;
        let client_id = o.string("client-id")?;
        o.finish()?;
        let caller = self.caller(conn, &header, client_id).await;
        self.submit(Operation::Kargs { edit, reboot }, caller, conn, server).await
    }

    async fn pin(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        index: u32,
        options: HashMap<String, OwnedValue>,
    ) -> Result<OwnedObjectPath, ApiError> {
        self.engine.touch();
        let mut o = Options::new("Pin", options);
        let unpin = o.bool("unpin")?;
        let client_id = o.string("client-id")?;
        o.finish()?;
        let caller = self.caller(conn, &header, client_id).await;
        self.submit(Operation::Pin { index, unpin }, caller, conn, server).await
    }

    async fn finalize_deployment(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        checksum: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<OwnedObjectPath, ApiError> {
        self.engine.touch();
        let mut o = Options::new("FinalizeDeployment", options);
        let allow_unlocked = o.bool("allow-unlocked")?;
        let client_id = o.string("client-id")?;
        o.finish()?;
        if checksum.len() != 64 || !checksum.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::InvalidArgument(format!("{checksum:?} is not a commit checksum (64 hex digits)")));
        }
        let caller = self.caller(conn, &header, client_id).await;
        self.submit(Operation::Finalize { checksum, allow_unlocked }, caller, conn, server).await
    }

    async fn reload(&self) -> Result<(), ApiError> {
        self.engine.touch();
        self.engine.refresh().await;
        self.engine.snapshot().await?;
        Ok(())
    }

    async fn register_client(
        &self,
        #[zbus(header)] header: Header<'_>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<(), ApiError> {
        let mut o = Options::new("RegisterClient", options);
        let _id = o.string("id")?;
        o.finish()?;
        if let Some(s) = header.sender() {
            self.engine.register_client(s.as_str());
        }
        Ok(())
    }

    async fn unregister_client(&self, #[zbus(header)] header: Header<'_>) -> Result<(), ApiError> {
        if let Some(s) = header.sender() {
            self.engine.unregister_client(s.as_str());
        }
        Ok(())
    }

    #[zbus(property)]
    async fn deployments(&self) -> fdo::Result<Vec<Deployment>> {
        self.engine.touch();
        let s = self.engine.snapshot().await.map_err(|e| fdo::Error::Failed(e.to_string()))?;
        Ok(s.deployments.clone())
    }

    #[zbus(property)]
    async fn booted_deployment(&self) -> fdo::Result<String> {
        let s = self.engine.snapshot().await.map_err(|e| fdo::Error::Failed(e.to_string()))?;
        Ok(s.booted_id.clone())
    }

    #[zbus(property)]
    async fn sysroot(&self) -> String {
        self.engine.sysroot().path().display().to_string()
    }

    #[zbus(property)]
    async fn is_booted(&self) -> fdo::Result<bool> {
        let s = self.engine.snapshot().await.map_err(|e| fdo::Error::Failed(e.to_string()))?;
        Ok(s.is_booted)
    }

    #[zbus(property)]
    async fn transactions(&self) -> Vec<TransactionInfo> {
        self.engine.touch();
        self.engine.active()
    }

    #[zbus(property)]
    async fn last_transaction(&self) -> LastTransaction {
        self.engine
            .last_transaction()
            .map(|r| LastTransaction {
                id: r.id,
                title: r.title,
                client: r.client,
                state: r.state,
                error_message: r.error_message,
                time: r.time,
            })
            .unwrap_or_default()
    }

    #[zbus(property)]
    async fn daemon_version(&self) -> String {
        crate::VERSION.to_string()
    }
}

/// `org.layerd.Layerd1.Transaction` at `/org/layerd/Layerd1/Transaction/<id>`.
pub struct TransactionObject {
    txn: Arc<Transaction>,
    engine: Arc<Engine>,
}

#[zbus::interface(name = "org.layerd.Layerd1.Transaction")]
impl TransactionObject {
    /// Start: only for a peer that created or joined the transaction (and was authorized
    /// then), the same user, or root, so nobody runs a change somebody else prepared.
    async fn start(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<(), ApiError> {
        self.engine.touch();
        let (sender, uid) = sender_and_uid(conn, &header).await;
        let allowed = uid == 0 || (uid != u32::MAX && uid == self.txn.caller.uid) || self.txn.is_owner(&sender);
        if !allowed {
            return Err(ApiError::AccessDenied(format!(
                "transaction {} was created by another user; only its creator or root may start it",
                self.txn.id
            )));
        }
        let wait = start_options(options)?;
        self.engine.start(&self.txn, wait)?;
        let _ = self.state_changed(&emitter).await;
        Ok(())
    }

    /// Cancel: for its starter (same user), root, or whom polkit grants the cancel action.
    async fn cancel(&self, #[zbus(header)] header: Header<'_>, #[zbus(connection)] conn: &Connection) -> Result<(), ApiError> {
        let (sender, uid) = sender_and_uid(conn, &header).await;
        let starter = uid != u32::MAX && uid == self.txn.caller.uid;
        if !starter {
            crate::polkit::authorize(conn, &sender, uid, crate::polkit::Action::Cancel).await?;
        }
        self.engine.cancel(&self.txn);
        Ok(())
    }

    async fn events(&self, since: u64) -> Vec<(u64, String, EventData)> {
        self.engine.touch();
        self.txn
            .events_since(since)
            .into_iter()
            .map(|e| {
                let (kind, data) = e.kind.to_wire();
                (e.seq, kind, data)
            })
            .collect()
    }

    #[zbus(property)]
    async fn id(&self) -> String {
        self.txn.id.clone()
    }

    #[zbus(property)]
    async fn title(&self) -> String {
        self.txn.title.clone()
    }

    #[zbus(property)]
    async fn state(&self) -> String {
        self.txn.state().as_str().to_string()
    }

    #[zbus(property)]
    async fn client(&self) -> String {
        self.txn.caller.describe()
    }

    #[zbus(property)]
    async fn result(&self) -> TransactionResult {
        self.txn.result().unwrap_or_default()
    }

    #[zbus(signal)]
    async fn event(emitter: &SignalEmitter<'_>, seq: u64, kind: &str, data: EventData) -> zbus::Result<()>;
}

/// Mirror one transaction's events as signals. History is replayed first, so nothing emitted
/// between creation and this task's start is lost; state changes follow as properties.
async fn forward_events(conn: Connection, path: OwnedObjectPath, txn: Arc<Transaction>) {
    let Ok(emitter) = SignalEmitter::new(&conn, path.clone()) else { return };
    let (past, mut rx) = txn.subscribe();
    let send = |ev: Event| {
        let emitter = emitter.clone();
        let conn = conn.clone();
        let path = path.clone();
        async move {
            let finished = matches!(ev.kind, EventKind::Finished(_));
            if let Ok(iface) = conn.object_server().interface::<_, TransactionObject>(&path).await {
                let obj = iface.get().await;
                let _ = obj.state_changed(&emitter).await;
                if finished {
                    let _ = obj.result_changed(&emitter).await;
                }
            }
            let (kind, data) = ev.kind.to_wire();
            let _ = TransactionObject::event(&emitter, ev.seq, &kind, data).await;
            finished
        }
    };
    for ev in past {
        if send(ev).await {
            return;
        }
    }
    loop {
        match rx.recv().await {
            Ok(ev) => {
                if send(ev).await {
                    return;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                log::warn!("transaction {}: {n} events not signalled (replay them with Events)", txn.id);
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Keep properties and objects in step with the engine: status changes become
/// `PropertiesChanged` signals, expired transactions lose their objects.
pub fn spawn_mirrors(conn: Connection, engine: Arc<Engine>) {
    let c = conn.clone();
    let mut snap = engine.subscribe_snapshot();
    tokio::spawn(async move {
        while snap.changed().await.is_ok() {
            if let Ok(iface) = c.object_server().interface::<_, Layerd1>(OBJECT_PATH).await {
                let obj = iface.get().await;
                let em = iface.signal_emitter();
                let _ = obj.deployments_changed(em).await;
                let _ = obj.booted_deployment_changed(em).await;
                let _ = obj.is_booted_changed(em).await;
            }
        }
    });
    let c = conn.clone();
    let mut txns = engine.subscribe_transactions();
    tokio::spawn(async move {
        while txns.changed().await.is_ok() {
            if let Ok(iface) = c.object_server().interface::<_, Layerd1>(OBJECT_PATH).await {
                let _ = iface.get().await.transactions_changed(iface.signal_emitter()).await;
            }
        }
    });
    let c = conn.clone();
    let e = engine.clone();
    tokio::spawn(async move {
        let Ok(dbus) = fdo::DBusProxy::new(&c).await else { return };
        let Ok(mut gone) = dbus.receive_name_owner_changed().await else { return };
        use futures_util::StreamExt;
        while let Some(sig) = gone.next().await {
            if let Ok(args) = sig.args() {
                if args.new_owner().is_none() && args.name().starts_with(':') {
                    e.peer_vanished(args.name());
                }
            }
        }
    });
    tokio::spawn(async move {
        let period = (engine.result_ttl() / 4).clamp(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            tokio::time::sleep(period).await;
            for id in engine.expire() {
                let path = format!("{}{id}", layerd_interfaces::TRANSACTION_PATH_PREFIX);
                let _ = conn.object_server().remove::<TransactionObject, _>(path.as_str()).await;
            }
        }
    });
}
