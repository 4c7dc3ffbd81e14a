//! An agent must not rewrite its own rules (SPEC §7, GUIDE §3): agent configuration and git
//! internals in the workspace are read-only inside, in bind mode (writes reach the host) too.

mod common;

use common::{e2e, Airlock};

#[test]
fn agent_config_and_git_internals_are_read_only_inside() {
    if !e2e("agent_config_and_git_internals_are_read_only_inside") {
        return;
    }
    let a = Airlock::root();
    let ws = &a.cwd;
    for d in [".git/hooks", ".claude", ".vscode"] {
        std::fs::create_dir_all(ws.join(d)).expect("mkdir");
    }
    std::fs::write(ws.join(".git/config"), "[core]\n").expect("write");
    std::fs::write(ws.join(".claude/settings.json"), "{}").expect("write");
    std::fs::write(ws.join(".mcp.json"), "{}").expect("write");
    let script = "for f in .git/hooks/pre-commit .git/config .claude/settings.json .mcp.json .vscode/tasks.json; do \
                  if echo evil > \"$f\" 2>/dev/null; then echo \"WROTE $f\"; fi; done; \
                  echo work > src.txt && echo normal-write-ok";
    for mode in ["bind", "overlay"] {
        let out = a.run(&[
            "run",
            "--profile",
            "permissive",
            "--net",
            "off",
            "--workspace",
            mode,
            "--",
            "sh",
            "-c",
            script,
        ]);
        assert_eq!(out.code(), 0, "{mode}: {}", out.describe());
        assert!(
            !out.stdout.contains("WROTE"),
            "{mode}: a protected path was written: {}",
            out.describe()
        );
        assert!(
            out.stdout.contains("normal-write-ok"),
            "{mode}: {}",
            out.describe()
        );
    }
    assert_eq!(
        std::fs::read_to_string(ws.join(".git/config")).expect("read"),
        "[core]\n"
    );
    assert_eq!(
        std::fs::read_to_string(ws.join(".claude/settings.json")).expect("read"),
        "{}"
    );
    assert!(!ws.join(".git/hooks/pre-commit").exists());
    assert_eq!(
        std::fs::read_to_string(ws.join("src.txt")).expect("bind writes reach the host"),
        "work\n"
    );
}
