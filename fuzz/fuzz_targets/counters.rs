//! `/proc/net/netstat` and `/proc/net/sockstat` (the agent reads them as
//! UTF-8 text; invalid UTF-8 is an I/O error before parsing).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockscope::source::counters::{Netstat, Sockstat};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Netstat::parse(text);
        let _ = Sockstat::parse(text);
    }
});
