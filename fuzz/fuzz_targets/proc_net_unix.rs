//! `/proc/net/unix`: the whole-file parser and the line parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockscope::source::procfs::{parse_unix, parse_unix_line};

fuzz_target!(|data: &[u8]| {
    let mut visited = 0u64;
    let stats = parse_unix(data, &mut |_| visited += 1).expect("a slice never fails");
    let lines = data.split(|&b| b == b'\n').count() as u64;
    assert!(visited + stats.parse_errors <= lines);
    for line in data.split(|&b| b == b'\n') {
        let _ = parse_unix_line(line);
    }
});
