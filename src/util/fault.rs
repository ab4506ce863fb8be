//! Test-only fault injection (cargo feature `fault-injection`, absent from
//! release builds): `fault::step("what")?` marks a step of an ADD. With
//! CNIBOX_FAIL_AT=N in the environment, the Nth step reached fails, so a
//! test can fail every step in turn (N = 1, 2, ... until ADD succeeds) and
//! check that each failure leaves nothing behind.

/// An injected failure: the step it was injected at.
#[derive(Debug, Clone)]
pub struct Injected {
    pub msg: String,
}

impl std::fmt::Display for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

#[cfg(feature = "fault-injection")]
static STEPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Fails when fault injection targets this step; a no-op in normal builds.
#[inline]
pub fn step(name: &str) -> Result<(), Injected> {
    #[cfg(feature = "fault-injection")]
    {
        let n = STEPS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if std::env::var("CNIBOX_FAIL_AT").ok().and_then(|v| v.parse::<usize>().ok()) == Some(n) {
            log::warn!("fault injection: failing step {n} ({name})");
            return Err(Injected { msg: format!("injected failure at step {n} ({name})") });
        }
    }
    let _ = name;
    Ok(())
}
