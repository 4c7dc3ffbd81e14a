//! The lifecycle of a named sandbox, as pure data: its states, what a user may ask of it in
//! each state ([`can`]), and how events move it from state to state ([`next`]).
//!
//! The transitions (see the tables in the tests for every pair):
//! - `creating` → `stopped` when creation finishes, → `failed` if it dies;
//! - `stopped`/`failed` → `starting` → `running` (or → `failed` when the start fails);
//! - `starting`/`running`/`failed` → `stopping` → `stopped`; a sandbox whose work ends by
//!   itself goes straight to `stopped`, one whose supervisor dies to `failed`;
//! - any state → `removing` → gone.
//!
//! `Removing` is recorded *before* anything is torn down, so an engine that dies halfway
//! finds the half-removed sandbox on its next start and finishes the job.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a named sandbox is in its life. Stored as its lowercase name.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    /// Its record exists; its folder and filesystem are being prepared.
    Creating,
    /// Nothing runs; its filesystem is kept.
    Stopped,
    /// Its supervisor is being started.
    Starting,
    /// Its supervisor and PID 1 are alive.
    Running,
    /// It has been asked to stop and has not finished yet.
    Stopping,
    /// It is being torn down; the record goes when that is done.
    Removing,
    /// Creation, start or the running sandbox failed; `last_error` says why.
    Failed,
}

impl SandboxState {
    /// Every state, in declaration order.
    pub const ALL: [SandboxState; 7] = [
        SandboxState::Creating,
        SandboxState::Stopped,
        SandboxState::Starting,
        SandboxState::Running,
        SandboxState::Stopping,
        SandboxState::Removing,
        SandboxState::Failed,
    ];

    /// The lowercase name used in the store, in `--json` output and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Creating => "creating",
            SandboxState::Stopped => "stopped",
            SandboxState::Starting => "starting",
            SandboxState::Running => "running",
            SandboxState::Stopping => "stopping",
            SandboxState::Removing => "removing",
            SandboxState::Failed => "failed",
        }
    }

    /// States in which something is in progress: the user waits, or forces a removal.
    pub fn is_transitional(self) -> bool {
        matches!(
            self,
            SandboxState::Creating
                | SandboxState::Starting
                | SandboxState::Stopping
                | SandboxState::Removing
        )
    }
}

impl fmt::Display for SandboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`SandboxState`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sandbox state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for SandboxState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SandboxState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// What a user (CLI, API, MCP) asks of an existing named sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Start,
    Stop,
    Exec,
    Shell,
    Remove { force: bool },
    Cp,
    Logs,
}

impl Op {
    /// Every operation (both kinds of remove).
    pub const ALL: [Op; 8] = [
        Op::Start,
        Op::Stop,
        Op::Exec,
        Op::Shell,
        Op::Remove { force: false },
        Op::Remove { force: true },
        Op::Cp,
        Op::Logs,
    ];
}

/// Why an operation is refused in the sandbox's current state. Each carries the sandbox name;
/// [`Refused::hint`] says what the user can do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// exec/shell on a sandbox that is not running (stopped or failed).
    #[error("sandbox {name} is {state}")]
    NotRunning { name: String, state: SandboxState },
    /// Something is already in progress (creating, starting, stopping, removing).
    #[error("sandbox {name} is {state}")]
    Busy { name: String, state: SandboxState },
    /// rm without --force of a sandbox that is running.
    #[error("sandbox {name} is running")]
    Running { name: String },
    /// start of a sandbox that is already running.
    #[error("sandbox {name} is already running")]
    AlreadyRunning { name: String },
    /// stop of a sandbox that is already stopped.
    #[error("sandbox {name} is already stopped")]
    AlreadyStopped { name: String },
}

impl Refused {
    /// What to run instead, for the `hint:` line.
    pub fn hint(&self) -> String {
        match self {
            Refused::NotRunning { name, state: SandboxState::Failed } => {
                format!("airlock start {name} (airlock status {name} shows why it failed)")
            }
            Refused::NotRunning { name, .. } => format!("airlock start {name}"),
            Refused::Busy { name, .. } => format!(
                "wait and retry (airlock status {name} shows its state); if it is stuck: airlock rm --force {name}"
            ),
            Refused::Running { name } => {
                format!("airlock stop {name}, or airlock rm --force {name}")
            }
            Refused::AlreadyRunning { name } => {
                format!("airlock exec {name} -- CMD, or airlock shell {name}")
            }
            Refused::AlreadyStopped { name } => {
                format!("airlock start {name}, or airlock rm {name}")
            }
        }
    }
}

/// May `op` be asked of sandbox `name` while it is in `state`?
///
/// `rm --force` is allowed in every state: it is the way out of a stuck creation, start,
/// stop or removal. `cp` works on a stopped or failed sandbox too (its filesystem is kept).
pub fn can(name: &str, state: SandboxState, op: Op) -> Result<(), Refused> {
    use SandboxState as S;
    let name = name.to_owned();
    let busy = |name: String| Err(Refused::Busy { name, state });
    match (op, state) {
        (Op::Remove { force: true }, _) => Ok(()),
        (_, S::Removing) => busy(name),

        (Op::Start, S::Stopped | S::Failed) => Ok(()),
        (Op::Start, S::Running) => Err(Refused::AlreadyRunning { name }),
        (Op::Start, S::Creating | S::Starting | S::Stopping) => busy(name),

        (Op::Stop, S::Starting | S::Running | S::Failed) => Ok(()),
        (Op::Stop, S::Stopped) => Err(Refused::AlreadyStopped { name }),
        (Op::Stop, S::Creating | S::Stopping) => busy(name),

        (Op::Exec | Op::Shell, S::Running) => Ok(()),
        (Op::Exec | Op::Shell, S::Stopped | S::Failed) => Err(Refused::NotRunning { name, state }),
        (Op::Exec | Op::Shell, S::Creating | S::Starting | S::Stopping) => busy(name),

        (Op::Remove { force: false }, S::Stopped | S::Failed) => Ok(()),
        (Op::Remove { force: false }, S::Running) => Err(Refused::Running { name }),
        (Op::Remove { force: false }, S::Creating | S::Starting | S::Stopping) => busy(name),

        (Op::Cp, S::Running | S::Stopped | S::Failed) => Ok(()),
        (Op::Cp, S::Creating | S::Starting | S::Stopping) => busy(name),

        (Op::Logs, _) => Ok(()),
    }
}

/// Something that happened to a sandbox: asked for by a user, or observed by the engine
/// (a supervisor reporting, or reconcile finding it alive or dead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    StartRequested,
    Started,
    StartFailed,
    StopRequested,
    /// Nothing of it runs any more (also: a creation finished, leaving it stopped).
    Stopped,
    /// Its supervisor or PID 1 died unexpectedly.
    Crashed,
    RemoveRequested,
    /// Its teardown finished; the record is deleted.
    Removed,
}

impl Event {
    /// Every event, in declaration order.
    pub const ALL: [Event; 8] = [
        Event::StartRequested,
        Event::Started,
        Event::StartFailed,
        Event::StopRequested,
        Event::Stopped,
        Event::Crashed,
        Event::RemoveRequested,
        Event::Removed,
    ];
}

/// Where an event leaves a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Next {
    /// It is now in this state.
    State(SandboxState),
    /// It no longer exists: delete its record.
    Gone,
}

/// The result of `event` in `state`, or `None` when the event makes no sense there
/// (the engine treats that as a bug or a lost race, never as a state change).
pub fn next(state: SandboxState, event: Event) -> Option<Next> {
    use Event as E;
    use SandboxState as S;
    let to = match (state, event) {
        (_, E::RemoveRequested) => S::Removing,
        (S::Removing, E::Removed) => return Some(Next::Gone),
        (S::Removing, _) => return None,

        (S::Creating, E::Stopped) => S::Stopped,
        (S::Creating, E::Crashed) => S::Failed,

        (S::Stopped | S::Failed, E::StartRequested) => S::Starting,

        (S::Starting, E::Started) => S::Running,
        (S::Starting, E::StartFailed | E::Crashed) => S::Failed,

        (S::Starting | S::Running | S::Failed, E::StopRequested) => S::Stopping,
        (S::Starting | S::Running | S::Stopping, E::Stopped) => S::Stopped,
        (S::Running | S::Stopping, E::Crashed) => S::Failed,

        _ => return None,
    };
    Some(Next::State(to))
}

/// Can some event take a sandbox from `from` to `to`?
pub fn reachable(from: SandboxState, to: SandboxState) -> bool {
    Event::ALL
        .into_iter()
        .any(|event| next(from, event) == Some(Next::State(to)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use SandboxState as S;

    const N: &str = "box";

    fn name() -> String {
        N.to_owned()
    }

    #[test]
    fn state_names_round_trip() {
        let expected = [
            (S::Creating, "creating"),
            (S::Stopped, "stopped"),
            (S::Starting, "starting"),
            (S::Running, "running"),
            (S::Stopping, "stopping"),
            (S::Removing, "removing"),
            (S::Failed, "failed"),
        ];
        assert_eq!(expected.map(|(s, _)| s), S::ALL);
        for (state, text) in expected {
            assert_eq!(state.to_string(), text);
            assert_eq!(text.parse::<S>(), Ok(state));
            assert_eq!(
                serde_json::to_string(&state).expect("serialize"),
                format!("\"{text}\"")
            );
            assert_eq!(
                serde_json::from_str::<S>(&format!("\"{text}\"")).expect("deserialize"),
                state
            );
        }
        assert_eq!("Running".parse::<S>(), Err(UnknownState("Running".into())));
        assert_eq!("".parse::<S>(), Err(UnknownState(String::new())));
    }

    /// Every (state, op) pair with its expected outcome.
    #[test]
    fn can_every_state_and_op() {
        let ok = Ok(());
        let busy = |state| {
            Err(Refused::Busy {
                name: name(),
                state,
            })
        };
        let not_running = |state| {
            Err(Refused::NotRunning {
                name: name(),
                state,
            })
        };
        let already_running = Err(Refused::AlreadyRunning { name: name() });
        let already_stopped = Err(Refused::AlreadyStopped { name: name() });
        let running = Err(Refused::Running { name: name() });
        let rm = Op::Remove { force: false };
        let rm_force = Op::Remove { force: true };

        #[rustfmt::skip]
        let table: Vec<(S, Op, Result<(), Refused>)> = vec![
            (S::Creating, Op::Start, busy(S::Creating)),
            (S::Creating, Op::Stop, busy(S::Creating)),
            (S::Creating, Op::Exec, busy(S::Creating)),
            (S::Creating, Op::Shell, busy(S::Creating)),
            (S::Creating, rm, busy(S::Creating)),
            (S::Creating, rm_force, ok.clone()),
            (S::Creating, Op::Cp, busy(S::Creating)),
            (S::Creating, Op::Logs, ok.clone()),

            (S::Stopped, Op::Start, ok.clone()),
            (S::Stopped, Op::Stop, already_stopped.clone()),
            (S::Stopped, Op::Exec, not_running(S::Stopped)),
            (S::Stopped, Op::Shell, not_running(S::Stopped)),
            (S::Stopped, rm, ok.clone()),
            (S::Stopped, rm_force, ok.clone()),
            (S::Stopped, Op::Cp, ok.clone()),
            (S::Stopped, Op::Logs, ok.clone()),

            (S::Starting, Op::Start, busy(S::Starting)),
            (S::Starting, Op::Stop, ok.clone()),
            (S::Starting, Op::Exec, busy(S::Starting)),
            (S::Starting, Op::Shell, busy(S::Starting)),
            (S::Starting, rm, busy(S::Starting)),
            (S::Starting, rm_force, ok.clone()),
            (S::Starting, Op::Cp, busy(S::Starting)),
            (S::Starting, Op::Logs, ok.clone()),

            (S::Running, Op::Start, already_running.clone()),
            (S::Running, Op::Stop, ok.clone()),
            (S::Running, Op::Exec, ok.clone()),
            (S::Running, Op::Shell, ok.clone()),
            (S::Running, rm, running.clone()),
            (S::Running, rm_force, ok.clone()),
            (S::Running, Op::Cp, ok.clone()),
            (S::Running, Op::Logs, ok.clone()),

            (S::Stopping, Op::Start, busy(S::Stopping)),
            (S::Stopping, Op::Stop, busy(S::Stopping)),
            (S::Stopping, Op::Exec, busy(S::Stopping)),
            (S::Stopping, Op::Shell, busy(S::Stopping)),
            (S::Stopping, rm, busy(S::Stopping)),
            (S::Stopping, rm_force, ok.clone()),
            (S::Stopping, Op::Cp, busy(S::Stopping)),
            (S::Stopping, Op::Logs, ok.clone()),

            (S::Removing, Op::Start, busy(S::Removing)),
            (S::Removing, Op::Stop, busy(S::Removing)),
            (S::Removing, Op::Exec, busy(S::Removing)),
            (S::Removing, Op::Shell, busy(S::Removing)),
            (S::Removing, rm, busy(S::Removing)),
            (S::Removing, rm_force, ok.clone()),
            (S::Removing, Op::Cp, busy(S::Removing)),
            (S::Removing, Op::Logs, busy(S::Removing)),

            (S::Failed, Op::Start, ok.clone()),
            (S::Failed, Op::Stop, ok.clone()),
            (S::Failed, Op::Exec, not_running(S::Failed)),
            (S::Failed, Op::Shell, not_running(S::Failed)),
            (S::Failed, rm, ok.clone()),
            (S::Failed, rm_force, ok.clone()),
            (S::Failed, Op::Cp, ok.clone()),
            (S::Failed, Op::Logs, ok.clone()),
        ];
        assert_eq!(table.len(), S::ALL.len() * Op::ALL.len());
        for state in S::ALL {
            for op in Op::ALL {
                let rows: Vec<_> = table
                    .iter()
                    .filter(|(s, o, _)| *s == state && *o == op)
                    .collect();
                assert_eq!(rows.len(), 1, "({state}, {op:?}) must appear exactly once");
            }
        }
        for (state, op, expected) in table {
            assert_eq!(can(N, state, op), expected, "can({state}, {op:?})");
        }
    }

    /// Every (state, event) pair with its expected outcome.
    #[test]
    fn next_every_state_and_event() {
        use Event as E;
        let to = |s| Some(Next::State(s));
        let none: Option<Next> = None;

        #[rustfmt::skip]
        let table: Vec<(S, E, Option<Next>)> = vec![
            (S::Creating, E::StartRequested, none),
            (S::Creating, E::Started, none),
            (S::Creating, E::StartFailed, none),
            (S::Creating, E::StopRequested, none),
            (S::Creating, E::Stopped, to(S::Stopped)),
            (S::Creating, E::Crashed, to(S::Failed)),
            (S::Creating, E::RemoveRequested, to(S::Removing)),
            (S::Creating, E::Removed, none),

            (S::Stopped, E::StartRequested, to(S::Starting)),
            (S::Stopped, E::Started, none),
            (S::Stopped, E::StartFailed, none),
            (S::Stopped, E::StopRequested, none),
            (S::Stopped, E::Stopped, none),
            (S::Stopped, E::Crashed, none),
            (S::Stopped, E::RemoveRequested, to(S::Removing)),
            (S::Stopped, E::Removed, none),

            (S::Starting, E::StartRequested, none),
            (S::Starting, E::Started, to(S::Running)),
            (S::Starting, E::StartFailed, to(S::Failed)),
            (S::Starting, E::StopRequested, to(S::Stopping)),
            (S::Starting, E::Stopped, to(S::Stopped)),
            (S::Starting, E::Crashed, to(S::Failed)),
            (S::Starting, E::RemoveRequested, to(S::Removing)),
            (S::Starting, E::Removed, none),

            (S::Running, E::StartRequested, none),
            (S::Running, E::Started, none),
            (S::Running, E::StartFailed, none),
            (S::Running, E::StopRequested, to(S::Stopping)),
            (S::Running, E::Stopped, to(S::Stopped)),
            (S::Running, E::Crashed, to(S::Failed)),
            (S::Running, E::RemoveRequested, to(S::Removing)),
            (S::Running, E::Removed, none),

            (S::Stopping, E::StartRequested, none),
            (S::Stopping, E::Started, none),
            (S::Stopping, E::StartFailed, none),
            (S::Stopping, E::StopRequested, none),
            (S::Stopping, E::Stopped, to(S::Stopped)),
            (S::Stopping, E::Crashed, to(S::Failed)),
            (S::Stopping, E::RemoveRequested, to(S::Removing)),
            (S::Stopping, E::Removed, none),

            (S::Removing, E::StartRequested, none),
            (S::Removing, E::Started, none),
            (S::Removing, E::StartFailed, none),
            (S::Removing, E::StopRequested, none),
            (S::Removing, E::Stopped, none),
            (S::Removing, E::Crashed, none),
            (S::Removing, E::RemoveRequested, to(S::Removing)),
            (S::Removing, E::Removed, Some(Next::Gone)),

            (S::Failed, E::StartRequested, to(S::Starting)),
            (S::Failed, E::Started, none),
            (S::Failed, E::StartFailed, none),
            (S::Failed, E::StopRequested, to(S::Stopping)),
            (S::Failed, E::Stopped, none),
            (S::Failed, E::Crashed, none),
            (S::Failed, E::RemoveRequested, to(S::Removing)),
            (S::Failed, E::Removed, none),
        ];
        assert_eq!(table.len(), S::ALL.len() * E::ALL.len());
        for state in S::ALL {
            for event in E::ALL {
                let rows: Vec<_> = table
                    .iter()
                    .filter(|(s, e, _)| *s == state && *e == event)
                    .collect();
                assert_eq!(
                    rows.len(),
                    1,
                    "({state}, {event:?}) must appear exactly once"
                );
            }
        }
        for (state, event, expected) in table {
            assert_eq!(next(state, event), expected, "next({state}, {event:?})");
        }
    }

    /// A user request the rules allow is always an event the state machine accepts, and
    /// the other way round: `can` and `next` never disagree.
    #[test]
    fn can_and_next_agree_on_requests() {
        for state in S::ALL {
            assert_eq!(
                can(N, state, Op::Start).is_ok(),
                next(state, Event::StartRequested).is_some(),
                "start in {state}"
            );
            assert_eq!(
                can(N, state, Op::Stop).is_ok(),
                next(state, Event::StopRequested).is_some(),
                "stop in {state}"
            );
            assert_eq!(
                can(N, state, Op::Remove { force: true }).is_ok(),
                next(state, Event::RemoveRequested).is_some(),
                "rm --force in {state}"
            );
        }
    }

    #[test]
    fn reachable_matches_next() {
        let expected: Vec<(S, S)> = vec![
            (S::Creating, S::Stopped),
            (S::Creating, S::Removing),
            (S::Creating, S::Failed),
            (S::Stopped, S::Starting),
            (S::Stopped, S::Removing),
            (S::Starting, S::Stopped),
            (S::Starting, S::Running),
            (S::Starting, S::Stopping),
            (S::Starting, S::Removing),
            (S::Starting, S::Failed),
            (S::Running, S::Stopped),
            (S::Running, S::Stopping),
            (S::Running, S::Removing),
            (S::Running, S::Failed),
            (S::Stopping, S::Stopped),
            (S::Stopping, S::Removing),
            (S::Stopping, S::Failed),
            (S::Removing, S::Removing),
            (S::Failed, S::Starting),
            (S::Failed, S::Stopping),
            (S::Failed, S::Removing),
        ];
        let mut actual = Vec::new();
        for from in S::ALL {
            for to in S::ALL {
                if reachable(from, to) {
                    actual.push((from, to));
                }
            }
        }
        assert_eq!(actual, expected);
    }

    #[test]
    fn refusal_messages_and_hints() {
        let cases = [
            (
                can(N, S::Stopped, Op::Exec),
                "sandbox box is stopped",
                "airlock start box",
            ),
            (
                can(N, S::Failed, Op::Shell),
                "sandbox box is failed",
                "airlock start box (airlock status box shows why it failed)",
            ),
            (
                can(N, S::Running, Op::Remove { force: false }),
                "sandbox box is running",
                "airlock stop box, or airlock rm --force box",
            ),
            (
                can(N, S::Stopping, Op::Exec),
                "sandbox box is stopping",
                "wait and retry (airlock status box shows its state); if it is stuck: airlock rm --force box",
            ),
            (
                can(N, S::Running, Op::Start),
                "sandbox box is already running",
                "airlock exec box -- CMD, or airlock shell box",
            ),
            (
                can(N, S::Stopped, Op::Stop),
                "sandbox box is already stopped",
                "airlock start box, or airlock rm box",
            ),
        ];
        for (result, message, hint) in cases {
            let refused = result.expect_err("refused");
            assert_eq!(
                (refused.to_string(), refused.hint()),
                (message.to_owned(), hint.to_owned())
            );
        }
    }
}
