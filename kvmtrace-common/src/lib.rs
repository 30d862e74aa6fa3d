//! Records shared by the kvmtrace eBPF programs and userspace.
//!
//! Everything that crosses the kernel boundary is defined here once: the event record
//! ([`Event`]), the event kinds ([`Kind`]), which tracepoint field lands in which slot
//! ([`SLOTS`]), and the loader-provided configuration ([`Config`]) that the eBPF programs read
//! as a read-only global, so the verifier prunes what a kernel does not have.
//!
//! Layout rules: `#[repr(C)]`, fixed-width integers, explicit padding, no `bool` or `Option`;
//! enums cross as raw `u16` and are decoded with `TryFrom`. Each record has a compile-time size
//! assertion.
#![no_std]

/// Number of value slots in an [`Event`].
pub const NSLOTS: usize = 5;

/// One event, as written by the eBPF programs to the ring buffer, and as stored in captures.
///
/// `slots` hold the tracepoint's fields in the order given by [`SLOTS`] for its kind; a field
/// the running kernel does not have reads as 0 and its bit is set in `missing`.
/// Userspace-made kinds ([`Kind::ThreadInfo`], [`Kind::DemoAck`], [`Kind::Drops`]) use the
/// same record so one stream carries everything.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`).
    pub ts_ns: u64,
    /// Kernel thread id of the task that was current when the event fired.
    pub tid: u32,
    /// Its thread-group id (the process id, e.g. QEMU's pid).
    pub tgid: u32,
    /// CPU the event fired on.
    pub cpu: u32,
    /// A [`Kind`] as its raw value.
    pub kind: u16,
    /// Bit `i` set: slot `i`'s field is absent on this kernel.
    pub missing: u8,
    pub _pad: u8,
    pub slots: [u64; NSLOTS],
}

const _: () = assert!(core::mem::size_of::<Event>() == 64);
const _: () = assert!(core::mem::align_of::<Event>() == 8);

impl Event {
    /// Size of one record in bytes (ring buffer and capture).
    pub const SIZE: usize = core::mem::size_of::<Event>();

    /// Little-endian bytes of the record (the capture's on-disk form).
    pub fn to_le_bytes(&self) -> [u8; Event::SIZE] {
        let mut out = [0u8; Event::SIZE];
        out[0..8].copy_from_slice(&self.ts_ns.to_le_bytes());
        out[8..12].copy_from_slice(&self.tid.to_le_bytes());
        out[12..16].copy_from_slice(&self.tgid.to_le_bytes());
        out[16..20].copy_from_slice(&self.cpu.to_le_bytes());
        out[20..22].copy_from_slice(&self.kind.to_le_bytes());
        out[22] = self.missing;
        out[23] = self._pad;
        let mut i = 0;
        while i < NSLOTS {
            let at = 24 + i * 8;
            out[at..at + 8].copy_from_slice(&self.slots[i].to_le_bytes());
            i += 1;
        }
        out
    }

    /// Parses a record from little-endian bytes; `None` when `b` is shorter than a record.
    pub fn from_le_bytes(b: &[u8]) -> Option<Event> {
        if b.len() < Event::SIZE {
            return None;
        }
        let u64_at = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(w)
        };
        let u32_at = |at: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&b[at..at + 4]);
            u32::from_le_bytes(w)
        };
        let mut slots = [0u64; NSLOTS];
        for (i, s) in slots.iter_mut().enumerate() {
            *s = u64_at(24 + i * 8);
        }
        Some(Event {
            ts_ns: u64_at(0),
            tid: u32_at(8),
            tgid: u32_at(12),
            cpu: u32_at(16),
            kind: u16::from_le_bytes([b[20], b[21]]),
            missing: b[22],
            _pad: b[23],
            slots,
        })
    }
}

macro_rules! kinds {
    ($( $variant:ident = $val:literal, $cat:literal, $name:literal, [$($slot:literal),*]; )*) => {
        /// What an [`Event`] is: a tracepoint, or a record made by userspace.
        #[repr(u16)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Kind {
            $( $variant = $val, )*
        }

        impl Kind {
            /// Every kind, in value order.
            pub const ALL: &'static [Kind] = &[ $( Kind::$variant, )* ];

            /// Tracefs category (`kvm`, `sched`, ...) or `kvmtrace` for userspace records.
            pub const fn category(self) -> &'static str {
                match self { $( Kind::$variant => $cat, )* }
            }

            /// Tracepoint name (also the eBPF program's name), or the record's name.
            pub const fn name(self) -> &'static str {
                match self { $( Kind::$variant => $name, )* }
            }

            /// Field names stored in `slots`, in order. An empty name leaves the slot unused;
            /// a 16-byte field (a `comm`) takes its slot and the next.
            pub const fn slots(self) -> &'static [&'static str] {
                match self { $( Kind::$variant => &[$($slot),*], )* }
            }
        }

        impl TryFrom<u16> for Kind {
            type Error = u16;
            fn try_from(v: u16) -> Result<Kind, u16> {
                match v {
                    $( $val => Ok(Kind::$variant), )*
                    other => Err(other),
                }
            }
        }
    };
}

kinds! {
    KvmExit = 0, "kvm", "kvm_exit", ["exit_reason", "isa", "vcpu_id", "guest_rip", "info1"];
    KvmEntry = 1, "kvm", "kvm_entry", ["vcpu_id", "rip", "intr_info"];
    KvmUserspaceExit = 2, "kvm", "kvm_userspace_exit", ["reason", "errno"];
    KvmInjVirq = 3, "kvm", "kvm_inj_virq", ["vector", "soft", "reinjected"];
    KvmApicAcceptIrq = 4, "kvm", "kvm_apic_accept_irq", ["apicid", "vec", "dm", "tm"];
    KvmSetIrq = 5, "kvm", "kvm_set_irq", ["gsi", "level", "irq_source_id"];
    KvmMsiSetIrq = 6, "kvm", "kvm_msi_set_irq", ["address", "data"];
    KvmPicSetIrq = 7, "kvm", "kvm_pic_set_irq", ["chip", "pin", "imr", "coalesced"];
    KvmIoapicSetIrq = 8, "kvm", "kvm_ioapic_set_irq", ["e", "pin", "coalesced"];
    KvmVcpuWakeup = 9, "kvm", "kvm_vcpu_wakeup", ["ns", "waited", "valid"];
    KvmPio = 10, "kvm", "kvm_pio", ["rw", "port", "size", "val"];
    KvmMmio = 11, "kvm", "kvm_mmio", ["type", "len", "gpa", "val"];
    KvmMsr = 12, "kvm", "kvm_msr", ["write", "ecx", "data", "exception"];
    SchedSwitch = 13, "sched", "sched_switch", ["prev_pid", "prev_state", "next_pid", "next_comm", ""];
    SchedWakeup = 14, "sched", "sched_wakeup", ["pid", "target_cpu", "prio", "comm", ""];
    SchedWakeupNew = 15, "sched", "sched_wakeup_new", ["pid", "target_cpu", "prio", "comm", ""];
    SchedMigrateTask = 16, "sched", "sched_migrate_task", ["pid", "orig_cpu", "dest_cpu"];
    IrqHandlerEntry = 17, "irq", "irq_handler_entry", ["irq"];
    IrqHandlerExit = 18, "irq", "irq_handler_exit", ["irq", "ret"];
    SoftirqEntry = 19, "irq", "softirq_entry", ["vec"];
    SoftirqExit = 20, "irq", "softirq_exit", ["vec"];
    LocalTimerEntry = 21, "irq_vectors", "local_timer_entry", ["vector"];
    LocalTimerExit = 22, "irq_vectors", "local_timer_exit", ["vector"];
    RescheduleEntry = 23, "irq_vectors", "reschedule_entry", ["vector"];
    RescheduleExit = 24, "irq_vectors", "reschedule_exit", ["vector"];
    CallFunctionEntry = 25, "irq_vectors", "call_function_entry", ["vector"];
    CallFunctionExit = 26, "irq_vectors", "call_function_exit", ["vector"];
    CallFunctionSingleEntry = 27, "irq_vectors", "call_function_single_entry", ["vector"];
    CallFunctionSingleExit = 28, "irq_vectors", "call_function_single_exit", ["vector"];
    HrtimerExpireEntry = 29, "timer", "hrtimer_expire_entry", ["hrtimer", "function", "now"];
    HrtimerExpireExit = 30, "timer", "hrtimer_expire_exit", ["hrtimer"];
    ContentionBegin = 31, "lock", "contention_begin", ["lock_addr", "flags"];
    ContentionEnd = 32, "lock", "contention_end", ["lock_addr", "ret"];
    // Records made by userspace (never by the eBPF programs).
    ThreadInfo = 64, "kvmtrace", "thread_info", ["vcpu_id", "", "", "comm", ""];
    DemoAck = 65, "kvmtrace", "demo_ack", ["seq", "raised_ns", "acked_ns", "path", "irqoff_ns"];
    Drops = 66, "kvmtrace", "drops", ["kernel", "userspace"];
}

/// Number of tracepoint kinds (values `0..NTRACEPOINTS`), i.e. eBPF programs.
pub const NTRACEPOINTS: usize = 33;

impl Kind {
    /// True for kinds that come from a tracepoint (and so have an eBPF program).
    pub const fn is_tracepoint(self) -> bool {
        (self as usize) < NTRACEPOINTS
    }

    /// Slot index of a field by name for this kind.
    pub fn slot_of(self, field: &str) -> Option<usize> {
        self.slots().iter().position(|s| *s == field)
    }
}

/// `ThreadInfo.slots[0]` when the vCPU id is not known.
pub const VCPU_UNKNOWN: u64 = u64::MAX;

/// `ThreadInfo.slots[1]` flag: the record names the VM of process `tgid` (QEMU's
/// `-name guest=...`, else the VMM's program name) instead of a thread.
pub const THREAD_INFO_VM_NAME: u64 = 1;

/// `ThreadInfo.slots[1]` flag: only the name of a thread that is not a traced vCPU (a task
/// that delayed one), even if its name looks like a vCPU thread's (another VM's).
pub const THREAD_INFO_NAME_ONLY: u64 = 2;

/// `DemoAck.slots[3]`: which of the demo guest's interrupt paths was acknowledged
/// (captures written before paths existed hold 0 there: the PIC, then the only one).
pub mod demo_path {
    /// A device interrupt through the in-kernel PIC (`KVM_IRQ_LINE`).
    pub const PIC: u64 = 0;
    /// An MSI into the guest's LAPIC (`KVM_SIGNAL_MSI`).
    pub const MSI: u64 = 1;
    /// The guest's own periodic LAPIC timer.
    pub const TIMER: u64 = 2;
    /// An MSI raised while the guest runs with interrupts disabled (`slots[4]`: for how
    /// long, in ns).
    pub const IRQOFF: u64 = 3;
    /// Names by value.
    pub const NAMES: [&str; 4] = ["pic", "msi", "timer", "irqoff"];

    /// The path's name, or `unknown` for a value from a newer kvmtrace.
    pub fn name(path: u64) -> &'static str {
        usize::try_from(path)
            .ok()
            .and_then(|i| NAMES.get(i))
            .copied()
            .unwrap_or("unknown")
    }
}

/// The eBPF programs copy this many bytes of each raw tracepoint record in one read and
/// take their fields from the copy; a field must end within it.
pub const RAW_BYTES: usize = 80;

/// Where a tracepoint field is, as read from its tracefs format file by the loader.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldSpec {
    /// Byte offset inside the tracepoint's raw record.
    pub offset: u16,
    /// Size in bytes: 1, 2, 4, 8 or 16 (a `comm`, stored in two slots); 0 = absent.
    pub size: u8,
    /// 1 when the field is signed (sign-extended into its slot).
    pub signed: u8,
}

const _: () = assert!(core::mem::size_of::<FieldSpec>() == 4);

/// Filter knob values for [`Config::filter_mode`].
pub mod filter {
    /// Trace every VM on the host: any thread that hits a vCPU-context KVM event is a vCPU.
    pub const ALL_VMS: u32 = 0;
    /// Trace only the processes whose tgid is in `TRACED_TGIDS`.
    pub const PIDS: u32 = 1;
}

/// Bits of `CPU_STATE[cpu]`.
pub mod cpu_state {
    /// A traced vCPU thread is running on this CPU.
    pub const RUNNING: u32 = 1;
    /// A traced vCPU thread is runnable here (woken or preempted) but not running yet.
    pub const WAITING: u32 = 2;
}

/// `sched_switch.prev_state` says the task was still runnable (preempted), not blocked.
///
/// The low byte holds the task's report state (0 = TASK_RUNNING); kernels since 4.14 set
/// `TASK_REPORT_MAX` (0x100 and up) for a preempted task.
pub const fn switch_prev_runnable(prev_state: u64) -> bool {
    prev_state & 0xff == 0
}

/// Read-only configuration the loader sets before load (global `CONFIG`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Kernel address of KVM's LAPIC timer callback (`apic_timer_fn`), 0 if unknown.
    pub apic_timer_fn: u64,
    /// One of [`filter`].
    pub filter_mode: u32,
    pub _pad: u32,
    /// Field locations per tracepoint kind (`fields[kind][slot]`).
    pub fields: [[FieldSpec; NSLOTS]; NTRACEPOINTS],
    pub _tail: u32,
}

const _: () = assert!(core::mem::size_of::<Config>() == 16 + NTRACEPOINTS * NSLOTS * 4 + 4);

impl Config {
    pub const fn zeroed() -> Config {
        Config {
            fields: [[FieldSpec {
                offset: 0,
                size: 0,
                signed: 0,
            }; NSLOTS]; NTRACEPOINTS],
            filter_mode: filter::ALL_VMS,
            _pad: 0,
            apic_timer_fn: 0,
            _tail: 0,
        }
    }
}

/// Names of maps and globals, shared so the loader and the programs cannot disagree.
pub mod names {
    pub const CONFIG: &str = "CONFIG";
    pub const EVENTS: &str = "EVENTS";
    pub const DROPS: &str = "DROPS";
    pub const VCPU_TIDS: &str = "VCPU_TIDS";
    pub const VM_TGIDS: &str = "VM_TGIDS";
    pub const TRACED_TGIDS: &str = "TRACED_TGIDS";
    pub const CPU_STATE: &str = "CPU_STATE";
}

/// Map sizes.
pub mod limits {
    /// Highest number of vCPU threads tracked at once.
    pub const MAX_VCPU_THREADS: u32 = 16384;
    /// Highest number of VM processes.
    pub const MAX_VMS: u32 = 4096;
    /// CPU ids the per-CPU state array covers.
    pub const MAX_CPUS: u32 = 4096;
    /// Default ring buffer size in bytes (a power of two, multiple of the page size).
    pub const DEFAULT_RING_BYTES: u32 = 8 << 20;
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all these are `#[repr(C)]` plain integers with explicit padding: every bit
    // pattern is valid and there are no implicit padding bytes.
    unsafe impl aya::Pod for super::Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FieldSpec {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Config {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_tracepoints_are_dense() {
        for (i, k) in Kind::ALL.iter().enumerate() {
            assert_eq!(Kind::try_from(*k as u16), Ok(*k));
            if i < NTRACEPOINTS {
                assert_eq!(*k as usize, i, "tracepoint kinds must be 0..NTRACEPOINTS");
                assert!(k.is_tracepoint());
            } else {
                assert!(!k.is_tracepoint());
            }
            assert!(k.slots().len() <= NSLOTS, "{}", k.name());
        }
        assert_eq!(Kind::try_from(999), Err(999));
    }

    #[test]
    fn event_bytes_round_trip() {
        let e = Event {
            ts_ns: 1,
            tid: 2,
            tgid: 3,
            cpu: 4,
            kind: Kind::KvmPio as u16,
            missing: 0b10,
            _pad: 0,
            slots: [5, 6, 7, u64::MAX, 9],
        };
        assert_eq!(Event::from_le_bytes(&e.to_le_bytes()), Some(e));
        assert_eq!(Event::from_le_bytes(&[0u8; 63]), None);
    }
}
