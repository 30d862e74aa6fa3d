//! Names the kernel prints for numeric fields in trace text, back to their numbers.

/// APIC delivery modes as KVM's irq tracepoints print them (`(dm >> 8) & 7`).
const DELIVERY_MODES: &[&str] = &[
    "Fixed", "LowPrio", "SMI", "Res3", "NMI", "INIT", "SIPI", "ExtINT",
];

pub(super) fn delivery_mode(name: &str) -> Option<u64> {
    DELIVERY_MODES
        .iter()
        .position(|n| *n == name)
        .map(|i| i as u64)
}

/// `kvm_pic_set_irq`'s chip as older kernels print it (newer print the number).
pub(super) fn irqchip(name: &str) -> Option<u64> {
    match name {
        "PIC master" => Some(0),
        "PIC slave" => Some(1),
        "IOAPIC" => Some(2),
        _ => None,
    }
}

/// `contention_begin` flag names (`LCB_F_*`).
pub(super) fn lock_flag(name: &str) -> Option<u64> {
    Some(match name {
        "SPIN" => 1,
        "READ" => 1 << 1,
        "WRITE" => 1 << 2,
        "RT" => 1 << 3,
        "PERCPU" => 1 << 4,
        "MUTEX" => 1 << 5,
        _ => return None,
    })
}

/// `hrtimer_start`'s `mode` as printed (`ABS`, `REL|PINNED|HARD`, ...): the
/// `HRTIMER_MODE_*` bits (include/linux/hrtimer.h: REL 1, PINNED 2, SOFT 4, HARD 8).
pub(super) fn hrtimer_mode(text: &str) -> Option<u64> {
    let mut mode = 0;
    for part in text.split('|') {
        mode |= match part {
            "ABS" => 0,
            "REL" => 1,
            "PINNED" => 2,
            "SOFT" => 4,
            "HARD" => 8,
            _ => return None,
        };
    }
    Some(mode)
}

/// `mmio` access types of `kvm_mmio`.
pub(super) fn mmio_type(name: &str) -> Option<u64> {
    match name {
        "unsatisfied-read" => Some(0),
        "read" => Some(1),
        "write" => Some(2),
        _ => None,
    }
}

/// `sched_switch.prev_state` letters, as the kernel prints them (`prev_state=S|D`, with a
/// trailing `+` for a preempted task, `R` alone for running), or as libtraceevent's
/// sched_switch plugin does (`trace-cmd report`: `S`, `D`, ... with its own, older, bit
/// order). Only "runnable or not" matters downstream: any letter but `R` gives a non-zero
/// low byte. None for anything else.
pub(super) fn prev_state(text: &str, plugin: bool) -> Option<u64> {
    let (letters, preempted) = match text.strip_suffix('+') {
        Some(l) => (l, true),
        None => (text, false),
    };
    if letters.is_empty() {
        return None;
    }
    let mut state = 0u64;
    for part in letters.split('|') {
        let bit = match (part, plugin) {
            ("R", _) => 0,
            ("S", _) => 0x1,
            ("D", _) => 0x2,
            ("T", _) => 0x4,
            ("t", _) => 0x8,
            // Linux >= 4.14 (TASK_REPORT).
            ("X", false) => 0x10,
            ("Z", false) => 0x20,
            ("P", false) => 0x40,
            ("I", false) => 0x80,
            // libtraceevent's "SDTtZXxW".
            ("Z", true) => 0x10,
            ("X", true) => 0x20,
            ("x", true) => 0x40,
            ("W", true) => 0x80,
            // Older kernels' extra letters (x dead, K wakekill, W waking, P parked,
            // N noload): none of them is runnable.
            ("x" | "K" | "W" | "N" | "P" | "I", _) => 0x80,
            _ => return None,
        };
        state |= bit;
    }
    if preempted {
        // TASK_REPORT_MAX: preempted while runnable.
        state |= 0x100;
    }
    Some(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_tables() {
        assert_eq!(delivery_mode("ExtINT"), Some(7));
        assert_eq!(prev_state("R", false), Some(0));
        assert_eq!(prev_state("R+", false), Some(0x100));
        assert_eq!(prev_state("S", false), Some(1));
        assert_eq!(prev_state("D|K", false), Some(0x82));
        assert_eq!(prev_state("W", true), Some(0x80));
        assert_eq!(prev_state("", false), None);
        assert_eq!(prev_state("+", false), None);
        assert_eq!(prev_state("Q", false), None);
    }
}
