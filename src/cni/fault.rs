//! `util::fault::step` for code returning CNI errors (test builds only ever
//! fail it; see src/util/fault.rs).

use super::CniError;

/// Fails when fault injection targets this step; a no-op in normal builds.
#[inline]
pub fn step(name: &str) -> Result<(), CniError> {
    crate::util::fault::step(name).map_err(CniError::from)
}
