//! Landlock: the command may read and execute everything it can see, and write only beneath
//! the writable roots. Best effort on kernels without Landlock (mount flags still hold);
//! `doctor` reports the ABI.

use landlock::{
    path_beneath_rules, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, RulesetStatus, ABI,
};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    Full,
    Partial,
    NotEnforced,
}

const ABI_USED: ABI = ABI::V6;

/// The ruleset with its rules, not yet enforced: everything readable, `writable` writable.
/// A rule holds the inode its path named when it was added — a mount over that path later
/// hides it — so it is made after the last mount that could land on one of them.
pub struct Prepared(RulesetCreated);

/// [`Prepared`] for `writable`.
pub fn prepare(writable: &[&Path]) -> Result<Prepared, landlock::RulesetError> {
    let read = AccessFs::from_read(ABI_USED);
    let all = AccessFs::from_all(ABI_USED);
    Ok(Prepared(
        Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(all)?
            .create()?
            .add_rules(path_beneath_rules(["/"], read))?
            .add_rules(path_beneath_rules(writable, all))?,
    ))
}

/// Enforce `prepared` on the calling thread (inherited by everything it execs or forks), with
/// `more` writable too.
pub fn restrict_prepared(
    prepared: Prepared,
    more: &[&Path],
) -> Result<Enforcement, landlock::RulesetError> {
    let all = AccessFs::from_all(ABI_USED);
    let status = prepared
        .0
        .add_rules(path_beneath_rules(more, all))?
        .restrict_self()?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Enforcement::Full,
        RulesetStatus::PartiallyEnforced => Enforcement::Partial,
        RulesetStatus::NotEnforced => Enforcement::NotEnforced,
    })
}

/// Restrict the calling thread (inherited by everything it execs or forks).
pub fn restrict(writable: &[&Path]) -> Result<Enforcement, landlock::RulesetError> {
    restrict_prepared(prepare(writable)?, &[])
}
