//! Workspaces in, work out (SPEC §7): the clone a sandbox gets, and the review-gated ways its
//! work comes back (diff, fetch, sync) or host work goes in (deliver).

pub mod clone;
pub mod gate;
pub mod git;
pub mod home_files;
pub mod review;
pub mod sync;
pub mod wayback;
