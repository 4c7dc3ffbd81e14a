//! What every tool handler shares: the call (its options, cancellation, carrying out an
//! [`Action`] in the typed child or through the engine), argument parsing, the checks on names
//! and policies, and how an [`ActionError`] reads as a tool's error. A leaf of the server: the
//! tools (tools.rs, agent.rs, explain.rs) build on it.

use super::args::{Policy, ProfileArg, WorkspaceArg};
use super::runner::{self, Ended, Job};
use super::{tool_error, Options};
use airlock_engine::action::{Action, ActionData, ActionError, PolicyOptions};
use rmcp::model::{CallToolResult, ProgressNotificationParam};
use rmcp::service::{RequestContext, RoleServer};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// What a handler gets besides its arguments.
pub struct Call {
    pub opts: Arc<Options>,
    pub context: RequestContext<RoleServer>,
}

/// What a streamed action's events become: each is taken in, and the lines it gives are sent
/// as progress notifications (when the call asked for progress).
pub trait Events: Send + 'static {
    fn event(&mut self, event: Value) -> Vec<String>;
}

/// No events expected.
impl Events for () {
    fn event(&mut self, _: Value) -> Vec<String> {
        Vec::new()
    }
}

impl Call {
    /// Resolves when the client cancels this call.
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        self.context.ct.clone().cancelled_owned()
    }

    /// Carry out `action` in the typed child (`airlock __action`): how it ended, and `events`
    /// after every event went through it. With `progress`, and when the client asked for
    /// progress (a progress token), the lines `events` gives are sent as progress
    /// notifications as they come.
    pub async fn act<E: Events>(
        &self,
        tool: &str,
        action: Action,
        timeout: Duration,
        limit: usize,
        progress: bool,
        mut events: E,
    ) -> Result<(Ended, E), CallToolResult> {
        let token = progress
            .then(|| self.context.meta.get_progress_token())
            .flatten();
        let peer = self.context.peer.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
        let forward = tokio::spawn(async move {
            let mut n = 0.0;
            while let Some(event) = rx.recv().await {
                for line in events.event(event) {
                    let Some(token) = &token else { continue };
                    n += 1.0;
                    let mut p = ProgressNotificationParam::new(token.clone(), n);
                    p.message = Some(line);
                    let _ = peer.notify_progress(p).await;
                }
            }
            events
        });
        let job = Job {
            action,
            timeout,
            limit,
            events: Some(tx),
        };
        let ended = runner::act(job, self.cancelled()).await;
        let events = forward
            .await
            .map_err(|e| tool_error(format!("{tool}: internal: {e}")))?;
        let ended = ended.map_err(|e| tool_error(format!("{tool}: could not run airlock: {e}")))?;
        Ok((ended, events))
    }

    /// Carry out an action that does not stream in the typed child: its data, or why not as
    /// the tool's error.
    pub async fn child(
        &self,
        tool: &str,
        action: Action,
        timeout: Duration,
        limit: usize,
    ) -> Result<ActionData, CallToolResult> {
        let secs = timeout.as_secs();
        match self.act(tool, action, timeout, limit, false, ()).await?.0 {
            Ended::Answer(Ok(data)) => Ok(data),
            Ended::Answer(Err(e)) => Err(action_failed(tool, &e)),
            Ended::TimedOut => Err(tool_error(format!(
                "{tool}: did not finish within {secs}s; stopped"
            ))),
            Ended::Cancelled => Err(tool_error(format!("{tool}: cancelled"))),
        }
    }

    /// Carry out one of the engine's own actions (list, status, diff, fetch) through its API
    /// (the engine started if none serves): its data, or its error as the tool's error.
    pub async fn engine(
        &self,
        tool: &str,
        action: Action,
        timeout: Duration,
    ) -> Result<ActionData, CallToolResult> {
        let work = tokio::task::spawn_blocking(move || engine_act(&action));
        let cancelled = self.cancelled();
        let secs = timeout.as_secs();
        let answer = tokio::select! {
            r = tokio::time::timeout(timeout, work) => match r {
                Ok(Ok(a)) => a,
                Ok(Err(e)) => Err(ActionError::new("internal", e.to_string())),
                Err(_) => Err(ActionError::new(
                    "timeout",
                    format!("did not finish within {secs}s"),
                )),
            },
            () = cancelled => return Err(tool_error(format!("{tool}: cancelled"))),
        };
        answer.map_err(|e| action_failed(tool, &e))
    }
}

/// One action through this user's engine, as the CLI's client sends it.
fn engine_act(action: &Action) -> Result<ActionData, ActionError> {
    use airlock_engine::client::{Client, ClientError};
    let to_action_error = |e: ClientError| match e {
        ClientError::Api {
            kind,
            error,
            hint,
            code,
            detail,
            ..
        } => ActionError {
            kind,
            code,
            message: error,
            hint,
            detail: detail.map(|d| *d),
        },
        other => {
            let e = ActionError::new("unavailable", other.to_string());
            match other.hint() {
                Some(h) => e.with_hint(h),
                None => e,
            }
        }
    };
    let exe = std::env::current_exe()
        .map_err(|e| ActionError::new("internal", format!("this program: {e}")))?;
    let client = Client::connect_or_start(&exe).map_err(to_action_error)?;
    client.act(action).map_err(to_action_error)
}

/// An [`ActionError`] as the tool's error: its message and hint for the model to read, the
/// error itself (kind, code, message, hint) as structured content.
pub fn action_failed(tool: &str, e: &ActionError) -> CallToolResult {
    let message = if e.kind == "refused" && !e.message.starts_with("refused") {
        format!("refused: {}", e.message)
    } else {
        e.message.clone()
    };
    let mut text = format!("{tool}: {message}");
    if let Some(hint) = &e.hint {
        text.push_str(&format!("\nhint: {hint}"));
    }
    text.push_str(&format!("\n({}, airlock exit code {})", e.kind, e.code));
    let mut r = tool_error(text);
    r.structured_content = Some(json!({ "error": e }));
    r
}

/// Parse a tool's arguments; a mismatch is a tool error naming what is wrong.
pub fn parse<T: DeserializeOwned>(tool: &str, v: Value) -> Result<T, CallToolResult> {
    serde_json::from_value(v).map_err(|e| {
        tool_error(format!(
            "invalid arguments for {tool}: {e} (see the tool's inputSchema)"
        ))
    })
}

pub fn check_name(name: &str) -> Result<(), CallToolResult> {
    airlock_model::spec::validate_name(name)
        .map_err(|e| tool_error(format!("invalid sandbox name {name:?}: {e}")))
}

/// A policy as an action's options, refusing what this server does not allow.
pub fn policy(p: &Policy, opts: &Options) -> Result<PolicyOptions, CallToolResult> {
    let wider =
        p.profile == Some(ProfileArg::Permissive) || p.workspace == Some(WorkspaceArg::Bind);
    if wider && !opts.allow_permissive {
        return Err(tool_error(
            "refused: the permissive profile and a writable workspace bind let the sandbox write \
             the host's project directory and see the server's environment; this server was \
             not started with `airlock mcp --allow-permissive`. Use profile moderate or \
             restrictive (workspace overlay: copy-on-write, host untouched)",
        ));
    }
    for d in &p.allow_domains {
        if d.is_empty() || d.contains(|c: char| c.is_whitespace() || c == '\0') {
            return Err(tool_error(format!("invalid domain {d:?} in allow_domains")));
        }
    }
    Ok(PolicyOptions {
        profile: p.profile.map(|v| v.as_str().to_owned()),
        net: p.network.map(|v| v.as_str().to_owned()),
        allow: p.allow_domains.clone(),
        workspace: p.workspace.map(|v| v.as_str().to_owned()),
        compatibility_mode: p.compatibility_mode.map(|v| v.as_str().to_owned()),
        image: None,
        backend: None,
        memory: p.memory.clone(),
        cpus: p.cpus.clone(),
        pids: p.pids,
    })
}

/// The server's project directory (where it was started): the project of a new sandbox.
pub fn project_dir() -> Result<String, CallToolResult> {
    let dir =
        std::env::current_dir().map_err(|e| tool_error(format!("the server's directory: {e}")))?;
    dir.to_str()
        .map(str::to_owned)
        .ok_or_else(|| tool_error(format!("{}: not UTF-8", dir.display())))
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return e,
        }
    };
}
pub(crate) use tri;
