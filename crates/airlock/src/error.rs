//! Errors at the binary's edge: a cause chain, an optional `hint:`, and the exit code.
//! Every exit code airlock itself chooses is mapped here (see README "Exit codes").

use airlock_model::exit;
use std::fmt;

#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub error: anyhow::Error,
    pub hint: Option<String>,
}

impl CliError {
    pub fn new(code: i32, error: impl Into<anyhow::Error>) -> Self {
        CliError {
            code,
            error: error.into(),
            hint: None,
        }
    }
    pub fn usage(msg: impl fmt::Display) -> Self {
        CliError::new(exit::USAGE, anyhow::anyhow!("{msg}"))
    }
    pub fn hint(mut self, h: impl Into<String>) -> Self {
        self.hint = Some(h.into());
        self
    }
    pub fn maybe_hint(mut self, h: Option<String>) -> Self {
        self.hint = h;
        self
    }

    pub fn print(&self) {
        for line in self.lines() {
            errln!("{line}");
        }
    }

    /// The error, each cause not already part of the message before it, and the hint.
    pub fn lines(&self) -> Vec<String> {
        let mut shown = self.error.to_string();
        let mut lines = vec![format!("airlock: error: {shown}")];
        for cause in self.error.chain().skip(1) {
            let text = cause.to_string();
            if !shown.ends_with(&text) {
                lines.push(format!("  caused by: {text}"));
            }
            shown = text;
        }
        if let Some(h) = &self.hint {
            lines.push(format!("hint: {h}"));
        }
        lines
    }
}

impl From<airlock_model::config::ConfigError> for CliError {
    fn from(e: airlock_model::config::ConfigError) -> Self {
        let hint = match &e {
            airlock_model::config::ConfigError::Read { .. } => format!(
                "config and plugin files are regular TOML files of at most {} MiB",
                airlock_model::userfile::MAX_CONFIG_BYTES >> 20
            ),
            // A flag's value: there is no file to fix.
            e if e
                .location()
                .is_some_and(|l| l.source == airlock_model::config::Source::CommandLine) =>
            {
                "fix that option's value (`airlock COMMAND --help` lists the options and their forms)"
                    .into()
            }
            _ => "fix the file named above, or run `airlock config` to see the resolved values"
                .into(),
        };
        CliError::new(exit::USAGE, e).hint(hint)
    }
}

impl From<airlock_model::plan::Refusal> for CliError {
    fn from(r: airlock_model::plan::Refusal) -> Self {
        let code = match r {
            airlock_model::plan::Refusal::EmptyCommand
            | airlock_model::plan::Refusal::BadTarget(..)
            | airlock_model::plan::Refusal::DiskTooSmall(_) => exit::USAGE,
            airlock_model::plan::Refusal::BackendUnavailable(_)
            | airlock_model::plan::Refusal::MicrovmUnsupported(_)
            | airlock_model::plan::Refusal::MicrovmWritableMount => exit::BACKEND_UNAVAILABLE,
            _ => exit::POLICY_REFUSED,
        };
        let hint = r.hint();
        CliError::new(code, anyhow::anyhow!("refused: {r}")).hint(hint)
    }
}

impl From<airlock_sandbox::container::RunError> for CliError {
    fn from(e: airlock_sandbox::container::RunError) -> Self {
        use airlock_sandbox::container::RunError as E;
        let code = match &e {
            E::Clone(_) | E::IdMap(_) => exit::BACKEND_UNAVAILABLE,
            _ if e.link_refused() => exit::POLICY_REFUSED,
            _ => exit::SANDBOX_FAILED,
        };
        let hint = e.hint();
        CliError::new(code, e).maybe_hint(hint)
    }
}

/// An action's error (from the engine or a typed child) as the CLI ends with it: its exit code
/// and hint as the action gave them.
impl From<airlock_engine::action::ActionError> for CliError {
    fn from(e: airlock_engine::action::ActionError) -> Self {
        let hint = e.hint.clone();
        CliError::new(e.code, anyhow::anyhow!(e.message)).maybe_hint(hint)
    }
}

pub type CliResult<T> = Result<T, CliError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("open the network journal {path}: {source}")]
    struct Journal {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn a_cause_is_printed_once() {
        let e = Journal {
            path: "/x/net.jsonl".into(),
            source: std::io::Error::from_raw_os_error(libc::EACCES),
        };
        let lines = CliError::new(exit::SANDBOX_FAILED, e).hint("h").lines();
        assert_eq!(
            lines,
            [
                "airlock: error: open the network journal /x/net.jsonl: Permission denied (os error 13)",
                "hint: h"
            ]
        );
        let e = anyhow::Error::from(std::io::Error::from_raw_os_error(libc::ENOENT))
            .context("read the plan");
        assert_eq!(
            CliError::new(2, e).lines(),
            [
                "airlock: error: read the plan",
                "  caused by: No such file or directory (os error 2)"
            ]
        );
    }
}
