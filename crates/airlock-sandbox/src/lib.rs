//! airlock-sandbox: isolation mechanisms behind the [`Backend`] trait.
//! `sys` holds every `unsafe` block; `container` is the namespace backend.

pub mod cgroup;
pub mod container;
pub mod sys;
