//! nginx's stub_status body, as read from the HTTP response.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockscope::source::stub_status::parse_stub_status;

fuzz_target!(|data: &[u8]| {
    let _ = parse_stub_status(data);
});
