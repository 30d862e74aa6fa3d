//! kvmtrace: explains why interrupts reach KVM guests late.
//!
//! - [`probes`]: tracefs format parsing, loading and attaching the eBPF programs (the only
//!   aya user).
//! - [`source`]: the live ring buffer and the embedded demo guest, merged into one stream.
//! - [`capture`]: the capture file format.
//! - [`report`]: per-vCPU summaries as text or JSON.
pub mod capture;
pub mod cli;
pub mod engine;
pub mod host;
pub mod import;
pub mod probes;
pub mod record;
pub mod report;
pub mod source;
pub mod tui;
