//! Encoding and decoding of whole frames.
//!
//! Thin wrappers over postcard that give the crate its own error types, so
//! callers do not depend on postcard's, and that reject trailing bytes: one
//! WebSocket message is exactly one frame.

use crate::{Downlink, Uplink};

#[cfg(feature = "alloc")]
use alloc::vec::Vec;

/// Why a frame could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is too small for the frame.
    BufferFull,
    /// The frame holds something postcard cannot encode (a bug in the caller).
    Unencodable,
}

/// Why a message is not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message ended in the middle of a frame.
    Truncated,
    /// A field holds an invalid value: an unknown frame or variant tag, a bad
    /// varint, invalid UTF-8, a bool other than 0 or 1, a list over its capacity.
    Invalid,
    /// Bytes remain after a complete frame.
    TrailingBytes,
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            EncodeError::BufferFull => "output buffer too small for the frame",
            EncodeError::Unencodable => "frame cannot be encoded",
        })
    }
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            DecodeError::Truncated => "message ends inside a frame",
            DecodeError::Invalid => "invalid field (unknown tag, bad varint, bad UTF-8...)",
            DecodeError::TrailingBytes => "bytes after the end of the frame",
        })
    }
}

impl core::error::Error for EncodeError {}
impl core::error::Error for DecodeError {}

fn encode_error(err: postcard::Error) -> EncodeError {
    match err {
        postcard::Error::SerializeBufferFull => EncodeError::BufferFull,
        _ => EncodeError::Unencodable,
    }
}

fn decode_error(err: postcard::Error) -> DecodeError {
    match err {
        postcard::Error::DeserializeUnexpectedEnd => DecodeError::Truncated,
        _ => DecodeError::Invalid,
    }
}

fn take_all<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    let (frame, rest) = postcard::take_from_bytes(bytes).map_err(decode_error)?;
    if rest.is_empty() {
        Ok(frame)
    } else {
        Err(DecodeError::TrailingBytes)
    }
}

/// Encode an uplink frame into `buf`, returning the used prefix.
pub fn encode_uplink<'b>(
    frame: &Uplink<'_>,
    buf: &'b mut [u8],
) -> Result<&'b mut [u8], EncodeError> {
    postcard::to_slice(frame, buf).map_err(encode_error)
}

/// Encode a downlink frame into `buf`, returning the used prefix.
pub fn encode_downlink<'b>(
    frame: &Downlink<'_>,
    buf: &'b mut [u8],
) -> Result<&'b mut [u8], EncodeError> {
    postcard::to_slice(frame, buf).map_err(encode_error)
}

/// Decode one downlink frame; strings borrow from `bytes`.
pub fn decode_downlink(bytes: &[u8]) -> Result<Downlink<'_>, DecodeError> {
    take_all(bytes)
}

/// Decode one uplink frame; strings borrow from `bytes`, lists are allocated.
#[cfg(feature = "alloc")]
pub fn decode_uplink(bytes: &[u8]) -> Result<Uplink<'_>, DecodeError> {
    take_all(bytes)
}

/// Encode an uplink frame into a new vector.
#[cfg(feature = "alloc")]
pub fn encode_uplink_to_vec(frame: &Uplink<'_>) -> Result<Vec<u8>, EncodeError> {
    postcard::to_allocvec(frame).map_err(encode_error)
}

/// Encode a downlink frame into a new vector.
#[cfg(feature = "alloc")]
pub fn encode_downlink_to_vec(frame: &Downlink<'_>) -> Result<Vec<u8>, EncodeError> {
    postcard::to_allocvec(frame).map_err(encode_error)
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use crate::*;

    #[test]
    fn telemetry_round_trips_from_borrowed_to_owned() {
        let readings = [
            Reading {
                sensor: 1,
                offset_ms: 0,
                value: Value::Float(21.5),
            },
            Reading {
                sensor: 2,
                offset_ms: 250,
                value: Value::Int(-3),
            },
            Reading {
                sensor: 3,
                offset_ms: 500,
                value: Value::Bool(true),
            },
        ];
        let frame = Uplink::Telemetry(Telemetry {
            seq: 7,
            base_time_ms: 1_700_000_000_000,
            readings: List::Borrowed(&readings),
        });
        let mut buf = [0u8; 128];
        let bytes = encode_uplink(&frame, &mut buf).expect("fits").to_vec();
        let decoded = decode_uplink(&bytes).expect("valid");
        match decoded {
            Uplink::Telemetry(t) => {
                assert_eq!(t.seq, 7);
                assert_eq!(&*t.readings, &readings);
                assert!(matches!(t.readings, List::Owned(_)));
            }
            other => panic!("decoded {other:?}"),
        }
    }

    #[test]
    fn trailing_bytes_and_truncation_are_refused() {
        let frame = Downlink::Ack(Ack { seq: 300 });
        let mut bytes = encode_downlink_to_vec(&frame).expect("encodes");
        assert_eq!(
            decode_downlink(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Truncated)
        );
        bytes.push(0);
        assert_eq!(decode_downlink(&bytes), Err(DecodeError::TrailingBytes));
        assert_eq!(decode_downlink(&[9]), Err(DecodeError::Invalid));
    }

    #[test]
    fn too_many_command_args_are_refused() {
        // Command with Invoke and 9 args: tag 2, id 1, actuator 1, Invoke tag 1,
        // name "a", 9 x Bool(false), expires 0.
        let mut bytes = vec![2, 1, 1, 1, 1, b'a', 9];
        for _ in 0..9 {
            bytes.extend_from_slice(&[2, 0]);
        }
        bytes.push(0);
        assert_eq!(decode_downlink(&bytes), Err(DecodeError::Invalid));
    }

    #[test]
    fn buffer_too_small_is_reported() {
        let mut buf = [0u8; 2];
        let frame = Downlink::Ack(Ack { seq: u64::MAX });
        assert_eq!(
            encode_downlink(&frame, &mut buf),
            Err(EncodeError::BufferFull)
        );
    }
}
