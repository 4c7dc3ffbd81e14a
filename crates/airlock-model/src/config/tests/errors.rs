//! Every error kind names the key path and the source.

use super::*;

/// Loads a project containing `text`; returns the error and the project file's path.
fn project_err(text: &str) -> (ConfigError, PathBuf) {
    let t = TempDir::new("err");
    let file = t.write("airlock.toml", text);
    match load(&opts(t.path())) {
        Ok(r) => panic!("expected an error for:\n{text}\ngot {:?}", r.effective),
        Err(e) => (e, file),
    }
}

fn project_msg(text: &str) -> String {
    let (e, file) = project_err(text);
    e.to_string().replace(&file.display().to_string(), "FILE")
}

#[test]
fn unknown_keys_name_the_path_file_and_line() {
    let (err, file) = project_err("[network]\nmode = \"open\"\ndomain = [\"x.com\"]\n");
    assert_eq!(
        err.to_string(),
        format!(
            "unknown key `network.domain` in {}:3 (did you mean `domains`?)",
            file.display()
        )
    );
    match err {
        ConfigError::UnknownKey {
            key,
            location,
            suggestion,
        } => {
            assert_eq!(key, "network.domain");
            assert_eq!(
                location,
                Location {
                    source: Source::Project(file),
                    line: Some(3)
                }
            );
            assert_eq!(suggestion.as_deref(), Some("domains"));
        }
        other => panic!("wrong kind: {other:?}"),
    }
}

#[test]
fn unknown_keys_at_every_depth() {
    let cases = [
        ("netwrk = 1\n", "unknown key `netwrk` in FILE:1 (did you mean `network`?)"),
        ("[sandbox]\nimg = \"x\"\n", "unknown key `sandbox.img` in FILE:2 (did you mean `image`?)"),
        ("[[mounts]]\nsource = \"/a\"\ntarget = \"/a\"\n[[mounts]]\nsource = \"/b\"\ntarget = \"/b\"\nread_only = true\n",
         "unknown key `mounts[1].read_only` in FILE:7 (did you mean `readonly`?)"),
        ("[workspace]\nrepos = [{ source = \"a\", dest = \"b\", branch = \"x\" }]\n", "unknown key `workspace.repos[0].branch` in FILE:2"),
        ("[home_files.\"a/b\"]\nsource = \"/x\"\nmdoe = \"seed\"\n", "unknown key `home_files.\"a/b\".mdoe` in FILE:3 (did you mean `mode`?)"),
        ("[agent]\nharness = { command = [\"x\"], args = [] }\n", "unknown key `agent.harness.args` in FILE:2"),
        ("[secrets]\nT = { from_vault = \"x\" }\n", "unknown key `secrets.T.from_vault` in FILE:2"),
        ("[secrets]\nT = { from_fil = \"x\" }\n", "unknown key `secrets.T.from_fil` in FILE:2 (did you mean `from_file`?)"),
        ("[resources]\nmemory = \"1G\"\n[resources.limits]\nx = 1\n", "unknown key `resources.limits` in FILE:3"),
        ("network.domians = [\"a.com\"]\n", "unknown key `network.domians` in FILE:1 (did you mean `domains`?)"),
    ];
    for (text, want) in cases {
        assert_eq!(project_msg(text), want, "for:\n{text}");
    }
}

#[test]
fn unknown_key_inside_a_plugin_file() {
    let t = TempDir::new("plugin-unknown");
    t.write("airlock.toml", "plugins = [\"./tools/p.toml\"]\n");
    let plugin = t.write(
        "tools/p.toml",
        "# a plugin\n[env]\nA = \"1\"\n\n[hook]\npre_up = []\n",
    );
    let err = load(&opts(t.path())).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "unknown key `hook` in {}:5 (did you mean `hooks`?)",
            plugin.display()
        )
    );
    assert!(
        matches!(err, ConfigError::UnknownKey { location: Location { source: Source::PluginFile(p), .. }, .. } if p == plugin)
    );
}

#[test]
fn syntax_errors_carry_file_line_and_column() {
    let (err, file) = project_err("[sandbox]\nimage = \"host\"\nprofile = moderate\n");
    match &err {
        ConfigError::Syntax {
            path,
            line,
            column,
            message,
        } => {
            assert_eq!((path, *line, *column), (&file, 3, 11), "{message}");
            assert!(!message.is_empty());
        }
        other => panic!("wrong kind: {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with(&format!("TOML syntax error in {}:3:11: ", file.display())),
        "{err}"
    );
    // Duplicate keys are syntax errors too.
    let (err, _) = project_err("[env]\nA = \"1\"\nA = \"2\"\n");
    assert!(
        matches!(err, ConfigError::Syntax { line: 3, .. }),
        "{err:?}"
    );
}

#[test]
fn bad_values_name_key_and_file() {
    let cases = [
        ("[network]\nports = [443, 0]\n", "invalid value for `network.ports[1]` in FILE:2: ports are 1-65535"),
        ("[network]\nports = [70000]\n", "invalid value for `network.ports[0]` in FILE:2: "),
        ("[network]\ndomains = [\"ok.com\", \"https://x.com\"]\n", "invalid value for `network.domains[1]` in FILE:2: \"https://x.com\" is not a domain name"),
        ("[resources]\npids = 0\n", "invalid value for `resources.pids` in FILE:2: must be at least 1"),
        ("[resources]\nmemory = \"lots\"\n", "invalid value for `resources.memory` in FILE:2: invalid size \"lots\""),
        ("[resources]\ncpus = -1\n", "invalid value for `resources.cpus` in FILE:2: "),
        ("[sandbox]\nprofile = \"strict\"\n", "invalid value for `sandbox.profile` in FILE:2: unknown variant `strict`"),
        ("[sandbox]\nimage = \"\"\n", "invalid value for `sandbox.image` in FILE:2: cannot be empty"),
        ("[env]\n\"A-B\" = \"1\"\n", "invalid value for `env.A-B` in FILE:2: \"A-B\" is not a valid environment variable name"),
        ("[env]\n\"A=B\" = \"1\"\n", "invalid value for `env.\"A=B\"` in FILE:2: "),
        ("[env]\nA = \"x\\u0000y\"\n", "invalid value for `env.A` in FILE:2: values cannot contain NUL"),
        ("[secrets]\nT = { from_env = \"HOST-VAR\" }\n", "invalid value for `secrets.T.from_env` in FILE:2: "),
        ("[secrets]\nT = { from_env = \"A\", from_file = \"b\" }\n", "invalid value for `secrets.T` in FILE:2: set exactly one of `from_env` and `from_file`"),
        ("[secrets]\nT = {}\n", "invalid value for `secrets.T` in FILE:2: set exactly one of `from_env` and `from_file`"),
        ("[secrets]\nT = { from_env = \"A\", inject = { hosts = [\"a.com\"] } }\n", "invalid value for `secrets.T.inject` in FILE:2: set exactly one of `header`, `bearer = true`, `basic = true` and `query`"),
        ("[secrets]\nT = { from_env = \"A\", inject = { hosts = [\"a.com\"], header = \"x\", bearer = true } }\n", "invalid value for `secrets.T.inject` in FILE:2: set exactly one of"),
        ("[secrets]\nT = { from_env = \"A\", inject = { hosts = [], bearer = true } }\n", "invalid value for `secrets.T.inject.hosts` in FILE:2: name at least one host"),
        ("[secrets]\nT = { from_env = \"A\", inject = { hosts = [\"*.a.com\"], bearer = true } }\n", "invalid value for `secrets.T.inject.hosts` in FILE:2: each host is a DNS name"),
        ("[secrets]\nT = { from_env = \"A\", inject = { hosts = [\"a.com:443\"], bearer = true } }\n", "invalid value for `secrets.T.inject.hosts` in FILE:2: each host is a DNS name"),
        ("[secrets]\nT = { from_env = \"A\", inject = { hosts = [\"a.com\"], header = \"x y\" } }\n", "invalid value for `secrets.T.inject.header` in FILE:2: not a header name"),
        ("[secrets]\nT = { from_env = \"A\", inject = { hosts = [\"a.com\"], cookie = \"x\" } }\n", "unknown key `secrets.T.inject.cookie` in FILE:2"),
        ("[secrets]\nT = \"VAR\"\n", "invalid value for `secrets.T` in FILE:2: invalid type: string \"VAR\", expected { from_env = \"VAR\" } or { from_file = \"PATH\" }"),
        ("[[mounts]]\nsource = \"/a\"\ntarget = \"rel\"\n", "invalid value for `mounts[0].target` in FILE:3: must be an absolute path"),
        ("[[mounts]]\nsource = \"\"\ntarget = \"/a\"\n", "invalid value for `mounts[0].source` in FILE:2: cannot be empty"),
        ("[workspace]\ncontext = [\"../up\"]\n", "invalid value for `workspace.context[0]` in FILE:2: must be a path inside"),
        ("[home_files.\"/etc/passwd\"]\nsource = \"/x\"\n", "invalid value for `home_files.\"/etc/passwd\"` in FILE:1: must be a path inside"),
        ("[agent]\nharness = \"aider\"\n", "invalid value for `agent.harness` in FILE:2: unknown harness \"aider\""),
        ("[agent]\nharness = { command = [] }\n", "invalid value for `agent.harness.command` in FILE:2: needs at least the program"),
        ("[agent]\ngrace = \"0s\"\n", "invalid value for `agent.grace` in FILE:2: invalid duration \"0s\""),
        ("[agent]\ngrace = \"2d\"\n", "invalid value for `agent.grace` in FILE:2: invalid duration \"2d\""),
        ("[agent]\ngrace = 0\n", "invalid value for `agent.grace` in FILE:2: invalid duration \"0\""),
        ("[hooks]\npre_up = [\"ok\", \"\"]\n", "invalid value for `hooks.pre_up[1]` in FILE:2: cannot be empty"),
        ("plugins = [\"\"]\n", "invalid value for `plugins[0]` in FILE:1: cannot be empty"),
        ("[[mounts]]\nsource = \"~bob/x\"\ntarget = \"/x\"\n", "invalid value for `mounts[0].source` in FILE:2: "),
        ("[sandbox]\nbackend = 3\n", "invalid value for `sandbox.backend` in FILE:2: "),
    ];
    for (text, want) in cases {
        let got = project_msg(text);
        assert!(
            got.starts_with(want),
            "for:\n{text}\nwant prefix: {want}\ngot:         {got}"
        );
    }
}

#[test]
fn missing_keys_are_named() {
    assert_eq!(
        project_msg("[[mounts]]\nsource = \"/a\"\n"),
        "missing key `mounts[0].target` in FILE:1"
    );
    let got = project_msg("[workspace]\n[[workspace.repos]]\ndest = \"x\"\n");
    assert!(
        got.starts_with("missing key `workspace.repos[0].source` in FILE:"),
        "{got}"
    );
}

#[test]
fn unknown_plugins_are_errors() {
    assert_eq!(
        project_msg("\nplugins = [\"rust\", \"rustc\"]\n"),
        format!(
            "unknown plugin `rustc` in FILE:2: built-in plugins are {}; a plugin file is named by a path such as ./rustc.toml",
            BUILTIN_NAMES.join(", ")
        )
    );
    let t = TempDir::new("plugin-missing");
    t.write("airlock.toml", "plugins = [\"./nope.toml\"]\n");
    match load(&opts(t.path())).unwrap_err() {
        ConfigError::Read { path, source } => {
            assert_eq!(path, t.path().join("nope.toml"));
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("wrong kind: {other:?}"),
    }
}

#[test]
fn command_line_values_are_checked_too() {
    let t = TempDir::new("cli-bad");
    let cli = Layer {
        network: Some(NetworkLayer {
            domains: Some(strings(&["bad domain"])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = load(&LoadOptions {
        cli,
        ..opts(t.path())
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid value for `network.domains[0]` in the command-line options: "),
        "{err}"
    );
    let cli = Layer {
        plugins: Some(strings(&["nope"])),
        ..Default::default()
    };
    let err = load(&LoadOptions {
        cli,
        ..opts(t.path())
    })
    .unwrap_err();
    assert!(matches!(
        err,
        ConfigError::UnknownPlugin {
            location: Location {
                source: Source::CommandLine,
                line: None
            },
            ..
        }
    ));
}

#[test]
fn unreadable_files_are_errors() {
    let t = TempDir::new("unreadable");
    let missing = t.path().join("missing.toml");
    let err = load(&opts_with_user(t.path(), &missing)).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Read { path, .. } if *path == missing),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .starts_with(&format!("cannot read config file {}: ", missing.display())));
    // A directory where the user file should be.
    let err = load(&opts_with_user(t.path(), t.path())).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    // Not UTF-8.
    let bin = t.path().join("bin.toml");
    std::fs::write(&bin, [0xff, 0xfe, b'\n']).unwrap();
    assert!(matches!(
        load(&opts_with_user(t.path(), &bin)).unwrap_err(),
        ConfigError::Read { .. }
    ));
}

#[test]
fn home_is_needed_for_tilde() {
    let t = TempDir::new("no-home");
    t.write(
        "airlock.toml",
        "[[mounts]]\nsource = \"~/x\"\ntarget = \"/x\"\n",
    );
    let mut o = opts(t.path());
    o.home = None;
    // Only meaningful when the test environment itself has no usable HOME.
    if std::env::var_os("HOME").is_none() {
        assert!(matches!(
            load(&o).unwrap_err(),
            ConfigError::InvalidValue { .. }
        ));
    }
}

#[test]
fn odd_documents_never_panic() {
    let docs = [
        "",
        "\n\n",
        "[",
        "]]",
        "a",
        "=",
        "[sandbox",
        "x = [",
        "[[sandbox]]\n",
        "sandbox = 1\n",
        "mounts = {}\n",
        "env = []\n",
        "[env]\nA = 1\n",
        "plugins = \"rust\"\n",
        "[network]\nports = [\"443\"]\n",
        "[hooks]\npre_up = \"x\"\n",
        "[secrets]\nA = { from_env = \"X\", from_file = \"Y\" }\n",
        "[secrets]\nA = \"X\"\n",
        "[agent]\nharness = 1\n",
        "[home_files]\nx = 1\n",
        "[[workspace.repos]]\n",
        "\u{feff}[sandbox]\n",
        "[resources]\npids = -1\n",
        "[resources]\ncpus = nan\n",
        "[resources]\nmemory = 1e400\n",
        "a.b.c.d.e = 1\n",
    ];
    for text in docs {
        let t = TempDir::new("odd");
        t.write("airlock.toml", text);
        let _ = load(&opts(t.path())).map(|r| r.effective.to_toml_string());
    }
}
