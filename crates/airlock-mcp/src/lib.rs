//! `airlock mcp`: the Model Context Protocol over stdio (rmcp), so other agents can use
//! sandboxes as tools. Every tool makes its arguments an `Action` and renders its answer or its
//! `ActionError`: the engine's own actions (list, status, diff, fetch) go through its API, the
//! ones that create, enter or change sandboxes run in the typed child (`runner`: this binary's
//! `airlock __action`, the action as JSON on its stdin), and `policy_explain` calls the
//! planner and the policy code in-process (pure, nothing to isolate). stdout belongs to the
//! protocol: nothing else here writes to it.

mod agent;
mod args;
pub mod b64;
mod bounded;
mod call;
pub mod explain;
pub mod paths;
mod runner;
mod tools;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    Implementation, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ServerHandler, ServiceExt};
use std::sync::Arc;

/// How a new sandbox's policy options become a spec (configuration + options, as `airlock run`
/// resolves them); supplied by the binary, which owns the configuration resolution.
pub type SpecBuilder = Arc<
    dyn Fn(&airlock_engine::action::PolicyOptions) -> Result<airlock_model::spec::RunSpec, String>
        + Send
        + Sync,
>;

/// How the server was started (host-side flags: nothing a tool call can change).
#[derive(Clone)]
pub struct Options {
    /// Let tool calls ask for the permissive profile or a writable workspace bind.
    pub allow_permissive: bool,
    /// For `policy_explain` of a new sandbox.
    pub spec_builder: SpecBuilder,
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("MCP initialization: {0}")]
    Init(String),
    #[error("the MCP session failed: {0}")]
    Session(String),
}

/// The server: its options and, when it runs confined (inside a sandbox), why.
#[derive(Clone)]
pub struct Server {
    opts: Arc<Options>,
    confined: Option<Arc<str>>,
}

pub fn serve(opts: Options) -> Result<(), ServeError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let server = Server {
        opts: Arc::new(opts),
        confined: confinement().map(Arc::from),
    };
    rt.block_on(async move {
        let running = server
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| ServeError::Init(e.to_string()))?;
        running
            .waiting()
            .await
            .map_err(|e| ServeError::Session(e.to_string()))?;
        Ok::<_, ServeError>(())
    })?;
    // Tool children still running are killed on drop; stdin stays blocked otherwise.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}

/// Why this process looks confined by a sandbox (no_new_privs, a seccomp filter, and no
/// capabilities or a non-initial user namespace), or `None` on the host. Nothing inside a
/// sandbox can clear these.
fn confinement() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
    };
    let nnp = field("NoNewPrivs:").as_deref() == Some("1");
    let seccomp = field("Seccomp:").as_deref() == Some("2");
    let no_caps = field("CapBnd:").is_some_and(|v| v.trim_start_matches('0').is_empty());
    let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let nested = uid_map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"];
    (nnp && seccomp && (no_caps || nested)).then(|| {
        "this airlock mcp runs confined (no_new_privs, a seccomp filter, no capabilities): it \
         looks like it is inside a sandbox, and nothing inside a sandbox may create, start or \
         change sandboxes; run `airlock mcp` on the host"
            .to_string()
    })
}

/// A tool error the model reads (`isError: true`), never a protocol error.
pub(crate) fn tool_error(msg: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(msg.into())])
}

/// A successful result: text for the model and the same facts as structured JSON.
pub(crate) fn tool_ok(text: impl Into<String>, structured: serde_json::Value) -> CallToolResult {
    let mut r = CallToolResult::success(vec![ContentBlock::text(text.into())]);
    r.structured_content = Some(structured);
    r
}

impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("airlock", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "airlock runs commands and coding agents in disposable, network-restricted Linux \
                 sandboxes. sandbox_run for a one-off command; sandbox_create + sandbox_exec + \
                 sandbox_file_* for a lasting one; agent_* for an agent working on its own \
                 branch; policy_explain says why something was denied and what would allow it.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools::list()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        let Some(def) = tools::find(&name) else {
            return Err(ErrorData::invalid_params(
                format!(
                    "unknown tool {name:?}; the tools are: {}",
                    tools::names().join(", ")
                ),
                None,
            ));
        };
        if let (Some(why), false) = (&self.confined, def.read_only) {
            return Ok(tool_error(format!("{name}: refused: {why}")).into());
        }
        let args = serde_json::Value::Object(request.arguments.unwrap_or_default());
        let call = call::Call {
            opts: self.opts.clone(),
            context,
        };
        // Every tool bounds its own work; this is the last line against a hung server.
        let limit = std::time::Duration::from_secs(def.max_secs + 30);
        let result = match tokio::time::timeout(limit, (def.run)(call, args)).await {
            Ok(r) => r,
            Err(_) => tool_error(format!("{name}: gave up after {}s", limit.as_secs())),
        };
        Ok(result.into())
    }
}
