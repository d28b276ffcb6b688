//! The crash-safety tests' fault injection: keyward aborts after a named rotation step when
//! `KEYWARD_TEST_ABORT_AFTER` names it; and the race tests' `KEYWARD_TEST_BLIND_SECRETS`. Compiled only with
//! the `fault-injection` feature, which only the test build turns on; the operator as shipped has none of it.

/// Aborts the process here if the tests asked for it (`intent`, `esc-write`, `secret-write`, `github-push`).
pub fn checkpoint(step: &'static str) {
    #[cfg(feature = "fault-injection")]
    if std::env::var("KEYWARD_TEST_ABORT_AFTER").is_ok_and(|s| s == step) {
        tracing::error!(step, "aborting after this rotation step (KEYWARD_TEST_ABORT_AFTER)");
        std::process::abort();
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = step;
}

/// Whether the tests asked keyward to learn nothing of which Secrets exist (`KEYWARD_TEST_BLIND_SECRETS=1`), so
/// that every first write of a target goes unread — the race of a Secret created an instant before it.
pub fn blind_secrets() -> bool {
    #[cfg(feature = "fault-injection")]
    return std::env::var("KEYWARD_TEST_BLIND_SECRETS").is_ok_and(|v| v == "1");
    #[cfg(not(feature = "fault-injection"))]
    false
}
