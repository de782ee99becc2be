//! A netlink receive buffer as the sock_diag source walks it: framing
//! (`walk_frames`), then each socket message through both decoders (the
//! buffer of a TCP dump and of a UNIX dump are framed alike).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockscope::source::sock_diag::{Frame, decode_inet, decode_unix, walk_frames};

fuzz_target!(|data: &[u8]| {
    // The first 4 bytes choose the sequence number the walk expects, so
    // that both matching and foreign messages are reached.
    let (seq, buf) = match data.split_first_chunk::<4>() {
        Some((s, rest)) => (u32::from_ne_bytes(*s), rest),
        None => (0, data),
    };
    let _ = walk_frames(buf, seq, |frame| {
        if let Frame::Socket(payload) = frame {
            let _ = decode_inet(payload);
            let _ = decode_unix(payload);
        }
    });
    // The decoders on the raw bytes too (no framing in the way).
    let _ = decode_inet(data);
    let _ = decode_unix(data);
});
