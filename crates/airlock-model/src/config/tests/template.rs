//! The `airlock init` starter file.

use super::*;
use crate::policy::{NetMode, Profile};

/// The template with every example setting enabled: `#key = ...` becomes `key = ...`,
/// prose (`# ...`) stays a comment.
fn uncommented() -> String {
    INIT_TEMPLATE
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if !rest.is_empty() && !rest.starts_with(' ') => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_template_loads_and_changes_nothing() {
    let t = TempDir::new("template");
    let file = t.write("airlock.toml", INIT_TEMPLATE);
    let r = load(&opts(t.path())).unwrap();
    assert_eq!(r.effective, Effective::default());
    assert_eq!(r.files, vec![file]);
}

#[test]
fn every_example_in_the_template_is_valid() {
    let t = TempDir::new("template-all");
    let text = uncommented();
    assert_ne!(text, INIT_TEMPLATE);
    t.write("airlock.toml", &text);
    let r = load(&opts(t.path())).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let e = &r.effective;
    assert_eq!(e.plugins, strings(&["claude-code", "rust", "github"]));
    assert_eq!(e.sandbox.profile, Profile::Moderate);
    assert_eq!(e.network.mode, Some(NetMode::Filtered));
    assert_eq!(e.network.ports, vec![443, 80, 8443]);
    assert_eq!(e.mounts.len(), 1);
    assert_eq!(e.workspace.repos.len(), 1);
    assert_eq!(e.secrets.len(), 2);
    assert_eq!(e.home_files.len(), 1);
    assert_eq!(e.agent, Some(Harness::Claude));
    assert_eq!(e.hooks.pre_up, strings(&["make deps"]));
    assert!(e.resources.memory.is_some() && e.resources.cpus.is_some());
}

#[test]
fn the_template_mentions_every_section() {
    for section in [
        "plugins",
        "[sandbox]",
        "[resources]",
        "[network]",
        "[workspace]",
        "[[workspace.repos]]",
        "[[mounts]]",
        "[env]",
        "[secrets]",
        "[home_files.",
        "[agent]",
        "[hooks]",
    ] {
        assert!(
            INIT_TEMPLATE.contains(section),
            "{section} missing from the template"
        );
    }
}
