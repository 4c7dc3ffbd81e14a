//! What people coming from other sandbox tools reach for: shell completions and a man page
//! generated from the CLI definitions, and their spellings of airlock's commands (`remove`,
//! `mcp server`, `--no-network`, `stop --remove`, `status` with the `environment:` block).
//!
//! Completions and the man page need no root; the spellings run real sandboxes, as root and as
//! the unprivileged test user (see `common::e2e`).

mod common;
use common::work::EngineGuard;

use common::{e2e, Airlock, Bins};
use std::path::Path;
use std::process::Command;

fn ok(a: &Airlock, args: &[&str]) -> common::Outcome {
    let out = a.run(args);
    assert_eq!(out.code(), 0, "airlock {args:?}: {}", out.describe());
    out
}

/// A program the test needs: present, or (under CI, AIRLOCK_E2E) a failure naming the script
/// that installs it.
fn tool(name: &str) -> bool {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join(name).is_file());
    if !found {
        assert!(
            std::env::var_os("AIRLOCK_E2E").is_none(),
            "{name} is missing: .ci/install-shells installs it"
        );
        eprintln!("note: {name} not installed; its part of the test not run");
    }
    found
}

fn sh(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program)
        .args(args)
        .env("TERM", "dumb")
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

fn script(a: &Airlock, shell: &str) -> String {
    let out = ok(a, &["completions", shell]);
    assert!(out.stderr.is_empty(), "{}", out.describe());
    out.stdout
}

/// The words bash's completion function offers for `line` (the last word being completed).
fn bash_complete(script_path: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cword = words.len() - 1;
    let prev = if cword > 0 { words[cword - 1] } else { "" };
    let prog = format!(
        "source '{}' || exit 9\n\
         complete -p airlock || exit 8\n\
         COMP_WORDS=({}); COMP_CWORD={cword}; COMP_LINE='{}'; COMP_POINT=${{#COMP_LINE}}\n\
         _airlock airlock '{}' '{prev}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script_path.display(),
        quoted.join(" "),
        words.join(" "),
        words[cword]
    );
    let out = sh("bash", &["--norc", "--noprofile", "-c", &prog]);
    assert!(
        out.status.success(),
        "bash completion for {words:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let spec = lines.next().unwrap_or_default();
    assert!(
        spec.starts_with("complete ") && spec.ends_with(" airlock"),
        "complete -p airlock: {spec}"
    );
    lines.map(str::to_string).collect()
}

#[test]
fn completion_scripts_load_and_complete_commands() {
    let a = Airlock::root();
    let dir = common::TempDir::new("completions");

    let bash = dir.join("airlock.bash");
    std::fs::write(&bash, script(&a, "bash")).expect("write");
    let subs = bash_complete(&bash, &["airlock", "st"]);
    assert_eq!(subs, ["start", "stop", "status"], "airlock st<TAB>");
    let subs = bash_complete(&bash, &["airlock", "re"]);
    assert!(subs.contains(&"remove".to_string()), "{subs:?}");
    assert!(subs.contains(&"reports".to_string()), "{subs:?}");
    // Internal commands are not offered.
    let all = bash_complete(&bash, &["airlock", ""]);
    assert!(all.contains(&"completions".to_string()), "{all:?}");
    assert!(all.contains(&"man".to_string()), "{all:?}");
    assert!(
        !all.iter().any(|w| w.starts_with("__") || w == "engine"),
        "{all:?}"
    );
    let opts = bash_complete(&bash, &["airlock", "run", "--no-n"]);
    assert_eq!(opts, ["--no-network"], "airlock run --no-n<TAB>");
    let opts = bash_complete(&bash, &["airlock", "stop", "box", "--rem"]);
    assert_eq!(opts, ["--remove"], "airlock stop box --rem<TAB>");

    if tool("fish") {
        let fish = dir.join("airlock.fish");
        std::fs::write(&fish, script(&a, "fish")).expect("write");
        let prog = format!(
            "source '{}'; complete -C 'airlock st'; complete -C 'airlock mcp s'",
            fish.display()
        );
        let out = sh("fish", &["--no-config", "-c", &prog]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let words: Vec<&str> = text
            .lines()
            .map(|l| l.split('\t').next().unwrap_or_default())
            .collect();
        assert_eq!(words, ["start", "status", "stop", "server"], "{text}");
    }

    if tool("zsh") {
        let zdir = dir.join("zfunc");
        std::fs::create_dir_all(&zdir).expect("mkdir");
        std::fs::write(zdir.join("_airlock"), script(&a, "zsh")).expect("write");
        let out = sh("zsh", &["-n", &zdir.join("_airlock").to_string_lossy()]);
        assert!(
            out.status.success(),
            "zsh -n: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // compinit finds it on fpath and binds it to airlock.
        let prog = format!(
            "fpath=('{}' $fpath); autoload -U compinit; compinit -u -d '{}'; \
             print -r -- ${{_comps[airlock]}}; autoload +X _airlock && whence -w _airlock",
            zdir.display(),
            dir.join("zcompdump").display()
        );
        let out = sh("zsh", &["-f", "-c", &prog]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(text.trim(), "_airlock\n_airlock: function", "{text}");
    }
}

/// groff with warnings on and input preconverted (UTF-8): nothing on stderr, exit 0.
fn renders_cleanly(page: &Path) {
    let out = sh(
        "groff",
        &["-k", "-man", "-Tutf8", "-ww", "-z", &page.to_string_lossy()],
    );
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "groff {}: {}",
        page.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_man_page_renders() {
    if !tool("groff") || !tool("man") {
        return;
    }
    let a = Airlock::root();
    let dir = common::TempDir::new("man");
    let out = ok(&a, &["man"]);
    assert!(out.stdout.starts_with(".ie"), "{}", out.describe());
    let page = dir.join("airlock.1");
    std::fs::write(&page, &out.stdout).expect("write");
    renders_cleanly(&page);
    let man = Command::new("man")
        .args(["-l", &page.to_string_lossy()])
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .env("LANG", "C.UTF-8")
        .output()
        .expect("man -l");
    assert!(man.status.success(), "{man:?}");
    let text = String::from_utf8_lossy(&man.stdout);
    for want in [
        "NAME",
        "SYNOPSIS",
        "airlock-run(1)",
        "airlock-completions(1)",
        "airlock-man(1)",
    ] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }
    assert!(!text.contains("__supervise"), "{text}");

    // --dir: one page per command, each renders, none for the internal commands.
    let pages = dir.join("pages");
    ok(&a, &["man", "--dir", &pages.to_string_lossy()]);
    let mut names: Vec<String> = std::fs::read_dir(&pages)
        .expect("pages")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for want in [
        "airlock.1",
        "airlock-run.1",
        "airlock-status.1",
        "airlock-mcp-server.1",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    assert!(
        !names
            .iter()
            .any(|n| n.contains("__") || n.contains("engine")),
        "{names:?}"
    );
    for n in &names {
        renders_cleanly(&pages.join(n));
    }
    let run = std::fs::read_to_string(pages.join("airlock-run.1")).expect("read");
    assert!(run.contains("no\\-network"), "{run}");
}

/// `airlock mcp server` is `airlock mcp`: the same server answers `initialize`.
fn mcp_server_answers(a: &Airlock) {
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    for args in [
        &["mcp", "server"][..],
        &["mcp", "server", "--allow-permissive"],
    ] {
        let out = a.run_stdin(args, format!("{init}\n").as_bytes());
        assert_eq!(out.code(), 0, "{args:?}: {}", out.describe());
        let v: serde_json::Value = serde_json::from_str(out.stdout.lines().next().unwrap_or(""))
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", out.describe()));
        assert_eq!(v["result"]["serverInfo"]["name"], "airlock", "{v}");
    }
}

fn spellings(a: &Airlock, mode: &str) {
    let _guard = EngineGuard(a);
    // --no-network is --net off: no proxy, loopback only; it cannot be combined with --net.
    let out = ok(
        a,
        &[
            "run",
            "--no-network",
            "--",
            "sh",
            "-c",
            "echo proxy=$HTTP_PROXY; ls /sys/class/net",
        ],
    );
    assert_eq!(out.stdout, "proxy=\nlo\n", "{mode}: {}", out.describe());
    let out = a.run(&["run", "--no-network", "--net", "filtered", "--", "true"]);
    assert_eq!(out.code(), 2, "{mode}: {}", out.describe());
    assert!(
        out.stderr.contains("cannot be used with"),
        "{}",
        out.describe()
    );

    // A named sandbox created with --no-network records --net off: `up --net off` is the same.
    ok(a, &["create", "box", "--no-network"]);
    let st: serde_json::Value =
        serde_json::from_str(&ok(a, &["status", "box", "--json"]).stdout).expect("json");
    assert_eq!(st["spec"]["net"], "off", "{mode}: {st}");
    ok(a, &["up", "box", "--net", "off"]);
    ok(a, &["up", "box", "--no-network"]);

    // `status` without NAME: the environment block first, then the directory's sandbox
    // (named "cwd" after the test's directory) — none yet, then one.
    let out = ok(a, &["status"]);
    assert!(
        out.stdout.starts_with("environment:\n"),
        "{mode}: {}",
        out.describe()
    );
    assert!(
        out.stdout
            .contains("  default path (container backend): ok\n"),
        "{mode}: {}",
        out.describe()
    );
    assert!(
        out.stdout.contains("  ok        user namespaces\n"),
        "{}",
        out.describe()
    );
    assert!(
        out.stdout
            .contains("sandbox:  none named cwd for this directory"),
        "{mode}: {}",
        out.describe()
    );
    let v: serde_json::Value =
        serde_json::from_str(&ok(a, &["status", "--json"]).stdout).expect("json");
    assert_eq!(v["environment"]["default_path_ok"], true, "{v}");
    assert_eq!(v["name"], "cwd", "{v}");
    assert!(v["sandbox"].is_null(), "{v}");
    ok(a, &["create", "cwd", "--net", "off"]);
    let out = ok(a, &["status"]);
    let env_at = out.stdout.find("environment:").expect("environment block");
    let name_at = out.stdout.find("name:     cwd\n").expect("the sandbox");
    assert!(env_at < name_at, "{mode}: {}", out.describe());
    assert!(
        out.stdout.contains("state:    stopped"),
        "{}",
        out.describe()
    );
    let v: serde_json::Value =
        serde_json::from_str(&ok(a, &["status", "--json"]).stdout).expect("json");
    assert_eq!(v["sandbox"]["name"], "cwd", "{v}");

    // `remove` is `rm`.
    ok(a, &["remove", "cwd"]);
    assert_eq!(a.run(&["status", "cwd"]).code(), 122);

    // `stop --remove` (and `--rm`): stopped, then removed.
    let out = ok(a, &["stop", "--remove", "box"]);
    assert!(
        out.stdout.contains("removed box"),
        "{mode}: {}",
        out.describe()
    );
    assert_eq!(a.run(&["status", "box"]).code(), 122, "{mode}");
    ok(a, &["up", "box2", "--net", "off"]);
    ok(a, &["stop", "box2", "--rm"]);
    assert_eq!(a.run(&["status", "box2"]).code(), 122, "{mode}");
    let list: serde_json::Value =
        serde_json::from_str(&ok(a, &["list", "--json"]).stdout).expect("json");
    assert_eq!(list, serde_json::json!([]), "{mode}");

    mcp_server_answers(a);
}

crate::rootful_and_rootless!(
    peer_spellings_are_aliases_rootful,
    peer_spellings_are_aliases_rootless,
    spellings
);

/// Where user namespaces are exhausted (a user namespace of the test's own whose
/// `user.max_user_namespaces` is 0), `status` still prints the environment block, names what is
/// missing and exits 123 with a hint; it does not go on to start an engine.
#[test]
fn status_exits_non_zero_when_the_host_lacks_what_sandboxes_need() {
    if !e2e("status_exits_non_zero_when_the_host_lacks_what_sandboxes_need") {
        return;
    }
    let bins = Bins::owned_by(&common::test_user());
    for a in [Airlock::root(), Airlock::rootless(&bins)] {
        let _guard = EngineGuard(&a);
        for json in [false, true] {
            let mut args = vec![
                "--user",
                "--map-root-user",
                "sh",
                "-c",
                "echo 0 > /proc/sys/user/max_user_namespaces && exec \"$0\" \"$@\"",
            ];
            let exe = a.exe.to_string_lossy().into_owned();
            args.push(&exe);
            args.push("status");
            if json {
                args.push("--json");
            }
            let out =
                common::run_with_deadline(a.command_with("unshare", &args), None, common::DEADLINE);
            assert_eq!(out.code(), 123, "{}", out.describe());
            assert!(
                out.stderr
                    .contains("this host lacks what sandboxes need: user namespaces"),
                "{}",
                out.describe()
            );
            assert!(out.stderr.contains("hint: "), "{}", out.describe());
            if json {
                let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
                assert_eq!(v["environment"]["default_path_ok"], false, "{v}");
            } else {
                assert!(
                    out.stdout.starts_with("environment:\n"),
                    "{}",
                    out.describe()
                );
                assert!(
                    out.stdout.contains("  MISSING   user namespaces "),
                    "{}",
                    out.describe()
                );
                assert!(out.stdout.contains("fix: "), "{}", out.describe());
            }
            assert!(
                !a.state_dir().join("store.db").exists(),
                "no engine was started"
            );
        }
    }
}

/// A git repository with one commit at `dir` (the test's project).
fn git_repo(a: &Airlock) {
    let dir = a.cwd.to_string_lossy().into_owned();
    for args in [
        &["init", "-q", "-b", "main", &dir][..],
        &["-C", &dir, "add", "-A"],
        &[
            "-C",
            &dir,
            "-c",
            "user.email=t@t",
            "-c",
            "user.name=t",
            "commit",
            "-qm",
            "init",
        ],
    ] {
        let out = a.command_with("git", args).output().expect("git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    }
}

fn compatibility_modes(a: &Airlock, mode: &str) {
    let _guard = EngineGuard(a);
    std::fs::write(a.cwd.join("README"), "project\n").expect("write");
    if let Some(u) = &a.user {
        a.dir.chown_to(u);
    }
    git_repo(a);
    // The claude mode on `run`: Anthropic's API and the registries reachable, other names
    // denied (the fake internet answers every name, so only the policy decides); the workspace
    // is an overlay (a clone needs a named sandbox), so the host is untouched.
    let inet = common::internet::Internet::start(
        &[
            "api.anthropic.com",
            "pypi.org",
            "api.openai.com",
            "example.com",
        ],
        &[],
    );
    let probe = "for h in api.anthropic.com pypi.org api.openai.com example.com; do \
                 printf '%s ' $h; curl -s -o /dev/null -m 10 -w '%{http_code}\\n' http://$h/; done; \
                 echo x > /workspace/new";
    let out = a.run_with_env(
        &[("AIRLOCK_DNS_UPSTREAM", &inet.dns)],
        &[
            "run",
            "--compatibility-mode",
            "claude",
            "--",
            "sh",
            "-c",
            probe,
        ],
    );
    assert_eq!(out.code(), 0, "{mode}: {}", out.describe());
    assert_eq!(
        out.stdout,
        "api.anthropic.com 200\npypi.org 200\napi.openai.com 403\nexample.com 403\n",
        "{mode}: {}",
        out.describe()
    );
    assert!(
        !a.cwd.join("new").exists(),
        "{mode}: overlay keeps the host untouched"
    );
    // The same switch on the MCP server's sandbox_run (agentkernel's MCP option).
    let call = serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "sandbox_run", "arguments": {"command": ["sh", "-c", probe],
        "compatibility_mode": "claude", "timeout_seconds": 60}}});
    let input = format!(
        "{}\n{}\n{call}\n",
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#
    );
    let mut cmd = a.command(&["mcp", "server"]);
    cmd.env("AIRLOCK_DNS_UPSTREAM", &inet.dns);
    let out = common::run_with_deadline(cmd, Some(input.into_bytes()), common::DEADLINE);
    let answer: serde_json::Value = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["id"] == 2)
        .unwrap_or_else(|| panic!("{mode}: no answer: {}", out.describe()));
    assert_eq!(
        answer["result"]["structuredContent"]["stdout"],
        "api.anthropic.com 200\npypi.org 200\napi.openai.com 403\nexample.com 403\n",
        "{mode}: {answer}"
    );
    let out = a.run(&["run", "--compatibility-mode", "cursor", "--", "true"]);
    assert_eq!(out.code(), 2, "{}", out.describe());
    assert!(
        out.stderr.contains("claude, codex, gemini, native"),
        "{}",
        out.describe()
    );

    // The mode from the project file widens (its domains): refused until trusted; then
    // `airlock config` shows where each of its values comes from.
    std::fs::write(
        a.cwd.join("airlock.toml"),
        "[agent]\ncompatibility_mode = \"codex\"\n",
    )
    .expect("write");
    if let Some(u) = &a.user {
        a.dir.chown_to(u);
    }
    let out = a.run(&["create", "box"]);
    assert_eq!(out.code(), 121, "{mode}: {}", out.describe());
    assert!(out.stderr.contains("network.domains"), "{}", out.describe());
    ok(a, &["trust"]);
    let cfg = ok(a, &["config"]).stdout;
    for line in [
        "profile = \"restrictive\"  # from mode:codex",
        "mode = \"filtered\"  # from mode:codex",
        "mode = \"clone\"  # from mode:codex",
        "compatibility_mode = \"codex\"  # from project:",
    ] {
        assert!(cfg.contains(line), "{mode}: {line} not in\n{cfg}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&ok(a, &["config", "--json"]).stdout).expect("json");
    assert_eq!(v["origins"]["network.domains"][0], "mode:codex", "{v}");

    // A named sandbox made in that mode: restrictive, filtered to OpenAI and the registries,
    // its own clone.
    ok(a, &["create", "box"]);
    let st: serde_json::Value =
        serde_json::from_str(&ok(a, &["status", "box", "--json"]).stdout).expect("json");
    assert_eq!(st["spec"]["profile"], "restrictive", "{mode}: {st}");
    assert_eq!(st["spec"]["net"], "filtered", "{st}");
    assert_eq!(st["spec"]["workspace"], "clone", "{st}");
    let domains = st["spec"]["domains"].to_string();
    for d in ["api.openai.com", "registry.npmjs.org", "crates.io"] {
        assert!(domains.contains(d), "{d} not in {domains}");
    }
    assert!(!domains.contains("anthropic"), "{domains}");
    // Another mode for the same sandbox is a different policy: `up` names it.
    let out = a.run(&["up", "box", "--compatibility-mode", "claude"]);
    assert_eq!(out.code(), 2, "{mode}: {}", out.describe());
    assert!(
        out.stderr
            .contains("--compatibility-mode claude (it has profile restrictive"),
        "{}",
        out.describe()
    );
    ok(a, &["up", "box", "--compatibility-mode", "codex"]);
    ok(a, &["rm", "--force", "box"]);
}

crate::rootful_and_rootless!(
    compatibility_modes_rootful,
    compatibility_modes_rootless,
    compatibility_modes
);

fn write_exec(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
    common::set_mode(path, 0o755);
}

fn setup_scripts(a: &Airlock, mode: &str) {
    let _guard = EngineGuard(a);
    // A plugin's script (relative to the plugin file) and the project's, in that order; they
    // see the sandbox's environment and secrets, run in /workspace, and leave a trace in the
    // sandbox's home.
    let script = |who: &str| {
        format!(
            "#!/bin/sh\necho \"{who} setup in $(pwd) as $(id -un)\"\n\
             [ -n \"$TOKEN\" ] && [ \"$TOKEN\" = \"$(cat /run/secrets/TOKEN)\" ] && echo \"{who} has the secret\"\n\
             echo \"{who} PROJ=$PROJ\"\necho {who} >> \"$HOME/ran\"\n"
        )
    };
    write_exec(&a.cwd.join("tools/plug-setup.sh"), &script("plugin"));
    std::fs::write(
        a.cwd.join("tools/plug.toml"),
        "setup = [\"./plug-setup.sh\"]\n",
    )
    .expect("w");
    write_exec(&a.cwd.join("scripts/setup.sh"), &script("project"));
    std::fs::write(
        a.cwd.join("airlock.toml"),
        "plugins = [\"./tools/plug.toml\"]\nsetup = [\"./scripts/setup.sh\"]\n\
         [env]\nPROJ = \"p1\"\n[secrets]\nTOKEN = { from_env = \"SETUP_TOKEN\" }\n",
    )
    .expect("write");
    if let Some(u) = &a.user {
        a.dir.chown_to(u);
    }
    let env = [("SETUP_TOKEN", "tok-123")];
    // Untrusted: the scripts are named, nothing runs.
    let out = a.run_with_env(&env, &["run", "--net", "off", "--", "true"]);
    assert_eq!(out.code(), 121, "{mode}: {}", out.describe());
    assert!(out.stderr.contains("setup "), "{}", out.describe());
    ok(a, &["trust"]);

    // `run`: the scripts first (their output on stderr), then the command.
    let out = a.run_with_env(
        &env,
        &[
            "run",
            "--net",
            "off",
            "--",
            "sh",
            "-c",
            "cat $HOME/ran; echo cmd",
        ],
    );
    assert_eq!(out.code(), 0, "{mode}: {}", out.describe());
    assert_eq!(
        out.stdout,
        "plugin\nproject\ncmd\n",
        "{mode}: {}",
        out.describe()
    );
    for line in [
        "plugin setup in /workspace as agent",
        "plugin has the secret",
        "project has the secret",
        "project PROJ=p1",
    ] {
        assert!(
            out.stderr.contains(line),
            "{mode}: {line}: {}",
            out.describe()
        );
    }

    // A named sandbox: once after its first start, output in its log; not again on restart.
    let out = a.run_with_env(&env, &["up", "box", "--net", "off"]);
    assert_eq!(out.code(), 0, "{mode}: {}", out.describe());
    let log = ok(a, &["logs", "box"]).stdout;
    for line in [
        "plugin setup in /workspace as agent",
        "project has the secret",
        "project PROJ=p1",
        "setup.sh: exit 0",
    ] {
        assert!(log.contains(line), "{mode}: {line} not in\n{log}");
    }
    ok(a, &["stop", "box"]);
    let out = a.run_with_env(&env, &["start", "box"]);
    assert_eq!(out.code(), 0, "{mode}: {}", out.describe());
    let ran = ok(a, &["exec", "box", "--", "cat", "/home/agent/ran"]).stdout;
    assert_eq!(ran, "plugin\nproject\n", "{mode}: ran once");
    // --fresh: a new sandbox, set up again.
    let out = a.run_with_env(&env, &["up", "box", "--fresh", "--net", "off"]);
    assert_eq!(out.code(), 0, "{mode}: {}", out.describe());
    let ran = ok(a, &["exec", "box", "--", "cat", "/home/agent/ran"]).stdout;
    assert_eq!(
        ran, "plugin\nproject\n",
        "{mode}: set up again after --fresh"
    );
    ok(a, &["rm", "--force", "box"]);

    // A failing script: start fails (125) naming it, with its output and a hint; a sandbox
    // `up` created is removed again, an existing one is left stopped (its log says why).
    write_exec(
        &a.cwd.join("scripts/setup.sh"),
        "#!/bin/sh\necho 'no toolchain here'\nexit 3\n",
    );
    if let Some(u) = &a.user {
        a.dir.chown_to(u);
    }
    let out = a.run_with_env(&env, &["up", "bad", "--net", "off"]);
    assert_eq!(out.code(), 125, "{mode}: {}", out.describe());
    assert!(
        out.stderr.contains("setup script ") && out.stderr.contains("with exit 3"),
        "{}",
        out.describe()
    );
    assert!(
        out.stderr.contains("| no toolchain here"),
        "{}",
        out.describe()
    );
    assert!(out.stderr.contains("hint: "), "{}", out.describe());
    assert_eq!(a.run(&["status", "bad"]).code(), 122, "{mode}: removed");
    let out = a.run_with_env(&env, &["create", "b2", "--net", "off"]);
    assert_eq!(out.code(), 0, "{mode}: {}", out.describe());
    let out = a.run_with_env(&env, &["start", "b2"]);
    assert_eq!(out.code(), 125, "{mode}: {}", out.describe());
    let st: serde_json::Value =
        serde_json::from_str(&ok(a, &["status", "b2", "--json"]).stdout).expect("json");
    assert_eq!(st["state"], "stopped", "{mode}: {st}");
    assert!(ok(a, &["logs", "b2"]).stdout.contains("no toolchain here"));
    ok(a, &["rm", "b2"]);
    // `run`: the command does not run.
    let out = a.run_with_env(&env, &["run", "--net", "off", "--", "echo", "cmd"]);
    assert_eq!(out.code(), 125, "{mode}: {}", out.describe());
    assert!(!out.stdout.contains("cmd"), "{}", out.describe());
    assert!(
        out.stderr.contains("the command did not run"),
        "{}",
        out.describe()
    );
    let list: serde_json::Value =
        serde_json::from_str(&ok(a, &["list", "--json"]).stdout).expect("json");
    assert_eq!(list, serde_json::json!([]), "{mode}");
}

crate::rootful_and_rootless!(setup_scripts_rootful, setup_scripts_rootless, setup_scripts);

fn refused(a: &Airlock, args: &[&str], code: i32, says: &str) {
    let out = a.run(args);
    assert_eq!(out.code(), code, "{args:?}: {}", out.describe());
    assert!(
        out.stderr.contains(says),
        "{args:?}: {says}: {}",
        out.describe()
    );
    assert!(
        out.stderr.contains("hint: "),
        "{args:?}: {}",
        out.describe()
    );
}

fn hot_plug_mounts(a: &Airlock, mode: &str) {
    let _guard = EngineGuard(a);
    let host = a.dir.join("host");
    std::fs::create_dir_all(host.join("data")).expect("mkdir");
    std::fs::write(host.join("data/f"), "from the host\n").expect("write");
    std::fs::write(host.join("file"), "a single file\n").expect("write");
    std::os::unix::fs::symlink(host.join("data"), host.join("link")).expect("symlink");
    if let Some(u) = &a.user {
        a.dir.chown_to(u);
    }
    let data = host.join("data").to_string_lossy().into_owned();
    let spec = |dest: &str| format!("{data}:{dest}");
    ok(a, &["up", "box", "--net", "off"]);
    let inside = |cmd: &str| a.run(&["exec", "box", "--", "sh", "-c", cmd]);

    // Read-only at a new directory: there at once, without a restart; writes refused.
    ok(a, &["mount", "box", &spec("/tmp/data")]);
    let out = inside("cat /tmp/data/f; echo x > /tmp/data/new");
    assert_eq!(out.stdout, "from the host\n", "{mode}: {}", out.describe());
    assert!(
        out.stderr.contains("Read-only"),
        "{mode}: {}",
        out.describe()
    );
    assert!(!host.join("data/new").exists());
    // Writable, in the home directory: writes reach the host, owned as the host's own.
    ok(a, &["mount", "box", &spec("/home/agent/rw"), "--rw"]);
    let out = inside("echo written > /home/agent/rw/new && cat /home/agent/rw/f");
    assert_eq!(out.code(), 0, "{mode}: {}", out.describe());
    assert_eq!(
        std::fs::read_to_string(host.join("data/new")).expect("written through"),
        "written\n"
    );
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(host.join("data")).expect("meta").uid();
    assert_eq!(
        std::fs::metadata(host.join("data/new"))
            .expect("meta")
            .uid(),
        owner,
        "{mode}: a file written inside belongs to the host directory's owner"
    );
    // A single file, at a path that does not exist yet.
    let file = format!("{}:/workspace/notes.txt", host.join("file").display());
    ok(a, &["mount", "box", &file]);
    assert_eq!(inside("cat /workspace/notes.txt").stdout, "a single file\n");

    // Kept across a restart; `unmount` takes one away now and for later starts.
    ok(a, &["stop", "box"]);
    ok(a, &["start", "box"]);
    assert_eq!(
        inside("cat /tmp/data/f").stdout,
        "from the host\n",
        "{mode}"
    );
    assert_eq!(
        inside("cat /home/agent/rw/new").stdout,
        "written\n",
        "{mode}"
    );
    let st = ok(a, &["status", "box"]).stdout;
    assert!(
        st.contains(&format!(
            "mounts:   {data} at /tmp/data (ro), {data} at /home/agent/rw (rw)"
        )),
        "{mode}: {st}"
    );
    let st: serde_json::Value =
        serde_json::from_str(&ok(a, &["status", "box", "--json"]).stdout).expect("json");
    assert_eq!(
        st["spec"]["binds"][1]["target"], "/home/agent/rw",
        "{mode}: {st}"
    );
    assert_eq!(st["spec"]["binds"][1]["writable"], true, "{st}");
    ok(a, &["unmount", "box", "/tmp/data"]);
    // Each change is in the sandbox's audit journal.
    let audit = ok(a, &["audit", "box"]).stdout;
    let policy: Vec<&str> = audit.lines().filter(|l| l.contains("  policy ")).collect();
    assert_eq!(
        policy
            .iter()
            .map(|l| l.split("  policy ").nth(1).unwrap_or_default().trim())
            .collect::<Vec<_>>(),
        vec![
            format!("mount {data} at /tmp/data"),
            format!("mount {data} at /home/agent/rw (writable)"),
            format!(
                "mount {} at /workspace/notes.txt",
                host.join("file").display()
            ),
            "unmount at /tmp/data".to_string(),
        ],
        "{mode}: {audit}"
    );
    let out = inside("ls -A /tmp/data");
    assert_eq!(out.stdout, "", "{mode}: {}", out.describe());
    ok(a, &["stop", "box"]);
    ok(a, &["start", "box"]);
    assert!(!inside("test -e /tmp/data/f").status.success(), "{mode}");
    let st: serde_json::Value =
        serde_json::from_str(&ok(a, &["status", "box", "--json"]).stdout).expect("json");
    assert_eq!(
        st["spec"]["binds"].as_array().map(Vec::len),
        Some(2),
        "{mode}: {st}"
    );
    assert_eq!(inside("cat /home/agent/rw/f").stdout, "from the host\n");
    refused(
        a,
        &["unmount", "box", "/tmp/data"],
        122,
        "no mount at /tmp/data",
    );

    // Attacks. A symlink on the host side, as the path or one of its directories.
    let link = host.join("link").to_string_lossy().into_owned();
    for h in [link.clone(), format!("{link}/f")] {
        refused(
            a,
            &["mount", "box", &format!("{h}:/tmp/l")],
            121,
            "is a symbolic link",
        );
    }
    // Symlinks the sandbox planted on the destination side: a directory leading to the
    // workspace (to reach a protected path) and a leaf pointing at /run/secrets.
    ok(
        a,
        &[
            "exec",
            "box",
            "--",
            "sh",
            "-c",
            "ln -s /workspace /tmp/evil && ln -s /run/secrets /home/agent/evil2",
        ],
    );
    refused(
        a,
        &["mount", "box", &spec("/tmp/evil/.claude")],
        121,
        "is a symbolic link",
    );
    refused(
        a,
        &["mount", "box", &spec("/home/agent/evil2")],
        121,
        "is a symbolic link",
    );
    refused(
        a,
        &["mount", "box", &spec("/tmp/evil/sub"), "--rw"],
        121,
        "is a symbolic link",
    );
    assert!(
        !inside("test -e /workspace/sub").status.success(),
        "{mode}: nothing created through the link"
    );
    assert_eq!(inside("ls -A /run/secrets").stdout, "", "{mode}");
    // Protected paths and the sandbox's own mounts stay as they are.
    for dest in [
        "/workspace/.claude",
        "/workspace/.git/hooks",
        "/workspace/airlock.toml",
    ] {
        refused(
            a,
            &["mount", "box", &spec(dest), "--rw"],
            121,
            "must not rewrite",
        );
    }
    for dest in [
        "/run/secrets/x",
        "/etc/passwd",
        "/usr/bin/x",
        "/tmp",
        "/workspace",
    ] {
        refused(
            a,
            &["mount", "box", &spec(dest)],
            121,
            "hot-plugged mounts go there only",
        );
    }
    // A file where a directory goes is named as such, not taken for a link.
    ok(a, &["exec", "box", "--", "sh", "-c", "echo > /tmp/plain"]);
    let out = a.run(&["mount", "box", &spec("/tmp/plain/x")]);
    assert_eq!(out.code(), 125, "{mode}: {}", out.describe());
    assert!(
        out.stderr.contains("is not a directory"),
        "{}",
        out.describe()
    );
    refused(a, &["mount", "box", &spec("../x")], 2, "absolute");
    refused(a, &["mount", "box", &spec("/tmp/a/../../etc")], 2, "`..`");
    refused(
        a,
        &["mount", "box", &spec("/home/agent/rw/deeper")],
        120,
        "already has",
    );
    ok(a, &["rm", "--force", "box"]);

    // The restrictive profile has no writable mounts; a stopped sandbox gets none.
    ok(a, &["create", "strict", "--profile", "restrictive"]);
    refused(
        a,
        &["mount", "strict", &spec("/tmp/d")],
        120,
        "is not running",
    );
    ok(a, &["start", "strict"]);
    refused(
        a,
        &["mount", "strict", &spec("/tmp/d"), "--rw"],
        121,
        "restrictive",
    );
    ok(a, &["mount", "strict", &spec("/tmp/d")]);
    ok(a, &["rm", "--force", "strict"]);
}

crate::rootful_and_rootless!(
    hot_plug_mounts_rootful,
    hot_plug_mounts_rootless,
    hot_plug_mounts
);
