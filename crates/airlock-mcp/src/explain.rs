//! `policy_explain`: the verdicts come from the code that enforces them — the launch planner
//! (mounts, writable roots, protected paths) for paths, `airlock_egress` (domain policy and
//! address floor) for connections, the seccomp tables for system calls. This module only
//! words them and names the option or configuration line that changes the outcome.

use super::args::{Access, ExplainArgs};
use super::call::{check_name, parse, policy, tri, Call};
use super::{tool_error, tool_ok};
use airlock_egress::{addr, Decision, EgressPolicy};
use airlock_model::plan::{self, LaunchPlan, MountStep};
use airlock_model::policy::NetMode;
use airlock_model::spec::RunSpec;
use airlock_sandbox::cgroup::Layout;
use rmcp::model::CallToolResult;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// One verdict.
#[derive(Debug, serde::Serialize)]
pub struct Verdict {
    pub subject: String,
    pub allowed: bool,
    pub reason: String,
    /// The option / configuration line that would allow it; `None` when nothing may (the floor).
    pub fix: Option<String>,
}

pub async fn run(c: Call, v: Value) -> CallToolResult {
    let a: ExplainArgs = tri!(parse("policy_explain", v));
    if a.domain.is_none() && a.path.is_none() && a.syscall.is_none() {
        return tool_error("policy_explain: give at least one of domain, path, syscall");
    }
    // Same gate as sandbox_run: a refused policy is not one to explain as if it could run.
    let options = tri!(policy(&a.policy(), &c.opts));
    let builder = c.opts.spec_builder.clone();
    let work = tokio::task::spawn_blocking(move || explain(&a, &options, &builder));
    match tokio::time::timeout(std::time::Duration::from_secs(20), work).await {
        Ok(Ok(r)) => r,
        _ => tool_error("policy_explain: did not finish in time"),
    }
}

fn explain(
    a: &ExplainArgs,
    options: &airlock_engine::action::PolicyOptions,
    builder: &super::SpecBuilder,
) -> CallToolResult {
    let (spec, origin) = match &a.sandbox {
        Some(name) => {
            tri!(check_name(name));
            (tri!(sandbox_spec(name)), format!("sandbox {name}"))
        }
        None => (
            tri!(builder(options).map_err(|e| tool_error(format!("policy_explain: {e}")))),
            "a new sandbox of this project".to_string(),
        ),
    };
    let verdicts = verdicts(
        &spec,
        &Subjects {
            domain: a.domain.as_deref(),
            port: a.port,
            path: a.path.as_deref(),
            write: a.access.unwrap_or(Access::Write) == Access::Write,
            syscall: a.syscall.as_deref(),
        },
    );
    let mut text = format!("policy of {origin}: {}\n", policy_line(&spec));
    for v in &verdicts {
        text.push_str(&format!(
            "\n{}: {}\n  why: {}\n",
            v.subject,
            if v.allowed { "ALLOWED" } else { "DENIED" },
            v.reason
        ));
        match (&v.fix, v.allowed) {
            (Some(f), false) => text.push_str(&format!("  to allow: {f}\n")),
            (None, false) => text.push_str("  to allow: nothing can (security floor)\n"),
            _ => {}
        }
    }
    tool_ok(
        text,
        json!({
            "policy": {
                "source": origin, "image": spec.rootfs.label(), "profile": spec.profile.to_string(),
                "network": spec.net.to_string(), "domains": spec.domains,
                "ports": spec.ports, "workspace": spec.workspace.to_string(),
            },
            "verdicts": verdicts,
        }),
    )
}

/// What to explain.
pub struct Subjects<'a> {
    pub domain: Option<&'a str>,
    /// Default 443.
    pub port: Option<u16>,
    pub path: Option<&'a str>,
    /// Write access to `path` (else read).
    pub write: bool,
    pub syscall: Option<&'a str>,
}

/// The verdicts on `subjects` under `spec`'s policy, from the code that enforces it.
pub fn verdicts(spec: &RunSpec, subjects: &Subjects) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    if let Some(d) = subjects.domain {
        verdicts.push(domain(spec, d, subjects.port.unwrap_or(443)));
    }
    if let Some(p) = subjects.path {
        let access = if subjects.write {
            Access::Write
        } else {
            Access::Read
        };
        let mut facts = airlock_sandbox::container::host_facts(&spec.project_dir, &Layout::None);
        facts.offer = airlock_sandbox::isolation::offer();
        // An image root: which paths are writable does not depend on the image's files, so
        // the plan is explained without opening the store (it is never executed).
        if let airlock_model::spec::RootFs::Image { .. } = &spec.rootfs {
            facts.image = Some(Box::new(plan::ImageRoot {
                reference: spec.rootfs.label(),
                layers: Vec::new(),
                passwd: None,
                group: None,
                vm_disk: None,
            }));
        }
        match plan::plan(spec, &facts) {
            Ok(plan::Plan::Container(plan)) => verdicts.push(path(&plan, p, access)),
            // The container facts above never offer a microVM; say so if that changes.
            Ok(plan::Plan::Microvm(_)) => verdicts.push(Verdict {
                subject: format!("path {p}"),
                allowed: false,
                reason: "path access is explained for the container backend only".into(),
                fix: None,
            }),
            Err(r) => verdicts.push(Verdict {
                subject: format!("path {p}"),
                allowed: false,
                reason: format!("this policy is refused before anything runs: {r}"),
                fix: Some(r.hint().to_string()),
            }),
        }
    }
    if let Some(s) = subjects.syscall {
        verdicts.push(syscall(s));
    }
    verdicts
}

/// The policy in one line: image, profile, network (and its domains), workspace.
pub fn policy_line(spec: &RunSpec) -> String {
    format!(
        "image {}, profile {}, network {}{}, workspace {}",
        spec.rootfs.label(),
        spec.profile,
        spec.net,
        if spec.net == NetMode::Filtered {
            format!(" (domains: {})", list_or_none(&spec.domains))
        } else {
            String::new()
        },
        spec.workspace
    )
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// A named sandbox's recorded spec.
fn sandbox_spec(name: &str) -> Result<RunSpec, CallToolResult> {
    recorded_spec(name).map_err(|e| tool_error(format!("policy_explain: {e}")))
}

/// A named sandbox's recorded spec; the error names what is wrong.
pub fn recorded_spec(name: &str) -> Result<RunSpec, String> {
    let dir = airlock_engine::paths::state_dir()
        .join("sandboxes")
        .join(name);
    let bytes =
        std::fs::read(dir.join("spec.json")).map_err(|_| format!("no sandbox named {name}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("sandbox {name}'s spec: {e}"))
}

fn domain(spec: &RunSpec, host: &str, port: u16) -> Verdict {
    let subject = format!("connection to {host}:{port}");
    let deny = |reason: String, fix: Option<String>| Verdict {
        subject: subject.clone(),
        allowed: false,
        reason,
        fix,
    };
    let literal: Option<std::net::IpAddr> = host.trim_matches(['[', ']']).parse().ok();
    match spec.net {
        NetMode::Off => deny(
            format!(
                "the network is off in this sandbox (profile {}) : only loopback",
                spec.profile
            ),
            Some(format!(
                "`--net filtered --allow {host}:{port}` (network: \"filtered\", allow_domains: \
                 [\"{host}\"] in sandbox_run), or `[network] mode = \"filtered\"` and `domains = \
                 [\"{host}\"]` in airlock.toml"
            )),
        ),
        NetMode::Open => {
            if let Some(why) = literal.and_then(addr::forbidden) {
                return deny(format!("{host} is {why}: unreachable in every mode"), None);
            }
            if addr::metadata_name(&host.to_ascii_lowercase()) {
                return deny(
                    format!("{host} is a cloud metadata service, unreachable in every mode"),
                    None,
                );
            }
            Verdict {
                subject,
                allowed: true,
                reason: "open network: outbound connections are allowed (the cloud metadata \
                         floor and the host's loopback services stay unreachable)"
                    .into(),
                fix: None,
            }
        }
        NetMode::Filtered => {
            if literal.is_some() {
                return deny(
                    format!(
                        "{host} is a literal IP address: filtered mode allows names only (the \
                         host side resolves an allowed name itself and checks the address)"
                    ),
                    None,
                );
            }
            let policy = match EgressPolicy::new(&spec.domains, &spec.ports) {
                Ok(p) if spec.persistent => p.of_sandbox(&spec.name),
                Ok(p) => p,
                Err(e) => return deny(format!("the configured domains are invalid: {e}"), None),
            };
            match policy.check(host, port) {
                Decision::Allow => Verdict {
                    subject,
                    allowed: true,
                    reason: format!(
                        "{host} is in the allowed domains and port {port} is allowed; its DNS \
                         answers must still be public addresses (private, loopback, link-local \
                         and metadata answers are refused)"
                    ),
                    fix: None,
                },
                Decision::Deny { reason, fix } => deny(reason, (!fix.is_empty()).then_some(fix)),
            }
        }
    }
}

fn syscall(name: &str) -> Verdict {
    let name = name.trim();
    match airlock_sandbox::container::seccomp::describe(name) {
        Some(d) => Verdict {
            subject: format!("system call {name}"),
            allowed: false,
            reason: format!("seccomp filter: {d}"),
            fix: None,
        },
        None => Verdict {
            subject: format!("system call {name}"),
            allowed: true,
            reason: "the seccomp filter does not deny it; the process still has no capabilities \
                     and no_new_privs, so privileged uses fail with EPERM"
                .into(),
            fix: None,
        },
    }
}

/// Targets of a step, and whether it leaves its subtree read-only.
fn step_target(s: &MountStep) -> Option<(PathBuf, &'static str, bool)> {
    Some(match s {
        MountStep::Tmpfs { target, .. } => (target.clone(), "a private tmpfs", false),
        MountStep::BindRo { target, .. } => {
            (target.clone(), "a read-only bind of the host's", true)
        }
        MountStep::BindRw { target, .. } => {
            (target.clone(), "a writable bind of the host's", false)
        }
        MountStep::Overlay { target, .. } => (
            target.clone(),
            "the project, copy-on-write (the host copy is never modified)",
            false,
        ),
        MountStep::Symlink { target, .. } => (target.clone(), "a symlink", true),
        MountStep::Dir { target, .. } => {
            (target.clone(), "a directory on the read-only root", true)
        }
        MountStep::File { target, .. } => (target.clone(), "a generated file (read-only)", true),
        MountStep::Device { name } => (Path::new("/dev").join(name), "a device node", false),
        MountStep::Proc { target } => (target.clone(), "the sandbox's own /proc", false),
        MountStep::ReadOnly { target } => (target.clone(), "read-only", true),
        MountStep::Sysfs { target } => (target.clone(), "a read-only /sys", true),
        MountStep::Devpts { target } => (target.clone(), "the sandbox's own devpts", false),
        MountStep::Protect { target } => (target.clone(), "protected", true),
        MountStep::ImageRoot { .. } => (
            PathBuf::from("/"),
            "the image's files (read-only overlay of its layers)",
            true,
        ),
        MountStep::Pin { .. } | MountStep::ImageLayer { .. } => return None,
        MountStep::RootReadOnly => return None,
    })
}

/// The deepest step covering `p` (later steps win at equal depth).
fn covering<'a>(
    plan: &'a LaunchPlan,
    p: &Path,
) -> Option<(PathBuf, &'static str, bool, &'a MountStep)> {
    let mut best: Option<(PathBuf, &'static str, bool, &MountStep)> = None;
    for s in &plan.mounts {
        if let Some((t, what, ro)) = step_target(s) {
            if p.starts_with(&t)
                && best
                    .as_ref()
                    .is_none_or(|(b, ..)| t.components().count() >= b.components().count())
            {
                best = Some((t, what, ro, s));
            }
        }
    }
    best
}

/// `p` with the symlinks the plan creates followed (`/bin/sh` is `/usr/bin/sh` inside), as the
/// sandbox's own path lookup would; `..` in a link target is resolved lexically.
fn follow_links(plan: &LaunchPlan, p: &Path) -> PathBuf {
    let mut p = p.to_path_buf();
    for _ in 0..8 {
        let Some((t, _, _, MountStep::Symlink { points_to, .. })) = covering(plan, &p) else {
            break;
        };
        let rest = p
            .strip_prefix(&t)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let base = t.parent().unwrap_or(Path::new("/")).join(points_to);
        let mut resolved = PathBuf::from("/");
        for c in base.join(rest).components() {
            match c {
                std::path::Component::ParentDir => {
                    resolved.pop();
                }
                std::path::Component::Normal(n) => resolved.push(n),
                _ => {}
            }
        }
        p = resolved;
    }
    p
}

/// What a directory the sandbox builds itself (the curated /etc) holds: the steps right under it.
fn entries_of(plan: &LaunchPlan, dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = plan
        .mounts
        .iter()
        .filter_map(step_target)
        .filter_map(|(t, ..)| {
            let rest = t.strip_prefix(dir).ok()?;
            let first = rest.components().next()?;
            Some(first.as_os_str().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

fn path(plan: &LaunchPlan, raw: &str, access: Access) -> Verdict {
    let asked = if raw.starts_with('/') {
        PathBuf::from(raw)
    } else {
        Path::new("/workspace").join(raw)
    };
    if asked
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Verdict {
            subject: format!("path {}", asked.display()),
            allowed: false,
            reason: "`..` is not resolved here: name the path directly".into(),
            fix: None,
        };
    }
    let p = follow_links(plan, &asked);
    let subject = format!(
        "{} {}",
        if access == Access::Write {
            "write to"
        } else {
            "read of"
        },
        p.display()
    );
    let verdict = |allowed: bool, reason: String, fix: Option<String>| Verdict {
        subject: subject.clone(),
        allowed,
        reason,
        fix,
    };
    let best = covering(plan, &p);
    let protected = plan.mounts.iter().find_map(|s| match s {
        MountStep::Protect { target } if p.starts_with(target) => Some(target.clone()),
        _ => None,
    });
    let Some((target, what, ro, step)) = best else {
        return verdict(false, "not in the sandbox".into(), None);
    };
    let mount_fix = || {
        Some(format!(
            "mount it: `--ro HOST:{0}` (or `--rw` for writes), or in airlock.toml \
             `[[mounts]] source = \"HOST\"  target = \"{0}\"  readonly = true`",
            asked.display()
        ))
    };
    let via = if p != asked {
        format!(" ({} inside)", p.display())
    } else {
        String::new()
    };
    // Below something airlock builds itself: only what the plan puts there exists.
    if p != target && target != Path::new("/") {
        let built = match step {
            MountStep::Dir { .. } => Some(format!(
                "{} is a directory airlock builds for the sandbox, holding only: {}",
                target.display(),
                entries_of(plan, &target).join(", ")
            )),
            MountStep::File { .. } | MountStep::Device { .. } => {
                Some(format!("{} is a file, not a directory", target.display()))
            }
            _ => None,
        };
        if let Some(why) = built {
            return verdict(
                false,
                format!("{}{via} does not exist inside: {why}", asked.display()),
                mount_fix(),
            );
        }
    }
    // Host paths bound read-only: what the host has is what the sandbox sees.
    if let MountStep::BindRo { source, .. } = step {
        let host = source.join(p.strip_prefix(&target).unwrap_or(Path::new("")));
        if access == Access::Read && std::fs::symlink_metadata(&host).is_err() {
            return verdict(
                false,
                format!(
                    "{}{via} does not exist inside: {} is the host's {}, read-only, and the host has no {}",
                    asked.display(),
                    target.display(),
                    source.display(),
                    host.display()
                ),
                None,
            );
        }
    }
    if let MountStep::ImageRoot { .. } = step {
        return verdict(
            access == Access::Read,
            format!(
                "{} is among the image's files (read-only overlay of its layers): readable if the \
                 image has it, never writable; the host's {} is not visible",
                p.display(),
                p.display()
            ),
            Some(format!(
                "write under /tmp, $HOME or /workspace instead, or mount a host directory: `--rw HOST:{}`",
                p.display()
            )),
        );
    }
    if target == Path::new("/") {
        return verdict(
            false,
            format!(
                "{} does not exist inside: the root is a fresh read-only tmpfs that holds only \
                 what the plan mounts; the host's {} is not visible",
                p.display(),
                p.display()
            ),
            Some(format!(
                "mount it: `--ro HOST:{0}` (or `--rw` for writes), or in airlock.toml \
                 `[[mounts]] source = \"HOST\"  target = \"{0}\"  readonly = true`",
                p.display()
            )),
        );
    }
    if let Some(t) = protected {
        if access == Access::Write {
            return verdict(
                false,
                format!(
                    "{} is agent configuration / git internals, read-only inside so an agent \
                     cannot rewrite its own rules (SPEC §7)",
                    t.display()
                ),
                None,
            );
        }
    }
    let landlock_ok = plan.writable_paths.iter().any(|w| p.starts_with(w));
    if access == Access::Read {
        let note = match step {
            MountStep::Tmpfs { .. } if p != target => {
                "; it is empty at start, so this exists only if something inside created it"
            }
            _ => "",
        };
        return verdict(
            true,
            format!(
                "{} is {what} {}{via}{note}",
                target.display(),
                source_of(step)
            ),
            None,
        );
    }
    if ro || !landlock_ok {
        let fix = match step {
            MountStep::BindRo { source, .. }
                if !plan::ROOT_CANDIDATES
                    .iter()
                    .any(|c| Path::new("/").join(c) == *source) =>
            {
                Some(format!(
                    "mount it writable: `--rw {}:{}` or `readonly = false` on its [[mounts]] entry \
                     (writes then reach the host)",
                    source.display(),
                    target.display()
                ))
            }
            _ => None,
        };
        return verdict(
            false,
            format!(
                "{} is {what} {}; writes are allowed only beneath {}",
                target.display(),
                source_of(step),
                plan.writable_paths
                    .iter()
                    .map(|w| w.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            fix,
        );
    }
    verdict(
        true,
        format!("{} is {what} {}", target.display(), source_of(step)),
        None,
    )
}

fn source_of(s: &MountStep) -> String {
    match s {
        MountStep::BindRo { source, .. } | MountStep::BindRw { source, .. } => {
            format!("{}", source.display())
        }
        MountStep::Overlay { lower, .. } => format!("({})", lower.display()),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan of a default sandbox of /tmp on this host.
    fn plan_here() -> LaunchPlan {
        let spec: RunSpec = serde_json::from_value(json!({
            "name": "box", "hostname": "box", "profile": "moderate", "net": "off",
            "domains": [], "ports": [], "workspace": "overlay",
            "project_dir": "/tmp", "binds": [], "env": [["PATH", "/usr/bin:/bin"]],
            "workdir": null,
            "resources": {"memory": null, "cpus": null, "pids": null, "disk": null},
            "require_limits": false, "user": "agent", "timeout": null,
            "stdio": {"inherit": {"forward_stdin": true}}, "argv": ["true"]
        }))
        .expect("spec");
        let facts = airlock_sandbox::container::host_facts(Path::new("/tmp"), &Layout::None);
        match plan::plan(&spec, &facts).expect("plan") {
            plan::Plan::Container(plan) => plan,
            plan::Plan::Microvm(_) => panic!("a container spec lowers to a container plan"),
        }
    }

    #[test]
    fn an_image_sandbox_is_explained_with_its_image_and_a_read_only_root() {
        let mut spec: RunSpec = serde_json::from_value(json!({
            "name": "box", "hostname": "box", "profile": "moderate", "net": "off",
            "domains": [], "ports": [], "workspace": "overlay",
            "project_dir": "/tmp", "binds": [], "env": [["PATH", "/usr/bin:/bin"]],
            "workdir": null,
            "resources": {"memory": null, "cpus": null, "pids": null, "disk": null},
            "require_limits": false, "user": "agent", "timeout": null,
            "stdio": {"inherit": {"forward_stdin": true}}, "argv": ["true"]
        }))
        .expect("spec");
        spec.rootfs = airlock_model::spec::RootFs::from_config("docker.io/library/busybox:1");
        let a: ExplainArgs =
            serde_json::from_value(json!({"path": "/usr/bin/x", "access": "write"})).expect("args");
        let builder: super::super::SpecBuilder = std::sync::Arc::new(move |_| Ok(spec.clone()));
        let r = explain(&a, &Default::default(), &builder);
        let text = format!("{:?}", r.content);
        assert!(text.contains("image docker.io/library/busybox:1"), "{text}");
        assert!(
            text.contains("DENIED") && text.contains("the image's files"),
            "{text}"
        );
    }

    fn read(plan: &LaunchPlan, p: &str) -> Verdict {
        path(plan, p, Access::Read)
    }

    #[test]
    fn paths_are_explained_as_the_sandbox_sees_them() {
        let plan = plan_here();
        // The curated /etc has no shadow, whatever the host has.
        let v = read(&plan, "/etc/shadow");
        assert!(!v.allowed, "{v:?}");
        assert!(
            v.reason.starts_with("/etc/shadow does not exist inside: /etc is a directory airlock builds for the sandbox, holding only: ")
                && v.reason.contains("passwd"),
            "{v:?}"
        );
        for secret in [
            "/etc/gshadow",
            "/etc/sudoers",
            "/etc/ssh/ssh_host_ed25519_key",
        ] {
            assert!(!read(&plan, secret).allowed, "{secret}");
        }
        let v = read(&plan, "/etc/passwd");
        assert!(v.allowed, "{v:?}");
        // Host /usr, read-only: what exists there is readable, what does not is not.
        assert!(read(&plan, "/usr/bin/env").allowed);
        let v = read(&plan, "/usr/bin/airlock-no-such-tool");
        assert!(!v.allowed && v.reason.contains("the host has no"), "{v:?}");
        // Through the plan's symlinks (/bin -> usr/bin on merged-/usr hosts).
        if std::fs::read_link("/bin").is_ok() {
            let v = read(&plan, "/bin/sh");
            assert!(
                v.allowed && v.reason.contains("(/usr/bin/sh inside)"),
                "{v:?}"
            );
        }
        // A private tmpfs: the sandbox's own, empty at start.
        let v = read(&plan, "/tmp/notes");
        assert!(v.allowed && v.reason.contains("empty at start"), "{v:?}");
        // Nothing of the host's root or home.
        assert!(!read(&plan, "/root/.ssh/id_rsa").allowed);
        let v = path(&plan, "/etc/shadow", Access::Write);
        assert!(!v.allowed, "{v:?}");
    }
}
