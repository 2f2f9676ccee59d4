//! The device's rules for a received command, and its answers as plain data.
//!
//! `docs/PROTOCOL.md` section 13 says what a device does with a `Command`;
//! this module holds those rules as pure functions, without I/O or an
//! allocator, so firmware and the tokio transport apply the same ones:
//!
//! 1. a command whose `expires_at_ms` is in the past (by the device clock;
//!    0 means "no expiry") is `Rejected("expired")`;
//! 2. one for an actuator Hello did not declare is
//!    `Rejected("unknown actuator N")`;
//! 3. a `Set` whose value kind differs from the actuator's declared kind is
//!    `Rejected("actuator N takes <kind>")`;
//! 4. one for a declared actuator nothing can run is
//!    `Rejected("no handler for actuator N")`;
//! 5. anything else is run: `Delivered` first, then `Succeeded` or `Failed`.
//!
//! Remembering answers per command id (at most once) is the
//! [`CommandLog`](crate::CommandLog)'s job. [`Outcome`] and [`Reason`] are
//! owned, `Copy`, fixed-size copies of the wire's borrowed
//! [`CommandOutcome`], so they can be remembered, queued and persisted.

use core::fmt;

use schema::{
    ActuatorDecl, Command, CommandAction, CommandOutcome, CommandResult, EncodeError,
    MAX_REASON_BYTES, Uplink, Value, ValueKind, encode_uplink,
};

/// Bytes that always suffice for an encoded CommandResult frame: frame tag
/// (1), command id (varint u64, 10), outcome tag (1), and the largest
/// payload, a reason (length 1 + [`MAX_REASON_BYTES`]).
pub const MAX_COMMAND_RESULT_BYTES: usize = 1 + 10 + 1 + 1 + MAX_REASON_BYTES;

/// What the command rules need to know about the device's actuators.
///
/// Implemented for the slice of declarations a firmware passes to
/// [`Session::connected`](crate::Session::connected), whose actuators are
/// all assumed to be handled.
pub trait ActuatorTable {
    /// The declared kind of actuator `id`, or `None` if Hello did not declare it.
    fn kind(&self, id: u16) -> Option<ValueKind>;

    /// Whether something will run commands for the declared actuator `id`.
    fn has_handler(&self, id: u16) -> bool {
        let _ = id;
        true
    }
}

impl ActuatorTable for [ActuatorDecl<'_>] {
    fn kind(&self, id: u16) -> Option<ValueKind> {
        self.iter().find(|a| a.id == id).map(|a| a.kind)
    }
}

/// Why a command was refused without being run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// Its `expires_at_ms` has passed on the device clock.
    Expired,
    /// Hello did not declare this actuator id.
    UnknownActuator(u16),
    /// A `Set` carried a value of another kind than the actuator's.
    WrongKind {
        /// The actuator id.
        actuator: u16,
        /// The kind it was declared with.
        expected: ValueKind,
    },
    /// The actuator is declared but nothing runs its commands.
    NoHandler(u16),
    /// Every slot of the command log holds a command still in progress, so
    /// a new one could not be remembered (and so not run at most once).
    Busy,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Expired => f.write_str("expired"),
            Rejection::UnknownActuator(id) => write!(f, "unknown actuator {id}"),
            Rejection::WrongKind { actuator, expected } => {
                write!(f, "actuator {actuator} takes {}", expected.as_str())
            }
            Rejection::NoHandler(id) => write!(f, "no handler for actuator {id}"),
            Rejection::Busy => f.write_str("device busy: too many commands in progress"),
        }
    }
}

impl Rejection {
    /// The reason sent in `Rejected(reason)`.
    pub fn reason(&self) -> Reason {
        let mut reason = Reason::EMPTY;
        // Reason's Write never fails: it truncates instead.
        let _ = fmt::Write::write_fmt(&mut reason, format_args!("{self}"));
        reason
    }
}

/// True when a command with this `expires_at_ms` must no longer be applied
/// at device time `now_ms` (both ms since the Unix epoch); 0 never expires.
pub fn is_expired(expires_at_ms: u64, now_ms: u64) -> bool {
    expires_at_ms != 0 && now_ms > expires_at_ms
}

/// Apply the rules (module docs) to a command not seen before: `Ok` when it
/// should be run, else why not. Checked in the order listed there.
pub fn check_command<A: ActuatorTable + ?Sized>(
    command: &Command<'_>,
    actuators: &A,
    now_ms: u64,
) -> Result<(), Rejection> {
    if is_expired(command.expires_at_ms, now_ms) {
        return Err(Rejection::Expired);
    }
    let id = command.actuator;
    let kind = actuators.kind(id).ok_or(Rejection::UnknownActuator(id))?;
    if let CommandAction::Set(value) = &command.action
        && value.kind() != kind
    {
        return Err(Rejection::WrongKind {
            actuator: id,
            expected: kind,
        });
    }
    if !actuators.has_handler(id) {
        return Err(Rejection::NoHandler(id));
    }
    Ok(())
}

/// `text` cut to at most [`MAX_REASON_BYTES`] bytes, on a character boundary.
pub fn truncate_reason(text: &str) -> &str {
    truncate(text, MAX_REASON_BYTES)
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A reason text of at most [`MAX_REASON_BYTES`] bytes of UTF-8, stored
/// inline (no allocation, `Copy`).
///
/// Longer text is cut on a character boundary, both by [`Reason::new`] and
/// when written to with `core::fmt::Write` (which therefore never fails).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Reason {
    len: u8,
    bytes: [u8; MAX_REASON_BYTES],
}

impl Reason {
    /// The empty reason.
    pub const EMPTY: Reason = Reason {
        len: 0,
        bytes: [0; MAX_REASON_BYTES],
    };

    /// `text`, cut to [`MAX_REASON_BYTES`] bytes on a character boundary.
    pub fn new(text: &str) -> Reason {
        let mut reason = Reason::EMPTY;
        reason.push_str(text);
        reason
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only whole characters are ever copied in, so this is valid UTF-8.
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }

    /// Append as much of `text` as fits, whole characters only.
    fn push_str(&mut self, text: &str) {
        let start = usize::from(self.len);
        let part = truncate(text, MAX_REASON_BYTES - start);
        let end = start + part.len();
        self.bytes[start..end].copy_from_slice(part.as_bytes());
        // end <= MAX_REASON_BYTES = 123, so it fits in a u8.
        self.len = u8::try_from(end).unwrap_or(u8::MAX);
    }
}

impl fmt::Write for Reason {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.push_str(text);
        Ok(())
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of a command, as plain data: the owned twin of the wire's
/// [`CommandOutcome`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Received and being (or about to be) run; not final.
    Delivered,
    /// Run; optionally the actuator's new value.
    Succeeded(Option<Value>),
    /// Run, and it did not work.
    Failed(Reason),
    /// Refused without being run.
    Rejected(Reason),
}

impl Outcome {
    /// The handler's answer as an outcome: `Ok(state)` succeeded, `Err(reason)`
    /// failed (the reason cut to [`MAX_REASON_BYTES`]).
    pub fn from_result(result: Result<Option<Value>, &str>) -> Outcome {
        match result {
            Ok(state) => Outcome::Succeeded(state),
            Err(reason) => Outcome::Failed(Reason::new(reason)),
        }
    }

    /// False only for `Delivered`.
    pub fn is_final(&self) -> bool {
        !matches!(self, Outcome::Delivered)
    }

    /// The wire form, borrowing the reason.
    pub fn as_wire(&self) -> CommandOutcome<'_> {
        match self {
            Outcome::Delivered => CommandOutcome::Delivered,
            Outcome::Succeeded(state) => CommandOutcome::Succeeded(*state),
            Outcome::Failed(reason) => CommandOutcome::Failed(reason.as_str()),
            Outcome::Rejected(reason) => CommandOutcome::Rejected(reason.as_str()),
        }
    }
}

impl From<Rejection> for Outcome {
    fn from(rejection: Rejection) -> Outcome {
        Outcome::Rejected(rejection.reason())
    }
}

/// Encode `CommandResult { command_id, outcome }` into `buf` (at least
/// [`MAX_COMMAND_RESULT_BYTES`] long always suffices); returns the frame.
///
/// [`Session::command_result`](crate::Session::command_result) does the same
/// and also checks that a connection is open.
pub fn encode_command_result<'b>(
    command_id: u64,
    outcome: &Outcome,
    buf: &'b mut [u8],
) -> Result<&'b [u8], EncodeError> {
    let frame = Uplink::CommandResult(CommandResult {
        command_id,
        outcome: outcome.as_wire(),
    });
    encode_uplink(&frame, buf).map(|bytes| &*bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;
    use schema::decode_uplink;

    const ACTUATORS: [ActuatorDecl<'static>; 3] = [
        ActuatorDecl {
            id: 1,
            name: "relay",
            kind: ValueKind::Bool,
        },
        ActuatorDecl {
            id: 2,
            name: "setpoint",
            kind: ValueKind::Float,
        },
        ActuatorDecl {
            id: 3,
            name: "led",
            kind: ValueKind::Int,
        },
    ];

    /// Declares ACTUATORS but only handles the relay.
    struct RelayOnly;

    impl ActuatorTable for RelayOnly {
        fn kind(&self, id: u16) -> Option<ValueKind> {
            ACTUATORS[..].kind(id)
        }
        fn has_handler(&self, id: u16) -> bool {
            id == 1
        }
    }

    fn set(actuator: u16, value: Value, expires_at_ms: u64) -> Command<'static> {
        Command {
            id: 1,
            actuator,
            action: CommandAction::Set(value),
            expires_at_ms,
        }
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn expiry_is_strictly_after_and_zero_never_expires() {
        assert!(!is_expired(0, u64::MAX));
        assert!(!is_expired(1_000, 999));
        assert!(!is_expired(1_000, 1_000));
        assert!(is_expired(1_000, 1_001));
    }

    #[test]
    fn a_valid_set_or_invoke_is_run() {
        let now = 1_000;
        for command in [
            set(1, Value::Bool(true), 0),
            set(2, Value::Float(21.5), 2_000),
            set(3, Value::Int(2), now),
        ] {
            assert_eq!(check_command(&command, &ACTUATORS[..], now), Ok(()));
        }
        let mut args = heapless::Vec::new();
        args.push(Value::Float(0.5)).expect("room");
        let invoke = Command {
            id: 9,
            actuator: 3,
            action: CommandAction::Invoke {
                name: "blink",
                args,
            },
            expires_at_ms: 0,
        };
        // Invoke arguments are the handler's business, not the kind rule's.
        assert_eq!(check_command(&invoke, &ACTUATORS[..], now), Ok(()));
    }

    #[test]
    fn each_rule_rejects_with_its_reason() {
        let cases = [
            (
                set(1, Value::Bool(true), 999),
                Rejection::Expired,
                "expired",
            ),
            (
                set(7, Value::Bool(true), 0),
                Rejection::UnknownActuator(7),
                "unknown actuator 7",
            ),
            (
                set(1, Value::Int(1), 0),
                Rejection::WrongKind {
                    actuator: 1,
                    expected: ValueKind::Bool,
                },
                "actuator 1 takes bool",
            ),
            (
                set(2, Value::Bool(true), 0),
                Rejection::WrongKind {
                    actuator: 2,
                    expected: ValueKind::Float,
                },
                "actuator 2 takes float",
            ),
            (
                set(3, Value::Float(1.0), 0),
                Rejection::WrongKind {
                    actuator: 3,
                    expected: ValueKind::Int,
                },
                "actuator 3 takes int",
            ),
        ];
        for (command, rejection, reason) in cases {
            assert_eq!(
                check_command(&command, &ACTUATORS[..], 1_000),
                Err(rejection)
            );
            assert_eq!(rejection.reason().as_str(), reason);
            assert_eq!(
                Outcome::from(rejection).as_wire(),
                CommandOutcome::Rejected(reason)
            );
        }
    }

    #[test]
    fn rules_apply_in_order_expiry_actuator_kind_handler() {
        // Expired and unknown and of the wrong kind: expiry wins.
        assert_eq!(
            check_command(&set(7, Value::Int(1), 5), &RelayOnly, 10),
            Err(Rejection::Expired)
        );
        // Unknown beats the kind rule.
        assert_eq!(
            check_command(&set(7, Value::Int(1), 0), &RelayOnly, 10),
            Err(Rejection::UnknownActuator(7))
        );
        // The kind rule beats the missing handler.
        assert_eq!(
            check_command(&set(2, Value::Int(1), 0), &RelayOnly, 10),
            Err(Rejection::WrongKind {
                actuator: 2,
                expected: ValueKind::Float
            })
        );
        assert_eq!(
            check_command(&set(2, Value::Float(1.0), 0), &RelayOnly, 10),
            Err(Rejection::NoHandler(2))
        );
        assert_eq!(
            Rejection::NoHandler(2).reason().as_str(),
            "no handler for actuator 2"
        );
        assert_eq!(
            check_command(&set(1, Value::Bool(false), 0), &RelayOnly, 10),
            Ok(())
        );
    }

    #[test]
    fn reasons_are_cut_to_the_limit_on_a_character_boundary() {
        let ascii = "x".repeat(200);
        assert_eq!(Reason::new(&ascii).as_str().len(), MAX_REASON_BYTES);
        // 61 two-byte characters are 122 bytes; a 62nd would make 124.
        let wide = "é".repeat(70);
        let cut = Reason::new(&wide);
        assert_eq!(cut.as_str().len(), 122);
        assert_eq!(cut.as_str(), "é".repeat(61));
        assert_eq!(truncate_reason(&wide), cut.as_str());
        assert_eq!(truncate_reason("short"), "short");
        // Writing in pieces truncates the same way and never fails.
        let mut reason = Reason::new("a");
        for _ in 0..70 {
            write!(reason, "é").expect("never fails");
        }
        assert_eq!(reason.as_str().len(), 123);
        assert!(reason.as_str().ends_with('é'));
        assert_eq!(format!("{:?}", Reason::new("a\"b")), "\"a\\\"b\"");
        assert_eq!(
            Outcome::from_result(Err(&ascii)),
            Outcome::Failed(Reason::new(&ascii[..MAX_REASON_BYTES]))
        );
    }

    #[test]
    fn results_encode_as_the_golden_vectors() {
        let mut buf = [0u8; MAX_COMMAND_RESULT_BYTES];
        let cases = [
            (7, Outcome::Delivered, "020700"),
            (
                7,
                Outcome::from_result(Ok(Some(Value::Bool(true)))),
                "020701010201",
            ),
            (8, Outcome::Succeeded(None), "02080100"),
            (
                8,
                Outcome::from_result(Err("motor stalled")),
                "0208020d6d6f746f72207374616c6c6564",
            ),
            (
                9,
                Outcome::from(Rejection::Expired),
                "0209030765787069726564",
            ),
        ];
        for (id, outcome, golden) in cases {
            let bytes = encode_command_result(id, &outcome, &mut buf).expect("fits");
            assert_eq!(bytes, &hex(golden)[..], "{outcome:?}");
        }
    }

    #[test]
    fn the_largest_result_fits_the_documented_bound() {
        let mut buf = [0u8; MAX_COMMAND_RESULT_BYTES];
        let longest = Outcome::Failed(Reason::new(&"x".repeat(500)));
        let bytes = encode_command_result(u64::MAX, &longest, &mut buf).expect("fits");
        assert_eq!(bytes.len(), MAX_COMMAND_RESULT_BYTES);
        match decode_uplink(bytes).expect("valid") {
            Uplink::CommandResult(r) => {
                assert_eq!(r.command_id, u64::MAX);
                assert_eq!(r.outcome, CommandOutcome::Failed(&"x".repeat(123)));
            }
            other => panic!("not CommandResult: {other:?}"),
        }
        let largest_value = Outcome::Succeeded(Some(Value::Int(i64::MIN)));
        let bytes = encode_command_result(u64::MAX, &largest_value, &mut buf).expect("fits");
        assert!(bytes.len() < MAX_COMMAND_RESULT_BYTES);
        let mut small = [0u8; 4];
        assert_eq!(
            encode_command_result(7, &longest, &mut small),
            Err(EncodeError::BufferFull)
        );
    }
}
