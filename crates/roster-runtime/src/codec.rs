//! The node codec ([`roster_core::codec`]: a version byte, then bincode 2), re-exported where
//! the runtime has always used it, and its fuzz tests over the runtime's frames.

pub use roster_core::codec::*;

/// Property tests that feed the node codec's decoder random bytes and mutations of real
/// frames, as a peer speaking garbage would: every input gives a value or a clean error, never
/// a panic or a runaway allocation. Bounded: a fixed number of cases per property (about a
/// second in all), no persisted failures; set `PROPTEST_CASES` for a longer run.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::cluster::fuzz_samples::{sample_envelopes, Envelope};
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn config() -> ProptestConfig {
        ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() }
    }

    /// Encoded samples of every kind of frame.
    fn frames() -> Vec<Vec<u8>> {
        sample_envelopes().iter().map(|e| encode(e).expect("a sample encodes")).collect()
    }

    /// One change to a frame: overwrite, insert or remove a byte, or cut it short.
    #[derive(Clone, Debug)]
    enum Mutation {
        Set(usize, u8),
        Insert(usize, u8),
        Remove(usize),
        Truncate(usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
            any::<usize>().prop_map(Mutation::Remove),
            any::<usize>().prop_map(Mutation::Truncate),
        ]
    }

    fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
        for m in mutations {
            let n = bytes.len().max(1);
            match *m {
                Mutation::Set(i, b) if !bytes.is_empty() => bytes[i % n] = b,
                Mutation::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
                Mutation::Remove(i) if !bytes.is_empty() => {
                    bytes.remove(i % n);
                }
                Mutation::Truncate(i) => bytes.truncate(i % n),
                _ => {}
            }
        }
        bytes
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn random_bytes_decode_to_an_error_or_a_value_never_a_panic(mut bytes in vec(any::<u8>(), 0..2048), versioned in any::<bool>()) {
            if versioned && !bytes.is_empty() {
                bytes[0] = CODEC_VERSION;
            }
            if let Ok(env) = decode::<Envelope>(&bytes) {
                // Whatever decodes is a value the codec encodes and decodes again.
                prop_assert!(decode::<Envelope>(&encode(&env).expect("re-encode")).is_ok());
            }
        }

        #[test]
        fn mutated_frames_decode_to_an_error_or_a_value_never_a_panic(
            which in any::<prop::sample::Index>(),
            mutations in vec(mutation(), 1..6),
        ) {
            let frames = frames();
            let bytes = apply(frames[which.index(frames.len())].clone(), &mutations);
            if let Ok(env) = decode::<Envelope>(&bytes) {
                prop_assert!(decode::<Envelope>(&encode(&env).expect("re-encode")).is_ok());
            }
        }

        #[test]
        fn every_strict_prefix_of_a_frame_is_an_error(which in any::<prop::sample::Index>(), cut in any::<prop::sample::Index>()) {
            let frames = frames();
            let bytes = &frames[which.index(frames.len())];
            let cut = cut.index(bytes.len());
            prop_assert!(decode::<Envelope>(&bytes[..cut]).is_err());
        }

        #[test]
        fn a_length_prefix_beyond_the_limit_is_refused_without_allocating_it(
            which in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            len in (MAX_PAYLOAD_BYTES as u64 + 1)..u64::MAX,
        ) {
            // A varint (bincode's 0xFD marker and 8 bytes) claiming more than the payload
            // limit, spliced into a real frame where a length could be.
            let frames = frames();
            let mut bytes = frames[which.index(frames.len())].clone();
            let at = 1 + at.index(bytes.len() - 1);
            let mut claim = vec![0xFD];
            claim.extend_from_slice(&len.to_le_bytes());
            bytes.splice(at..at, claim);
            if let Ok(env) = decode::<Envelope>(&bytes) {
                prop_assert!(decode::<Envelope>(&encode(&env).expect("re-encode")).is_ok());
            }
        }
    }

    #[test]
    fn the_samples_cover_every_kind_of_content_and_round_trip() {
        let samples = sample_envelopes();
        for env in &samples {
            let back: Envelope = decode(&encode(env).unwrap()).unwrap();
            assert_eq!(&back, env);
        }
        assert!(samples.iter().map(|e| e.body.len()).sum::<usize>() >= 20);
    }
}
