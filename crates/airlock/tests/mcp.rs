//! `airlock mcp` driven by the official MCP clients — the Python `mcp` package and the
//! TypeScript `@modelcontextprotocol/sdk` (fixtures/mcp/client.{py,mjs}, installed by
//! `.ci/install-mcp-clients`) — against real sandboxes: initialize, tools/list, every sandbox
//! tool, policy_explain, bad arguments, unknown tools, oversized output, path escapes; plus raw
//! malformed JSON-RPC and a server that finds itself inside a sandbox.

mod common;
use common::work::EngineGuard;

use common::{e2e, run_with_deadline, Airlock};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const INSTALL: &str = "run `.ci/install-mcp-clients` (installs the Python `mcp` package into \
                       target/mcp-clients/venv and `@modelcontextprotocol/sdk` into \
                       target/mcp-clients/node; AIRLOCK_MCP_CLIENTS overrides the folder)";

fn clients_dir() -> PathBuf {
    std::env::var_os("AIRLOCK_MCP_CLIENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/mcp-clients"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mcp")
        .join(name)
}

#[derive(Clone, Copy, Debug)]
enum Client {
    Python,
    Node,
}

impl Client {
    /// The program and its first arguments; a missing client fails the test with how to
    /// install it (never a silent pass).
    fn command(self, a: &Airlock) -> Command {
        let dir = clients_dir();
        match self {
            Client::Python => {
                let py = dir.join("venv/bin/python");
                let ok = Command::new(&py)
                    .args(["-c", "import mcp.client.stdio"])
                    .output()
                    .is_ok_and(|o| o.status.success());
                assert!(
                    ok,
                    "the Python MCP client is not installed ({}): {INSTALL}",
                    py.display()
                );
                let mut c = a.command_with(&py, &[fixture("client.py")]);
                c.arg(&a.exe);
                c
            }
            Client::Node => {
                let modules = dir.join("node/node_modules");
                let sdk = modules.join("@modelcontextprotocol/sdk/package.json");
                let node_ok = Command::new("node")
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success());
                assert!(
                    node_ok && sdk.is_file(),
                    "the TypeScript MCP client is not installed (node on PATH: {node_ok}, {}): {INSTALL}",
                    sdk.display()
                );
                let mut c = a.command_with("node", &[fixture("client.mjs")]);
                c.arg(&a.exe).env("NODE_PATH", &modules);
                c
            }
        }
    }
}

/// Run the client through `calls`; its JSON report.
fn drive(a: &Airlock, client: Client, calls: Value) -> Value {
    drive_env(a, client, &[], calls)
}

/// `drive`, with extra environment variables for the server (and so its engine).
fn drive_env(a: &Airlock, client: Client, env: &[(&str, &str)], calls: Value) -> Value {
    let mut cmd = client.command(a);
    cmd.envs(env.iter().copied());
    cmd.arg(calls.to_string());
    let out = run_with_deadline(cmd, None, Duration::from_secs(300));
    assert_eq!(out.code(), 0, "{client:?} client: {}", out.describe());
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{client:?} client output is not JSON ({e}): {}",
            out.describe()
        )
    })
}

fn results(report: &Value) -> &Vec<Value> {
    report["results"].as_array().expect("results")
}

fn text(r: &Value) -> &str {
    r["text"].as_str().unwrap_or_default()
}

#[track_caller]
fn ok(r: &Value) -> &Value {
    assert_eq!(r["isError"], json!(false), "expected success: {r}");
    r
}

#[track_caller]
fn tool_err<'a>(r: &'a Value, needle: &str) -> &'a Value {
    assert_eq!(r["isError"], json!(true), "expected a tool error: {r}");
    assert!(text(r).contains(needle), "expected {needle:?} in: {r}");
    r
}

fn project(a: &Airlock) {
    std::fs::write(a.cwd.join("hello.txt"), "hello from the host\n").expect("write");
    std::fs::create_dir_all(a.cwd.join(".claude")).expect("mkdir");
    std::fs::write(a.cwd.join(".claude/settings.json"), "{}").expect("write");
}

const READ_ONLY: &[&str] = &[
    "sandbox_list",
    "sandbox_status",
    "sandbox_file_read",
    "policy_explain",
    "agent_reports",
    "agent_diff",
];

#[test]
fn initialize_and_tools_list() {
    if !e2e("initialize_and_tools_list") {
        return;
    }
    let a = Airlock::root();
    let _g = EngineGuard(&a);
    for client in [Client::Python, Client::Node] {
        let r = drive(&a, client, json!([]));
        assert_eq!(r["server"]["name"], "airlock", "{client:?}: {r}");
        let tools = r["tools"].as_array().expect("tools");
        let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
        for want in [
            "sandbox_run",
            "sandbox_create",
            "sandbox_exec",
            "sandbox_list",
            "sandbox_status",
            "sandbox_start",
            "sandbox_stop",
            "sandbox_remove",
            "sandbox_file_read",
            "sandbox_file_write",
            "policy_explain",
            "agent_start",
            "agent_prompt",
            "agent_reports",
            "agent_diff",
            "agent_fetch",
        ] {
            assert!(
                names.contains(&want),
                "{client:?}: {want} missing from {names:?}"
            );
        }
        for t in tools {
            let name = t["name"].as_str().unwrap_or_default();
            assert!(
                t["description"].as_str().is_some_and(|d| d.len() > 20),
                "{name}"
            );
            let schema = &t["inputSchema"];
            assert_eq!(schema["type"], "object", "{name}: {schema}");
            assert_eq!(
                schema["additionalProperties"],
                json!(false),
                "{name}: {schema}"
            );
            let ro = t["annotations"]["readOnlyHint"].as_bool();
            assert_eq!(ro, Some(READ_ONLY.contains(&name)), "{name}: {t}");
        }
        let run = tools
            .iter()
            .find(|t| t["name"] == "sandbox_run")
            .expect("sandbox_run");
        assert_eq!(run["inputSchema"]["required"], json!(["command"]), "{run}");
        assert!(run["inputSchema"]["properties"]["timeout_seconds"]["description"].is_string());
    }
}

/// The named-sandbox tools, in the order a model would use them.
fn sandbox_lifecycle(client: Client) {
    let a = Airlock::root();
    let _g = EngineGuard(&a);
    project(&a);
    let r = drive(
        &a,
        client,
        json!([
            {"tool": "sandbox_create", "args": {"name": "box", "network": "off"}},
            {"tool": "sandbox_exec", "args": {"name": "box", "command": ["sh", "-c", "cat hello.txt; id -un; echo oops >&2; exit 3"]}},
            {"tool": "sandbox_file_write", "args": {"name": "box", "path": "notes/a.txt", "content": "written by the model\n", "create_dirs": true}},
            {"tool": "sandbox_file_read", "args": {"name": "box", "path": "/workspace/notes/a.txt"}},
            {"tool": "sandbox_file_write", "args": {"name": "box", "path": "/tmp/bin.dat", "content": "AP8Q", "encoding": "base64"}},
            {"tool": "sandbox_file_read", "args": {"name": "box", "path": "/tmp/bin.dat"}},
            {"tool": "sandbox_file_read", "args": {"name": "box", "path": "notes"}},
            {"tool": "sandbox_exec", "args": {"name": "box", "command": ["cat"], "stdin": "piped in"}},
            {"tool": "sandbox_list"},
            {"tool": "sandbox_status", "args": {"name": "box"}},
            {"tool": "sandbox_stop", "args": {"name": "box", "grace_seconds": 2}},
            {"tool": "sandbox_exec", "args": {"name": "box", "command": ["true"]}},
            {"tool": "sandbox_start", "args": {"name": "box"}},
            {"tool": "sandbox_file_read", "args": {"name": "box", "path": "notes/a.txt", "offset": 8, "max_bytes": 2}},
            {"tool": "sandbox_remove", "args": {"name": "box"}},
            {"tool": "sandbox_remove", "args": {"name": "box", "force": true}},
            {"tool": "sandbox_status", "args": {"name": "box"}},
            {"tool": "sandbox_run", "args": {"command": ["sh", "-c", "cat /workspace/hello.txt; echo changed > /workspace/hello.txt"], "profile": "restrictive"}},
            {"tool": "sandbox_run", "args": {"command": ["sleep", "30"], "timeout_seconds": 1}},
        ]),
    );
    let r = results(&r);
    let label = format!("{client:?}");
    assert_eq!(ok(&r[0])["structured"]["state"], "running", "{label}");
    let s = &ok(&r[1])["structured"];
    assert_eq!(s["exit_code"], 3, "{label}: {s}");
    assert_eq!(s["stdout"], "hello from the host\nagent\n", "{label}: {s}");
    assert_eq!(s["stderr"], "oops\n", "{label}: {s}");
    assert_eq!(ok(&r[2])["structured"]["written_bytes"], 21, "{label}");
    assert_eq!(
        ok(&r[3])["structured"]["content"],
        "written by the model\n",
        "{label}"
    );
    ok(&r[4]);
    let bin = &ok(&r[5])["structured"];
    assert_eq!(
        (bin["encoding"].as_str(), bin["content"].as_str()),
        (Some("base64"), Some("AP8Q")),
        "{label}: {bin}"
    );
    assert!(text(ok(&r[6])).contains("a.txt"), "{label}: {}", r[6]);
    assert_eq!(ok(&r[7])["structured"]["stdout"], "piped in", "{label}");
    let list = &ok(&r[8])["structured"]["sandboxes"];
    assert_eq!(list[0]["name"], "box", "{label}: {list}");
    assert_eq!(ok(&r[9])["structured"]["state"], "running", "{label}");
    assert_eq!(ok(&r[10])["structured"]["state"], "stopped", "{label}");
    tool_err(&r[11], "not running");
    assert_eq!(ok(&r[12])["structured"]["state"], "running", "{label}");
    // Kept across stop/start; offset and length honoured, the full size reported.
    let part = &ok(&r[13])["structured"];
    assert_eq!(
        (
            part["content"].as_str(),
            part["size"].as_u64(),
            part["truncated"].as_bool()
        ),
        (Some("by"), Some(21), Some(true)),
        "{label}: {part}"
    );
    tool_err(&r[14], "running");
    assert_eq!(ok(&r[15])["structured"]["removed"], true, "{label}");
    tool_err(&r[16], "no sandbox");
    let run = &ok(&r[17])["structured"];
    assert_eq!(run["stdout"], "hello from the host\n", "{label}: {run}");
    assert_eq!(
        std::fs::read_to_string(a.cwd.join("hello.txt")).expect("read"),
        "hello from the host\n",
        "{label}: the host's file must be untouched"
    );
    let slow = &ok(&r[18])["structured"];
    assert_eq!(
        (slow["exit_code"].as_i64(), slow["timed_out"].as_bool()),
        (Some(124), Some(true)),
        "{label}: {slow}"
    );
}

#[test]
fn sandbox_tools_python_client() {
    if e2e("sandbox_tools_python_client") {
        sandbox_lifecycle(Client::Python);
    }
}

#[test]
fn sandbox_tools_node_client() {
    if e2e("sandbox_tools_node_client") {
        sandbox_lifecycle(Client::Node);
    }
}

#[test]
fn bad_arguments_are_tool_errors() {
    if !e2e("bad_arguments_are_tool_errors") {
        return;
    }
    let a = Airlock::root();
    let _g = EngineGuard(&a);
    for client in [Client::Node, Client::Python] {
        let r = drive(
            &a,
            client,
            json!([
                {"tool": "no_such_tool", "args": {}},
                {"tool": "sandbox_run", "args": {}},
                {"tool": "sandbox_run", "args": {"command": "ls -la"}},
                {"tool": "sandbox_run", "args": {"command": ["true"], "bogus": 1}},
                {"tool": "sandbox_run", "args": {"command": []}},
                {"tool": "sandbox_run", "args": {"command": ["true"], "timeout_seconds": 0}},
                {"tool": "sandbox_run", "args": {"command": ["true"], "profile": "yolo"}},
                {"tool": "sandbox_run", "args": {"command": ["true"], "profile": "permissive"}},
                {"tool": "sandbox_run", "args": {"command": ["true"], "workspace": "bind"}},
                {"tool": "sandbox_run", "args": {"command": ["true"], "env": {"A=B": "x"}}},
                {"tool": "sandbox_create", "args": {"name": "Bad/Name"}},
                {"tool": "sandbox_create", "args": {"name": "--help"}},
                {"tool": "sandbox_exec", "args": {"name": "ghost", "command": ["true"]}},
                {"tool": "sandbox_file_read", "args": {"name": "ghost", "path": "x", "max_bytes": 0}},
                {"tool": "sandbox_file_write", "args": {"name": "ghost", "path": "x", "content": "!!", "encoding": "base64"}},
                {"tool": "sandbox_stop", "args": {"name": "ghost", "grace_seconds": 100000}},
                {"tool": "policy_explain", "args": {}},
                {"tool": "sandbox_run", "args": {"command": ["echo", "still alive"]}},
            ]),
        );
        let r = results(&r);
        let pe = r[0]["protocolError"].as_str().unwrap_or_default();
        assert!(
            pe.contains("no_such_tool") && pe.contains("sandbox_run"),
            "{client:?}: {}",
            r[0]
        );
        tool_err(&r[1], "missing field `command`");
        tool_err(&r[2], "invalid type");
        tool_err(&r[3], "unknown field `bogus`");
        tool_err(&r[4], "command is empty");
        tool_err(&r[5], "out of range");
        tool_err(&r[6], "unknown variant `yolo`");
        tool_err(&r[7], "--allow-permissive");
        tool_err(&r[8], "--allow-permissive");
        tool_err(&r[9], "invalid environment variable");
        tool_err(&r[10], "invalid sandbox name");
        tool_err(&r[11], "invalid sandbox name");
        tool_err(&r[12], "no sandbox named ghost");
        tool_err(&r[13], "out of range");
        tool_err(&r[14], "base64");
        tool_err(&r[15], "out of range");
        tool_err(&r[16], "at least one of");
        assert_eq!(
            ok(&r[17])["structured"]["stdout"],
            "still alive\n",
            "{client:?}"
        );
    }
}

/// An exec past its timeout is stopped: the tool says so, with the output so far, and the
/// command no longer runs in the sandbox (the typed child's process group gets SIGTERM; the
/// exec forwards it into the sandbox).
#[test]
fn an_exec_past_its_timeout_is_stopped() {
    if !e2e("an_exec_past_its_timeout_is_stopped") {
        return;
    }
    let a = Airlock::root();
    let _g = EngineGuard(&a);
    project(&a);
    let sleeping = "cat /proc/[0-9]*/comm 2>/dev/null | grep -c '^sleep$' || true";
    let r = drive(
        &a,
        Client::Python,
        json!([
            {"tool": "sandbox_create", "args": {"name": "slow", "network": "off"}},
            {"tool": "sandbox_exec", "args": {"name": "slow", "command": ["sh", "-c", "echo begun; exec sleep 300"], "timeout_seconds": 2}},
            {"tool": "sandbox_exec", "args": {"name": "slow", "command": ["sh", "-c", sleeping]}},
            {"tool": "sandbox_remove", "args": {"name": "slow", "force": true}},
        ]),
    );
    let r = results(&r);
    ok(&r[0]);
    let t = tool_err(&r[1], "timed out after 2s; the command was stopped");
    assert_eq!(t["structured"]["stdout"], "begun\n", "{t}");
    assert_eq!(ok(&r[2])["structured"]["stdout"], "0\n", "{}", r[2]);
    ok(&r[3]);
}

#[test]
fn oversized_output_keeps_head_and_tail() {
    if !e2e("oversized_output_keeps_head_and_tail") {
        return;
    }
    let a = Airlock::root();
    let _g = EngineGuard(&a);
    let flood = "echo FIRST-LINE; head -c 3000000 /dev/zero | tr '\\0' x; echo; echo LAST-LINE; \
                 head -c 200000 /dev/zero >&2; echo ERR-END >&2";
    let r = drive(
        &a,
        Client::Python,
        json!([{"tool": "sandbox_run", "args": {"command": ["sh", "-c", flood], "max_output_bytes": 4096}}]),
    );
    let r = ok(&results(&r)[0]);
    let s = &r["structured"];
    let out = s["stdout"].as_str().expect("stdout");
    assert!(
        out.starts_with("FIRST-LINE\n"),
        "{}",
        &out[..100.min(out.len())]
    );
    assert!(
        out.ends_with("LAST-LINE\n"),
        "{}",
        &out[out.len().saturating_sub(100)..]
    );
    assert!(
        out.contains("bytes cut from the middle of 3000022 bytes"),
        "{}",
        &out[2000..2300]
    );
    assert!(out.len() < 4096 + 200, "{}", out.len());
    assert_eq!(s["stdout_truncated"]["total_bytes"], 3_000_022);
    assert_eq!(s["stdout_truncated"]["cut_bytes"], 3_000_022 - 4096);
    assert!(
        s["stderr"]
            .as_str()
            .is_some_and(|e| e.ends_with("ERR-END\n")),
        "{s}"
    );
    assert!(text(r).len() < 3 * 4096, "the text content is bounded too");
}

#[test]
fn long_commands_stream_progress_notifications() {
    if !e2e("long_commands_stream_progress_notifications") {
        return;
    }
    let a = Airlock::root();
    let _g = EngineGuard(&a);
    let steps = "for i in 1 2 3; do echo step-$i; sleep 0.3; done";
    for client in [Client::Python, Client::Node] {
        let r = drive(
            &a,
            client,
            json!([{"tool": "sandbox_run", "args": {"command": ["sh", "-c", steps], "network": "off"}}]),
        );
        let r = ok(&results(&r)[0]);
        assert_eq!(
            r["structured"]["stdout"], "step-1\nstep-2\nstep-3\n",
            "{client:?}"
        );
        assert_eq!(
            r["progress"],
            json!(["step-1", "step-2", "step-3"]),
            "{client:?}: {r}"
        );
    }
}

#[test]
fn paths_cannot_escape_the_sandbox() {
    if !e2e("paths_cannot_escape_the_sandbox") {
        return;
    }
    let a = Airlock::root();
    let _g = EngineGuard(&a);
    project(&a);
    // A host file next to the project: nothing may read or write it.
    let outside = a.dir.join("host-secret.txt");
    std::fs::write(&outside, "host secret\n").expect("write");
    let outside_s = outside.display().to_string();
    let plant = "ln -s /etc/passwd /workspace/to-passwd; ln -s / /workspace/to-root; \
                 ln -s /etc /tmp/etc-dir; ln -s /home/agent /workspace/to-home; \
                 echo mine > /home/agent/file";
    let r = drive(
        &a,
        Client::Python,
        json!([
            {"tool": "sandbox_create", "args": {"name": "esc", "network": "off"}},
            {"tool": "sandbox_exec", "args": {"name": "esc", "command": ["sh", "-c", plant]}},
            {"tool": "sandbox_file_read", "args": {"name": "esc", "path": "../../etc/passwd"}},
            {"tool": "sandbox_file_read", "args": {"name": "esc", "path": "/workspace/../etc/passwd"}},
            {"tool": "sandbox_file_read", "args": {"name": "esc", "path": "/etc/passwd"}},
            {"tool": "sandbox_file_read", "args": {"name": "esc", "path": outside_s}},
            {"tool": "sandbox_file_read", "args": {"name": "esc", "path": "/proc/self/environ"}},
            {"tool": "sandbox_file_read", "args": {"name": "esc", "path": "to-passwd"}},
            {"tool": "sandbox_file_read", "args": {"name": "esc", "path": "to-root/etc/passwd"}},
            {"tool": "sandbox_file_read", "args": {"name": "esc", "path": "/tmp/etc-dir/passwd"}},
            {"tool": "sandbox_file_write", "args": {"name": "esc", "path": "to-passwd", "content": "x"}},
            {"tool": "sandbox_file_write", "args": {"name": "esc", "path": "to-root/etc/evil", "content": "x"}},
            {"tool": "sandbox_file_write", "args": {"name": "esc", "path": "../x", "content": "x"}},
            {"tool": "sandbox_file_write", "args": {"name": "esc", "path": outside_s, "content": "pwned"}},
            {"tool": "sandbox_file_write", "args": {"name": "esc", "path": ".claude/settings.json", "content": "{\"evil\": 1}"}},
            {"tool": "sandbox_file_read", "args": {"name": "esc", "path": "to-home/file"}},
            {"tool": "sandbox_remove", "args": {"name": "esc", "force": true}},
        ]),
    );
    let r = results(&r);
    ok(&r[0]);
    ok(&r[1]);
    tool_err(&r[2], "`..` is not allowed");
    tool_err(&r[3], "`..` is not allowed");
    tool_err(&r[4], "outside the allowed roots");
    // The host file's path names nothing inside (the sandbox's /tmp is its own).
    tool_err(&r[5], "No such file");
    assert!(!text(&r[5]).contains("host secret"));
    tool_err(&r[6], "outside the allowed roots");
    tool_err(&r[7], "resolves to /etc/passwd, outside the allowed roots");
    tool_err(&r[8], "resolves to /etc/passwd, outside the allowed roots");
    tool_err(&r[9], "outside the allowed roots");
    tool_err(&r[10], "symlink");
    tool_err(&r[11], "outside the allowed roots");
    tool_err(&r[12], "`..` is not allowed");
    assert_eq!(r[13]["isError"], json!(true), "{}", r[13]);
    // Agent configuration is read-only inside: the write fails in the sandbox.
    assert_eq!(r[14]["isError"], json!(true), "{}", r[14]);
    assert_eq!(ok(&r[15])["structured"]["content"], "mine\n");
    assert_eq!(
        std::fs::read_to_string(&outside).expect("read"),
        "host secret\n"
    );
    assert_eq!(
        std::fs::read_to_string(a.cwd.join(".claude/settings.json")).expect("read"),
        "{}"
    );
}

/// `sandbox_allow` / `sandbox_deny` change a running sandbox's allowlist at once: a plain-HTTP
/// request through its proxy is refused, allowed, refused again — no restart; the audit journal
/// says the changes came through MCP.
#[test]
fn sandbox_allow_and_deny_change_a_running_sandbox() {
    if !e2e("sandbox_allow_and_deny_change_a_running_sandbox") {
        return;
    }
    let inet = common::internet::Internet::start(&["x.test"], &[]);
    let a = Airlock::root();
    let _g = EngineGuard(&a);
    project(&a);
    let get = json!({"tool": "sandbox_exec", "args": {"name": "pol", "command":
        ["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "http://x.test/"]}});
    let r = drive_env(
        &a,
        Client::Python,
        &[("AIRLOCK_DNS_UPSTREAM", &inet.dns)],
        json!([
            {"tool": "sandbox_create", "args": {"name": "pol", "network": "filtered"}},
            get,
            {"tool": "sandbox_allow", "args": {"name": "pol", "domain": "x.test"}},
            get,
            {"tool": "sandbox_deny", "args": {"name": "pol", "domain": "x.test"}},
            get,
            {"tool": "sandbox_allow", "args": {"name": "pol", "domain": "10.0.0.1"}},
        ]),
    );
    let r = results(&r);
    assert_eq!(ok(&r[0])["structured"]["state"], "running");
    assert_eq!(ok(&r[1])["structured"]["stdout"], "403", "{}", r[1]);
    let allowed = &ok(&r[2])["structured"];
    assert_eq!(
        (&allowed["op"], &allowed["domain"], &allowed["live"]),
        (&json!("allow"), &json!("x.test"), &json!(true)),
        "{allowed}"
    );
    assert!(
        text(&r[2]).starts_with("allowed x.test in pol (in force now)"),
        "{}",
        r[2]
    );
    assert_eq!(ok(&r[3])["structured"]["stdout"], "200", "{}", r[3]);
    assert_eq!(ok(&r[4])["structured"]["op"], "deny");
    assert_eq!(ok(&r[5])["structured"]["stdout"], "403", "{}", r[5]);
    tool_err(&r[6], "literal IPs are not allowed");
    let audit = std::fs::read_to_string(a.state_dir().join("sandboxes/pol/audit.jsonl"))
        .expect("audit journal");
    let policy: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["category"] == "policy")
        .collect();
    assert_eq!(policy.len(), 2, "{audit}");
    assert!(policy.iter().all(|e| e["via"] == "mcp"), "{audit}");
    assert_eq!(a.run(&["rm", "--force", "pol"]).code(), 0);
}

#[test]
fn policy_explain_uses_the_real_policy() {
    if !e2e("policy_explain_uses_the_real_policy") {
        return;
    }
    let a = Airlock::root();
    let _g = EngineGuard(&a);
    project(&a);
    let r = drive(
        &a,
        Client::Node,
        json!([
            {"tool": "policy_explain", "args": {"domain": "pypi.org"}},
            {"tool": "policy_explain", "args": {"domain": "pypi.org", "allow_domains": ["pypi.org"]}},
            {"tool": "policy_explain", "args": {"domain": "pypi.org", "port": 8443, "allow_domains": ["pypi.org"]}},
            {"tool": "policy_explain", "args": {"domain": "169.254.169.254", "network": "open"}},
            {"tool": "policy_explain", "args": {"domain": "metadata.google.internal", "allow_domains": ["metadata.google.internal"]}},
            {"tool": "policy_explain", "args": {"domain": "example.com", "profile": "restrictive"}},
            {"tool": "policy_explain", "args": {"path": ".claude/settings.json"}},
            {"tool": "policy_explain", "args": {"path": "src/main.rs", "access": "write"}},
            {"tool": "policy_explain", "args": {"path": "/usr/bin/env", "access": "write"}},
            {"tool": "policy_explain", "args": {"path": "/root/.ssh/id_rsa", "access": "read"}},
            {"tool": "policy_explain", "args": {"syscall": "ptrace"}},
            {"tool": "policy_explain", "args": {"syscall": "unshare"}},
            {"tool": "policy_explain", "args": {"syscall": "read"}},
        ]),
    );
    let r = results(&r);
    let verdict = |i: usize| ok(&r[i])["structured"]["verdicts"][0].clone();
    let v = verdict(0);
    assert_eq!(v["allowed"], false, "{v}");
    assert!(
        v["fix"]
            .as_str()
            .is_some_and(|f| f.contains("--allow pypi.org:443")),
        "{v}"
    );
    assert_eq!(verdict(1)["allowed"], true);
    let v = verdict(2);
    assert!(
        v["fix"]
            .as_str()
            .is_some_and(|f| f.contains("pypi.org:8443")),
        "{v}"
    );
    for i in [3, 4] {
        let v = verdict(i);
        assert_eq!(
            (v["allowed"].as_bool(), v["fix"].is_null()),
            (Some(false), true),
            "{v}"
        );
        assert!(text(&r[i]).contains("nothing can"), "{}", r[i]);
    }
    let v = verdict(5);
    assert!(
        v["reason"]
            .as_str()
            .is_some_and(|s| s.contains("network is off")),
        "{v}"
    );
    let v = verdict(6);
    assert_eq!(
        (v["allowed"].as_bool(), v["fix"].is_null()),
        (Some(false), true),
        "{v}"
    );
    assert_eq!(verdict(7)["allowed"], true);
    assert_eq!(verdict(8)["allowed"], false);
    let v = verdict(9);
    assert!(v["fix"].as_str().is_some_and(|f| f.contains("--ro")), "{v}");
    assert_eq!(verdict(10)["allowed"], false);
    assert!(verdict(11)["reason"]
        .as_str()
        .is_some_and(|s| s.contains("CLONE_NEWUSER")));
    assert_eq!(verdict(12)["allowed"], true);
}

/// A tool's error is the action's own (`ActionError`: kind, exit code, message, hint), as
/// structured content and in the text — not airlock's stderr read back. The tools go their own
/// ways: prompt, reports, stop, remove and exec in the typed child (exec from its grandchild),
/// status, diff and fetch through the engine's API.
#[test]
fn agent_tools_fail_clearly_without_their_commands_or_sandbox() {
    if !e2e("agent_tools_fail_clearly_without_their_commands_or_sandbox") {
        return;
    }
    let a = Airlock::root();
    let _g = EngineGuard(&a);
    let r = drive(
        &a,
        Client::Python,
        json!([
            {"tool": "agent_prompt", "args": {"name": "ghost", "prompt": "fix the tests"}},
            {"tool": "agent_reports", "args": {"name": "ghost"}},
            {"tool": "agent_diff", "args": {"name": "ghost"}},
            {"tool": "agent_fetch", "args": {"name": "ghost"}},
            {"tool": "agent_prompt", "args": {"name": "ghost", "prompt": "  "}},
            {"tool": "sandbox_stop", "args": {"name": "ghost"}},
            {"tool": "sandbox_status", "args": {"name": "ghost"}},
            {"tool": "sandbox_exec", "args": {"name": "ghost", "command": ["true"]}},
            {"tool": "sandbox_remove", "args": {"name": "ghost"}},
        ]),
    );
    let r = results(&r);
    // Agent mode and the work commands exist now: what is missing is the sandbox.
    for r in &r[..4] {
        tool_err(r, "ghost");
        assert!(!text(r).contains("not available"), "{r}");
    }
    tool_err(&r[4], "empty");
    for r in r[..4].iter().chain(&r[5..]) {
        let e = &tool_err(r, "no sandbox named ghost")["structured"]["error"];
        assert_eq!(
            (e["kind"].as_str(), e["code"].as_i64()),
            (Some("not_found"), Some(122)),
            "{r}"
        );
        assert_eq!(e["hint"], "airlock list shows the sandboxes", "{r}");
        assert!(
            text(r).contains("hint: airlock list shows the sandboxes")
                && text(r).contains("not_found, airlock exit code 122"),
            "{r}"
        );
    }
}

fn git(a: &Airlock, args: &[&str]) -> String {
    let out = run_with_deadline(a.command_with("git", args), None, common::DEADLINE);
    assert_eq!(out.code(), 0, "git {args:?}: {}", out.describe());
    out.stdout
}

#[test]
fn agent_diff_and_fetch_honour_the_review_gate() {
    if !e2e("agent_diff_and_fetch_honour_the_review_gate") {
        return;
    }
    let a = Airlock::root();
    let _g = EngineGuard(&a);
    git(&a, &["init", "-q", "-b", "main"]);
    git(&a, &["config", "user.name", "Host"]);
    git(&a, &["config", "user.email", "host@example.invalid"]);
    std::fs::write(a.cwd.join("a.txt"), "one\n").expect("write");
    git(&a, &["add", "."]);
    git(&a, &["commit", "-q", "-m", "initial"]);
    let commit = |msg: &str, script: &str| {
        json!({"tool": "sandbox_exec", "args": {"name": "wk", "command": ["sh", "-c",
            format!("cd /workspace && {script} && git add -A && git -c user.name=A -c \
                     user.email=a@example.invalid commit -q -m '{msg}'")]}})
    };
    let r = drive(
        &a,
        Client::Python,
        json!([
            {"tool": "sandbox_create", "args": {"name": "wk", "network": "off", "workspace": "clone"}},
            commit("work", "echo two >> a.txt"),
            {"tool": "agent_diff", "args": {"name": "wk"}},
            {"tool": "agent_fetch", "args": {"name": "wk"}},
            commit("ci", "mkdir -p .github/workflows && echo 'on: push' > .github/workflows/x.yml"),
            {"tool": "agent_diff", "args": {"name": "wk", "stat": true}},
            {"tool": "agent_fetch", "args": {"name": "wk"}},
            {"tool": "sandbox_remove", "args": {"name": "wk", "force": true}},
        ]),
    );
    let r = results(&r);
    ok(&r[0]);
    ok(&r[1]);
    let d = ok(&r[2]);
    assert!(text(d).contains("+two"), "{d}");
    assert_eq!(d["structured"]["files"][0]["path"], "a.txt", "{d}");
    let f = ok(&r[3]);
    assert_eq!(f["structured"]["fetched"], true, "{f}");
    let tip = git(&a, &["rev-parse", "airlock/wk"]);
    ok(&r[4]);
    let d = ok(&r[5]);
    assert!(
        text(d).contains(".github/workflows/x.yml") && text(d).contains("review gate"),
        "{d}"
    );
    let f = ok(&r[6]);
    assert_eq!(f["structured"]["fetched"], false, "{f}");
    assert_eq!(f["structured"]["needs_accept"], true, "{f}");
    assert!(
        text(f).contains("NOT fetched") && text(f).contains(".github/workflows/x.yml"),
        "{f}"
    );
    assert_eq!(
        git(&a, &["rev-parse", "airlock/wk"]),
        tip,
        "the gated branch must not move"
    );
}

/// A scripted harness (the `[agent] harness = { command = [...] }` escape hatch, as in
/// tests/agent.rs): `edit` commits notes.txt, `recall` answers only in a continued session.
const SCRIPTED_AGENT: &str = r#"#!/bin/sh
set -u
word=${AIRLOCK_PROMPT%% *}
case "$word" in
  edit)
    report working "editing notes.txt"
    echo "edited in turn $AIRLOCK_TURN_ID" >> notes.txt
    git add notes.txt && git -c user.email=agent@example.com -c user.name=agent commit -qm "agent: notes" || exit 1
    report done "committed $(git rev-parse --short HEAD)"
    ;;
  recall)
    [ "$AIRLOCK_CONTINUE" = 1 ] || { report blocked "not a continued session"; exit 0; }
    report done "continued the session"
    ;;
  *)
    report info "unknown word $word"
    ;;
esac
"#;

#[test]
fn agent_tools_drive_a_scripted_agent() {
    if !e2e("agent_tools_drive_a_scripted_agent") {
        return;
    }
    let a = Airlock::root();
    let _g = EngineGuard(&a);
    std::fs::write(a.cwd.join("README"), "project\n").expect("write");
    std::fs::write(a.cwd.join("agent.sh"), SCRIPTED_AGENT).expect("write");
    common::set_mode(&a.cwd.join("agent.sh"), 0o755);
    std::fs::write(
        a.cwd.join("airlock.toml"),
        "[agent]\nharness = { command = [\"/workspace/agent.sh\"] }\n",
    )
    .expect("write");
    git(&a, &["init", "-q", "-b", "main"]);
    git(&a, &["config", "user.name", "Host"]);
    git(&a, &["config", "user.email", "host@example.invalid"]);
    git(&a, &["add", "."]);
    git(&a, &["commit", "-q", "-m", "initial"]);
    let r = drive(
        &a,
        Client::Python,
        json!([
            {"tool": "agent_start", "args": {"name": "ag", "prompt": "edit the notes", "timeout_seconds": 120}},
            {"tool": "agent_prompt", "args": {"name": "ag", "prompt": "recall what you did", "timeout_seconds": 120}},
            {"tool": "agent_reports", "args": {"name": "ag"}},
            {"tool": "agent_diff", "args": {"name": "ag"}},
            {"tool": "agent_fetch", "args": {"name": "ag"}},
            {"tool": "sandbox_remove", "args": {"name": "ag", "force": true}},
        ]),
    );
    let r = results(&r);
    // The first turn, run by agent_start: the agent's reports, in order.
    let s = ok(&r[0]);
    let t = text(s);
    let working = t.find("turn 1 working: editing notes.txt");
    let done = t.find("turn 1 done: committed");
    assert!(working.is_some() && done.is_some() && working < done, "{s}");
    assert_eq!(s["structured"]["status"], "done", "{s}");
    // The second turn continues the same session; its reports also stream as progress.
    let p = ok(&r[1]);
    assert!(
        text(p).contains("turn 2 done: continued the session"),
        "{p}"
    );
    assert_eq!(
        (
            p["structured"]["exit_code"].as_i64(),
            p["structured"]["status"].as_str()
        ),
        (Some(0), Some("done")),
        "{p}"
    );
    assert!(
        p["progress"].as_array().is_some_and(|l| l
            .iter()
            .any(|m| m.as_str().is_some_and(|m| m.contains("turn 2 done")))),
        "{p}"
    );
    // The journal holds both turns.
    let j = ok(&r[2]);
    for want in [
        "prompt: edit the notes",
        "turn 1 done: committed",
        "prompt: recall what you did",
        "turn 2 done: continued the session",
    ] {
        assert!(text(j).contains(want), "{want:?} missing: {j}");
    }
    // The agent's commit is on its branch.
    let d = ok(&r[3]);
    assert!(text(d).contains("+edited in turn 1"), "{d}");
    let files = d["structured"]["files"].as_array().expect("files");
    assert!(files.iter().any(|f| f["path"] == "notes.txt"), "{d}");
    // Fetched into the host repository, or held by the review gate with its reasons.
    let f = ok(&r[4]);
    if f["structured"]["needs_accept"] == json!(true) {
        let flagged = f["structured"]["findings"].as_array().expect("findings");
        assert!(
            !flagged.is_empty() && text(f).contains("NOT fetched"),
            "{f}"
        );
        for x in flagged {
            let path = x["path"].as_str().unwrap_or_default();
            assert!(path.is_empty() || text(f).contains(path), "{f}");
        }
    } else {
        assert_eq!(f["structured"]["fetched"], true, "{f}");
        let log = git(&a, &["log", "--format=%s", "airlock/ag"]);
        assert!(log.starts_with("agent: notes\n"), "airlock/ag: {log}");
    }
    ok(&r[5]);
}

// ---------------------------------------------------------------------------------------------
// Raw JSON-RPC (what no SDK client will send)

struct Raw {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Raw {
    fn spawn(mut cmd: Command) -> Raw {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn airlock mcp");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Raw { child, lines: rx }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to the server");
        stdin.flush().expect("flush");
    }

    /// The response with this id (other messages skipped).
    fn response(&self, id: i64) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no response {id}: {e}"));
            let v: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if v["id"] == json!(id) {
                return v;
            }
        }
    }

    fn initialize(&mut self) {
        self.send(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#);
        assert_eq!(self.response(1)["result"]["serverInfo"]["name"], "airlock");
        self.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn malformed_json_rpc_is_survived() {
    if !e2e("malformed_json_rpc_is_survived") {
        return;
    }
    let a = Airlock::root();
    let _g = EngineGuard(&a);
    let mut s = Raw::spawn(a.command(&["mcp"]));
    s.send("this is not json");
    s.send("{\"jsonrpc\": \"2.0\", \"id\": 99, \"method\":");
    s.initialize();
    s.send("\u{0}\u{1}garbage\u{7f}");
    s.send(r#"{"jsonrpc":"2.0","id":2,"method":"no/such/method"}"#);
    let e = s.response(2);
    assert!(e["error"]["code"].is_i64(), "{e}");
    s.send(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"sandbox_list","arguments":{"x":1}}}"#);
    let r = s.response(3);
    assert_eq!(r["result"]["isError"], true, "{r}");
    s.send(r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"sandbox_run"}}"#);
    assert_eq!(s.response(4)["result"]["isError"], true);
    s.send(r#"[1, 2, 3]"#);
    s.send(r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#);
    let tools = s.response(5);
    assert!(
        tools["result"]["tools"]
            .as_array()
            .is_some_and(|t| t.len() >= 16),
        "{tools}"
    );
    assert!(
        s.child.try_wait().expect("wait").is_none(),
        "the server must still run"
    );
}

#[test]
fn a_server_inside_a_sandbox_cannot_create_sandboxes() {
    if !e2e("a_server_inside_a_sandbox_cannot_create_sandboxes") {
        return;
    }
    let a = Airlock::root();
    let _g = EngineGuard(&a);
    // The airlock binary itself, visible inside, serving MCP from within a sandbox.
    let bind = format!("{}:/opt/airlock", a.exe.display());
    let mut s = Raw::spawn(a.command(&[
        "run",
        "--net",
        "off",
        "--ro",
        &bind,
        "--",
        "/opt/airlock",
        "mcp",
    ]));
    s.initialize();
    for (id, call) in [
        (
            2,
            r#"{"name":"sandbox_run","arguments":{"command":["true"],"network":"open"}}"#,
        ),
        (
            3,
            r#"{"name":"sandbox_create","arguments":{"name":"wider","network":"open"}}"#,
        ),
        (
            4,
            r#"{"name":"sandbox_file_write","arguments":{"name":"x","path":"a","content":""}}"#,
        ),
    ] {
        s.send(&format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{call}}}"#
        ));
        let r = s.response(id);
        assert_eq!(r["result"]["isError"], true, "{r}");
        let t = r["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default();
        assert!(
            t.contains("runs confined") && t.contains("on the host"),
            "{r}"
        );
    }
    // Read-only tools still answer.
    s.send(r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"policy_explain","arguments":{"syscall":"bpf"}}}"#);
    assert_eq!(s.response(5)["result"]["isError"], false);
}
