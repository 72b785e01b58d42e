//! FUSE notifications that correct the kernel's caches, sent from a thread of their own.
//!
//! The kernel handles `FUSE_NOTIFY_INVAL_ENTRY` under the directory's lock. If it were sent
//! from the task answering a request the kernel makes while holding that lock, neither would
//! ever proceed; so requests only queue notifications here, and one thread sends them.

use std::sync::Mutex;
use std::sync::mpsc::{Sender, channel};

use fuser::{INodeNo, Notifier};

use crate::fs::KernelCache;
use crate::fs::inode::Ino;

enum Note {
    Name(Ino, String),
    Data(Ino),
    Attr(Ino),
    /// Answered once everything queued before it was sent.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

pub struct NotifyThread {
    tx: Mutex<Sender<Note>>,
}

impl NotifyThread {
    pub fn spawn(notifier: Notifier) -> std::io::Result<NotifyThread> {
        let (tx, rx) = channel::<Note>();
        std::thread::Builder::new()
            .name("pailfs-notify".into())
            .spawn(move || {
                for note in rx {
                    // ENOENT means the kernel had nothing cached: fine.
                    let r = match note {
                        Note::Name(parent, name) => {
                            notifier.inval_entry(INodeNo(parent), name.as_ref())
                        }
                        Note::Data(ino) => notifier.inval_inode(INodeNo(ino), 0, 0),
                        // A negative offset: attributes only, no page is touched (a page
                        // being read is locked until that read is answered).
                        Note::Attr(ino) => notifier.inval_inode(INodeNo(ino), -1, 0),
                        Note::Barrier(done) => {
                            let _ = done.send(());
                            Ok(())
                        }
                    };
                    if let Err(e) = r
                        && e.raw_os_error() != Some(libc::ENOENT)
                    {
                        log::debug!("kernel cache notification failed: {e}");
                    }
                }
            })?;
        Ok(NotifyThread { tx: Mutex::new(tx) })
    }

    fn send(&self, n: Note) {
        if let Ok(tx) = self.tx.lock() {
            let _ = tx.send(n);
        }
    }
}

impl KernelCache for NotifyThread {
    fn forget_name(&self, parent: Ino, name: &str) {
        self.send(Note::Name(parent, name.to_string()));
    }

    fn forget_data(&self, ino: Ino) {
        self.send(Note::Data(ino));
    }

    fn forget_attr(&self, ino: Ino) {
        self.send(Note::Attr(ino));
    }

    fn delivered(&self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Note::Barrier(tx));
        Some(rx)
    }
}
