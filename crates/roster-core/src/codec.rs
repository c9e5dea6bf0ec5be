//! The one codec for node-to-node payloads: a version byte, then bincode 2 (standard config)
//! of the serde value. Decoding is fallible and bounded: a peer speaking garbage gets an error,
//! never a panic. Swapping the encoding later means a new version byte beside the old one.
//!
//! It lives in the core so that the runtime's links and user actors and the simulation
//! (`roster-sim`, which round-trips every node-to-node message through it) speak the same
//! bytes.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The version byte of the current encoding (bincode 2.0.1, standard configuration).
pub const CODEC_VERSION: u8 = 1;

/// The largest payload encoded or decoded: 4 MiB. The cluster link's inbound frame limit is
/// this and a little room (the runtime's `cluster::MAX_FRAME_BYTES`), well under `ractor_cluster`'s default
/// of 16 MiB.
pub const MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// No bytes at all.
    #[error("empty payload")]
    Empty,
    /// A version byte this build does not know (a newer or older peer, or garbage).
    #[error("unknown codec version {0} (this build speaks {CODEC_VERSION})")]
    UnknownVersion(u8),
    /// Larger than [`MAX_PAYLOAD_BYTES`].
    #[error("payload of {0} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit")]
    TooLarge(usize),
    /// The bytes are not a value of the expected type.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// Bytes were left over after the value.
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
    /// The value could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(String),
}

fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_PAYLOAD_BYTES>,
> {
    bincode::config::standard().with_limit::<MAX_PAYLOAD_BYTES>()
}

/// Encode `value` with the version byte in front.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![CODEC_VERSION];
    let body = bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decode bytes made by [`encode`], refusing anything else with a clear error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != CODEC_VERSION {
        return Err(CodecError::UnknownVersion(version));
    }
    if body.len() > MAX_PAYLOAD_BYTES {
        return Err(CodecError::TooLarge(body.len()));
    }
    let (value, used) =
        bincode::serde::decode_from_slice(body, config()).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::Trailing(body.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Meta, MetaValue, PeerMsg, SlotToken};

    #[test]
    fn peer_messages_round_trip_through_the_codec() {
        let inc = crate::Incarnation::new("a", 42);
        let msg = PeerMsg::Heartbeat { from: inc, sent_at: 17, leases: vec![], echoes: vec![], presence_seq: 3 };
        let bytes = encode(&msg).unwrap();
        assert_eq!(bytes[0], CODEC_VERSION);
        assert_eq!(decode::<PeerMsg>(&bytes).unwrap(), msg);
    }

    #[test]
    fn metas_with_every_kind_of_value_round_trip() {
        let mut inner = Meta::new();
        inner.insert("x".into(), MetaValue::Float(1.5));
        let mut meta = Meta::new();
        meta.insert("name".into(), MetaValue::Str("Ada".into()));
        meta.insert("n".into(), MetaValue::Int(-3));
        meta.insert("ok".into(), MetaValue::Bool(true));
        meta.insert("nil".into(), MetaValue::Null);
        meta.insert("list".into(), MetaValue::List(vec![MetaValue::Int(1), MetaValue::Map(inner)]));
        assert_eq!(decode::<Meta>(&encode(&meta).unwrap()).unwrap(), meta);
        let t = SlotToken { epoch: u64::MAX, generation: 1 };
        assert_eq!(decode::<SlotToken>(&encode(&t).unwrap()).unwrap(), t);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(decode::<PeerMsg>(&[]), Err(CodecError::Empty)));
        assert!(matches!(decode::<PeerMsg>(&[9, 1, 2]), Err(CodecError::UnknownVersion(9))));
        assert!(matches!(decode::<PeerMsg>(&[CODEC_VERSION, 250, 255, 255]), Err(CodecError::Malformed(_))));
        let mut bytes = encode(&SlotToken { epoch: 1, generation: 2 }).unwrap();
        bytes.push(0);
        assert!(matches!(decode::<SlotToken>(&bytes), Err(CodecError::Trailing(1))));
        // A length prefix claiming a huge string must not allocate it.
        let huge = [CODEC_VERSION, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F];
        assert!(decode::<String>(&huge).is_err());
    }
}
