//! The API's listening Unix socket: created mode 0600, a stale socket left
//! by a dead process replaced, a live one refused; or adopted from an
//! inherited fd.

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

/// Errors of setting up the listening socket.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// A process is accepting on the path.
    #[error("API socket {} is in use by a running process", .0.display())]
    InUse(PathBuf),
    /// Something that is not a socket sits on the path.
    #[error("{} exists and is not a socket", .0.display())]
    NotASocket(PathBuf),
    /// The existing socket could not be checked.
    #[error("Cannot probe existing API socket {}", path.display())]
    Probe {
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The stale socket could not be removed.
    #[error("Cannot remove stale API socket {}", path.display())]
    RemoveStale {
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Creating, binding or listening failed.
    #[error("Cannot create API socket {}", path.display())]
    Create {
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The inherited fd is unusable.
    #[error("File descriptor {fd} is not a listening Unix stream socket")]
    BadFd {
        /// The fd.
        fd: RawFd,
        /// The error, if a call failed.
        #[source]
        source: Option<io::Error>,
    },
}

/// Device and inode of the socket file we bound, so shutdown removes only
/// our own file and never a successor's.
#[derive(Debug, Clone)]
pub(crate) struct SocketFile {
    pub(crate) path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// Removes the socket file if it is still the one we created.
    pub(crate) fn remove(&self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if m.dev() == self.dev && m.ino() == self.ino {
                // Nothing to do on failure: the file is gone or not ours to fix.
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Removes `path` if it is a socket nobody accepts on.
fn remove_if_stale(path: &Path) -> Result<(), ListenerError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ListenerError::Probe {
                path: path.to_owned(),
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ListenerError::NotASocket(path.to_owned()));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ListenerError::InUse(path.to_owned())),
        // ECONNREFUSED: the socket file outlived its process.
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)
            .map_err(|source| ListenerError::RemoveStale {
                path: path.to_owned(),
                source,
            }),
        Err(source) => Err(ListenerError::Probe {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Binds a fresh listening socket at `path`, mode 0600.
pub(crate) fn bind(path: &Path) -> Result<(UnixListener, SocketFile), ListenerError> {
    remove_if_stale(path)?;
    let create = |source| ListenerError::Create {
        path: path.to_owned(),
        source,
    };
    // socket2 sets SOCK_CLOEXEC.
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(create)?;
    // The socket inode's mode (less the umask) becomes the file's mode at
    // bind (Linux net/unix/af_unix.c, unix_bind_bsd), so setting it first
    // leaves no window where another user could connect.
    // SAFETY: fchmod on a valid fd we own; no memory is passed.
    if unsafe { libc::fchmod(std::os::fd::AsRawFd::as_raw_fd(&socket), 0o600) } != 0 {
        return Err(create(io::Error::last_os_error()));
    }
    let addr = SockAddr::unix(path).map_err(create)?;
    socket.bind(&addr).map_err(create)?;
    // A umask can only have removed bits; make the mode exactly 0600.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(create)?;
    let meta = std::fs::symlink_metadata(path).map_err(create)?;
    socket.listen(128).map_err(create)?;
    socket.set_nonblocking(true).map_err(create)?;
    let file = SocketFile {
        path: path.to_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    Ok((socket.into(), file))
}

/// Adopts an inherited listening Unix stream socket.
pub(crate) fn adopt_fd(fd: RawFd) -> Result<UnixListener, ListenerError> {
    let bad = |source| ListenerError::BadFd { fd, source };
    // SAFETY: F_GETFD only reads the fd table; it fails with EBADF for a
    // closed fd, which is what we check before taking ownership.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(bad(Some(io::Error::last_os_error())));
    }
    // SAFETY: the fd is open (checked above) and was handed to this process
    // for the API (`--api-socket fd=N`), so nothing else owns it. It stays
    // unowned (ManuallyDrop) until it is known to be the right kind.
    let socket = ManuallyDrop::new(unsafe { Socket::from_raw_fd(fd) });
    let domain = socket.domain().map_err(|e| bad(Some(e)))?;
    let ty = socket.r#type().map_err(|e| bad(Some(e)))?;
    let listening = socket.is_listener().map_err(|e| bad(Some(e)))?;
    if domain != Domain::UNIX || ty != Type::STREAM || !listening {
        return Err(bad(None));
    }
    let socket = ManuallyDrop::into_inner(socket);
    socket.set_cloexec(true).map_err(|e| bad(Some(e)))?;
    socket.set_nonblocking(true).map_err(|e| bad(Some(e)))?;
    Ok(socket.into())
}
