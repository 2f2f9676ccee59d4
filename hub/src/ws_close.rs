//! Closing a WebSocket as RFC 6455 asks, for both kinds of socket the hub
//! serves: the device gateway's and the browser stream's.
//!
//! A close frame is sent, then the peer's close reply is awaited (bounded),
//! so the peer reads everything sent before the close. When the socket can
//! no longer be read (after an oversized message its rest is still
//! arriving), dropping it at once would make the kernel answer the unread
//! bytes with a reset that can overtake the close frame; the connection
//! lingers briefly instead so the peer sees the close code.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};

/// How long sending the close frame and waiting for the reply may take; the
/// socket is dropped after it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// After a close frame to a socket that can no longer be read, how long the
/// connection stays open so the peer reads the close before the reset.
const CLOSE_LINGER: Duration = Duration::from_millis(500);

/// Sends close `code` with `reason` (cut to the protocol's 123 bytes), then
/// waits, bounded, for the peer's close reply.
pub async fn close_gracefully(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: truncate_reason(reason, schema::MAX_REASON_BYTES).into(),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        socket.send(Message::Close(Some(frame))).await?;
        while let Some(message) = socket.recv().await {
            match message {
                Ok(Message::Close(_)) => break,
                Ok(_) => {}
                Err(_) => {
                    tokio::time::sleep(CLOSE_LINGER).await;
                    break;
                }
            }
        }
        Ok::<(), axum::Error>(())
    })
    .await;
}

/// Cuts `text` to at most `max` bytes on a character boundary (close
/// reasons are at most 123 bytes).
pub fn truncate_reason(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cut_on_a_character_boundary() {
        assert_eq!(truncate_reason("short", 123), "short");
        assert_eq!(truncate_reason("abcdef", 3), "abc");
        // 'é' is two bytes: a cut in its middle moves back before it.
        assert_eq!(truncate_reason("aé", 2), "a");
    }
}
