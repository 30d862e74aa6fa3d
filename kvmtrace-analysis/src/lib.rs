//! kvmtrace's analysis: everything that turns events into answers, with no eBPF, no async
//! runtime and no privileges, so it builds and tests on stable anywhere.
//!
//! Layers, lowest first; a module imports only from layers below it (checked by
//! `tests/layers.rs`, see docs/architecture.md):
//!
//! 1. vocabulary: [`names`] (the kernel's name tables), [`threads`] (what thread names say),
//!    [`hist`] (latency histograms), [`host`] (facts a capture records about its host),
//!    [`format`] (tracefs format files), [`ksyms`] (kernel symbols for stack frames). The event records themselves are
//!    `kvmtrace_common`'s.
//! 2. streams in and out: [`capture`] (the capture file, reader and writer), [`import`]
//!    (ftrace, trace-cmd and perf text into events).
//! 3. [`engine`]: the attribution engine, events in, per-vCPU latency model out.
//! 4. [`report`]: the model as text, JSON and exports (HdrHistogram log, Chrome trace).
pub mod capture;
pub mod engine;
pub mod format;
pub mod hist;
pub mod host;
pub mod import;
pub mod ksyms;
pub mod names;
pub mod report;
pub mod threads;
