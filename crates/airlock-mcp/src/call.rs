//! What every tool handler shares: the call (its options, cancellation, running this binary's
//! CLI as a child), argument parsing and the checks on names and policies. A leaf of the
//! server: the tools (tools.rs, agent.rs, explain.rs) build on it.

use super::args::{Policy, ProfileArg, WorkspaceArg};
use super::runner::{self, Job, Output};
use super::{tool_error, Options};
use rmcp::model::{CallToolResult, ProgressNotificationParam};
use rmcp::service::{RequestContext, RoleServer};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// What a handler gets besides its arguments.
pub struct Call {
    pub opts: Arc<Options>,
    pub context: RequestContext<RoleServer>,
}

impl Call {
    /// Resolves when the client cancels this call.
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        self.context.ct.clone().cancelled_owned()
    }

    /// Run `airlock ARGS…` for this call.
    pub async fn airlock(
        &self,
        args: Vec<String>,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
        limit: usize,
    ) -> Result<Output, CallToolResult> {
        self.airlock_streamed(args, stdin, timeout, limit, false)
            .await
    }

    /// Like `airlock`; with `progress`, and when the client asked for progress (a progress
    /// token), each stdout line is also sent as a progress notification as it arrives.
    pub async fn airlock_streamed(
        &self,
        args: Vec<String>,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
        limit: usize,
        progress: bool,
    ) -> Result<Output, CallToolResult> {
        let token = progress
            .then(|| self.context.meta.get_progress_token())
            .flatten();
        let (lines, forward) = match token {
            Some(token) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
                let peer = self.context.peer.clone();
                let forward = tokio::spawn(async move {
                    let mut n = 0.0;
                    while let Some(line) = rx.recv().await {
                        n += 1.0;
                        let mut p = ProgressNotificationParam::new(token.clone(), n);
                        p.message = Some(line);
                        let _ = peer.notify_progress(p).await;
                    }
                });
                (Some(tx), Some(forward))
            }
            None => (None, None),
        };
        let job = Job {
            args: args.into_iter().map(Into::into).collect(),
            stdin,
            timeout,
            limit,
            lines,
        };
        let out = runner::run(job, self.cancelled()).await;
        if let Some(f) = forward {
            let _ = f.await;
        }
        out.map_err(|e| tool_error(format!("could not run airlock: {e}")))
    }
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

/// The CLI flags for a policy, refusing what this server does not allow.
pub fn policy_flags(p: &Policy, opts: &Options) -> Result<Vec<String>, CallToolResult> {
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
    let mut f = Vec::new();
    if let Some(v) = p.compatibility_mode {
        f.push(format!("--compatibility-mode={}", v.as_str()));
    }
    if let Some(v) = p.profile {
        f.push(format!("--profile={}", v.as_str()));
    }
    if let Some(v) = p.network {
        f.push(format!("--net={}", v.as_str()));
    }
    for d in &p.allow_domains {
        if d.is_empty() || d.contains(|c: char| c.is_whitespace() || c == '\0') {
            return Err(tool_error(format!("invalid domain {d:?} in allow_domains")));
        }
        f.push(format!("--allow={d}"));
    }
    if let Some(v) = p.workspace {
        f.push(format!("--workspace={}", v.as_str()));
    }
    if let Some(v) = &p.memory {
        f.push(format!("--memory={v}"));
    }
    if let Some(v) = &p.cpus {
        f.push(format!("--cpus={v}"));
    }
    if let Some(v) = p.pids {
        f.push(format!("--pids={v}"));
    }
    Ok(f)
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
