//! `airlock gc`: reclaim run directories and cgroups left by airlock processes that died.

use crate::error::CliResult;
use airlock_sandbox::cgroup::Layout;
use airlock_sandbox::container::rundir;

pub fn gc(json: bool) -> CliResult<i32> {
    let state = rundir::state_dir();
    let reclaimed = rundir::gc(&state, &Layout::detect());
    if json {
        println!("{}", serde_json::json!({ "reclaimed": reclaimed }));
    } else if reclaimed.is_empty() {
        println!("nothing to reclaim");
    } else {
        println!(
            "reclaimed {} leftover sandbox(es): {}",
            reclaimed.len(),
            reclaimed.join(", ")
        );
    }
    Ok(0)
}
