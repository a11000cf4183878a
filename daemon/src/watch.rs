//! Noticing sysroot changes made by anyone (layerd, `ostree admin`, rpm-ostree, bootc), so status
//! watchers get a change signal without polling.
//!
//! inotify on the few places every deployment change touches: the stateroots' `deploy`
//! directories (new/removed deployments, rewritten origin files), `boot` (the `loader` symlink
//! swap of every bootloader config write, e.g. reorders and pins) and `/run/ostree` (staged
//! deployment and its finalization lock) on a booted system.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustix::fs::inotify::{self, CreateFlags, WatchFlags};

use crate::engine::Engine;

fn watch_paths(sysroot: &Path, booted: bool) -> Vec<PathBuf> {
    let mut v = vec![sysroot.join("boot"), sysroot.join("ostree/deploy")];
    if let Ok(rd) = std::fs::read_dir(sysroot.join("ostree/deploy")) {
        for e in rd.flatten() {
            v.push(e.path().join("deploy"));
        }
    }
    if booted {
        v.push(PathBuf::from("/run"));
        v.push(PathBuf::from("/run/ostree"));
    }
    v
}

/// Start watching; refreshes the engine's status (debounced) on every change.
pub fn spawn(engine: Arc<Engine>, booted: bool) {
    let sysroot = engine.sysroot().path().to_path_buf();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let thread = std::thread::Builder::new().name("sysroot-watch".into()).spawn(move || {
        let fd = match inotify::init(CreateFlags::CLOEXEC) {
            Ok(fd) => fd,
            Err(e) => {
                log::warn!("cannot watch the sysroot for changes (inotify: {e}); status refreshes after layerd's own transactions only");
                return;
            }
        };
        let flags = WatchFlags::CREATE | WatchFlags::DELETE | WatchFlags::MOVED_TO | WatchFlags::MOVED_FROM | WatchFlags::CLOSE_WRITE;
        let add_all = |fd: &rustix::fd::OwnedFd| {
            for p in watch_paths(&sysroot, booted) {
                // paths that do not exist yet (e.g. /run/ostree) are picked up on a later event
                let _ = inotify::add_watch(fd, &p, flags);
            }
        };
        add_all(&fd);
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        loop {
            let mut reader = inotify::Reader::new(&fd, &mut buf);
            match reader.next() {
                Ok(_) => {
                    add_all(&fd);
                    if tx.send(()).is_err() {
                        return;
                    }
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    log::warn!("sysroot watch stopped: {e}");
                    return;
                }
            }
        }
    });
    if let Err(e) = thread {
        log::warn!("cannot start the sysroot watcher: {e}");
        return;
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // coalesce a burst of events (a deploy touches many paths)
            tokio::time::sleep(Duration::from_millis(30)).await;
            while rx.try_recv().is_ok() {}
            engine.refresh().await;
        }
    });
}
