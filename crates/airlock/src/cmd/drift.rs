//! `up NAME` on an existing sandbox: which of the options given differ from what the sandbox
//! was created with. A sandbox's policy is fixed at creation, so `up` refuses such options
//! (naming each) instead of dropping them silently. Pure: specs in, descriptions out.

use crate::cli::PolicyArgs;
use airlock_model::config::{Harness, Secret, SecretSource};
use airlock_model::policy::BackendKind;
use airlock_model::spec::RunSpec;
use airlock_sandbox::microvm::kernel::FROM_FLAG;
use std::fmt::Display;

/// One line per option of `p` (and `--agent`) that `asked` (the spec those options build now)
/// has differently from `recorded` (the existing sandbox's). Options not given are not compared.
pub fn drift(
    p: &PolicyArgs,
    agent: Option<&Harness>,
    asked: &RunSpec,
    recorded: &RunSpec,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut differs = |flag: String, has: String| out.push(format!("{flag} (it has {has})"));
    fn opt<T: Display>(v: &Option<T>) -> String {
        v.as_ref().map_or("none".into(), |v| v.to_string())
    }
    if let Some(v) = &p.profile {
        if asked.profile != recorded.profile {
            differs(format!("--profile {v}"), recorded.profile.to_string());
        }
    }
    if let Some(v) = &p.compatibility_mode {
        // What the mode sets, as the sandbox has it (it may have been made without the mode).
        let mut has = Vec::new();
        if asked.profile != recorded.profile {
            has.push(format!("profile {}", recorded.profile));
        }
        if asked.net != recorded.net {
            has.push(format!("network {}", recorded.net));
        }
        let missing: Vec<&str> = (asked.domains.iter())
            .filter(|d| !recorded.domains.contains(d))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            has.push(format!("no {}", missing.join(", ")));
        }
        if asked.workspace != recorded.workspace {
            has.push(format!("workspace {}", recorded.workspace));
        }
        if !has.is_empty() {
            differs(format!("--compatibility-mode {v}"), has.join("; "));
        }
    }
    if let Some(v) = &p.net {
        if asked.net != recorded.net {
            differs(format!("--net {v}"), recorded.net.to_string());
        }
    }
    for a in &p.allow {
        let (host, port) = match a.rsplit_once(':') {
            Some((h, port)) => (h, port.parse::<u16>().ok()),
            None => (a.as_str(), None),
        };
        let known = recorded.domains.iter().any(|d| {
            d.trim_end_matches('.')
                .eq_ignore_ascii_case(host.trim_end_matches('.'))
        });
        if !known || port.is_some_and(|p| !recorded.ports.contains(&p)) {
            let ports: Vec<String> = recorded.ports.iter().map(u16::to_string).collect();
            differs(
                format!("--allow {a}"),
                format!(
                    "domains [{}] on ports [{}]",
                    recorded.domains.join(", "),
                    ports.join(", ")
                ),
            );
        }
    }
    if let Some(v) = &p.workspace {
        if asked.workspace != recorded.workspace {
            differs(format!("--workspace {v}"), recorded.workspace.to_string());
        }
    }
    let bind_flags = !p.ro.is_empty() || !p.rw.is_empty();
    for b in asked.binds.iter().filter(|_| bind_flags) {
        if !recorded.binds.contains(b) {
            let flag = if b.writable { "--rw" } else { "--ro" };
            differs(
                format!("{flag} {}:{}", b.source.display(), b.target.display()),
                "no such mount".into(),
            );
        }
    }
    let env_of = |s: &RunSpec, k: &str| {
        s.env
            .iter()
            .rev()
            .find(|(ek, _)| ek == k)
            .map(|(_, v)| v.clone())
    };
    let env_keys = p
        .env
        .iter()
        .map(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k))
        .chain(p.env_pass.iter().map(String::as_str));
    for k in env_keys {
        if env_of(asked, k) != env_of(recorded, k) {
            let has = if env_of(recorded, k).is_some() {
                "another value"
            } else {
                "it unset"
            };
            differs(format!("-e {k}"), has.into());
        }
    }
    let source = |s: Option<&Secret>| {
        let from = match s.map(|s| &s.source) {
            Some(SecretSource::FromEnv(v)) => format!("env:{v}"),
            Some(SecretSource::FromFile(f)) => format!("file:{}", f.display()),
            None => return "none".into(),
        };
        match s.and_then(|s| s.inject.as_ref()) {
            Some(i) => format!(
                "{from};hosts={};{}",
                i.hosts.join(","),
                i.place().unwrap_or_default()
            ),
            None => from,
        }
    };
    for spec in &p.secret {
        let name = spec.split_once('=').map_or(spec.as_str(), |(n, _)| n);
        if asked.secrets.get(name) != recorded.secrets.get(name) {
            differs(
                format!("--secret {spec}"),
                source(recorded.secrets.get(name)),
            );
        }
    }
    let (a, r) = (&asked.resources, &recorded.resources);
    if p.memory.is_some() && a.memory != r.memory {
        differs(format!("--memory {}", opt(&a.memory)), opt(&r.memory));
    }
    if p.cpus.is_some() && a.cpus != r.cpus {
        differs(format!("--cpus {}", opt(&a.cpus)), opt(&r.cpus));
    }
    if p.disk.is_some() && a.disk != r.disk {
        differs(format!("--disk {}", opt(&a.disk)), opt(&r.disk));
    }
    if p.pids.is_some() && a.pids != r.pids {
        differs(format!("--pids {}", opt(&a.pids)), opt(&r.pids));
    }
    if p.require_limits && !recorded.require_limits {
        differs("--require-limits".into(), "limits not required".into());
    }
    if p.user.is_some() && asked.user != recorded.user {
        differs(
            format!("--user {}", asked.user.name()),
            recorded.user.name(),
        );
    }
    if p.hostname.is_some() && asked.hostname != recorded.hostname {
        differs(
            format!("--hostname {}", asked.hostname),
            recorded.hostname.clone(),
        );
    }
    if p.backend.is_some() && asked.backend != recorded.backend {
        let name = |b: BackendKind| match b {
            BackendKind::Container => "container",
            BackendKind::Microvm => "microvm",
        };
        differs(
            format!("--backend {}", name(asked.backend)),
            name(recorded.backend).into(),
        );
    }
    // A microVM's guest kernel: `--kernel`, or `[sandbox] kernel` changed since the sandbox was
    // made with a configuration's kernel or the default one (a kernel it was made with by
    // `--kernel` stays, whatever the configuration says now, as the flag overrode it then).
    let path = |s: &RunSpec| s.kernel.as_ref().map(|k| k.path.clone());
    let has = || {
        recorded.kernel.as_ref().map_or(
            "the default kernel (AIRLOCK_KERNEL, else /boot's newest)".into(),
            |k| k.path.display().to_string(),
        )
    };
    let by_flag = |s: &RunSpec| s.kernel.as_ref().is_some_and(|k| k.from == FROM_FLAG);
    if path(asked) != path(recorded) {
        match &asked.kernel {
            Some(k) if p.kernel.is_some() => {
                differs(format!("--kernel {}", k.path.display()), has())
            }
            Some(k)
                if recorded.backend == BackendKind::Microvm
                    && !by_flag(asked)
                    && !by_flag(recorded) =>
            {
                differs(
                    format!("[sandbox] kernel = {} (in {})", k.path.display(), k.from),
                    has(),
                )
            }
            _ => {}
        }
    }
    if let Some(h) = agent {
        if recorded.agent.as_ref() != Some(h) {
            differs(format!("--agent {h}"), opt(&recorded.agent));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The policy flags and the spec `up`/`create` would build from them (here, a pure stand-in:
    /// the recorded spec with the flags' values applied by hand).
    fn flags(args: &[&str]) -> PolicyArgs {
        let mut argv = vec!["airlock", "up", "box"];
        argv.extend(args);
        match crate::cli::Cli::try_parse_from(argv)
            .expect("parse")
            .command
        {
            crate::cli::Command::Up(u) => u.policy,
            _ => unreachable!(),
        }
    }

    fn spec() -> RunSpec {
        serde_json::from_value(serde_json::json!({
            "name": "box", "hostname": "box", "profile": "moderate", "net": "filtered",
            "domains": ["github.com"], "ports": [443, 80], "workspace": "overlay",
            "project_dir": "/p", "binds": [], "env": [["PATH", "/bin"], ["K", "v"]],
            "workdir": null,
            "resources": {"memory": null, "cpus": null, "pids": null, "disk": null},
            "require_limits": false, "user": "agent", "timeout": null,
            "stdio": {"inherit": {"forward_stdin": true}}, "argv": [], "persistent": true
        }))
        .expect("spec")
    }

    #[test]
    fn only_given_options_that_differ_are_named() {
        let rec = spec();
        // The same options as at creation: nothing to say.
        let p = flags(&["--net", "filtered", "--allow", "GitHub.com", "-e", "K=v"]);
        assert_eq!(drift(&p, None, &rec, &rec), Vec::<String>::new());
        let mut asked = rec.clone();
        asked.resources.memory = Some("64M".parse().expect("size"));
        asked.domains.push("example.com".into());
        asked.net = airlock_model::policy::NetMode::Off;
        let p = flags(&[
            "--memory",
            "64M",
            "--allow",
            "example.com:8443",
            "--net",
            "off",
        ]);
        assert_eq!(
            drift(&p, None, &asked, &rec),
            [
                "--net off (it has filtered)",
                "--allow example.com:8443 (it has domains [github.com] on ports [443, 80])",
                "--memory 64M (it has none)",
            ]
        );
        let claude: Harness = "claude".parse().expect("harness");
        assert_eq!(
            drift(&flags(&[]), Some(&claude), &rec, &rec),
            ["--agent claude (it has none)"]
        );
    }

    fn kernel(path: &str, from: &str) -> Option<airlock_model::spec::GuestKernel> {
        Some(airlock_model::spec::GuestKernel {
            path: path.into(),
            from: from.into(),
        })
    }

    #[test]
    fn a_changed_guest_kernel_or_backend_is_named() {
        let mut rec = spec();
        rec.backend = BackendKind::Microvm;
        rec.kernel = kernel("/boot/vmlinuz-6.1", "/etc/airlock/config.toml");
        // Made with the configuration's kernel: --kernel or a changed configuration differ.
        let mut asked = rec.clone();
        asked.kernel = kernel("/opt/k/vmlinux-6.12", FROM_FLAG);
        assert_eq!(
            drift(
                &flags(&["--kernel", "/opt/k/vmlinux-6.12"]),
                None,
                &asked,
                &rec
            ),
            ["--kernel /opt/k/vmlinux-6.12 (it has /boot/vmlinuz-6.1)"]
        );
        asked.kernel = kernel("/boot/vmlinuz-6.12", "/home/u/.config/airlock/config.toml");
        assert_eq!(
            drift(&flags(&[]), None, &asked, &rec),
            ["[sandbox] kernel = /boot/vmlinuz-6.12 (in /home/u/.config/airlock/config.toml) (it has /boot/vmlinuz-6.1)"]
        );
        // The same kernel, however it is given now: nothing to say.
        asked.kernel = kernel("/boot/vmlinuz-6.1", FROM_FLAG);
        assert!(drift(
            &flags(&["--kernel", "/boot/vmlinuz-6.1"]),
            None,
            &asked,
            &rec
        )
        .is_empty());
        // Made with the default kernel; a configuration names one now.
        rec.kernel = None;
        asked.kernel = kernel("/boot/vmlinuz-6.12", "/etc/airlock/config.toml");
        assert_eq!(
            drift(&flags(&[]), None, &asked, &rec),
            ["[sandbox] kernel = /boot/vmlinuz-6.12 (in /etc/airlock/config.toml) (it has the default kernel (AIRLOCK_KERNEL, else /boot's newest))"]
        );
        // Made with --kernel: the configuration does not count (the flag overrode it then),
        // and `up` without --kernel keeps it.
        rec.kernel = kernel("/opt/k/vmlinux-6.12", FROM_FLAG);
        assert!(drift(&flags(&[]), None, &asked, &rec).is_empty());
        asked.kernel = None;
        assert!(drift(&flags(&[]), None, &asked, &rec).is_empty());
        // A container sandbox has no guest kernel to compare with a configuration's.
        let mut ctr = spec();
        ctr.kernel = None;
        let mut asked = ctr.clone();
        asked.kernel = kernel("/boot/vmlinuz-6.12", "/etc/airlock/config.toml");
        assert!(drift(&flags(&[]), None, &asked, &ctr).is_empty());
        asked.backend = BackendKind::Microvm;
        assert_eq!(
            drift(&flags(&["--backend", "microvm"]), None, &asked, &ctr),
            ["--backend microvm (it has container)"]
        );
    }
}
