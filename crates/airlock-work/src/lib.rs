//! Workspaces in, work out (SPEC §7): the clone a sandbox gets, and the review-gated ways its
//! work comes back (diff, fetch, sync) or host work goes in (deliver); what a bind-mode sandbox
//! leaves in the host's checkout (`wayback`); and the user's trust in a project's configuration
//! (`trust`). Everything here runs on the host and treats what the sandbox wrote as hostile
//! data; nothing here renders output (the binary does).

pub mod clone;
pub mod gate;
pub mod git;
pub mod home_files;
pub mod ops;
pub mod prepare;
pub mod pull;
pub mod review;
pub mod sync;
pub mod trust;
pub mod wayback;
