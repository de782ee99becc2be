//! `--log.level`: a level name or `tracing` directives, checked at start.
//!
//! `tracing_subscriber::EnvFilter` reads a bare word as a *target* (`bogus`
//! enables every level of a target named `bogus`, so every line of
//! sockscope is off): [`parse_filter`] takes a bare word only when it is a
//! level, and `warning` as `warn`.

use tracing_subscriber::EnvFilter;

/// The level names `--log.level` takes, alone or after `target=`.
pub(crate) const LEVELS: [&str; 7] = ["off", "error", "warn", "warning", "info", "debug", "trace"];

/// The level `word` names (case-insensitive), `warning` as `warn`.
fn level(word: &str) -> Option<&'static str> {
    let w = word.to_ascii_lowercase();
    match w.as_str() {
        "warning" => Some("warn"),
        _ => LEVELS.iter().copied().find(|l| *l == w),
    }
}

/// Turns `--log.level` into the filter directives it means: a comma-separated
/// list of a level (`info`, `warning`), `target=level`
/// (`sockscope::web=debug`) or any other `EnvFilter` directive that names a
/// target with a level (`target[span{field}]=level`).
///
/// # Errors
/// One line naming the problem: a bare word that is not a level (EnvFilter
/// would read it as a target and log nothing), a `target=` with a word that
/// is not a level, or a directive `EnvFilter` refuses.
pub fn parse_filter(spec: &str) -> Result<String, String> {
    let bad = |why: String| format!("--log.level {spec:?}: {why}");
    if spec.trim().is_empty() {
        return Err(bad(format!("expected one of {}", LEVELS.join(", "))));
    }
    let mut out = Vec::new();
    for d in spec.split(',').map(str::trim) {
        let normalized = match d.rsplit_once('=') {
            None => level(d).map(str::to_owned).ok_or_else(|| {
                bad(format!(
                    "{d:?} is not a level (expected one of {}, or target=level)",
                    LEVELS.join(", ")
                ))
            })?,
            Some((target, lvl)) => {
                let lvl = level(lvl).ok_or_else(|| {
                    bad(format!(
                        "{d:?}: {lvl:?} is not a level (expected one of {})",
                        LEVELS.join(", ")
                    ))
                })?;
                format!("{target}={lvl}")
            }
        };
        out.push(normalized);
    }
    let joined = out.join(",");
    EnvFilter::builder()
        .parse(&joined)
        .map_err(|e| bad(e.to_string()))?;
    Ok(joined)
}

/// The `EnvFilter` of a spec that [`parse_filter`] accepted.
///
/// # Errors
/// As [`parse_filter`].
pub fn env_filter(spec: &str) -> Result<EnvFilter, String> {
    let directives = parse_filter(spec)?;
    EnvFilter::builder()
        .parse(&directives)
        .map_err(|e| format!("--log.level {spec:?}: {e}"))
}

#[cfg(test)]
#[path = "logging/tests.rs"]
mod tests;
