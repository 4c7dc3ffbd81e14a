//! Merge semantics and provenance.

use super::*;
use crate::policy::{BackendKind, ByteSize, Cpus, HomeFileMode, NetMode, Profile, WorkspaceMode};
use std::collections::BTreeMap;

fn user(p: &str) -> Source {
    Source::User(PathBuf::from(p))
}
fn project(p: &str) -> Source {
    Source::Project(PathBuf::from(p))
}

fn net(domains: &[&str], ports: Option<Vec<u16>>) -> Layer {
    Layer {
        network: Some(NetworkLayer {
            domains: Some(strings(domains)),
            ports,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn no_layers_gives_the_defaults() {
    let (eff, origins) = merge_layers([]).unwrap();
    assert_eq!(eff, Effective::default());
    let expected: Origins = [
        ("agent.grace", vec![Source::Default]),
        ("network.ports", vec![Source::Default]),
        ("sandbox.backend", vec![Source::Default]),
        ("sandbox.image", vec![Source::Default]),
        ("sandbox.profile", vec![Source::Default]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(origins, expected);
}

#[test]
fn scalars_take_the_later_value() {
    let u = Layer {
        sandbox: Some(SandboxLayer {
            profile: Some(Profile::Restrictive),
            image: Some(s("alpine")),
            ..Default::default()
        }),
        resources: Some(ResourcesLayer {
            memory: Some(ByteSize(8 << 30)),
            pids: Some(100),
            ..Default::default()
        }),
        ..Default::default()
    };
    let p = Layer {
        sandbox: Some(SandboxLayer {
            profile: Some(Profile::Permissive),
            ..Default::default()
        }),
        resources: Some(ResourcesLayer {
            pids: Some(200),
            cpus: Some(Cpus::new(1.5).unwrap()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (eff, origins) =
        merge_layers([(user("/u.toml"), u), (project("/p/airlock.toml"), p)]).unwrap();
    assert_eq!(
        eff.sandbox,
        SandboxConfig {
            backend: BackendKind::Container,
            image: s("alpine"),
            profile: Profile::Permissive,
            kernel: None,
        }
    );
    assert_eq!(
        eff.resources,
        ResourcesConfig {
            cpus: Some(Cpus::new(1.5).unwrap()),
            memory: Some(ByteSize(8 << 30)),
            pids: Some(200),
            disk: None
        }
    );
    assert_eq!(origins["sandbox.profile"], vec![project("/p/airlock.toml")]);
    assert_eq!(origins["sandbox.image"], vec![user("/u.toml")]);
    assert_eq!(origins["sandbox.backend"], vec![Source::Default]);
    assert_eq!(origins["resources.memory"], vec![user("/u.toml")]);
    assert_eq!(origins["resources.pids"], vec![project("/p/airlock.toml")]);
    assert!(!origins.contains_key("resources.disk"));
}

#[test]
fn lists_concatenate_dedup_and_keep_order() {
    let layers = [
        (user("/u"), net(&["a.com", "b.com"], Some(vec![8080]))),
        (
            Source::BuiltinPlugin(s("x")),
            net(&["b.com", "c.com"], None),
        ),
        (
            project("/p"),
            net(
                &["C.com.", "A.COM", "d.com", "*.e.com"],
                Some(vec![80, 8080, 22]),
            ),
        ),
        (Source::CommandLine, net(&[], None)),
    ];
    let (eff, origins) = merge_layers(layers).unwrap();
    assert_eq!(
        eff.network,
        NetworkConfig {
            mode: None,
            domains: strings(&["a.com", "b.com", "c.com", "d.com", "*.e.com"]),
            ports: vec![443, 80, 8080, 22],
        }
    );
    assert_eq!(
        origins["network.domains"],
        vec![user("/u"), Source::BuiltinPlugin(s("x")), project("/p")]
    );
    assert_eq!(
        origins["network.ports"],
        vec![Source::Default, user("/u"), project("/p")]
    );
}

#[test]
fn maps_merge_with_the_later_value_per_key() {
    let env = |pairs: &[(&str, &str)]| Layer {
        env: Some(pairs.iter().map(|(k, v)| (s(k), s(v))).collect()),
        ..Default::default()
    };
    let layers = [
        (user("/u"), env(&[("A", "1"), ("B", "1")])),
        (project("/p"), env(&[("B", "2"), ("C", "3")])),
        (Source::CommandLine, env(&[("C", "")])),
    ];
    let (eff, origins) = merge_layers(layers).unwrap();
    let expected: BTreeMap<String, String> = [("A", "1"), ("B", "2"), ("C", "")]
        .iter()
        .map(|(k, v)| (s(k), s(v)))
        .collect();
    assert_eq!(eff.env, expected);
    assert_eq!(origins["env.A"], vec![user("/u")]);
    assert_eq!(origins["env.B"], vec![project("/p")]);
    assert_eq!(origins["env.C"], vec![Source::CommandLine]);
}

#[test]
fn mounts_are_keyed_by_target_and_default_readonly() {
    let mount = |src: &str, target: &str, ro: Option<bool>| MountLayer {
        source: src.into(),
        target: target.into(),
        readonly: ro,
    };
    let layers = [
        (
            user("/u"),
            Layer {
                mounts: Some(vec![mount("/a", "/data", None), mount("/b", "/b", None)]),
                ..Default::default()
            },
        ),
        (
            project("/p"),
            Layer {
                mounts: Some(vec![
                    mount("/c", "/c", Some(false)),
                    mount("/a2", "/data", Some(true)),
                ]),
                ..Default::default()
            },
        ),
    ];
    let (eff, origins) = merge_layers(layers).unwrap();
    let spec = |src: &str, target: &str, readonly| MountSpec {
        source: src.into(),
        target: target.into(),
        readonly,
    };
    assert_eq!(
        eff.mounts,
        vec![
            spec("/a2", "/data", true),
            spec("/b", "/b", true),
            spec("/c", "/c", false)
        ]
    );
    assert_eq!(origins["mounts"], vec![user("/u"), project("/p")]);
}

#[test]
fn home_files_merge_field_by_field() {
    let hf = |src: Option<&str>, mode| Layer {
        home_files: Some(
            [(
                s(".claude/CLAUDE.md"),
                HomeFileLayer {
                    source: src.map(PathBuf::from),
                    mode,
                },
            )]
            .into(),
        ),
        ..Default::default()
    };
    let (eff, origins) = merge_layers([(user("/u"), hf(Some("/notes.md"), None))]).unwrap();
    let key = r#"home_files.".claude/CLAUDE.md""#;
    assert_eq!(
        eff.home_files[".claude/CLAUDE.md"],
        HomeFileSpec {
            source: "/notes.md".into(),
            mode: HomeFileMode::Immutable
        }
    );
    assert_eq!(origins[&format!("{key}.mode")], vec![Source::Default]);

    let layers = [
        (user("/u"), hf(Some("/notes.md"), None)),
        (project("/p"), hf(None, Some(HomeFileMode::Seed))),
    ];
    let (eff, origins) = merge_layers(layers).unwrap();
    assert_eq!(
        eff.home_files[".claude/CLAUDE.md"],
        HomeFileSpec {
            source: "/notes.md".into(),
            mode: HomeFileMode::Seed
        }
    );
    assert_eq!(origins[&format!("{key}.source")], vec![user("/u")]);
    assert_eq!(origins[&format!("{key}.mode")], vec![project("/p")]);

    let err = merge_layers([(project("/p"), hf(None, Some(HomeFileMode::Link)))]).unwrap_err();
    assert_eq!(err.to_string(), format!("missing key `{key}.source` in /p"));
}

#[test]
fn a_variable_cannot_be_both_plain_and_secret() {
    let l = Layer {
        env: Some([(s("TOKEN"), s("x"))].into()),
        secrets: Some([(s("TOKEN"), SecretSource::FromEnv(s("HOST_TOKEN")).into())].into()),
        ..Default::default()
    };
    let err = merge_layers([(Source::CommandLine, l)]).unwrap_err();
    assert!(
        matches!(&err, ConfigError::InvalidValue { key, .. } if key == "secrets.TOKEN"),
        "{err}"
    );
}

#[test]
fn every_section_merges_across_files() {
    let t = TempDir::new("all-sections");
    let u = t.write(
        "home/.config/airlock/config.toml",
        r#"
plugins = ["rust"]
[sandbox]
backend = "microvm"
kernel = "/srv/kernels/vmlinuz-6.1"
[network]
mode = "filtered"
domains = ["example.org"]
[env]
RUST_LOG = "debug"
EDITOR = "vi"
[secrets]
TOKEN = { from_env = "HOST_TOKEN" }
[hooks]
pre_up = ["echo user"]
"#,
    );
    let proj = t.path().join("proj");
    t.write(
        "proj/airlock.toml",
        r#"
[sandbox]
image = "python:3.12-alpine"
[resources]
cpus = 2
memory = "4G"
disk = "10G"
pids = 512
[network]
domains = ["crates.io", "Example.ORG", "api.example.org"]
ports = [8443]
[workspace]
mode = "overlay"
context = [".claude"]
[[workspace.repos]]
source = "../ref"
dest = "Git/github.com/o/ref"
[[mounts]]
source = "data"
target = "/data"
[env]
RUST_LOG = "info"
[secrets]
API_KEY = { from_file = "keys/api" }
[home_files."notes/AGENTS.md"]
source = "~/AGENTS.md"
mode = "seed"
[agent]
harness = { command = ["my-agent", "--yes"] }
grace = "1m"
[hooks]
pre_up = ["echo project", "echo user"]
post_down = ["echo bye"]
"#,
    );
    let cli = Layer {
        sandbox: Some(SandboxLayer {
            profile: Some(Profile::Restrictive),
            ..Default::default()
        }),
        ..Default::default()
    };
    let r = load(&LoadOptions {
        cli,
        ..opts_with_user(&proj, &u)
    })
    .unwrap();
    let expected = Effective {
        plugins: strings(&["rust"]),
        sandbox: SandboxConfig {
            backend: BackendKind::Microvm,
            image: s("python:3.12-alpine"),
            profile: Profile::Restrictive,
            kernel: Some(s("/srv/kernels/vmlinuz-6.1")),
        },
        resources: ResourcesConfig {
            cpus: Some(Cpus::new(2.0).unwrap()),
            memory: Some(ByteSize(4 << 30)),
            pids: Some(512),
            disk: Some(ByteSize(10 << 30)),
        },
        network: NetworkConfig {
            mode: Some(NetMode::Filtered),
            domains: strings(&[
                "example.org",
                "crates.io",
                "index.crates.io",
                "static.crates.io",
                "static.rust-lang.org",
                "api.example.org",
            ]),
            ports: vec![443, 80, 8443],
        },
        workspace: WorkspaceConfig {
            mode: Some(WorkspaceMode::Overlay),
            context: strings(&[".claude"]),
            repos: vec![RepoSpec {
                source: proj.join("../ref"),
                dest: "Git/github.com/o/ref".into(),
            }],
            protected: vec![],
        },
        mounts: vec![MountSpec {
            source: proj.join("data"),
            target: "/data".into(),
            readonly: true,
        }],
        env: [(s("EDITOR"), s("vi")), (s("RUST_LOG"), s("info"))].into(),
        secrets: [
            (
                s("API_KEY"),
                SecretSource::FromFile(proj.join("keys/api")).into(),
            ),
            (s("TOKEN"), SecretSource::FromEnv(s("HOST_TOKEN")).into()),
        ]
        .into(),
        home_files: [(
            s("notes/AGENTS.md"),
            HomeFileSpec {
                source: "/home/tester/AGENTS.md".into(),
                mode: HomeFileMode::Seed,
            },
        )]
        .into(),
        agent: Some(Harness::Command(strings(&["my-agent", "--yes"]))),
        agent_grace: crate::policy::Seconds(60),
        compatibility_mode: None,
        setup: vec![],
        hooks: Hooks {
            pre_up: strings(&["echo user", "echo project"]),
            post_up: vec![],
            pre_down: vec![],
            post_down: strings(&["echo bye"]),
        },
        images: Default::default(),
        pool: Default::default(),
        daemon: Default::default(),
    };
    assert_eq!(r.effective, expected);

    let pf = proj.join("airlock.toml");
    let (us, ps) = (Source::User(u.clone()), Source::Project(pf.clone()));
    let rust = Source::BuiltinPlugin(s("rust"));
    let o = |k: &str| r.origins.get(k).cloned().unwrap_or_default();
    assert_eq!(o("plugins"), vec![us.clone()]);
    assert_eq!(o("sandbox.backend"), vec![us.clone()]);
    assert_eq!(o("sandbox.kernel"), vec![us.clone()]);
    assert_eq!(o("sandbox.image"), vec![ps.clone()]);
    assert_eq!(o("sandbox.profile"), vec![Source::CommandLine]);
    assert_eq!(o("network.mode"), vec![us.clone()]);
    assert_eq!(
        o("network.domains"),
        vec![us.clone(), rust.clone(), ps.clone()]
    );
    assert_eq!(o("env.RUST_LOG"), vec![ps.clone()]);
    assert_eq!(o("env.EDITOR"), vec![us.clone()]);
    assert_eq!(o("secrets.TOKEN"), vec![us.clone()]);
    assert_eq!(o("agent.harness"), vec![ps.clone()]);
    assert_eq!(o("agent.grace"), vec![ps.clone()]);
    assert_eq!(o("hooks.pre_up"), vec![us.clone(), ps.clone()]);
    assert_eq!(o(r#"home_files."notes/AGENTS.md".mode"#), vec![ps.clone()]);
    assert_eq!(r.files, vec![u, pf]);
    assert_eq!(r.project_dir, Some(proj));
}

#[test]
fn effective_round_trips_through_toml() {
    let t = TempDir::new("round-trip");
    t.write(
        "a/airlock.toml",
        r#"
plugins = ["github", "./p.toml"]
[resources]
cpus = 0.5
memory = "1536M"
[network]
domains = ["x.org"]
[[mounts]]
source = "/srv"
target = "/srv"
readonly = false
[secrets]
K = { from_env = "V" }
[home_files.".config/x"]
source = "/etc/hostname"
[agent]
harness = "codex"
grace = 45
[hooks]
post_up = ["true"]
"#,
    );
    t.write("a/p.toml", "[env]\nFROM_PLUGIN = \"1\"\n");
    let first = load(&opts(&t.path().join("a"))).unwrap().effective;
    let text = first.to_toml_string().unwrap();
    t.write("b/airlock.toml", &text);
    let second = load(&opts(&t.path().join("b"))).unwrap().effective;
    assert_eq!(second, first, "printed as:\n{text}");
}
