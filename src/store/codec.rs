//! Value encoding: one version byte, then bincode (serde). The only place
//! that knows how values become bytes, so the format can be swapped.

use serde::{de::DeserializeOwned, Serialize};

const VERSION: u8 = 1;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    thread_local! {
        /// Reused, so a value costs one allocation of its exact size
        /// (bincode would grow a fresh Vec a varint at a time).
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with_borrow_mut(|buf| {
        buf.clear();
        buf.push(VERSION);
        // Serializing our own plain structs into memory cannot fail.
        bincode::serde::encode_into_std_write(value, buf, bincode::config::standard())
            .expect("encoding a value into memory");
        let out = buf.to_vec();
        // A rare big value (a long message) does not stay allocated.
        if buf.capacity() > 64 * 1024 {
            *buf = Vec::new();
        }
        out
    })
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&VERSION, body)) => {
            bincode::serde::decode_from_slice(body, bincode::config::standard())
                .map(|(v, _)| v)
                .map_err(|e| format!("undecodable value: {e}"))
        }
        Some((v, _)) => Err(format!("unknown value version {v}")),
        None => Err("empty value".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Message, MsgId, RoomId, UserId};

    #[test]
    fn message_round_trips_with_version_byte() {
        let m = Message {
            id: MsgId(7),
            room: RoomId(3),
            sender: UserId(2),
            text: "héllo".into(),
            at_ms: 1_700_000_000_123,
            author: None,
            is_read: false,
            archived: true,
        };
        let b = encode(&m);
        assert_eq!(b[0], VERSION);
        assert_eq!(decode::<Message>(&b).unwrap(), m);
    }

    #[test]
    fn unknown_version_and_garbage_are_errors_not_panics() {
        assert!(decode::<Message>(&[]).is_err());
        assert!(decode::<Message>(&[9, 1, 2]).is_err());
        assert!(decode::<Message>(&[VERSION, 0xff, 0xff]).is_err());
    }
}
