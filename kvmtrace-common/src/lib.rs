//! Records shared by the kvmtrace eBPF programs and userspace.
//!
//! Everything that crosses the kernel boundary is defined here once: the event record
//! ([`Event`]), the event kinds ([`Kind`]) and, for each kind, a typed view of its fields
//! ([`ev`]: `ev::KvmExit { exit_reason, isa, vcpu_id, .. }`), generated from one table so the
//! slot a field lives in is written down in exactly one place. Code outside this crate never
//! indexes `Event::slots`: it decodes with [`Event::get`] / [`Event::payload`] and builds
//! records with [`Event::new`].
//!
//! Also here: the loader-provided configuration ([`Config`]) that the eBPF programs read as a
//! read-only global, so the verifier prunes what a kernel does not have.
//!
//! Layout rules: `#[repr(C)]`, fixed-width integers, explicit padding, no `bool` or `Option`
//! inside records; enums cross as raw `u16` and are decoded with `TryFrom`. Each record has a
//! compile-time size assertion.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod exits;
pub use exits::{ExitHist, ExitKey, VcpuThread};
pub mod kvm_events;

/// Number of value slots in an [`Event`].
pub const NSLOTS: usize = 5;

/// One event, as written by the eBPF programs to the ring buffer, and as stored in captures.
///
/// `slots` hold the tracepoint's fields in the order the [`kinds!`] table gives for its kind;
/// a field the running kernel does not have reads as 0 and its bit is set in `missing`.
/// Userspace-made kinds ([`Kind::ThreadInfo`], [`Kind::DemoAck`], [`Kind::Drops`], the
/// stack definitions) and the stack programs' records ([`Kind::StackAt`],
/// [`Kind::StackSample`]) use the same record so one stream carries everything.
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

/// Where and when an event happened: everything in an [`Event`] but its kind and fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub ts_ns: u64,
    pub tid: u32,
    pub tgid: u32,
    pub cpu: u32,
}

/// A typed view of one kind's fields (generated for every kind in [`ev`]).
pub trait Record: Sized {
    /// The kind whose fields these are.
    const KIND: Kind;
    /// Reads the fields out of `ev`'s slots (the caller checked the kind).
    fn decode(ev: &Event) -> Self;
    /// Writes the fields into `slots`, setting the `missing` bits of absent ones.
    fn encode(&self, slots: &mut [u64; NSLOTS], missing: &mut u8);
}

impl Event {
    /// Size of one record in bytes (ring buffer and capture).
    pub const SIZE: usize = core::mem::size_of::<Event>();

    /// A record of `rec`'s kind from `at`.
    pub fn new<R: Record>(at: Origin, rec: &R) -> Event {
        let mut slots = [0u64; NSLOTS];
        let mut missing = 0u8;
        rec.encode(&mut slots, &mut missing);
        Event {
            ts_ns: at.ts_ns,
            tid: at.tid,
            tgid: at.tgid,
            cpu: at.cpu,
            kind: R::KIND as u16,
            missing,
            _pad: 0,
            slots,
        }
    }

    /// The fields as `R`, when the event is of `R`'s kind.
    #[inline(always)]
    pub fn get<R: Record>(&self) -> Option<R> {
        (self.kind == R::KIND as u16).then(|| R::decode(self))
    }

    /// Where and when it happened.
    pub fn origin(&self) -> Origin {
        Origin {
            ts_ns: self.ts_ns,
            tid: self.tid,
            tgid: self.tgid,
            cpu: self.cpu,
        }
    }

    /// The kind, or its raw value when this kvmtrace does not know it.
    pub fn kind(&self) -> Result<Kind, u16> {
        Kind::try_from(self.kind)
    }

    /// Is field `i` of this event absent on the kernel that recorded it?
    pub fn is_missing(&self, i: usize) -> bool {
        i < 8 && self.missing & (1 << i) != 0
    }

    /// Every named field, in slot order, a comm as one [`FieldValue::Comm`] (for generic
    /// display and lookups by name); an absent field reads as 0 with `present` false.
    pub fn fields(&self) -> impl Iterator<Item = Field> + '_ {
        let names = match self.kind() {
            Ok(k) => k.slots(),
            Err(_) => [""; NSLOTS],
        };
        let comm_at = self.kind().ok().and_then(Kind::comm_slot);
        (0..NSLOTS).filter_map(move |i| {
            let name = names[i];
            if name.is_empty() {
                return None;
            }
            let value = if comm_at == Some(i) && i + 1 < NSLOTS {
                FieldValue::Comm(Comm::from_slots(self.slots[i], self.slots[i + 1]))
            } else {
                FieldValue::Num(self.slots[i])
            };
            Some(Field {
                name,
                value,
                present: !self.is_missing(i),
            })
        })
    }

    /// The field named `name` (its tracefs name), None when the kind has no such field or
    /// this event lacks it.
    pub fn field(&self, name: &str) -> Option<FieldValue> {
        self.fields()
            .find(|f| f.name == name)
            .filter(|f| f.present)
            .map(|f| f.value)
    }

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

    /// The value of column `i` of the capture's column-wise block layout: the five slots.
    pub fn slot(&self, i: usize) -> u64 {
        self.slots.get(i).copied().unwrap_or(0)
    }

    /// Sets column `i` (the inverse of [`Event::slot`]).
    pub fn set_slot(&mut self, i: usize, v: u64) {
        if let Some(s) = self.slots.get_mut(i) {
            *s = v;
        }
    }
}

/// One field of an event, for generic display ([`Event::fields`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Its tracefs name.
    pub name: &'static str,
    pub value: FieldValue,
    /// False when the kernel (or text) that produced the event lacks the field.
    pub present: bool,
}

/// A field's value for generic display ([`Event::fields`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValue {
    Num(u64),
    Comm(Comm),
}

/// A task name: 16 bytes, NUL-padded, as the kernel's `comm` fields hold it.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Comm(pub [u8; 16]);

impl Comm {
    /// From the two slots a comm field takes.
    #[inline(always)]
    pub fn from_slots(lo: u64, hi: u64) -> Comm {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&lo.to_le_bytes());
        b[8..].copy_from_slice(&hi.to_le_bytes());
        Comm(b)
    }

    /// The two slots (the inverse of [`Comm::from_slots`]).
    pub fn to_slots(&self) -> (u64, u64) {
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&self.0[..8]);
        hi.copy_from_slice(&self.0[8..]);
        (u64::from_le_bytes(lo), u64::from_le_bytes(hi))
    }

    /// A name cut to the kernel's 15 bytes (`TASK_COMM_LEN - 1`), NUL-padded.
    pub fn new(name: &str) -> Comm {
        let mut b = [0u8; 16];
        let n = name.len().min(15);
        b[..n].copy_from_slice(&name.as_bytes()[..n]);
        Comm(b)
    }

    /// The bytes up to the first NUL.
    pub fn bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&c| c == 0).unwrap_or(16);
        &self.0[..end]
    }

    pub fn is_empty(&self) -> bool {
        self.0[0] == 0
    }

    /// As text (bytes that are not UTF-8 replaced).
    #[cfg(feature = "std")]
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }
}

impl core::fmt::Debug for Comm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match core::str::from_utf8(self.bytes()) {
            Ok(s) => write!(f, "{s:?}"),
            Err(_) => write!(f, "{:?}", self.bytes()),
        }
    }
}

/// The Rust type of a field in the [`kinds!`] table: `u64` (always present; 0 when the
/// kernel lacks it), `opt` (`Option<u64>`: present only when the kernel has it) or `comm`
/// (a 16-byte name taking its slot and the next).
macro_rules! field_ty {
    (u64) => { u64 };
    (opt) => { Option<u64> };
    (comm) => { Comm };
}

macro_rules! field_get {
    (u64, $e:expr, $i:literal) => {
        $e.slots[$i]
    };
    (opt, $e:expr, $i:literal) => {
        if $e.missing & (1 << $i) == 0 {
            Some($e.slots[$i])
        } else {
            None
        }
    };
    (comm, $e:expr, $i:literal) => {
        Comm::from_slots($e.slots[$i], $e.slots[$i + 1])
    };
}

macro_rules! field_put {
    (u64, $v:expr, $slots:ident, $missing:ident, $i:literal) => {
        $slots[$i] = $v;
    };
    (opt, $v:expr, $slots:ident, $missing:ident, $i:literal) => {
        match $v {
            Some(v) => $slots[$i] = v,
            None => *$missing |= 1 << $i,
        }
    };
    (comm, $v:expr, $slots:ident, $missing:ident, $i:literal) => {
        let (lo, hi) = $v.to_slots();
        $slots[$i] = lo;
        $slots[$i + 1] = hi;
    };
}

macro_rules! field_is_comm {
    (comm) => {
        true
    };
    ($other:ident) => {
        false
    };
}

/// The one table of event kinds: value, tracefs category and name, and per field its Rust
/// name, type, slot and tracefs field name.
macro_rules! kinds {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident = $val:literal, $cat:literal, $name:literal {
            $( $field:ident : $ty:ident @ $slot:literal = $fname:literal ),* $(,)?
        }
    )*) => {
        /// What an [`Event`] is: a tracepoint, or a record made by userspace.
        #[repr(u16)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Kind {
            $( $(#[doc = $doc])* $variant = $val, )*
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

            /// Tracefs field name stored in each slot; "" for a slot that holds no field of
            /// its own (unused, or the second half of a comm).
            pub const fn slots(self) -> [&'static str; NSLOTS] {
                match self {
                    $( Kind::$variant => {
                        #[allow(unused_mut)]
                        let mut n = [""; NSLOTS];
                        $( n[$slot] = $fname; )*
                        n
                    } )*
                }
            }

            /// The slot where a 16-byte comm field starts, if the kind has one.
            pub const fn comm_slot(self) -> Option<usize> {
                match self {
                    $( Kind::$variant => {
                        #[allow(unused_mut)]
                        let mut at = None;
                        $( if field_is_comm!($ty) { at = Some($slot); } )*
                        at
                    } )*
                }
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

        /// Typed views of each kind's fields: `ev.get::<ev::KvmExit>()`, and records built
        /// with `Event::new(origin, &ev::KvmExit { .. })`.
        pub mod ev {
            use super::{Comm, Event, Kind, Record, NSLOTS};
            $(
                $(#[doc = $doc])*
                #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
                pub struct $variant {
                    $( pub $field: field_ty!($ty), )*
                }

                impl Record for $variant {
                    const KIND: Kind = Kind::$variant;

                    #[inline(always)]
                    #[allow(unused_variables)]
                    fn decode(e: &Event) -> Self {
                        $variant { $( $field: field_get!($ty, e, $slot), )* }
                    }

                    #[inline(always)]
                    #[allow(unused_variables)]
                    fn encode(&self, slots: &mut [u64; NSLOTS], missing: &mut u8) {
                        $( field_put!($ty, self.$field, slots, missing, $slot); )*
                    }
                }
            )*
        }

        /// An event's fields, typed by its kind.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Payload {
            $( $variant(ev::$variant), )*
        }

        impl Payload {
            /// The kind of the fields.
            pub const fn kind(&self) -> Kind {
                match self { $( Payload::$variant(_) => Kind::$variant, )* }
            }

            /// A record of these fields from `at`.
            pub fn event(&self, at: Origin) -> Event {
                match self { $( Payload::$variant(r) => Event::new(at, r), )* }
            }
        }

        impl Event {
            /// The fields typed by the event's kind; None for a kind this kvmtrace does not
            /// know.
            pub fn payload(&self) -> Option<Payload> {
                match Kind::try_from(self.kind) {
                    $( Ok(Kind::$variant) => Some(Payload::$variant(
                        <ev::$variant as Record>::decode(self))), )*
                    Err(_) => None,
                }
            }
        }
    };
}

kinds! {
    KvmExit = 0, "kvm", "kvm_exit" {
        exit_reason: u64 @ 0 = "exit_reason",
        isa: opt @ 1 = "isa",
        vcpu_id: opt @ 2 = "vcpu_id",
        guest_rip: opt @ 3 = "guest_rip",
        info1: opt @ 4 = "info1",
    }
    /// `intr_info` (Linux 6.18+): the event injected at this entry (bit 31 valid, bits 8-10
    /// the type, 0 = external interrupt, bits 0-7 the vector); `immediate_exit`: KVM will
    /// force an exit right after it (the next exit is KVM's own).
    KvmEntry = 1, "kvm", "kvm_entry" {
        vcpu_id: opt @ 0 = "vcpu_id",
        rip: opt @ 1 = "rip",
        intr_info: opt @ 2 = "intr_info",
        immediate_exit: opt @ 3 = "immediate_exit",
    }
    KvmUserspaceExit = 2, "kvm", "kvm_userspace_exit" {
        reason: opt @ 0 = "reason",
        errno: opt @ 1 = "errno",
    }
    KvmInjVirq = 3, "kvm", "kvm_inj_virq" {
        vector: u64 @ 0 = "vector",
        soft: opt @ 1 = "soft",
        reinjected: opt @ 2 = "reinjected",
    }
    KvmApicAcceptIrq = 4, "kvm", "kvm_apic_accept_irq" {
        apicid: u64 @ 0 = "apicid",
        vec: u64 @ 1 = "vec",
        dm: opt @ 2 = "dm",
        tm: opt @ 3 = "tm",
    }
    KvmSetIrq = 5, "kvm", "kvm_set_irq" {
        gsi: u64 @ 0 = "gsi",
        level: u64 @ 1 = "level",
        irq_source_id: opt @ 2 = "irq_source_id",
    }
    KvmMsiSetIrq = 6, "kvm", "kvm_msi_set_irq" {
        address: u64 @ 0 = "address",
        data: u64 @ 1 = "data",
    }
    KvmPicSetIrq = 7, "kvm", "kvm_pic_set_irq" {
        chip: u64 @ 0 = "chip",
        pin: u64 @ 1 = "pin",
        imr: u64 @ 2 = "imr",
        coalesced: u64 @ 3 = "coalesced",
    }
    KvmIoapicSetIrq = 8, "kvm", "kvm_ioapic_set_irq" {
        e: u64 @ 0 = "e",
        pin: u64 @ 1 = "pin",
        coalesced: u64 @ 2 = "coalesced",
    }
    KvmVcpuWakeup = 9, "kvm", "kvm_vcpu_wakeup" {
        ns: u64 @ 0 = "ns",
        waited: u64 @ 1 = "waited",
        valid: opt @ 2 = "valid",
    }
    KvmPio = 10, "kvm", "kvm_pio" {
        rw: u64 @ 0 = "rw",
        port: u64 @ 1 = "port",
        size: u64 @ 2 = "size",
        val: opt @ 3 = "val",
    }
    KvmMmio = 11, "kvm", "kvm_mmio" {
        mmio_type: u64 @ 0 = "type",
        len: u64 @ 1 = "len",
        gpa: u64 @ 2 = "gpa",
        val: opt @ 3 = "val",
    }
    KvmMsr = 12, "kvm", "kvm_msr" {
        write: u64 @ 0 = "write",
        ecx: u64 @ 1 = "ecx",
        data: u64 @ 2 = "data",
        exception: u64 @ 3 = "exception",
    }
    SchedSwitch = 13, "sched", "sched_switch" {
        prev_pid: u64 @ 0 = "prev_pid",
        prev_state: u64 @ 1 = "prev_state",
        next_pid: u64 @ 2 = "next_pid",
        next_comm: comm @ 3 = "next_comm",
    }
    SchedWakeup = 14, "sched", "sched_wakeup" {
        pid: u64 @ 0 = "pid",
        target_cpu: opt @ 1 = "target_cpu",
        prio: opt @ 2 = "prio",
        comm: comm @ 3 = "comm",
    }
    SchedWakeupNew = 15, "sched", "sched_wakeup_new" {
        pid: u64 @ 0 = "pid",
        target_cpu: opt @ 1 = "target_cpu",
        prio: opt @ 2 = "prio",
        comm: comm @ 3 = "comm",
    }
    SchedMigrateTask = 16, "sched", "sched_migrate_task" {
        pid: u64 @ 0 = "pid",
        orig_cpu: u64 @ 1 = "orig_cpu",
        dest_cpu: u64 @ 2 = "dest_cpu",
    }
    IrqHandlerEntry = 17, "irq", "irq_handler_entry" {
        irq: u64 @ 0 = "irq",
    }
    IrqHandlerExit = 18, "irq", "irq_handler_exit" {
        irq: u64 @ 0 = "irq",
        ret: u64 @ 1 = "ret",
    }
    SoftirqEntry = 19, "irq", "softirq_entry" {
        vec: u64 @ 0 = "vec",
    }
    SoftirqExit = 20, "irq", "softirq_exit" {
        vec: u64 @ 0 = "vec",
    }
    LocalTimerEntry = 21, "irq_vectors", "local_timer_entry" {
        vector: u64 @ 0 = "vector",
    }
    LocalTimerExit = 22, "irq_vectors", "local_timer_exit" {
        vector: u64 @ 0 = "vector",
    }
    RescheduleEntry = 23, "irq_vectors", "reschedule_entry" {
        vector: u64 @ 0 = "vector",
    }
    RescheduleExit = 24, "irq_vectors", "reschedule_exit" {
        vector: u64 @ 0 = "vector",
    }
    CallFunctionEntry = 25, "irq_vectors", "call_function_entry" {
        vector: u64 @ 0 = "vector",
    }
    CallFunctionExit = 26, "irq_vectors", "call_function_exit" {
        vector: u64 @ 0 = "vector",
    }
    CallFunctionSingleEntry = 27, "irq_vectors", "call_function_single_entry" {
        vector: u64 @ 0 = "vector",
    }
    CallFunctionSingleExit = 28, "irq_vectors", "call_function_single_exit" {
        vector: u64 @ 0 = "vector",
    }
    HrtimerExpireEntry = 29, "timer", "hrtimer_expire_entry" {
        hrtimer: u64 @ 0 = "hrtimer",
        function: u64 @ 1 = "function",
        now: opt @ 2 = "now",
    }
    HrtimerExpireExit = 30, "timer", "hrtimer_expire_exit" {
        hrtimer: u64 @ 0 = "hrtimer",
    }
    ContentionBegin = 31, "lock", "contention_begin" {
        lock_addr: u64 @ 0 = "lock_addr",
        flags: u64 @ 1 = "flags",
    }
    ContentionEnd = 32, "lock", "contention_end" {
        lock_addr: u64 @ 0 = "lock_addr",
        ret: u64 @ 1 = "ret",
    }
    /// APICv/AVIC: the interrupt was posted (VMX PIR + notification or wake-up; AVIC
    /// doorbell), traced after `kvm_apic_accept_irq` (arch/x86/kvm/vmx/vmx.c
    /// `vmx_deliver_interrupt`, svm/svm.c `svm_complete_interrupt_delivery`).
    KvmApicvAcceptIrq = 33, "kvm", "kvm_apicv_accept_irq" {
        apicid: u64 @ 0 = "apicid",
        vec: u64 @ 1 = "vec",
        dm: opt @ 2 = "dm",
        tm: opt @ 3 = "tm",
    }
    /// A guest IPI: the sender's ICR write, in the sender's vCPU thread
    /// (arch/x86/kvm/lapic.c `kvm_apic_send_ipi`).
    KvmApicIpi = 34, "kvm", "kvm_apic_ipi" {
        icr_low: u64 @ 0 = "icr_low",
        dest_id: u64 @ 1 = "dest_id",
    }
    /// The LAPIC timer's lateness the guest sees (guest TSC cycles; < 0 early), traced
    /// after `kvm_entry` (lapic.c `__kvm_wait_lapic_expire`).
    KvmWaitLapicExpire = 35, "kvm", "kvm_wait_lapic_expire" {
        vcpu_id: u64 @ 0 = "vcpu_id",
        delta: u64 @ 1 = "delta",
    }
    /// An hrtimer armed: in a vCPU thread with KVM's `apic_timer_fn`, the guest's LAPIC
    /// timer (lapic.c `start_sw_tscdeadline`, `start_sw_period`).
    HrtimerStart = 36, "timer", "hrtimer_start" {
        hrtimer: u64 @ 0 = "hrtimer",
        function: u64 @ 1 = "function",
        expires: u64 @ 2 = "expires",
        mode: opt @ 3 = "mode",
    }
    /// A guest page fault handled by KVM's MMU (EPT violation / NPF), in the vCPU thread.
    KvmPageFault = 37, "kvm", "kvm_page_fault" {
        vcpu_id: opt @ 0 = "vcpu_id",
        guest_rip: opt @ 1 = "guest_rip",
        fault_address: u64 @ 2 = "fault_address",
        error_code: u64 @ 3 = "error_code",
    }
    /// The guest's EOI of a vector (lapic.c `apic_set_eoi`).
    KvmEoi = 38, "kvm", "kvm_eoi" {
        apicid: u64 @ 0 = "apicid",
        vector: u64 @ 1 = "vector",
    }
    /// Made by userspace: a thread's name and vCPU id, a VM's name, a task's name, one of
    /// kvmtrace's own threads, or a VM's exit (`flags`).
    ThreadInfo = 64, "kvmtrace", "thread_info" {
        vcpu_id: u64 @ 0 = "vcpu_id",
        flags: u64 @ 1 = "flags",
        comm: comm @ 3 = "comm",
    }
    /// Made by the demo VMM: one interrupt it raised and saw acknowledged (ground truth).
    DemoAck = 65, "kvmtrace", "demo_ack" {
        seq: u64 @ 0 = "seq",
        raised_ns: u64 @ 1 = "raised_ns",
        acked_ns: u64 @ 2 = "acked_ns",
        path: u64 @ 3 = "path",
        irqoff_ns: u64 @ 4 = "irqoff_ns",
    }
    /// Made by userspace after each ring-buffer read: the cumulative drop counters.
    // `not_run`: tracepoint hits the kernel ran no program for because another BPF program,
    // or a map syscall, held the CPU (the programs' `recursion_misses`; 0 in older
    // captures). Not counted as drops: most fall on CPUs the filters would have ignored,
    // and nothing says which.
    Drops = 66, "kvmtrace", "drops" {
        kernel: u64 @ 0 = "kernel",
        userspace: u64 @ 1 = "userspace",
        not_run: u64 @ 2 = "not_run",
    }
    /// A KVM tracepoint without a kind of its own (`kvm_fpu`, `kvm_cr`, `kvm_emulate_insn`,
    /// `kvmmmu:*`, ...), kept for timelines and counts: `name_id` indexes
    /// [`kvm_events::KVM_EVENTS`], `a`..`c` are the first numbers of its text (text import)
    /// or fields (a recorder), absent when it has fewer.
    KvmOther = 67, "kvmtrace", "kvm_other" {
        name_id: u64 @ 0 = "name_id",
        a: opt @ 1 = "a",
        b: opt @ 2 = "b",
        c: opt @ 3 = "c",
    }
    /// Made by userspace the first time a kernel stack id is seen (docs/stacks.md): its
    /// frames, leaf first, [`stack::FRAMES_PER_RECORD`] per record; `at` = the index of
    /// `ip0` | the stack's frame count << 32 (see [`ev::StackFrames::chunks`]).
    StackFrames = 68, "kvmtrace", "stack_frames" {
        stack: u64 @ 0 = "stack",
        at: u64 @ 1 = "at",
        ip0: u64 @ 2 = "ip0",
        ip1: u64 @ 3 = "ip1",
        ip2: u64 @ 4 = "ip2",
    }
    /// Made by userspace the first time a stack frame falls in a kernel function: its
    /// address range and its `/proc/kallsyms` name (`name [module]` for a module's),
    /// [`stack::TEXT_PER_RECORD`] bytes of text per record; `at` = the byte offset of this
    /// piece | the text's length << 32 (see [`ev::Symbol::chunks`]).
    Symbol = 69, "kvmtrace", "symbol" {
        start: u64 @ 0 = "start",
        end: u64 @ 1 = "end",
        at: u64 @ 2 = "at",
        text: comm @ 3 = "text",
    }
    /// Made by userspace about once a second: what the in-kernel exit histogram of vCPU
    /// thread `tid` and exit `key` (`isa << 32 | reason`) gained since the previous record
    /// of that key ([`exits`]); up to four values, each [`exits::pack`]ed, 0 = unused.
    ExitBuckets = 70, "kvmtrace", "exit_buckets" {
        key: u64 @ 0 = "key",
        b0: u64 @ 1 = "b0",
        b1: u64 @ 2 = "b1",
        b2: u64 @ 3 = "b2",
        b3: u64 @ 4 = "b3",
    }
    /// Made by a stack program right after the tracepoint it belongs to, in the same task
    /// on the same CPU: the current task's kernel stack (docs/stacks.md). `what`: one of
    /// [`stack`]'s `SWITCH`, `CONTENTION`, `HARDIRQ`, `SOFTIRQ`; `stack` is the id in the
    /// kernel's stack map when `error` is 0, else `error` is the errno the kernel gave.
    StackAt = 128, "kvmtrace", "stack_at" {
        stack: u64 @ 0 = "stack",
        what: u64 @ 1 = "what",
        error: u64 @ 2 = "error",
    }
    /// Made by the profile program at each `cpu-clock` tick on a CPU where a traced vCPU
    /// runs or waits: the running task's kernel stack (`error` = `EFAULT`: it was in user
    /// space).
    StackSample = 129, "kvmtrace", "stack_sample" {
        stack: u64 @ 0 = "stack",
        error: u64 @ 1 = "error",
    }
}

/// Number of tracepoint kinds (values `0..NTRACEPOINTS`), i.e. eBPF programs.
pub const NTRACEPOINTS: usize = 39;

/// Kinds made by the eBPF side that are not a tracepoint's fields (stack records) are
/// numbered from here; userspace-made kinds are 64..128 (docs/capture-format.md).
pub const FIRST_PROBE_RECORD: u16 = 128;

impl Kind {
    /// True for kinds that come from a tracepoint (and so have an eBPF program).
    pub const fn is_tracepoint(self) -> bool {
        (self as usize) < NTRACEPOINTS
    }

    /// True for records the eBPF side makes that are not a tracepoint's fields (the stack
    /// programs' records, docs/stacks.md).
    pub const fn is_probe_record(self) -> bool {
        let v = self as u16;
        v >= FIRST_PROBE_RECORD && v < FIRST_PROBE_RECORD + 64
    }

    /// True for the records of `--stacks` (docs/stacks.md): the probes' stack records and
    /// userspace's stack and symbol definitions.
    pub const fn is_stack_record(self) -> bool {
        matches!(
            self,
            Kind::StackAt | Kind::StackSample | Kind::StackFrames | Kind::Symbol
        )
    }

    /// Slot index of a field by its tracefs name for this kind.
    pub fn slot_of(self, field: &str) -> Option<usize> {
        self.slots()
            .iter()
            .position(|s| !s.is_empty() && *s == field)
    }

    /// A KVM event that only fires in the vCPU thread itself (so it also says that the
    /// current task is a vCPU).
    pub const fn is_vcpu_context(self) -> bool {
        matches!(
            self,
            Kind::KvmExit
                | Kind::KvmEntry
                | Kind::KvmUserspaceExit
                | Kind::KvmInjVirq
                | Kind::KvmVcpuWakeup
                | Kind::KvmPio
                | Kind::KvmMmio
                | Kind::KvmMsr
                | Kind::KvmApicIpi
                | Kind::KvmWaitLapicExpire
                | Kind::KvmPageFault
                | Kind::KvmEoi
        )
    }

    /// An interrupt being raised or accepted: it may fire in any task (a VMM thread, a
    /// kernel thread such as `kvm-pit/PID`, a kworker, a hard IRQ's victim), the ones the
    /// eBPF `irq_event` filter handles.
    pub const fn is_raise(self) -> bool {
        matches!(
            self,
            Kind::KvmSetIrq
                | Kind::KvmMsiSetIrq
                | Kind::KvmPicSetIrq
                | Kind::KvmIoapicSetIrq
                | Kind::KvmApicAcceptIrq
                | Kind::KvmApicvAcceptIrq
        )
    }
}

/// `ThreadInfo.vcpu_id` when the vCPU id is not known.
pub const VCPU_UNKNOWN: u64 = u64::MAX;

/// `ThreadInfo.flags`: the record names the VM of process `tgid` (QEMU's `-name guest=...`,
/// else the VMM's program name) instead of a thread.
pub const THREAD_INFO_VM_NAME: u64 = 1;

/// `ThreadInfo.flags`: only the name of a thread that is not a traced vCPU (a task that
/// delayed one), even if its name looks like a vCPU thread's (another VM's).
pub const THREAD_INFO_NAME_ONLY: u64 = 2;

/// `ThreadInfo.flags` bit: the vCPU id comes from KVM itself (its debugfs), not from the
/// thread's name (QEMU names threads by cpu_index, which is not KVM's vcpu_id).
pub const THREAD_INFO_VCPU_FROM_KVM: u64 = 0x100;

/// `ThreadInfo.flags`: one of kvmtrace's own threads (the reader, the writer, the TUI, ...).
/// Time a vCPU waits behind it is the `tracer` cause (the observer effect), not `preempted`.
pub const THREAD_INFO_TRACER: u64 = 4;

/// `ThreadInfo.flags`: the VM of process `tgid` exited (its VMM process is gone) at the
/// record's time, as the recorder noticed it (within a poll interval).
pub const THREAD_INFO_VM_GONE: u64 = 8;

/// What a [`Kind::ThreadInfo`] record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadInfoIs {
    /// A thread of the VMM (a vCPU thread when its id is known or its name says so).
    Thread { vcpu: Option<u32> },
    /// The name of the VM whose VMM process is the record's `tgid`.
    VmName,
    /// Only the name of a task that is not a traced vCPU.
    NameOnly,
    /// The name of one of kvmtrace's own threads.
    Tracer,
    /// The VM whose VMM process is the record's `tgid` exited.
    VmGone,
}

impl ev::ThreadInfo {
    /// A VMM thread, with its vCPU id when known (from its name: see
    /// [`ev::ThreadInfo::vcpu_thread`] for KVM's own).
    pub fn thread(vcpu: Option<u32>, comm: &str) -> Self {
        ev::ThreadInfo {
            vcpu_id: vcpu.map_or(VCPU_UNKNOWN, u64::from),
            flags: 0,
            comm: Comm::new(comm),
        }
    }

    /// A vCPU thread whose id KVM itself gave (its debugfs `vcpu<N>/pid`).
    pub fn vcpu_thread(vcpu: u32, comm: &str) -> Self {
        ev::ThreadInfo {
            vcpu_id: u64::from(vcpu),
            flags: THREAD_INFO_VCPU_FROM_KVM,
            comm: Comm::new(comm),
        }
    }

    /// Did KVM itself give the vCPU id (not the thread's name)?
    pub fn vcpu_from_kvm(&self) -> bool {
        self.flags & THREAD_INFO_VCPU_FROM_KVM != 0
    }

    /// The name of the VM run by the record's `tgid`.
    pub fn vm_name(name: &str) -> Self {
        ev::ThreadInfo {
            vcpu_id: VCPU_UNKNOWN,
            flags: THREAD_INFO_VM_NAME,
            comm: Comm::new(name),
        }
    }

    /// The name of a task that is not a traced vCPU.
    pub fn name_only(comm: &str) -> Self {
        ev::ThreadInfo {
            vcpu_id: VCPU_UNKNOWN,
            flags: THREAD_INFO_NAME_ONLY,
            comm: Comm::new(comm),
        }
    }

    /// One of kvmtrace's own threads (the record's `tid`).
    pub fn tracer(comm: &str) -> Self {
        ev::ThreadInfo {
            vcpu_id: VCPU_UNKNOWN,
            flags: THREAD_INFO_TRACER,
            comm: Comm::new(comm),
        }
    }

    /// The VM run by the record's `tgid` (named `name`) exited.
    pub fn vm_gone(name: &str) -> Self {
        ev::ThreadInfo {
            vcpu_id: VCPU_UNKNOWN,
            flags: THREAD_INFO_VM_GONE,
            comm: Comm::new(name),
        }
    }

    pub fn is(&self) -> ThreadInfoIs {
        match self.flags & 0xff {
            THREAD_INFO_VM_NAME => ThreadInfoIs::VmName,
            THREAD_INFO_NAME_ONLY => ThreadInfoIs::NameOnly,
            THREAD_INFO_TRACER => ThreadInfoIs::Tracer,
            THREAD_INFO_VM_GONE => ThreadInfoIs::VmGone,
            _ => ThreadInfoIs::Thread {
                vcpu: (self.vcpu_id != VCPU_UNKNOWN).then_some(self.vcpu_id as u32),
            },
        }
    }
}

/// Values and sizes of the stack records (docs/stacks.md).
pub mod stack {
    /// `StackAt.what`: the task switched out at `sched_switch` (the current task there).
    pub const SWITCH: u64 = 1;
    /// `StackAt.what`: a vCPU thread at `lock:contention_begin`.
    pub const CONTENTION: u64 = 2;
    /// `StackAt.what`: `irq:irq_handler_entry` on a traced vCPU's CPU.
    pub const HARDIRQ: u64 = 3;
    /// `StackAt.what`: `irq:softirq_entry` on a traced vCPU's CPU.
    pub const SOFTIRQ: u64 = 4;
    /// `error`: no kernel stack (a profile tick that interrupted user space).
    pub const EFAULT: u64 = 14;
    /// `error`: the stack map had no room (its bucket holds another stack, or it is full).
    pub const EEXIST: u64 = 17;
    /// Frames in one `StackFrames` record.
    pub const FRAMES_PER_RECORD: usize = 3;
    /// Bytes of a symbol's text in one `Symbol` record.
    pub const TEXT_PER_RECORD: usize = 16;
    /// Longest symbol text kept (kallsyms' KSYM_NAME_LEN is 512, plus a module name).
    pub const MAX_TEXT: usize = 1024;
}

impl ev::StackFrames {
    /// The records that carry `frames` (leaf first) of stack `stack`; none for an empty
    /// stack, at most [`limits::STACK_DEPTH`] frames.
    pub fn chunks(stack: u32, frames: &[u64]) -> impl Iterator<Item = ev::StackFrames> + '_ {
        let frames = &frames[..frames.len().min(limits::STACK_DEPTH as usize)];
        let total = frames.len() as u64;
        frames
            .chunks(stack::FRAMES_PER_RECORD)
            .enumerate()
            .map(move |(i, c)| ev::StackFrames {
                stack: u64::from(stack),
                at: (i * stack::FRAMES_PER_RECORD) as u64 | total << 32,
                ip0: c.first().copied().unwrap_or(0),
                ip1: c.get(1).copied().unwrap_or(0),
                ip2: c.get(2).copied().unwrap_or(0),
            })
    }

    /// Index of `ip0` in the stack.
    pub fn first(&self) -> usize {
        (self.at & 0xffff_ffff) as usize
    }

    /// The stack's frame count.
    pub fn total(&self) -> usize {
        (self.at >> 32) as usize
    }

    /// The frames this record carries, with their index in the stack.
    pub fn frames(&self) -> impl Iterator<Item = (usize, u64)> {
        let (first, total) = (self.first(), self.total());
        [self.ip0, self.ip1, self.ip2]
            .into_iter()
            .enumerate()
            .map(move |(i, ip)| (first.saturating_add(i), ip))
            .filter(move |(i, _)| *i < total)
    }
}

impl ev::Symbol {
    /// The records that carry `text` (cut to [`stack::MAX_TEXT`] bytes) for the function
    /// at `start..end`.
    pub fn chunks(start: u64, end: u64, text: &str) -> impl Iterator<Item = ev::Symbol> + '_ {
        let mut n = text.len().min(stack::MAX_TEXT);
        while !text.is_char_boundary(n) {
            n -= 1;
        }
        let bytes = &text.as_bytes()[..n];
        let total = bytes.len() as u64;
        bytes
            .chunks(stack::TEXT_PER_RECORD)
            .enumerate()
            .map(move |(i, c)| {
                let mut b = [0u8; 16];
                b[..c.len()].copy_from_slice(c);
                ev::Symbol {
                    start,
                    end,
                    at: (i * stack::TEXT_PER_RECORD) as u64 | total << 32,
                    text: Comm(b),
                }
            })
    }

    /// Byte offset of this piece in the text.
    pub fn offset(&self) -> usize {
        (self.at & 0xffff_ffff) as usize
    }

    /// The text's length in bytes.
    pub fn len(&self) -> usize {
        (self.at >> 32) as usize
    }

    /// True for a record of an empty text.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// This piece's bytes (at most [`stack::TEXT_PER_RECORD`]).
    pub fn piece(&self) -> &[u8] {
        let n = self
            .len()
            .saturating_sub(self.offset())
            .min(stack::TEXT_PER_RECORD);
        &self.text.0[..n]
    }
}

impl ev::Drops {
    /// Both counters together.
    pub fn total(&self) -> u64 {
        self.kernel.saturating_add(self.userspace)
    }
}

impl ev::DemoAck {
    /// Raise to acknowledgement, as the demo VMM measured it.
    pub fn latency_ns(&self) -> u64 {
        self.acked_ns.saturating_sub(self.raised_ns)
    }
}

/// `DemoAck.path`: which of the demo guest's interrupt paths was acknowledged (captures
/// written before paths existed hold 0 there: the PIC, then the only one).
pub mod demo_path {
    /// A device interrupt through the in-kernel PIC (`KVM_IRQ_LINE`).
    pub const PIC: u64 = 0;
    /// An MSI into the guest's LAPIC (`KVM_SIGNAL_MSI`).
    pub const MSI: u64 = 1;
    /// The guest's own periodic LAPIC timer.
    pub const TIMER: u64 = 2;
    /// An MSI raised while the guest runs with interrupts disabled (`DemoAck.irqoff_ns`:
    /// for how long).
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
    /// A traced vCPU thread may be runnable here (woken, migrated here or preempted) and not
    /// running: set then, cleared only when the CPU idles (another vCPU may still wait
    /// when one is switched in), unless a vCPU goes out runnable to the idle task.
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
    /// An exit that took at least this long is streamed ([`exits`]).
    pub exit_threshold_ns: u64,
    /// An interrupt accepted for a vCPU, its wake-up, switch-in or injection streams its
    /// exits this long.
    pub stream_hold_ns: u64,
    /// 1: stream every exit (`record --all-exits`); the histograms count them all anyway.
    pub all_exits: u32,
    pub _pad: u32,
    /// One of [`filter`].
    pub filter_mode: u32,
    /// Records a CPU submits before it wakes the ring buffer's reader (at least 1).
    pub wakeup_every: u32,
    /// Field locations per tracepoint kind (`fields[kind][slot]`).
    pub fields: [[FieldSpec; NSLOTS]; NTRACEPOINTS],
    /// Kernel struct fields the BTF tracepoint programs read.
    pub btf: BtfOffsets,
    pub _tail: u32,
}

const _: () = assert!(
    core::mem::size_of::<Config>() == 40 + NTRACEPOINTS * NSLOTS * 4 + BtfOffsets::SIZE + 4
);

/// Byte offsets of the kernel struct fields that the BTF tracepoint (`tp_btf`) programs read
/// from the typed pointers they are given, found by the loader in the running kernel's BTF
/// (`/sys/kernel/btf/vmlinux`). 0 = not found: the programs that need the field then run as
/// classic tracepoints.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BtfOffsets {
    /// `task_struct.pid` (the thread id).
    pub task_pid: u32,
    /// `task_struct.tgid` (the process id).
    pub task_tgid: u32,
    /// `task_struct.comm` (16 bytes).
    pub task_comm: u32,
    /// `task_struct.prio`.
    pub task_prio: u32,
    /// `task_struct.exit_state`.
    pub task_exit_state: u32,
    /// The CPU a task is on: `task_struct.thread_info.cpu` (or `task_struct.cpu`).
    pub task_cpu: u32,
    /// `hrtimer.function`.
    pub hrtimer_function: u32,
    /// `hrtimer.node.expires`.
    pub hrtimer_expires: u32,
}

impl BtfOffsets {
    pub const SIZE: usize = core::mem::size_of::<BtfOffsets>();

    /// Every field the sched programs need was found.
    pub const fn has_task(&self) -> bool {
        self.task_pid != 0
            && self.task_tgid != 0
            && self.task_comm != 0
            && self.task_prio != 0
            && self.task_exit_state != 0
            && self.task_cpu != 0
    }

    /// Every field the hrtimer programs need was found.
    pub const fn has_hrtimer(&self) -> bool {
        self.hrtimer_function != 0 && self.hrtimer_expires != 0
    }
}

const _: () = assert!(BtfOffsets::SIZE == 32);

impl Config {
    pub const fn zeroed() -> Config {
        Config {
            fields: [[FieldSpec {
                offset: 0,
                size: 0,
                signed: 0,
            }; NSLOTS]; NTRACEPOINTS],
            filter_mode: filter::ALL_VMS,
            wakeup_every: 1,
            apic_timer_fn: 0,
            exit_threshold_ns: 1_000_000,
            stream_hold_ns: 50_000,
            all_exits: 0,
            _pad: 0,
            btf: BtfOffsets {
                task_pid: 0,
                task_tgid: 0,
                task_comm: 0,
                task_prio: 0,
                task_exit_state: 0,
                task_cpu: 0,
                hrtimer_function: 0,
                hrtimer_expires: 0,
            },
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
    pub const EXIT_HIST: &str = "EXIT_HIST";
    pub const VCPU_BY_ID: &str = "VCPU_BY_ID";
    pub const EMITTED: &str = "EMITTED";
    pub const AGG_MISSES: &str = "AGG_MISSES";
    /// The stack programs' kernel stack map (docs/stacks.md).
    pub const KSTACKS: &str = "KSTACKS";
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
    /// (vCPU thread, exit reason) histograms kept in the kernel (about 1 KiB each,
    /// preallocated); exits of a key that does not fit are streamed and counted in
    /// `AGG_MISSES`. Userspace deletes the keys of threads that are gone.
    pub const MAX_EXIT_KEYS: u32 = 4096;
    /// Slots of the per-VM streaming deadlines (a VM's slot is its tgid modulo this; two VMs
    /// sharing one only stream a little more).
    pub const VM_STREAM_SLOTS: u32 = 4096;
    /// Distinct kernel stacks the stack map holds with `--stacks` (docs/stacks.md).
    pub const MAX_STACKS: u32 = 16384;
    /// Frames kept per kernel stack (the innermost ones).
    pub const STACK_DEPTH: u32 = 64;
    /// Default `cpu-clock` sampling frequency of the stack profile, per CPU (not a divisor
    /// of the tick or of round periods, so it does not sample in lockstep with them).
    pub const DEFAULT_STACK_HZ: u32 = 4999;
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
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExitKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExitHist {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VcpuThread {}
}

#[cfg(test)]
mod tests {
    extern crate std;
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
        }
        assert_eq!(Kind::try_from(999), Err(999));
    }

    #[test]
    fn kinds_are_numbered_by_who_makes_them() {
        for k in Kind::ALL {
            let v = *k as u16;
            match v {
                _ if k.is_tracepoint() => assert!(!k.is_probe_record()),
                64..128 => assert_eq!(k.category(), "kvmtrace", "{}", k.name()),
                128..192 => assert!(k.is_probe_record(), "{}", k.name()),
                _ => panic!("{} = {v} is in no range", k.name()),
            }
        }
        assert!(Kind::StackAt.is_probe_record() && Kind::StackSample.is_probe_record());
        assert!(!Kind::StackFrames.is_probe_record() && Kind::StackFrames.is_stack_record());
    }

    #[test]
    fn stack_frames_round_trip_through_records() {
        let frames: std::vec::Vec<u64> = (1..=7).map(|i| 0xffff_ffff_8100_0000 + i).collect();
        let recs: std::vec::Vec<ev::StackFrames> = ev::StackFrames::chunks(42, &frames).collect();
        assert_eq!(recs.len(), 3);
        let mut back = std::vec![0u64; recs[0].total()];
        for r in &recs {
            assert_eq!(r.stack, 42);
            for (i, ip) in r.frames() {
                back[i] = ip;
            }
        }
        assert_eq!(back, frames);
        assert_eq!(ev::StackFrames::chunks(1, &[]).count(), 0);
        let deep = [1u64; 100];
        let n: usize = ev::StackFrames::chunks(1, &deep)
            .map(|r| r.frames().count())
            .sum();
        assert_eq!(n, limits::STACK_DEPTH as usize);
    }

    #[test]
    fn symbol_text_round_trips_through_records() {
        let text = "kvm_arch_vcpu_ioctl_run [kvm]";
        let recs: std::vec::Vec<ev::Symbol> = ev::Symbol::chunks(0x10, 0x20, text).collect();
        assert_eq!(recs.len(), 2);
        let mut back = std::vec::Vec::new();
        for r in &recs {
            assert_eq!((r.start, r.end, r.len()), (0x10, 0x20, text.len()));
            back.extend_from_slice(r.piece());
        }
        assert_eq!(back, text.as_bytes());
        // Cut on a character boundary.
        let long = "é".repeat(stack::MAX_TEXT);
        let n: usize = ev::Symbol::chunks(0, 1, &long)
            .map(|r| r.piece().len())
            .sum();
        assert!(n <= stack::MAX_TEXT && n.is_multiple_of(2));
    }

    #[test]
    fn a_comm_takes_its_slot_and_the_next_and_fields_never_overlap() {
        for k in Kind::ALL {
            let names = k.slots();
            if let Some(at) = k.comm_slot() {
                assert!(at + 1 < NSLOTS, "{}", k.name());
                assert_eq!(names[at + 1], "", "{}: the comm's second half", k.name());
            }
            for (i, n) in names.iter().enumerate() {
                if !n.is_empty() {
                    assert_eq!(k.slot_of(n), Some(i), "{}.{n} named twice", k.name());
                }
            }
        }
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

    #[test]
    fn typed_records_round_trip_through_the_slots() {
        let at = Origin {
            ts_ns: 10,
            tid: 11,
            tgid: 12,
            cpu: 1,
        };
        let exit = ev::KvmExit {
            exit_reason: 30,
            isa: Some(1),
            vcpu_id: None,
            guest_rip: Some(0xfff0),
            info1: Some(7),
        };
        let e = Event::new(at, &exit);
        assert_eq!(e.kind(), Ok(Kind::KvmExit));
        assert_eq!(e.slots, [30, 1, 0, 0xfff0, 7]);
        assert_eq!(e.missing, 0b100, "an absent vcpu_id is marked missing");
        assert_eq!(e.get::<ev::KvmExit>(), Some(exit));
        assert_eq!(e.get::<ev::KvmEntry>(), None, "another kind");
        assert_eq!(e.origin(), at);

        let sw = ev::SchedSwitch {
            prev_pid: 5,
            prev_state: 0x100,
            next_pid: 6,
            next_comm: Comm::new("CPU 0/KVM"),
        };
        let e = Event::new(at, &sw);
        assert_eq!(e.payload(), Some(Payload::SchedSwitch(sw)));
        let fields: std::vec::Vec<_> = e.fields().collect();
        assert_eq!(fields.len(), 4);
        assert_eq!(fields[3].name, "next_comm");
        assert_eq!(fields[3].value, FieldValue::Comm(Comm::new("CPU 0/KVM")));
        assert_eq!(e.field("next_pid"), Some(FieldValue::Num(6)));
        let exit = Event::new(at, &ev::KvmExit::default());
        assert_eq!(exit.field("vcpu_id"), None, "absent");
        assert_eq!(exit.field("exit_reason"), Some(FieldValue::Num(0)));
    }

    #[test]
    fn comms_are_cut_to_fifteen_bytes() {
        let c = Comm::new("a-very-long-thread-name");
        assert_eq!(c.bytes(), b"a-very-long-thr");
        let (lo, hi) = c.to_slots();
        assert_eq!(Comm::from_slots(lo, hi), c);
        assert!(Comm::default().is_empty());
    }

    #[test]
    fn thread_info_says_what_it_is() {
        let t = ev::ThreadInfo::thread(Some(3), "CPU 3/KVM");
        assert_eq!(t.is(), ThreadInfoIs::Thread { vcpu: Some(3) });
        assert_eq!(
            ev::ThreadInfo::thread(None, "x").is(),
            ThreadInfoIs::Thread { vcpu: None }
        );
        assert_eq!(ev::ThreadInfo::vm_name("vm").is(), ThreadInfoIs::VmName);
        assert_eq!(ev::ThreadInfo::name_only("x").is(), ThreadInfoIs::NameOnly);
        assert_eq!(
            ev::ThreadInfo::tracer("kvmtrace").is(),
            ThreadInfoIs::Tracer
        );
        assert_eq!(ev::ThreadInfo::vm_gone("vm").is(), ThreadInfoIs::VmGone);
    }
}
