//! kvmtrace: explains why interrupts reach KVM guests late. This crate is what runs on the
//! host; the analysis (events in, answers out) is `kvmtrace_analysis`.
//!
//! - [`probes`]: tracefs format files, loading and attaching the eBPF programs (the only aya
//!   user).
//! - [`host`]: facts about the machine, privileges, the VMs and vCPU threads running.
//! - [`housekeeping`]: where kvmtrace's own threads run (off the vCPUs' CPUs) and their CPU time.
//! - [`source`]: the live ring buffer and the embedded demo guest, merged into one stream.
//! - [`record`]: `kvmtrace record`, with the flight recorder.
//! - [`tui`]: `kvmtrace top`.
//! - [`exporter`]: `kvmtrace exporter`, the live engine behind a Prometheus endpoint.
//! - [`check`]: `kvmtrace check`, the host tuning audit.
//! - [`cli`]: the command line.
pub mod check;
/// The command line (clap definitions; build.rs generates completions and man pages from
/// them).
pub mod cli;
pub mod exporter;
pub mod host;
pub mod housekeeping;
pub mod probes;
pub mod record;
pub mod source;
pub mod tui;
