use super::*;

#[test]
fn level_names_and_warning() {
    for (spec, want) in [
        ("info", "info"),
        ("warning", "warn"),
        ("WARN", "warn"),
        ("Error", "error"),
        ("trace", "trace"),
        ("off", "off"),
        ("info,sockscope::web=debug", "info,sockscope::web=debug"),
        ("sockscope=warning", "sockscope=warn"),
        ("hyper=off, info", "hyper=off,info"),
    ] {
        assert_eq!(parse_filter(spec).as_deref(), Ok(want), "{spec}");
    }
}

/// A bare word that is not a level would be a target filter that turns
/// every line off: refused, in one line that names it.
#[test]
fn a_bare_word_that_is_not_a_level_is_refused() {
    for spec in [
        "bogus",
        "infoo",
        "sockscope",
        "info,bogus",
        "sockscope=loud",
        "",
        "=",
    ] {
        let e = parse_filter(spec).unwrap_err();
        assert!(e.starts_with("--log.level"), "{spec}: {e}");
        assert!(!e.contains('\n'), "{spec}: one line: {e}");
    }
}

/// `warning` keeps warnings on (EnvFilter alone turns everything off).
#[test]
fn warning_enables_warnings() {
    use tracing::level_filters::LevelFilter;
    let f = env_filter("warning").unwrap();
    assert_eq!(f.max_level_hint(), Some(LevelFilter::WARN));
    let f = env_filter("sockscope=debug").unwrap();
    assert_eq!(f.max_level_hint(), Some(LevelFilter::DEBUG));
}
