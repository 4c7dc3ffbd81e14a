//! A named sandbox's own workspace, made when it is created (by the engine, as the user): its
//! clone of the project (clone mode) with the `context` paths copied over, the reference
//! repositories in its kept home, everything handed to the sandbox user for root-run sandboxes.

use crate::clone;
use airlock_model::policy::WorkspaceMode;
use airlock_model::spec::RunSpec;
use std::path::{Path, PathBuf};

/// The host uid and gid that own the sandbox user's files in a root-run sandbox; None when
/// airlock runs rootless (the invoking user is the sandbox user).
pub fn rootful_owner(spec: &RunSpec) -> Option<(u32, u32)> {
    let base = airlock_model::plan::ROOTFUL_UID_BASE;
    nix::unistd::geteuid()
        .is_root()
        .then(|| (base + spec.user.uid(), base + spec.user.gid()))
}

/// The sandbox's kept home (`DIR/home`, 0700, the sandbox user's), made if missing.
pub fn persistent_home(dir: &Path, spec: &RunSpec) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let home = dir.join("home");
    match std::fs::create_dir(&home) {
        Ok(()) => {
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))?;
            if let Some((u, g)) = rootful_owner(spec) {
                nix::unistd::chown(
                    &home,
                    Some(nix::unistd::Uid::from_raw(u)),
                    Some(nix::unistd::Gid::from_raw(g)),
                )?;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    Ok(home)
}

/// Make what sandbox `name` (folder `dir`) needs beyond its spec: nothing for overlay, bind or
/// none without reference repositories. The error says which step failed.
pub fn prepare(dir: &Path, name: &str, spec: &RunSpec) -> Result<(), String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
    let mut owned = Vec::new();
    if spec.workspace == WorkspaceMode::Clone {
        let info = clone::prepare(&spec.project_dir, dir, name)
            .map_err(|e| fail("clone the project", &e))?;
        let ws = dir.join(clone::WORKSPACE_DIR);
        let context: Vec<PathBuf> = spec.context.iter().map(PathBuf::from).collect();
        clone::copy_context(&info.host_repo, &ws, &context)
            .map_err(|e| fail("copy the workspace context", &e))?;
        owned.push(ws);
    }
    if !spec.repos.is_empty() {
        let home = persistent_home(dir, spec).map_err(|e| fail("prepare the home", &e))?;
        for r in &spec.repos {
            let dest = home.join(&r.dest);
            clone::clone_reference(&r.source, &dest)
                .map_err(|e| fail(&format!("copy the repository {}", r.source.display()), &e))?;
        }
        owned.push(home);
    }
    if let Some((u, g)) = rootful_owner(spec) {
        for p in owned {
            clone::chown_tree(&p, u, g).map_err(|e| fail("hand the workspace over", &e))?;
        }
    }
    Ok(())
}
