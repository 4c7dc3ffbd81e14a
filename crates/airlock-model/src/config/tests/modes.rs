//! `[agent] compatibility_mode` / `--compatibility-mode`: one switch whose settings are
//! defaults every source overrides, each value's origin `mode:NAME`.

use super::*;
use crate::policy::{CompatibilityMode, NetMode, Profile, WorkspaceMode};

fn origin(r: &Resolved, key: &str) -> Vec<String> {
    r.origins
        .get(key)
        .unwrap_or_else(|| panic!("no origin for {key}: {:?}", r.origins))
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn cli_mode(mode: CompatibilityMode) -> Layer {
    Layer {
        agent: Some(AgentLayer {
            compatibility_mode: Some(mode),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn each_mode_sets_profile_domains_registries_and_workspace() {
    let t = TempDir::new("modes");
    for (mode, profile, api) in [
        (
            CompatibilityMode::Claude,
            Profile::Moderate,
            "api.anthropic.com",
        ),
        (
            CompatibilityMode::Codex,
            Profile::Restrictive,
            "api.openai.com",
        ),
        (
            CompatibilityMode::Gemini,
            Profile::Moderate,
            "generativelanguage.googleapis.com",
        ),
    ] {
        let r = load(&LoadOptions {
            cli: cli_mode(mode),
            ..opts(t.path())
        })
        .unwrap();
        let e = &r.effective;
        assert_eq!(e.compatibility_mode, Some(mode));
        assert_eq!(e.sandbox.profile, profile, "{mode}");
        // Even codex's restrictive profile keeps its API reachable: filtered, not off.
        assert_eq!(e.network.mode, Some(NetMode::Filtered), "{mode}");
        assert_eq!(e.network.domains[0], api, "{mode}");
        for reg in [
            "registry.npmjs.org",
            "pypi.org",
            "crates.io",
            "proxy.golang.org",
        ] {
            assert!(e.network.domains.iter().any(|d| d == reg), "{mode}: {reg}");
        }
        // Only its own API: no other agent's domains.
        for other in [
            "api.anthropic.com",
            "api.openai.com",
            "oauth2.googleapis.com",
        ] {
            if other != api
                && !(mode == CompatibilityMode::Gemini && other.ends_with("googleapis.com"))
            {
                assert!(
                    !e.network.domains.iter().any(|d| d == other),
                    "{mode}: {other}"
                );
            }
        }
        assert_eq!(e.workspace.mode, Some(WorkspaceMode::Clone), "{mode}");
        let from = format!("mode:{mode}");
        for key in [
            "sandbox.profile",
            "network.mode",
            "network.domains",
            "workspace.mode",
        ] {
            assert_eq!(origin(&r, key), vec![from.clone()], "{mode}: {key}");
        }
        assert_eq!(origin(&r, "agent.compatibility_mode"), ["cli"]);
    }
    let r = load(&LoadOptions {
        cli: cli_mode(CompatibilityMode::Native),
        ..opts(t.path())
    })
    .unwrap();
    assert_eq!(r.effective.workspace.mode, Some(WorkspaceMode::None));
    assert_eq!(r.effective.sandbox.profile, Profile::Moderate);
    assert!(r.effective.network.domains.is_empty());
    assert_eq!(r.effective.network.mode, None);
    assert_eq!(origin(&r, "workspace.mode"), ["mode:native"]);
}

#[test]
fn every_source_overrides_the_mode_and_the_last_mode_wins() {
    let t = TempDir::new("modes-override");
    let user = t.write(
        "home/config.toml",
        "[agent]\ncompatibility_mode = \"codex\"\n[network]\ndomains = [\"example.org\"]\n",
    );
    let project = t.write(
        "p/airlock.toml",
        "[sandbox]\nprofile = \"moderate\"\n[workspace]\nmode = \"overlay\"\n",
    );
    let cwd = project.parent().unwrap();
    let r = load(&opts_with_user(cwd, &user)).unwrap();
    let e = &r.effective;
    assert_eq!(e.compatibility_mode, Some(CompatibilityMode::Codex));
    assert_eq!(e.sandbox.profile, Profile::Moderate);
    assert_eq!(
        origin(&r, "sandbox.profile"),
        [format!("project:{}", project.display())]
    );
    assert_eq!(e.workspace.mode, Some(WorkspaceMode::Overlay));
    // Lists still concatenate: the mode's domains first (it sits right above the defaults).
    assert_eq!(e.network.domains[0], "api.openai.com");
    assert_eq!(
        e.network.domains.last().map(String::as_str),
        Some("example.org")
    );
    assert_eq!(
        origin(&r, "network.domains"),
        ["mode:codex".to_string(), format!("user:{}", user.display())]
    );
    assert_eq!(origin(&r, "network.mode"), ["mode:codex"]);

    // The command line's mode replaces the user's: claude's settings, not codex's.
    let r = load(&LoadOptions {
        cli: cli_mode(CompatibilityMode::Claude),
        ..opts_with_user(cwd, &user)
    })
    .unwrap();
    let e = &r.effective;
    assert_eq!(e.compatibility_mode, Some(CompatibilityMode::Claude));
    assert!(e.network.domains.iter().any(|d| d == "api.anthropic.com"));
    assert!(!e.network.domains.iter().any(|d| d == "api.openai.com"));
    assert_eq!(origin(&r, "network.mode"), ["mode:claude"]);
}

#[test]
fn a_project_choosing_a_mode_widens_and_needs_trust() {
    let t = TempDir::new("modes-trust");
    t.write(
        "p/airlock.toml",
        "[agent]\ncompatibility_mode = \"claude\"\n",
    );
    let r = load(&opts(&t.path().join("p"))).unwrap();
    let w = &r.project.as_ref().expect("project").widening;
    assert!(
        w.iter().any(|w| w.key == "network.domains"),
        "the mode's domains widen: {w:?}"
    );
    // A narrowing mode from the project (native: no workspace) is not a widening.
    t.write(
        "q/airlock.toml",
        "[agent]\ncompatibility_mode = \"native\"\n",
    );
    let r = load(&opts(&t.path().join("q"))).unwrap();
    assert!(r.project.as_ref().expect("project").widening.is_empty());
}

#[test]
fn the_mode_round_trips_through_the_printed_config() {
    let t = TempDir::new("modes-print");
    let r = load(&LoadOptions {
        cli: cli_mode(CompatibilityMode::Gemini),
        ..opts(t.path())
    })
    .unwrap();
    let text = r.effective.to_toml_string().unwrap();
    assert!(text.contains("compatibility_mode = \"gemini\""), "{text}");
    t.write("again/airlock.toml", &text);
    let again = load(&opts(&t.path().join("again"))).unwrap();
    assert_eq!(again.effective, r.effective);
}

#[test]
fn an_unknown_mode_is_an_error_naming_the_choices() {
    let t = TempDir::new("modes-bad");
    let f = t.write("airlock.toml", "[agent]\ncompatibility_mode = \"cursor\"\n");
    let e = load(&opts(t.path())).unwrap_err().to_string();
    assert!(e.contains("agent.compatibility_mode"), "{e}");
    assert!(e.contains("claude") && e.contains("native"), "{e}");
    assert!(e.contains(&f.display().to_string()), "{e}");
}
