//! `--web.config.file`: exporter-toolkit's web configuration YAML, parsed
//! as if the file were in `/nonexistent` (parsing reads no file).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sockscope::web::config::{EXTRA_HEADERS, WebConfig};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match WebConfig::parse(text, Path::new("/nonexistent")) {
            Err(e) => assert!(!e.contains(['\n', '\r']), "one line: {e:?}"),
            Ok(cfg) => {
                if let Some(tls) = &cfg.tls {
                    assert!(tls.min_version <= tls.max_version);
                    assert!(tls.cert_file.is_absolute() && tls.key_file.is_absolute());
                    assert!(tls.client_allowed_sans.is_empty() || tls.client_auth.mandatory());
                    assert!(!tls.client_auth.verifies() || tls.client_ca_file.is_some());
                }
                for (name, _) in &cfg.headers {
                    assert!(
                        EXTRA_HEADERS
                            .iter()
                            .any(|(n, _)| n.eq_ignore_ascii_case(name.as_str()))
                    );
                }
            }
        }
    }
});
