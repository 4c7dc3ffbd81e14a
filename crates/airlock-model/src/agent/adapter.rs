//! Harness adapters: how each supported agent CLI runs one turn headless, with every permission
//! auto-approved (the sandbox is the boundary) and the conversation continued from the previous
//! turn; which domains its API needs; which variables carry its credentials; and the directive
//! appended to every prompt that tells the agent how to report.

use crate::config::Harness;

/// Inside an agent sandbox: where airlock's binary is mounted (read-only) as `airlock` and
/// `report`.
pub const TOOLS_DIR: &str = "/run/airlock/bin";
/// The `report` tool by absolute path (works whatever a shell does to PATH).
pub const REPORT_TOOL: &str = "/run/airlock/bin/report";

/// One harness run: argv and extra environment (added to the sandbox's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCommand {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// The command line of one turn for the user's `prompt`. `continuing`: an earlier turn ran in
/// this sandbox, so the harness resumes its most recent conversation (it keeps it under $HOME,
/// which persists). The harness's argument is the prompt with airlock's directive appended;
/// the environment has them apart: `AIRLOCK_PROMPT` (the user's text only) and
/// `AIRLOCK_DIRECTIVE`.
pub fn turn_command(h: &Harness, prompt: &str, continuing: bool, turn_id: u64) -> TurnCommand {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut argv = match h {
        // `claude -p` is print (headless) mode; `--continue` loads the most recent
        // conversation of this directory.
        Harness::Claude => {
            let mut a = s(&["claude", "--dangerously-skip-permissions"]);
            if continuing {
                a.push("--continue".into());
            }
            a.push("-p".into());
            a
        }
        // `codex exec` is the non-interactive mode, `codex exec resume --last` continues the
        // most recent session. Codex's own sandbox cannot nest inside ours: bypass it. Its
        // non-essential traffic is off: the curated-plugins sync (github.com, api.github.com)
        // and the analytics metrics export (ab.chatgpt.com), each turn a `blocked` event else.
        Harness::Codex => {
            let mut a = s(&["codex"]);
            for c in CODEX_QUIET {
                a.extend(["-c".to_string(), c.to_string()]);
            }
            a.push("exec".into());
            if continuing {
                a.extend(s(&["resume", "--last"]));
            }
            a.extend(s(&[
                "--dangerously-bypass-approvals-and-sandbox",
                "--skip-git-repo-check",
            ]));
            a
        }
        // `gemini -p` is headless mode, `--yolo` approves every tool call, `--skip-trust`
        // trusts /workspace, `--resume latest` continues the most recent session of this project.
        Harness::Gemini => {
            let mut a = s(&["gemini", "--yolo", "--skip-trust"]);
            if continuing {
                a.extend(s(&["--resume", "latest"]));
            }
            a.push("-p".into());
            a
        }
        // Anything else: the prompt is the last argument (and $AIRLOCK_PROMPT).
        Harness::Command(argv) => argv.clone(),
    };
    argv.push(compose_prompt(prompt));
    let mut env = vec![
        ("AIRLOCK_TURN_ID".to_string(), turn_id.to_string()),
        (
            "AIRLOCK_CONTINUE".to_string(),
            if continuing { "1" } else { "0" }.to_string(),
        ),
        ("AIRLOCK_PROMPT".to_string(), prompt.to_string()),
        ("AIRLOCK_DIRECTIVE".to_string(), directive()),
    ];
    match h {
        Harness::Claude => {
            // No telemetry or update checks: they would only show up as blocked domains.
            env.push((
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(),
                "1".into(),
            ));
            env.push(("DISABLE_AUTOUPDATER".into(), "1".into()));
        }
        Harness::Gemini => {
            env.push(("GEMINI_CLI_NO_RELAUNCH".into(), "true".into()));
        }
        Harness::Codex | Harness::Command(_) => {}
    }
    TurnCommand { argv, env }
}

/// Codex settings (`-c key=value`) that switch off traffic a sandboxed turn does not need.
pub const CODEX_QUIET: &[&str] = &["features.plugins=false", "analytics.enabled=false"];

/// A settings file the runner seeds under `$HOME` before a turn when there is none (one the
/// user placed, e.g. with `home_files`, is left alone): Gemini CLI's user settings with usage
/// statistics off — they go to play.googleapis.com, each turn a `blocked` event else (Gemini CLI
/// reads that switch from settings only).
pub fn seed_settings(h: &Harness) -> Option<(&'static str, &'static str)> {
    match h {
        Harness::Gemini => Some((
            ".gemini/settings.json",
            "{\"privacy\": {\"usageStatisticsEnabled\": false}}\n",
        )),
        _ => None,
    }
}

/// Domains the harness's API needs (added to the sandbox's allowlist in filtered mode).
pub fn default_domains(h: &Harness) -> &'static [&'static str] {
    match h {
        Harness::Claude => &["api.anthropic.com"],
        Harness::Codex => &["api.openai.com", "chatgpt.com", "auth.openai.com"],
        Harness::Gemini => &[
            "generativelanguage.googleapis.com",
            "cloudcode-pa.googleapis.com",
            "oauth2.googleapis.com",
        ],
        Harness::Command(_) => &[],
    }
}

/// The variables the harness reads its credentials from, inside the sandbox. The user says
/// where each value comes from on the host, e.g.
/// `[secrets] CLAUDE_CODE_OAUTH_TOKEN = { from_env = "HARNESS_OAUTH_TOKEN" }`.
pub fn credential_vars(h: &Harness) -> &'static [&'static str] {
    match h {
        Harness::Claude => &["CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_API_KEY"],
        Harness::Codex => &["OPENAI_API_KEY", "CODEX_API_KEY"],
        Harness::Gemini => &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
        Harness::Command(_) => &[],
    }
}

/// How the harness's API key is injected when the user names it without `inject`: the
/// sandbox holds a placeholder and the egress proxy puts the key into requests to the API
/// (`docs/design/secrets.md`). OAuth tokens are not injected by default: see there.
pub fn default_inject(h: &Harness, var: &str) -> Option<crate::config::Inject> {
    let (host, header, bearer) = match (h, var) {
        (Harness::Claude, "ANTHROPIC_API_KEY") => ("api.anthropic.com", Some("x-api-key"), false),
        (Harness::Codex, "OPENAI_API_KEY" | "CODEX_API_KEY") => ("api.openai.com", None, true),
        (Harness::Gemini, "GEMINI_API_KEY" | "GOOGLE_API_KEY") => (
            "generativelanguage.googleapis.com",
            Some("x-goog-api-key"),
            false,
        ),
        _ => return None,
    };
    Some(crate::config::Inject {
        hosts: vec![host.to_string()],
        header: header.map(str::to_string),
        bearer,
        basic: false,
        query: None,
    })
}

/// The short name shown in listings and the runner's hello.
pub fn harness_name(h: &Harness) -> String {
    match h {
        Harness::Command(argv) => format!(
            "command:{}",
            argv.first().map(String::as_str).unwrap_or("?")
        ),
        named => named.to_string(),
    }
}

/// The directive appended to every prompt: how to report, and that done/blocked end the turn.
pub fn directive() -> String {
    format!(
        "You are working inside an airlock sandbox, in a git repository on your own branch. \
Report to the user with the command {REPORT_TOOL} (also on PATH as `report`):\n\
  {REPORT_TOOL} working \"what you are doing\"   progress, any number of times\n\
  {REPORT_TOOL} info \"something to know\"       a note for the user\n\
  {REPORT_TOOL} done \"summary of the result\"   the task is finished: commit your work first\n\
  {REPORT_TOOL} blocked \"what you need\"        you cannot go on without the user (a \
decision, access, a denied network domain)\n\
`done` and `blocked` end your turn: finish with exactly one of them, as your last action."
    )
}

/// The prompt as the harness receives it: the user's text and the directive.
pub fn compose_prompt(text: &str) -> String {
    format!("{text}\n\n---\n{}", directive())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    /// The argv without its last argument, which must be the composed prompt.
    fn head(c: TurnCommand) -> Vec<String> {
        let mut argv = c.argv;
        assert_eq!(argv.pop(), Some(compose_prompt("P")));
        argv
    }

    #[test]
    fn claude_first_and_continued_turns() {
        assert_eq!(
            head(turn_command(&Harness::Claude, "P", false, 1)),
            v(&["claude", "--dangerously-skip-permissions", "-p"])
        );
        assert_eq!(
            head(turn_command(&Harness::Claude, "P", true, 2)),
            v(&[
                "claude",
                "--dangerously-skip-permissions",
                "--continue",
                "-p"
            ])
        );
    }

    #[test]
    fn codex_first_and_continued_turns() {
        assert_eq!(
            head(turn_command(&Harness::Codex, "P", false, 1)),
            v(&[
                "codex",
                "-c",
                "features.plugins=false",
                "-c",
                "analytics.enabled=false",
                "exec",
                "--dangerously-bypass-approvals-and-sandbox",
                "--skip-git-repo-check"
            ])
        );
        assert_eq!(
            head(turn_command(&Harness::Codex, "P", true, 2)),
            v(&[
                "codex",
                "-c",
                "features.plugins=false",
                "-c",
                "analytics.enabled=false",
                "exec",
                "resume",
                "--last",
                "--dangerously-bypass-approvals-and-sandbox",
                "--skip-git-repo-check"
            ])
        );
    }

    #[test]
    fn gemini_first_and_continued_turns() {
        assert_eq!(
            head(turn_command(&Harness::Gemini, "P", false, 1)),
            v(&["gemini", "--yolo", "--skip-trust", "-p"])
        );
        assert_eq!(
            head(turn_command(&Harness::Gemini, "P", true, 2)),
            v(&[
                "gemini",
                "--yolo",
                "--skip-trust",
                "--resume",
                "latest",
                "-p"
            ])
        );
    }

    #[test]
    fn command_gets_the_prompt_last_and_in_the_environment() {
        let h = Harness::Command(v(&["my-agent", "--yes"]));
        let c = turn_command(&h, "do it", true, 7);
        assert_eq!(c.argv, v(&["my-agent", "--yes", &compose_prompt("do it")]));
        assert_eq!(
            c.env,
            vec![
                ("AIRLOCK_TURN_ID".into(), "7".into()),
                ("AIRLOCK_CONTINUE".into(), "1".into()),
                ("AIRLOCK_PROMPT".into(), "do it".into()),
                ("AIRLOCK_DIRECTIVE".into(), directive()),
            ]
        );
    }

    #[test]
    fn composed_prompt_explains_reporting() {
        let p = compose_prompt("fix the tests");
        assert!(p.starts_with("fix the tests\n\n---\n"));
        assert!(p.ends_with(&directive()));
        assert!(
            directive().contains("/run/airlock/bin/report done"),
            "the directive names the tool by absolute path: {}",
            directive()
        );
        for s in [
            "report done",
            "report blocked",
            "report working",
            "report info",
        ] {
            assert!(p.contains(s), "{s}");
        }
    }

    #[test]
    fn defaults_per_harness() {
        assert_eq!(default_domains(&Harness::Claude), &["api.anthropic.com"]);
        assert!(credential_vars(&Harness::Claude).contains(&"CLAUDE_CODE_OAUTH_TOKEN"));
        assert!(credential_vars(&Harness::Codex).contains(&"OPENAI_API_KEY"));
        assert!(credential_vars(&Harness::Gemini).contains(&"GEMINI_API_KEY"));
        assert!(default_domains(&Harness::Command(vec![])).is_empty());
        // API keys are injected into their API's requests by default, on a host the adapter
        // allows; OAuth tokens and other harnesses' keys are not.
        for (h, var) in [
            (Harness::Claude, "ANTHROPIC_API_KEY"),
            (Harness::Codex, "OPENAI_API_KEY"),
            (Harness::Gemini, "GEMINI_API_KEY"),
        ] {
            let i = default_inject(&h, var).unwrap();
            assert!(i.place().is_ok());
            assert!(i
                .hosts
                .iter()
                .all(|x| default_domains(&h).contains(&x.as_str())));
        }
        assert!(default_inject(&Harness::Claude, "CLAUDE_CODE_OAUTH_TOKEN").is_none());
        assert!(default_inject(&Harness::Codex, "ANTHROPIC_API_KEY").is_none());
        assert!(default_inject(&Harness::Command(vec![]), "ANTHROPIC_API_KEY").is_none());
        let (rel, json) = seed_settings(&Harness::Gemini).expect("gemini settings");
        assert_eq!(rel, ".gemini/settings.json");
        let v: serde_json::Value = serde_json::from_str(json).expect("settings are JSON");
        assert_eq!(v["privacy"]["usageStatisticsEnabled"], false);
        assert!(seed_settings(&Harness::Claude).is_none());
    }
}
