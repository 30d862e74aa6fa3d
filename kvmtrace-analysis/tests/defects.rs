//! Regression tests for the two reliability defects of issue 11, on hand-written text
//! fixtures (tests/fixtures/text/defects/README.md):
//!
//! - a CPU number the input gives (`[4000000000]`) must never size an allocation: the text
//!   importer counts such lines (`cpu out of range`), and the engine itself must be bounded
//!   for captures (`engine_bounds_cpu_numbers_it_is_given`);
//! - one lost `irq_handler_exit` must not leave the CPU's host-interrupt overlay open, so
//!   later clean samples are not attributed to `hardirq:N`, and samples that overlapped the
//!   loss are incomplete.
//!
//! This binary refuses any single allocation over 256 MiB (see [`Limited`]): a test that
//! would allocate by an input number aborts quickly instead of exhausting the machine.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};

use kvmtrace_analysis::engine::{Engine, EngineConfig};
use kvmtrace_analysis::report::{analyse_text, Report};
use kvmtrace_common::{ev, Event, Origin};

/// The system allocator, refusing single allocations over 256 MiB.
struct Limited;

const LIMIT: usize = 256 << 20;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, or
// returns null (an allowed allocation failure) for a size over the limit.
unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > LIMIT {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation is).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > LIMIT {
            return std::ptr::null_mut();
        }
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > LIMIT {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr`/`layout` come from `System` (as `dealloc`); the caller upholds the
        // rest of `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Limited = Limited;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .join("tests/fixtures/text/defects")
        .join(name)
}

fn report(name: &str) -> Report {
    analyse_text(&fixture(name), EngineConfig::default())
        .expect("import")
        .0
}

/// 100 s + 0.5 ms: after the loss (or the missing exit) and before the clean samples.
const AFTER_LOSS_NS: u64 = 100_000_500_000;

/// The causes of the samples that opened after the loss, and whether any is hardirq.
fn hardirq_after_loss(r: &Report) -> (usize, Vec<String>) {
    let later: Vec<_> = r
        .worst
        .iter()
        .filter(|w| w.open_ns > AFTER_LOSS_NS)
        .collect();
    let hardirq = later
        .iter()
        .flat_map(|w| &w.causes)
        .filter(|c| c.cause.starts_with("hardirq:"))
        .map(|c| format!("{} {} ns", c.cause, c.ns))
        .collect();
    (later.len(), hardirq)
}

#[test]
fn text_with_a_huge_cpu_number_imports_without_allocating_by_it() {
    let r = report("cpu-4000000000.txt");
    let stats = &r.import.as_ref().expect("an import").stats;
    assert_eq!(
        stats.by_reason.get("cpu out of range"),
        Some(&3),
        "{stats:?}"
    );
    // The rest is analysed as usual.
    assert_eq!(r.vcpus.len(), 1);
    assert_eq!(r.vcpus[0].latency.exits.by_reason[0].count, 1);
    let text = r.to_text();
    assert!(
        text.contains("not understood: 3 x cpu out of range"),
        "{text}"
    );
}

#[test]
fn engine_bounds_cpu_numbers_it_is_given() {
    // A capture's records reach the engine without the importer's bounds: a CPU number
    // from a corrupt or hostile capture must not size the engine's per-CPU state.
    let mut engine = Engine::new(EngineConfig::default());
    let at = |ts_ns: u64, cpu: u32| Origin {
        ts_ns,
        tid: 100,
        tgid: 1,
        cpu,
    };
    let entry = ev::KvmEntry {
        vcpu_id: Some(0),
        ..Default::default()
    };
    let exit = ev::KvmExit {
        exit_reason: 12,
        isa: Some(1),
        vcpu_id: Some(0),
        ..Default::default()
    };
    for e in [
        Event::new(at(1_000, 0), &entry),
        Event::new(at(2_000, 4_000_000_000), &exit),
        Event::new(at(3_000, 4_000_000_000), &ev::IrqHandlerEntry { irq: 24 }),
        Event::new(at(4_000, u32::MAX), &ev::IrqHandlerExit { irq: 24, ret: 1 }),
        Event::new(at(5_000, 0), &entry),
    ] {
        engine.push(&e);
    }
    engine.flush();
    assert_eq!(engine.vcpus().count(), 1);
}

#[test]
fn lost_irq_handler_exit_does_not_make_later_samples_hardirq() {
    let r = report("lost-irq-handler-exit.txt");
    assert_eq!(r.events.dropped, 1);
    let (later, hardirq) = hardirq_after_loss(&r);
    assert_eq!(
        later, 3,
        "three clean samples after the loss: {:?}",
        r.worst
    );
    assert!(
        hardirq.is_empty(),
        "clean samples attributed to a handler whose exit was lost: {hardirq:?}"
    );
    // The window open across the loss cannot be trusted.
    assert!(r.attribution.incomplete >= 1, "{:?}", r.attribution);
}

#[test]
fn missing_irq_handler_exit_does_not_make_later_samples_hardirq() {
    let r = report("missing-irq-handler-exit.txt");
    let (later, hardirq) = hardirq_after_loss(&r);
    assert_eq!(later, 3, "three clean samples: {:?}", r.worst);
    assert!(
        hardirq.is_empty(),
        "clean samples attributed to a handler that had ended: {hardirq:?}"
    );
}
