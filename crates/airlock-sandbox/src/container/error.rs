//! How a container launch fails (setup errors, with hints for the CLI).

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot prepare the run directory {path}: {source}")]
    RunDir { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error(transparent)]
    Mount(#[from] super::rootfs::MountError),
    #[error(transparent)]
    Seccomp(#[from] super::seccomp::SeccompError),
    #[error("cannot create the sandbox namespaces: {0}")]
    Clone(io::Error),
    #[error("cannot write the user namespace mapping: {0}")]
    IdMap(io::Error),
    #[error("sandbox setup failed: {0}")]
    Setup(String),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: io::Error,
    },
    #[error("cannot open the network journal {}: {source}", path.display())]
    Journal { path: PathBuf, source: io::Error },
    #[error("sandbox {name}: cannot read what it runs with ({why})")]
    NotRecorded { name: String, why: String },
    #[error("microVM: {0}")]
    Vm(String),
    #[error("invalid argument or environment entry (contains a NUL byte): {0:?}")]
    Nul(String),
}

/// How the child's own cgroup join reports a failure (the same hint as [`RunError::Cgroup`]).
pub const JOIN_CGROUP: &str = "join the sandbox cgroup";

pub use crate::nofollow::LINK_REFUSED;

impl RunError {
    /// A mount source that was canonical when checked has a symbolic link in it now (one a
    /// sandbox may have planted where it could write): refused, as a policy refusal.
    pub fn link_refused(&self) -> bool {
        match self {
            RunError::Mount(m) => m.to_string().contains(LINK_REFUSED),
            RunError::Setup(m) | RunError::Vm(m) => m.contains(LINK_REFUSED),
            _ => false,
        }
    }

    pub fn hint(&self) -> Option<String> {
        if self.link_refused() {
            return Some(
                "a mount source changed since it was checked (it may lie inside a writable mount, where a sandbox can replace it): put the directory back, or recreate the sandbox with the path you mean"
                    .into(),
            );
        }
        match self {
            RunError::Clone(e) if e.raw_os_error() == Some(libc::EPERM) || e.raw_os_error() == Some(libc::ENOSPC) => Some(
                "unprivileged user namespaces look disabled; run `airlock doctor` for the exact sysctl to enable them".into(),
            ),
            RunError::Setup(m) if m.starts_with("working directory") => {
                Some("pass an existing directory to -w (relative paths are under /workspace)".into())
            }
            RunError::NotRecorded { name, .. } => {
                Some(format!("airlock stop {name} && airlock start {name}"))
            }
            RunError::Setup(m) if m.starts_with(JOIN_CGROUP) => {
                Some("drop the resource limits, or run `airlock doctor` to see cgroup support".into())
            }
            RunError::Mount(_) | RunError::Setup(_) => Some("run `airlock doctor` to see which kernel features this host lacks".into()),
            RunError::Vm(_) => Some("run `airlock doctor` to see what the microvm backend found on this host".into()),
            RunError::Cgroup(_) => Some("drop the resource limits, or run `airlock doctor` to see cgroup support".into()),
            _ => None,
        }
    }
}

pub(crate) fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> RunError {
    move |source| RunError::Io { what, source }
}
