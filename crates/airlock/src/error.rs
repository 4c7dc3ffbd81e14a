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
        errln!("airlock: error: {}", self.error);
        for cause in self.error.chain().skip(1) {
            errln!("  caused by: {cause}");
        }
        if let Some(h) = &self.hint {
            errln!("hint: {h}");
        }
    }
}

impl From<airlock_model::config::ConfigError> for CliError {
    fn from(e: airlock_model::config::ConfigError) -> Self {
        CliError::new(exit::USAGE, e)
            .hint("fix the file named above, or run `airlock config` to see the resolved values")
    }
}

impl From<airlock_model::plan::Refusal> for CliError {
    fn from(r: airlock_model::plan::Refusal) -> Self {
        let code = match r {
            airlock_model::plan::Refusal::EmptyCommand
            | airlock_model::plan::Refusal::BadTarget(..) => exit::USAGE,
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
            _ => exit::SANDBOX_FAILED,
        };
        let hint = e.hint();
        CliError::new(code, e).maybe_hint(hint)
    }
}

pub type CliResult<T> = Result<T, CliError>;
