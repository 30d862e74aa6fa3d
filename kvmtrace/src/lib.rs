//! kvmtrace: explains why interrupts reach KVM guests late.
pub mod host;
pub mod probes;
