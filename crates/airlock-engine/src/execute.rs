//! The engine's one dispatch: [`Engine::execute`] carries out an [`Action`] (the HTTP routes and
//! `POST /v1/actions` come here); the action types are in `action`.

use crate::action::*;
use crate::backend::Secrets;
use crate::engine::{Engine, EngineError};
use airlock_work::ops::SyncOptions;
use std::time::Duration;

impl Engine {
    /// Carry out one action: the engine's one dispatch (the HTTP routes and `POST /v1/actions`
    /// come here).
    pub fn execute(&self, action: Action) -> Result<ActionData, EngineError> {
        Ok(match action {
            Action::Create { name, spec } => {
                let spec = serde_json::Value::Object(spec).to_string();
                ActionData::Record(self.create(&name, &spec)?)
            }
            Action::Start { name, secrets } => {
                let secrets = Secrets(secrets.unwrap_or_default().into_iter().collect());
                ActionData::Record(self.start_with(&name, &secrets)?)
            }
            Action::Stop { name, grace_ms } => {
                let grace = match grace_ms {
                    None => crate::engine::DEFAULT_GRACE,
                    // A deadline that far away overflows the clock (and would panic).
                    Some(ms) if ms > MAX_GRACE_MS => {
                        return Err(EngineError::BadRequest(format!(
                            "grace_ms must be at most {MAX_GRACE_MS}"
                        )))
                    }
                    Some(ms) => Duration::from_millis(ms),
                };
                ActionData::Record(self.stop(&name, grace)?)
            }
            Action::Remove { name, force } => {
                self.rm(&name, force)?;
                ActionData::Removed(name)
            }
            Action::List => ActionData::Records(self.list()?),
            Action::Status { name } => ActionData::Status(self.status(&name)?),
            Action::Gc => ActionData::Reconciled(self.reconcile()?),
            Action::Diff { name, patch } => ActionData::Diff(self.diff(&name, patch)?),
            Action::Fetch {
                name,
                accept,
                force,
            } => ActionData::Fetched(self.fetch(&name, accept, force)?),
            Action::Sync {
                name,
                dry_run,
                artifacts,
                accept,
            } => ActionData::Synced(self.sync(
                &name,
                SyncOptions {
                    dry_run,
                    artifacts,
                    accept,
                },
            )?),
            Action::Allow {
                name,
                domain,
                port,
                via,
            } => {
                let port = match port {
                    None => None,
                    Some(p) => Some(u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
                        EngineError::BadRequest(format!("port {p}: must be 1-65535"))
                    })?),
                };
                ActionData::Policy(self.change_policy(
                    &name,
                    crate::live_policy::Edit::Allow { domain, port },
                    via,
                )?)
            }
            Action::Deny { name, domain, via } => ActionData::Policy(self.change_policy(
                &name,
                crate::live_policy::Edit::Deny { domain },
                via,
            )?),
            Action::FileRead { .. }
            | Action::FileWrite { .. }
            | Action::Copy { .. }
            | Action::Deliver { .. }
            | Action::Trust { .. }
            | Action::Explain { .. }
            | Action::Up(_) => return self.in_child(&action),
            Action::Prompt { .. }
            | Action::Reports { .. }
            | Action::Run(_)
            | Action::Exec { .. } => {
                return Err(EngineError::BadRequest(
                    "run, exec, prompt and reports stream: POST /v1/actions, POST /v1/run, \
                     POST /v1/sandboxes/{name}/exec, POST /v1/sandboxes/{name}/prompt, \
                     GET /v1/sandboxes/{name}/reports"
                        .into(),
                ))
            }
        })
    }

    /// Carries out `action` in a typed child process (the backend's; see [`run_child`]).
    /// The sandbox it names must exist (and its name be valid) before anything starts.
    fn in_child(&self, action: &Action) -> Result<ActionData, EngineError> {
        let name = match action {
            Action::FileRead { name, .. }
            | Action::FileWrite { name, .. }
            | Action::Copy { name, .. }
            | Action::Deliver { name, .. } => Some(name),
            Action::Explain { sandbox, .. } => Some(sandbox),
            _ => None,
        };
        if let Some(name) = name {
            self.get_record(name)?;
        }
        let bad = |m: String| Err(EngineError::BadRequest(m));
        match action {
            Action::FileRead {
                offset: Some(o), ..
            } if *o > MAX_OFFSET => return bad(format!("offset must be at most {MAX_OFFSET}")),
            Action::FileRead {
                max_bytes: Some(m), ..
            } if !(1..=MAX_READ).contains(m) => {
                return bad(format!("max_bytes must be 1-{MAX_READ}"))
            }
            Action::Explain { port: Some(p), .. } if !(1..=65535).contains(p) => {
                return bad("port must be 1-65535".into())
            }
            Action::Up(r) => {
                airlock_model::spec::validate_name(&r.name)
                    .map_err(|e| EngineError::InvalidName(e.to_string()))?;
                if !r.dir.starts_with('/') {
                    return bad(format!("dir must be an absolute path, not {:?}", r.dir));
                }
            }
            _ => {}
        }
        self.child_action(action)
    }
}

#[cfg(test)]
mod tests {
    use crate::action::ActionError;
    use crate::backend::BackendError;
    use crate::engine::EngineError;
    use airlock_model::exit;

    /// The engine's errors answer with their kind's code and status — the table is the one
    /// mapping; the exceptions are a backend that cannot work on this host (`backend` as 503,
    /// code 123) and the work operations' internal failures (code 125).
    #[test]
    fn engine_errors_follow_the_table() {
        use airlock_model::lifecycle::{Refused, SandboxState};
        let io = || std::io::Error::other("x");
        let errors = vec![
            EngineError::InvalidName("x".into()),
            EngineError::BadRequest("x".into()),
            EngineError::BadSpec("x".into()),
            EngineError::NotFound("x".into()),
            EngineError::Exists("x".into()),
            EngineError::Refused(Refused::Busy {
                name: "x".into(),
                state: SandboxState::Starting,
            }),
            EngineError::Conflict {
                name: "x".into(),
                op: "start",
                actual: "running".into(),
            },
            EngineError::Backend {
                op: "start",
                name: "x".into(),
                source: BackendError::Failed("x".into()),
            },
            EngineError::Backend {
                op: "start",
                name: "x".into(),
                source: BackendError::Refused {
                    why: "x".into(),
                    hint: Some("h".into()),
                },
            },
            EngineError::Damaged {
                name: "x".into(),
                dir: "/x".into(),
                detail: "x".into(),
            },
            EngineError::Io {
                what: "x",
                path: "/x".into(),
                source: io(),
            },
            EngineError::Action(ActionError::new("refused", "x")),
        ];
        for e in &errors {
            let a = e.action_error();
            assert_eq!(
                (a.code, a.http_status()),
                (e.exit_code(), e.http_status()),
                "{e:?}"
            );
        }
        let unavailable = EngineError::Backend {
            op: "start",
            name: "x".into(),
            source: BackendError::Unavailable("x".into()),
        };
        assert_eq!(
            (
                unavailable.kind(),
                unavailable.exit_code(),
                unavailable.http_status()
            ),
            ("backend", exit::BACKEND_UNAVAILABLE, 503)
        );
        // A start its sandbox's own checks refused: the policy refusal's kind, code and
        // status, with the supervisor's hint.
        let refused = &errors[8];
        assert_eq!(
            (
                refused.kind(),
                refused.exit_code(),
                refused.http_status(),
                refused.hint()
            ),
            ("refused", exit::POLICY_REFUSED, 403, Some("h".into()))
        );
    }
}
