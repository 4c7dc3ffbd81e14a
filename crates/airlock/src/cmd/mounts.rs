//! `airlock mount NAME HOST[:DEST] [--rw]` and `airlock unmount NAME DEST`: hot-plug binds of
//! a running named sandbox (the backend does the mounting, never through a symlink on either
//! side), recorded in its spec so that later starts keep them.

use super::named::{existing_dir, isolated, recorded_spec};
use crate::cli::{MountArgs, UnmountArgs};
use crate::error::{CliError, CliResult};
use airlock_model::exit;
use airlock_model::policy::{Profile, WorkspaceMode};
use airlock_model::spec::{BindSpec, RunSpec};
use airlock_sandbox::container::hotplug::Hotplug;
use airlock_sandbox::isolation::{Isolation, Observed};
use std::path::{Component, Path, PathBuf};

const WORKSPACE: &str = "/workspace";

fn lexical(p: &Path, what: &str) -> CliResult<PathBuf> {
    if !p.is_absolute() {
        return Err(
            CliError::usage(format!("{what} {}: must be an absolute path", p.display()))
                .hint("DEST is an absolute path inside the sandbox, e.g. /home/agent/data"),
        );
    }
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(CliError::usage(format!(
            "{what} {}: `.` and `..` are not allowed",
            p.display()
        ))
        .hint("name the path as it is, without `.` or `..`"));
    }
    Ok(p.components().collect())
}

fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Where a hot-plugged bind may go: strictly beneath /workspace (when there is one), /tmp or
/// the sandbox user's home, and never at, in or above a protected workspace path — so it can
/// neither hide the sandbox's own mounts (/run/secrets, /run/airlock, /proc…) nor replace what
/// the agent must not rewrite.
fn check_dest(spec: &RunSpec, home: &Path, dest: &Path) -> CliResult<()> {
    let ws = Path::new(WORKSPACE);
    let mut roots = vec![Path::new("/tmp"), home];
    if spec.workspace != WorkspaceMode::None {
        roots.push(ws);
    }
    if !roots.iter().any(|r| dest.starts_with(r) && dest != *r) {
        let list: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        return Err(CliError::new(
            exit::POLICY_REFUSED,
            anyhow::anyhow!(
                "{} is not beneath {}: hot-plugged mounts go there only",
                dest.display(),
                list.join(", ")
            ),
        )
        .hint(format!("choose a DEST such as {}/data", home.display())));
    }
    let protected = airlock_model::plan::PROTECTED_PATHS
        .iter()
        .copied()
        .chain([".git"])
        .chain(spec.protected.iter().map(String::as_str));
    for rel in protected {
        let p = ws.join(rel);
        if overlaps(dest, &p) {
            return Err(CliError::new(
                exit::POLICY_REFUSED,
                anyhow::anyhow!(
                    "{} would cover {}, which the sandbox must not rewrite",
                    dest.display(),
                    p.display()
                ),
            )
            .hint("choose a DEST away from the protected workspace paths"));
        }
    }
    Ok(())
}

/// The sandbox's spec and folder, running (its backend says so) — or why not — with the lock
/// that serializes hot-plug changes (their read-modify-write of `spec.json`).
fn running(name: &str) -> CliResult<(PathBuf, RunSpec, Lock)> {
    let dir = existing_dir(name)?;
    let lock = lock(&dir)?;
    let spec = recorded_spec(&dir).ok_or_else(|| {
        CliError::new(
            exit::SANDBOX_FAILED,
            anyhow::anyhow!("sandbox {name}: its spec.json cannot be read"),
        )
    })?;
    let observed = isolated(name, &dir, |b, s| b.observe(s))?;
    if !matches!(observed, Observed::Running { .. }) {
        return Err(CliError::new(
            exit::CONFLICT,
            anyhow::anyhow!("sandbox {name} is not running"),
        )
        .hint(format!(
            "`airlock start {name}` first, or give the mount at creation: `airlock create {name} --ro HOST:DEST`"
        )));
    }
    Ok((dir, spec, lock))
}

type Lock = nix::fcntl::Flock<std::fs::File>;

fn lock(dir: &Path) -> CliResult<Lock> {
    let failed = |e: std::io::Error| CliError::new(exit::SANDBOX_FAILED, e);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("mounts.lock"))
        .map_err(failed)?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| failed(e.into()))
}

fn apply(name: &str, dir: &Path, change: &Hotplug) -> CliResult<()> {
    isolated(name, dir, |b, s| b.hotplug(s, change))?.map_err(|e| {
        let e = match e {
            airlock_sandbox::container::RunError::Setup(m) => anyhow::anyhow!("{m}"),
            other => anyhow::Error::new(other),
        };
        let text = e.to_string();
        let code = if text.contains("symbolic link") {
            exit::POLICY_REFUSED
        } else {
            exit::SANDBOX_FAILED
        };
        CliError::new(code, e).hint(if code == exit::POLICY_REFUSED {
            "hot-plug mounts never go through a symbolic link, on the host or inside: name the real path"
        } else {
            "nothing was mounted; `airlock logs NAME` and `airlock status NAME` show the sandbox's state"
        })
    })
}

fn record(dir: &Path, spec: &RunSpec) -> CliResult<()> {
    let json =
        serde_json::to_vec_pretty(spec).map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
    airlock_engine::engine::write_atomic(&dir.join("spec.json"), &json)
        .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))
}

fn home_of(spec: &RunSpec) -> PathBuf {
    spec.env
        .iter()
        .rev()
        .find(|(k, _)| k == "HOME")
        .map(|(_, v)| PathBuf::from(v))
        .unwrap_or_else(|| PathBuf::from("/home/agent"))
}

pub fn mount(a: &MountArgs) -> CliResult<i32> {
    let (host, dest) = match a.spec.split_once(':') {
        Some((h, d)) if !d.is_empty() => (h, Some(d)),
        _ => (a.spec.trim_end_matches(':'), None),
    };
    if host.is_empty() {
        return Err(CliError::usage("HOST[:DEST]: the host path is empty"));
    }
    let cwd = std::env::current_dir().map_err(|e| CliError::new(exit::USAGE, e))?;
    let source = lexical(&cwd.join(host), "HOST")?;
    let target = lexical(Path::new(dest.unwrap_or(&source.to_string_lossy())), "DEST")?;
    let (dir, mut spec, _lock) = running(&a.name)?;
    if a.rw && spec.profile == Profile::Restrictive {
        return Err(CliError::new(
            exit::POLICY_REFUSED,
            anyhow::anyhow!(
                "sandbox {} has the restrictive profile: no writable mounts",
                a.name
            ),
        )
        .hint("mount it read-only (without --rw)"));
    }
    check_dest(&spec, &home_of(&spec), &target)?;
    if let Some(b) = spec.binds.iter().find(|b| overlaps(&b.target, &target)) {
        return Err(CliError::new(
            exit::CONFLICT,
            anyhow::anyhow!(
                "sandbox {} already has {} mounted at {}",
                a.name,
                b.source.display(),
                b.target.display()
            ),
        )
        .hint(format!(
            "`airlock unmount {} {}` first",
            a.name,
            b.target.display()
        )));
    }
    apply(
        &a.name,
        &dir,
        &Hotplug::Mount {
            source: source.clone(),
            target: target.clone(),
            writable: a.rw,
        },
    )?;
    spec.binds.push(BindSpec {
        source: source.clone(),
        target: target.clone(),
        writable: a.rw,
    });
    record(&dir, &spec)?;
    airlock_engine::audit::record(
        &dir,
        "policy",
        serde_json::json!({"op": "mount", "source": source, "target": target, "writable": a.rw}),
    );
    outln!(
        "mounted {} at {} in {} ({})",
        source.display(),
        target.display(),
        a.name,
        if a.rw { "writable" } else { "read-only" }
    );
    Ok(0)
}

pub fn unmount(a: &UnmountArgs) -> CliResult<i32> {
    let target = lexical(&a.dest, "DEST")?;
    let (dir, mut spec, _lock) = running(&a.name)?;
    let Some(i) = spec.binds.iter().position(|b| b.target == target) else {
        let list: Vec<String> = spec
            .binds
            .iter()
            .map(|b| b.target.display().to_string())
            .collect();
        return Err(CliError::new(
            exit::NOT_FOUND,
            anyhow::anyhow!("sandbox {} has no mount at {}", a.name, target.display()),
        )
        .hint(if list.is_empty() {
            "it has no bind mounts".to_string()
        } else {
            format!("its bind mounts: {}", list.join(", "))
        }));
    };
    let source = spec.binds[i].source.clone();
    apply(
        &a.name,
        &dir,
        &Hotplug::Unmount {
            source,
            target: target.clone(),
        },
    )?;
    spec.binds.remove(i);
    record(&dir, &spec)?;
    airlock_engine::audit::record(
        &dir,
        "policy",
        serde_json::json!({"op": "unmount", "target": target}),
    );
    outln!("unmounted {} from {}", target.display(), a.name);
    Ok(0)
}
