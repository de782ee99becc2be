//! `/proc/net/tcp` and `/proc/net/tcp6`: the whole-file parser (as the
//! agent reads it) and the line parser, for both families. Invariants: no
//! panic; every line is either a socket or a parse error (the header and
//! blank lines aside), so visited + errors never exceed the lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockscope::model::Family;
use sockscope::source::procfs::{parse_tcp, parse_tcp_line};

fuzz_target!(|data: &[u8]| {
    for family in [Family::Ipv4, Family::Ipv6] {
        let mut visited = 0u64;
        let stats = parse_tcp(family, data, &mut |_| visited += 1).expect("a slice never fails");
        let lines = data.split(|&b| b == b'\n').count() as u64;
        assert!(visited + stats.parse_errors <= lines);
        for line in data.split(|&b| b == b'\n') {
            let _ = parse_tcp_line(family, line);
        }
    }
});
