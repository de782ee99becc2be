//! Sysctl values: `ip_local_port_range` and `ip_local_reserved_ports`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockscope::source::sysctl::{parse_port_list, parse_port_range};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(r) = parse_port_range(text) {
            assert!(r.first() <= r.last());
        }
        if let Some(list) = parse_port_list(text) {
            assert!(list.iter().all(|&(a, b)| a <= b));
        }
    }
});
