//! The command log: recent command ids with their outcome, so a device acts
//! at most once per id.
//!
//! The hub resends a command it sent but saw no final answer to, for example
//! when the connection dropped in between. A device that acted on the first
//! copy must not act again: it answers the repeat with the outcome it
//! remembers (`Delivered` while the first copy is still running).
//!
//! [`CommandLog`] is a fixed-capacity ring over caller-provided slots
//! (`[Option<Remembered>; N]` inline in firmware, a boxed slice in the tokio
//! transport); nothing allocates. When it is full, the oldest *finished*
//! entry makes room: an entry still in progress is never forgotten, and if
//! every slot holds one, a new command is refused ([`Rejection::Busy`])
//! rather than run without being remembered. Size the ring above the number
//! of commands the hub may have unanswered for the device at once.
//!
//! The guarantee lasts as long as the log does. The tokio transport keeps it
//! in memory only, which gives at most once *per boot*. Firmware that must
//! hold it across reboots persists the log: [`Remembered`] is plain `Copy`
//! data, [`CommandLog::iter`] lists the entries oldest first and
//! [`CommandLog::remember`] puts them back.

use crate::command::{ActuatorTable, Outcome, Rejection, check_command};
use schema::Command;

/// One command id and what became of it (`Delivered`: still in progress).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Remembered {
    /// The hub's command id.
    pub id: u64,
    /// Its latest outcome.
    pub outcome: Outcome,
}

/// What to do with a received command; [`Decision::reply`] is the answer to
/// send at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// New and valid, and now remembered as in progress: send `Delivered`,
    /// run it, then report the result with [`CommandLog::finish`] and send it.
    Run,
    /// Refused without acting: send `Rejected(reason)`. Remembered, except
    /// for [`Rejection::Busy`].
    Reject(Rejection),
    /// Seen before: send this outcome again and do not act.
    Repeat(Outcome),
}

impl Decision {
    /// The outcome to send now.
    pub fn reply(&self) -> Outcome {
        match self {
            Decision::Run => Outcome::Delivered,
            Decision::Reject(rejection) => Outcome::from(*rejection),
            Decision::Repeat(outcome) => *outcome,
        }
    }
}

/// Every slot holds a command still in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogFull;

impl core::fmt::Display for LogFull {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("command log full of commands in progress")
    }
}

impl core::error::Error for LogFull {}

/// Recent command ids with their outcomes; see the module docs.
#[derive(Debug, Clone)]
pub struct CommandLog<S> {
    slots: S,
    /// Where the next entry goes: the slot after the newest, so the ring
    /// from here on runs oldest to newest.
    next: usize,
}

impl<const N: usize> CommandLog<[Option<Remembered>; N]> {
    /// An empty log of `N` inline slots (about 140 bytes each).
    pub const fn new_inline() -> Self {
        CommandLog::new([None; N])
    }
}

impl<S> CommandLog<S>
where
    S: AsRef<[Option<Remembered>]> + AsMut<[Option<Remembered>]>,
{
    /// A log over `slots`; entries already in them count as remembered.
    pub const fn new(slots: S) -> Self {
        CommandLog { slots, next: 0 }
    }

    /// Most entries it holds.
    pub fn capacity(&self) -> usize {
        self.slots.as_ref().len()
    }

    /// Entries it holds.
    pub fn len(&self) -> usize {
        self.slots.as_ref().iter().flatten().count()
    }

    /// True when it remembers nothing.
    pub fn is_empty(&self) -> bool {
        self.slots.as_ref().iter().all(Option::is_none)
    }

    /// What is remembered about command `id`.
    pub fn get(&self, id: u64) -> Option<&Remembered> {
        self.slots.as_ref().iter().flatten().find(|e| e.id == id)
    }

    /// Every entry, oldest first (the order [`CommandLog::remember`] should
    /// put them back in).
    pub fn iter(&self) -> impl Iterator<Item = &Remembered> {
        let slots = self.slots.as_ref();
        let (newer, older) = slots.split_at(self.next.min(slots.len()));
        older.iter().chain(newer).flatten()
    }

    /// Decide about a received command at device time `now_ms` (ms since
    /// the Unix epoch), and remember the decision.
    ///
    /// A known id is a [`Decision::Repeat`] whatever else the command says;
    /// otherwise the rules of [`check_command`] apply.
    pub fn receive<A: ActuatorTable + ?Sized>(
        &mut self,
        command: &Command<'_>,
        actuators: &A,
        now_ms: u64,
    ) -> Decision {
        if let Some(entry) = self.get(command.id) {
            return Decision::Repeat(entry.outcome);
        }
        match check_command(command, actuators, now_ms) {
            Ok(()) => match self.remember(Remembered {
                id: command.id,
                outcome: Outcome::Delivered,
            }) {
                Ok(()) => Decision::Run,
                Err(LogFull) => Decision::Reject(Rejection::Busy),
            },
            Err(rejection) => {
                // Nothing was done, so forgetting a refusal for lack of
                // room breaks no promise; a repeat is refused again.
                let _ = self.remember(Remembered {
                    id: command.id,
                    outcome: Outcome::from(rejection),
                });
                Decision::Reject(rejection)
            }
        }
    }

    /// Record the final outcome of command `id` (after [`Decision::Run`]).
    ///
    /// A `Delivered` outcome is not final and changes nothing. An id the log
    /// does not hold (never received, or restored without it) is added if
    /// there is room.
    pub fn finish(&mut self, id: u64, outcome: Outcome) {
        if !outcome.is_final() {
            return;
        }
        if let Some(entry) = self
            .slots
            .as_mut()
            .iter_mut()
            .flatten()
            .find(|e| e.id == id)
        {
            entry.outcome = outcome;
            return;
        }
        // With every slot in progress there is no room; the entry is then
        // not kept (a repeat would run it, as for any forgotten id).
        let _ = self.remember(Remembered { id, outcome });
    }

    /// Add an entry as the newest (or update the one with its id), making
    /// room by forgetting the oldest finished entry. Fails, changing
    /// nothing, when every slot holds an entry in progress.
    ///
    /// Used by [`CommandLog::receive`] and [`CommandLog::finish`], and by
    /// firmware restoring a persisted log.
    pub fn remember(&mut self, entry: Remembered) -> Result<(), LogFull> {
        let slots = self.slots.as_mut();
        if let Some(existing) = slots.iter_mut().flatten().find(|e| e.id == entry.id) {
            *existing = entry;
            return Ok(());
        }
        let len = slots.len();
        let at = self.next;
        // From `at` the ring runs oldest to newest: use the first free or
        // finished slot.
        let victim = (0..len)
            .map(|i| (at + i) % len)
            .find(|&i| slots[i].is_none_or(|e| e.outcome.is_final()))
            .ok_or(LogFull)?;
        // Entries in progress between `at` and the victim move one slot on,
        // so that the victim's slot becomes `at` and the order is kept.
        let mut k = victim;
        while k != at {
            let previous = (k + len - 1) % len;
            slots.swap(k, previous);
            k = previous;
        }
        slots[at] = Some(entry);
        self.next = (at + 1) % len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Reason;
    use schema::{ActuatorDecl, CommandAction, Value, ValueKind};

    const ACTUATORS: [ActuatorDecl<'static>; 2] = [
        ActuatorDecl {
            id: 1,
            name: "relay",
            kind: ValueKind::Bool,
        },
        ActuatorDecl {
            id: 3,
            name: "led",
            kind: ValueKind::Int,
        },
    ];

    const NOW: u64 = 1_700_000_000_000;

    fn relay(id: u64, on: bool) -> Command<'static> {
        Command {
            id,
            actuator: 1,
            action: CommandAction::Set(Value::Bool(on)),
            expires_at_ms: 0,
        }
    }

    fn ids<S>(log: &CommandLog<S>) -> Vec<u64>
    where
        S: AsRef<[Option<Remembered>]> + AsMut<[Option<Remembered>]>,
    {
        log.iter().map(|e| e.id).collect()
    }

    fn done(log: &mut CommandLog<[Option<Remembered>; 4]>, id: u64) {
        assert_eq!(
            log.receive(&relay(id, true), &ACTUATORS[..], NOW),
            Decision::Run
        );
        log.finish(id, Outcome::Succeeded(Some(Value::Bool(true))));
    }

    #[test]
    fn a_new_valid_command_runs_once_and_repeats_get_the_remembered_outcome() {
        let mut log = CommandLog::<[_; 4]>::new_inline();
        let first = log.receive(&relay(7, true), &ACTUATORS[..], NOW);
        assert_eq!(first, Decision::Run);
        assert_eq!(first.reply(), Outcome::Delivered);
        // Still running: a repeat gets Delivered only, and is not run.
        let repeat = log.receive(&relay(7, true), &ACTUATORS[..], NOW);
        assert_eq!(repeat, Decision::Repeat(Outcome::Delivered));
        log.finish(7, Outcome::Succeeded(Some(Value::Bool(true))));
        // Finished: a repeat gets the final outcome, even if it now differs
        // or has expired since.
        let mut late = relay(7, false);
        late.expires_at_ms = 1;
        let repeat = log.receive(&late, &ACTUATORS[..], NOW);
        assert_eq!(
            repeat,
            Decision::Repeat(Outcome::Succeeded(Some(Value::Bool(true))))
        );
        assert_eq!(repeat.reply(), Outcome::Succeeded(Some(Value::Bool(true))));
        assert_eq!(log.len(), 1);
    }

    #[test]
    fn rejections_are_remembered_and_repeated() {
        let mut log = CommandLog::<[_; 4]>::new_inline();
        let mut expired = relay(1, true);
        expired.expires_at_ms = NOW - 1;
        let unknown = Command {
            actuator: 9,
            ..relay(2, true)
        };
        let wrong = Command {
            action: CommandAction::Set(Value::Int(1)),
            ..relay(3, true)
        };
        for (command, reason) in [
            (&expired, "expired"),
            (&unknown, "unknown actuator 9"),
            (&wrong, "actuator 1 takes bool"),
        ] {
            let decision = log.receive(command, &ACTUATORS[..], NOW);
            assert!(matches!(decision, Decision::Reject(_)), "{decision:?}");
            assert_eq!(decision.reply(), Outcome::Rejected(Reason::new(reason)));
            // Fixing the command under the same id changes nothing.
            let again = log.receive(&relay(command.id, true), &ACTUATORS[..], NOW);
            assert_eq!(
                again,
                Decision::Repeat(Outcome::Rejected(Reason::new(reason)))
            );
        }
        assert_eq!(ids(&log), vec![1, 2, 3]);
    }

    #[test]
    fn failures_are_remembered_like_successes() {
        let mut log = CommandLog::<[_; 2]>::new_inline();
        assert_eq!(
            log.receive(&relay(5, true), &ACTUATORS[..], NOW),
            Decision::Run
        );
        log.finish(5, Outcome::from_result(Err("relay welded shut")));
        assert_eq!(
            log.receive(&relay(5, true), &ACTUATORS[..], NOW),
            Decision::Repeat(Outcome::Failed(Reason::new("relay welded shut")))
        );
        // Delivered is not final: finish ignores it.
        log.finish(5, Outcome::Delivered);
        assert_eq!(
            log.get(5).map(|e| e.outcome),
            Some(Outcome::Failed(Reason::new("relay welded shut")))
        );
    }

    #[test]
    fn the_oldest_finished_entry_makes_room() {
        let mut log = CommandLog::<[_; 4]>::new_inline();
        for id in 1..=6 {
            done(&mut log, id);
        }
        assert_eq!(log.len(), 4);
        assert_eq!(ids(&log), vec![3, 4, 5, 6]);
        // Forgotten: 1 is new again (the ring's limit, hence "size it above
        // what the hub may have unanswered").
        assert_eq!(
            log.receive(&relay(1, true), &ACTUATORS[..], NOW),
            Decision::Run
        );
        assert_eq!(ids(&log), vec![4, 5, 6, 1]);
    }

    #[test]
    fn entries_in_progress_are_never_forgotten_and_a_full_log_refuses() {
        let mut log = CommandLog::<[_; 4]>::new_inline();
        done(&mut log, 1);
        assert_eq!(
            log.receive(&relay(2, true), &ACTUATORS[..], NOW),
            Decision::Run
        );
        done(&mut log, 3);
        done(&mut log, 4);
        // Full; 2 is in progress. New entries push out 1, 3, 4 in turn,
        // skipping 2, and keep the order oldest to newest.
        done(&mut log, 5);
        assert_eq!(ids(&log), vec![2, 3, 4, 5]);
        done(&mut log, 6);
        assert_eq!(ids(&log), vec![2, 4, 5, 6]);
        assert_eq!(
            log.receive(&relay(2, true), &ACTUATORS[..], NOW),
            Decision::Repeat(Outcome::Delivered)
        );
        // Fill every slot with commands in progress.
        for id in 7..=9 {
            assert_eq!(
                log.receive(&relay(id, true), &ACTUATORS[..], NOW),
                Decision::Run
            );
        }
        assert_eq!(ids(&log), vec![2, 7, 8, 9]);
        let busy = log.receive(&relay(10, true), &ACTUATORS[..], NOW);
        assert_eq!(busy, Decision::Reject(Rejection::Busy));
        assert_eq!(
            busy.reply(),
            Outcome::Rejected(Reason::new("device busy: too many commands in progress"))
        );
        // Not remembered: once there is room, 10 may run.
        assert!(log.get(10).is_none());
        // A refusal for another reason is answered but cannot be kept.
        let unknown = Command {
            actuator: 9,
            ..relay(11, true)
        };
        assert_eq!(
            log.receive(&unknown, &ACTUATORS[..], NOW),
            Decision::Reject(Rejection::UnknownActuator(9))
        );
        assert!(log.get(11).is_none());
        log.finish(2, Outcome::Succeeded(None));
        assert_eq!(
            log.receive(&relay(10, true), &ACTUATORS[..], NOW),
            Decision::Run
        );
        assert_eq!(ids(&log), vec![7, 8, 9, 10]);
    }

    #[test]
    fn a_log_restored_from_its_entries_answers_the_same() {
        let mut log = CommandLog::<[_; 4]>::new_inline();
        for id in 1..=5 {
            done(&mut log, id);
        }
        assert_eq!(
            log.receive(&relay(6, true), &ACTUATORS[..], NOW),
            Decision::Run
        );
        // "Persist" and "reboot".
        let saved: Vec<Remembered> = log.iter().copied().collect();
        let mut restored = CommandLog::new(vec![None; 4]);
        for entry in &saved {
            restored.remember(*entry).expect("room");
        }
        assert_eq!(ids(&restored), ids(&log));
        for id in 3..=6 {
            assert_eq!(
                restored.receive(&relay(id, true), &ACTUATORS[..], NOW),
                log.receive(&relay(id, true), &ACTUATORS[..], NOW),
                "id {id}"
            );
        }
        // A result that arrives for an id the log lost is still recorded.
        let mut empty = CommandLog::<[_; 2]>::new_inline();
        empty.finish(42, Outcome::Succeeded(None));
        assert_eq!(
            empty.receive(&relay(42, true), &ACTUATORS[..], NOW),
            Decision::Repeat(Outcome::Succeeded(None))
        );
    }

    #[test]
    fn a_slot_is_as_small_as_documented() {
        // The docs promise "about 140 bytes" a slot (DeviceConfig too).
        let size = core::mem::size_of::<Option<Remembered>>();
        assert!((128..=144).contains(&size), "{size} bytes");
    }

    #[test]
    fn a_zero_capacity_log_refuses_instead_of_running_unremembered() {
        let mut log = CommandLog::new([None; 0]);
        assert_eq!(
            log.receive(&relay(1, true), &ACTUATORS[..], NOW),
            Decision::Reject(Rejection::Busy)
        );
        log.finish(1, Outcome::Succeeded(None));
        assert!(log.is_empty());
        assert_eq!(log.capacity(), 0);
    }
}
