//! Finding files, plugins, path resolution.

use super::*;
use crate::policy::Profile;

#[test]
fn project_file_is_found_from_a_subdirectory() {
    let t = TempDir::new("search");
    let file = t.write("proj/airlock.toml", "[sandbox]\nimage = \"alpine\"\n");
    let deep = t.path().join("proj/src/deep");
    std::fs::create_dir_all(&deep).unwrap();
    let r = load(&opts(&deep)).unwrap();
    assert_eq!(r.project_dir, Some(t.path().join("proj")));
    assert_eq!(r.files, vec![file.clone()]);
    assert_eq!(r.effective.sandbox.image, "alpine");
    assert_eq!(r.origins["sandbox.image"], vec![Source::Project(file)]);
}

#[test]
fn no_files_means_defaults() {
    let t = TempDir::new("empty");
    let r = load(&opts(t.path())).unwrap();
    // Some ancestor of the temp dir could hold an airlock.toml; only check when none does.
    if find_project_file(t.path()).is_none() {
        assert_eq!(r.effective, Effective::default());
        assert_eq!(r.files, Vec::<PathBuf>::new());
        assert_eq!(r.project_dir, None);
    }
}

#[test]
fn nearest_project_file_wins() {
    let t = TempDir::new("nearest");
    t.write("airlock.toml", "[sandbox]\nimage = \"outer\"\n");
    t.write("inner/airlock.toml", "[sandbox]\nimage = \"inner\"\n");
    let r = load(&opts(&t.path().join("inner"))).unwrap();
    assert_eq!(r.effective.sandbox.image, "inner");
    assert_eq!(r.project_dir, Some(t.path().join("inner")));
}

#[test]
fn user_config_sits_below_plugins_and_project() {
    let t = TempDir::new("layers");
    let user = t.write(
        "user.toml",
        "plugins = [\"./up.toml\"]\n[sandbox]\nimage = \"u\"\nprofile = \"restrictive\"\n",
    );
    let plugin = t.write(
        "up.toml",
        "[sandbox]\nimage = \"plugin\"\nbackend = \"microvm\"\n",
    );
    let proj = t.write("proj/airlock.toml", "[sandbox]\nbackend = \"container\"\n");
    let r = load(&opts_with_user(&t.path().join("proj"), &user)).unwrap();
    let expected = SandboxConfig {
        backend: crate::policy::BackendKind::Container,
        image: s("plugin"),
        profile: Profile::Restrictive,
        kernel: None,
    };
    assert_eq!(r.effective.sandbox, expected);
    assert_eq!(
        r.origins["sandbox.image"],
        vec![Source::PluginFile(plugin.clone())]
    );
    assert_eq!(
        r.origins["sandbox.backend"],
        vec![Source::Project(proj.clone())]
    );
    assert_eq!(
        r.origins["sandbox.profile"],
        vec![Source::User(user.clone())]
    );
    assert_eq!(r.files, vec![user.clone(), plugin, proj]);

    // no_user_config drops the user file and the plugin it named.
    let r = load(&LoadOptions {
        no_user_config: true,
        ..opts_with_user(&t.path().join("proj"), &user)
    })
    .unwrap();
    assert_eq!(r.effective.sandbox.image, "host");
    assert_eq!(r.effective.plugins, Vec::<String>::new());
}

#[test]
fn default_user_config_location() {
    let home = Path::new("/home/tester");
    let expected = match std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from) {
        Some(x) if x.is_absolute() => x.join("airlock/config.toml"),
        _ => home.join(".config/airlock/config.toml"),
    };
    assert_eq!(default_user_config_path(Some(home)), Some(expected));
}

#[test]
fn relative_paths_resolve_against_their_file() {
    let t = TempDir::new("relative");
    let proj = t.path().join("proj");
    t.write(
        "proj/airlock.toml",
        r#"
plugins = ["./tools/x.toml"]
[[mounts]]
source = "./data"
target = "/data"
[[mounts]]
source = "~/datasets"
target = "/datasets"
[secrets]
A = { from_file = "secret.txt" }
K = { from_env = "HARNESS_KEY", inject = { hosts = ["api.anthropic.com"], header = "x-api-key" } }
[home_files.".bashrc"]
source = "dotfiles/bashrc"
"#,
    );
    t.write(
        "proj/tools/x.toml",
        "[[mounts]]\nsource = \"../shared\"\ntarget = \"/shared\"\n[[workspace.repos]]\nsource = \"repo\"\ndest = \"Git/r\"\n",
    );
    let cli = Layer {
        mounts: Some(vec![MountLayer {
            source: "cli-dir".into(),
            target: "/cli".into(),
            readonly: None,
        }]),
        ..Default::default()
    };
    let cwd = proj.join("sub");
    std::fs::create_dir_all(&cwd).unwrap();
    let r = load(&LoadOptions { cli, ..opts(&cwd) }).unwrap();
    let sources: Vec<(PathBuf, PathBuf)> = r
        .effective
        .mounts
        .iter()
        .map(|m| (m.source.clone(), m.target.clone()))
        .collect();
    assert_eq!(
        sources,
        vec![
            (proj.join("tools/../shared"), "/shared".into()),
            (proj.join("data"), "/data".into()),
            ("/home/tester/datasets".into(), "/datasets".into()),
            (cwd.join("cli-dir"), "/cli".into()),
        ]
    );
    assert_eq!(
        r.effective.workspace.repos,
        vec![RepoSpec {
            source: proj.join("tools/repo"),
            dest: "Git/r".into()
        }]
    );
    assert_eq!(
        r.effective.secrets["A"],
        SecretSource::FromFile(proj.join("secret.txt")).into()
    );
    assert_eq!(
        r.effective.secrets["K"],
        crate::config::Secret {
            source: SecretSource::FromEnv("HARNESS_KEY".into()),
            inject: Some(crate::config::Inject {
                hosts: vec!["api.anthropic.com".into()],
                header: Some("x-api-key".into()),
                bearer: false,
                basic: false,
                query: None,
            }),
        }
    );
    assert_eq!(
        r.effective.home_files[".bashrc"].source,
        proj.join("dotfiles/bashrc")
    );
    let plugin = proj.join("tools/x.toml");
    assert_eq!(
        r.effective.plugins,
        vec![plugin.to_string_lossy().into_owned()]
    );
    assert_eq!(
        r.origins["mounts"],
        vec![
            Source::PluginFile(plugin),
            Source::Project(proj.join("airlock.toml")),
            Source::CommandLine
        ]
    );
}

#[test]
fn every_builtin_plugin_loads_and_contributes() {
    let t = TempDir::new("builtins");
    for name in BUILTIN_NAMES {
        let cli = Layer {
            plugins: Some(vec![s(name)]),
            ..Default::default()
        };
        let r = load(&LoadOptions {
            cli,
            ..opts(t.path())
        })
        .unwrap();
        let eff = &r.effective;
        assert!(!eff.network.domains.is_empty(), "{name} adds no domains");
        assert_eq!(
            r.origins["network.domains"],
            vec![Source::BuiltinPlugin(s(name))],
            "{name}"
        );
        assert_eq!(r.files, Vec::<PathBuf>::new());
        // Plugins only add: no scalar of the defaults changes.
        assert_eq!(eff.sandbox, Effective::default().sandbox, "{name}");
        assert_eq!(eff.network.mode, None, "{name}");
    }
}

#[test]
fn builtin_plugin_contents() {
    let t = TempDir::new("builtin-rust");
    let cli = Layer {
        plugins: Some(strings(&["rust", "github", "rust"])),
        ..Default::default()
    };
    let r = load(&LoadOptions {
        cli,
        ..opts(t.path())
    })
    .unwrap();
    assert_eq!(r.effective.plugins, strings(&["rust", "github"]));
    assert_eq!(
        r.effective.network.domains,
        strings(&[
            "crates.io",
            "index.crates.io",
            "static.crates.io",
            "static.rust-lang.org",
            "github.com",
            "api.github.com",
            "codeload.github.com",
            "objects.githubusercontent.com",
            "raw.githubusercontent.com",
        ])
    );
    assert_eq!(
        r.origins["env.GH_NO_UPDATE_NOTIFIER"],
        vec![Source::BuiltinPlugin(s("github"))]
    );
}

#[test]
fn plugins_can_name_plugins_and_cycles_terminate() {
    let t = TempDir::new("cycle");
    let a = t.write(
        "proj/a.toml",
        "plugins = [\"./b.toml\", \"node\"]\n[env]\nX = \"a\"\n",
    );
    let b = t.write(
        "proj/b.toml",
        "plugins = [\"./a.toml\"]\n[env]\nX = \"b\"\nY = \"b\"\n",
    );
    t.write("proj/airlock.toml", "plugins = [\"./a.toml\"]\n");
    let r = load(&opts(&t.path().join("proj"))).unwrap();
    // b is applied before a (a builds on what it names), node before a too.
    assert_eq!(r.origins["env.X"], vec![Source::PluginFile(a.clone())]);
    assert_eq!(r.origins["env.Y"], vec![Source::PluginFile(b.clone())]);
    assert_eq!(r.effective.env["X"], "a");
    let project = t.path().join("proj/airlock.toml");
    assert_eq!(r.files, vec![b.clone(), a.clone(), project]);
    let named: Vec<String> = [&a, &b]
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        r.effective.plugins,
        vec![named[0].clone(), named[1].clone(), s("node")]
    );
}

#[test]
fn default_limits_follow_the_host_and_yield_to_every_layer() {
    use crate::policy::ByteSize;
    let t = TempDir::new("limits");
    let gib = 1u64 << 30;
    let o = LoadOptions {
        host_memory: Some(16 * gib),
        ..opts(t.path())
    };
    let r = load(&o).unwrap();
    assert_eq!(r.effective.resources.memory, Some(ByteSize(8 * gib)));
    assert_eq!(r.effective.resources.pids, Some(DEFAULT_PIDS));
    assert_eq!(r.origins["resources.memory"], vec![Source::Default]);
    assert_eq!(r.origins["resources.pids"], vec![Source::Default]);
    // A project file (or the command line) overrides them.
    let file = t.write("airlock.toml", "[resources]\nmemory = \"1G\"\npids = 100\n");
    let r = load(&o).unwrap();
    assert_eq!(r.effective.resources.memory, Some(ByteSize(gib)));
    assert_eq!(r.effective.resources.pids, Some(100));
    assert_eq!(r.origins["resources.pids"], vec![Source::Project(file)]);
    // Half of the RAM, in whole MiB.
    assert_eq!(default_memory(3 * gib + 12345).0, (3 * gib / 2) >> 20 << 20);
}

#[test]
fn a_secret_with_inject_round_trips_through_json() {
    // spec.json records sources and bindings (never values) and reads them back.
    let s: crate::config::Secret =
        toml::from_str("from_env = \"K\"\ninject = { hosts = [\"api.x.com\"], query = \"key\" }\n")
            .unwrap();
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(
        json,
        r#"{"from_env":"K","inject":{"hosts":["api.x.com"],"query":"key"}}"#
    );
    let back: crate::config::Secret = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    let plain: crate::config::Secret = serde_json::from_str(r#"{"from_file":"/k"}"#).unwrap();
    assert_eq!(plain, SecretSource::FromFile("/k".into()).into());
}

#[test]
fn images_settings_merge_and_a_project_choosing_registries_needs_trust() {
    let t = TempDir::new("images");
    let user = t.write(
        "user.toml",
        "[images]\ninsecure_registries = [\"127.0.0.1:5000\"]\nruntimes = { python3 = \"python:3.11\" }\n",
    );
    let file = t.write(
        "proj/airlock.toml",
        "[sandbox]\nimage = \"auto\"\n[images]\nmirrors = { \"docker.io\" = [\"mirror.example:5000\"] }\ninsecure_registries = [\"mirror.example:5000\"]\nruntimes = { \"file:deno.json\" = \"denoland/deno\" }\n",
    );
    let r = load(&opts_with_user(&t.path().join("proj"), &user)).unwrap();
    let im = &r.effective.images;
    assert_eq!(
        im.insecure_registries,
        vec![s("127.0.0.1:5000"), s("mirror.example:5000")]
    );
    assert_eq!(im.mirrors["docker.io"], vec![s("mirror.example:5000")]);
    assert_eq!(im.runtimes.len(), 2);
    assert_eq!(
        r.origins["images.mirrors.\"docker.io\""],
        vec![Source::Project(file.clone())]
    );
    let p = r.project.expect("project");
    let keys: Vec<&str> = p.widening.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(
        keys,
        vec!["images.insecure_registries", "images.mirrors"],
        "{:?}",
        p.widening
    );
    // Round trip through `airlock config`'s TOML.
    let text = r.effective.to_toml_string().unwrap();
    assert!(text.contains("[images]"), "{text}");
}

#[test]
fn an_unknown_images_key_is_an_error() {
    let t = TempDir::new("images-bad");
    t.write("airlock.toml", "[images]\nmirror = {}\n");
    let err = load(&opts(t.path())).unwrap_err().to_string();
    assert!(err.contains("unknown key `images.mirror`"), "{err}");
}

#[test]
fn per_agent_min_warm_merges_and_a_project_raising_it_needs_trust() {
    let t = TempDir::new("min-warm");
    let user = t.write(
        "user.toml",
        "[daemon.agents.claude]\nmin_warm = 1\n[daemon.agents.codex]\nmin_warm = 3\n",
    );
    let file = t.write(
        "proj/airlock.toml",
        "[daemon.agents.claude]\nmin_warm = 2\n[daemon.agents.command]\nmin_warm = 1\n",
    );
    let r = load(&opts_with_user(&t.path().join("proj"), &user)).unwrap();
    let d = &r.effective.daemon;
    assert_eq!(d.min_warm(&Harness::Claude), 2);
    assert_eq!(d.min_warm(&Harness::Codex), 3);
    assert_eq!(d.min_warm(&Harness::Gemini), 0);
    assert_eq!(d.min_warm(&Harness::Command(vec![s("x")])), 1);
    assert_eq!(
        r.origins["daemon.agents.claude.min_warm"],
        vec![Source::Project(file.clone())]
    );
    let p = r.project.expect("project");
    let what: Vec<&str> = p.widening.iter().map(|w| w.detail.as_str()).collect();
    assert_eq!(
        what,
        vec![
            "keeps 2 claude agent sandboxes started in the background",
            "keeps 1 command agent sandboxes started in the background"
        ],
        "{:?}",
        p.widening
    );
    // Round trip through `airlock config`'s TOML.
    let text = r.effective.to_toml_string().unwrap();
    assert!(text.contains("[daemon.agents.claude]"), "{text}");
    assert!(text.contains("min_warm = 2"), "{text}");
}

#[test]
fn an_unknown_daemon_key_is_an_error() {
    let t = TempDir::new("min-warm-bad");
    t.write("airlock.toml", "[daemon.agents.claude]\nmin_warn = 2\n");
    let err = load(&opts(t.path())).unwrap_err().to_string();
    assert!(err.contains("min_warn"), "{err}");
}
