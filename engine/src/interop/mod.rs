//! Open formats Reflow reads and writes for other software (see docs/interop.md).

pub mod bundle;
