//! Embedded demo guest: a tiny VMM built directly on `kvm-ioctls`.
//!
//! It gives kvmtrace something to trace on a machine with no other VM: one
//! vCPU running a hand-assembled 16-bit real-mode guest, an in-kernel
//! irqchip (PIC, IOAPIC, LAPIC), and a host thread that raises a device
//! interrupt every `irq_period`, like an NFV device-interrupt test.
//!
//! The guest programs its PIC, installs an interrupt handler and idles in
//! `sti; hlt`. The handler increments a counter, writes it to [`ACK_PORT`]
//! (a userspace `KVM_EXIT_IO`), sends EOI and returns. For each handled
//! interrupt the guest's main loop then makes `work_exits_per_irq` writes to
//! [`WORK_PORT`], which the VMM handles in userspace (optionally slowly, to
//! show how a slow VMM delays interrupt delivery). Every ack is paired with
//! the latest raise and reported as a [`DemoSample`] (CLOCK_MONOTONIC ns, the
//! clock `bpf_ktime_get_ns` uses).
//!
//! Interrupt paths ([`DemoPath`], any combination; the PIC alone by default),
//! each with its own vector, handler and ack port, so every sample says
//! which path it measured:
//! - `pic`: `KVM_IRQ_LINE` pulses on IRQ 0 of the PIC (delivered as ExtINT).
//! - `msi`: `KVM_SIGNAL_MSI` to APIC id 0, vector [`MSI_VECTOR`]; the guest
//!   enables its LAPIC (xAPIC MMIO through FS, whose base the VMM sets to
//!   0xFEE00000) and EOIs there. With `pic` too, the interrupt thread raises
//!   them in turn.
//! - `timer`: the guest arms its own LAPIC timer, periodic, one tick per
//!   `irq_period`. The VMM cannot see expiries, so the guest measures its own
//!   latency as cyclictest does in a guest: the handler's first act is to read
//!   the timer's current count (ns to the next tick: KVM's APIC bus runs at
//!   1 GHz and the divider is 1), which the VMM reads from guest memory at the
//!   ack. The sample spans the tick's due time to that read; its `raised_ns`
//!   is the ack's time minus that span. (Bracketing the arming between two
//!   port writes was tried: ±12 µs on PVM, but ±2.8 ms under TCG, where the
//!   vCPU thread is preempted between the writes on the 1-CPU SVM host.)
//! - `irqoff`: after the work of each handled interrupt the guest disables
//!   interrupts, tells the VMM ([`MARK_PORT`]), which raises an MSI (vector
//!   [`IRQOFF_VECTOR`]) at once, and spins on the TSC for `irqoff` before
//!   `sti`: the MSI must wait for the interrupt window. Alone it runs `msi`
//!   too, to have interrupts to follow.
//!
//! Threads: the vCPU thread is named exactly `CPU 0/KVM` (like QEMU's), the
//! interrupt thread `kvmtrace-irq`. Stopping uses a real-time "kick" signal:
//! the vCPU thread keeps it blocked except inside `KVM_RUN`
//! (`KVM_SET_SIGNAL_MASK`), so a kick sent at any moment makes the current or
//! next `KVM_RUN` return `EINTR`, even while the guest sits in HLT.

use std::io;
use std::mem;
use std::os::fd::AsRawFd;
use std::os::unix::thread::JoinHandleExt;
use std::ptr;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd, VmFd};

/// The demo guest's only vCPU.
pub const VCPU_ID: u32 = 0;
/// The guest writes here once its PIC and IVT are set up (then it idles).
pub const READY_PORT: u16 = 0xE0;
/// The PIC path's handler writes the low 16 bits of its counter here.
pub const ACK_PORT: u16 = 0xE2;
/// The guest's per-interrupt "work" writes, handled by the VMM in userspace.
pub const WORK_PORT: u16 = 0xE4;
/// Every IVT vector the guest does not expect points to a stub that writes
/// its vector number here (the VMM turns that into an error).
pub const VECTOR_PORT: u16 = 0xE6;
/// The MSI path's handler acks here (its own counter).
pub const MSI_ACK_PORT: u16 = 0xE8;
/// The LAPIC timer's handler acks here.
pub const TIMER_ACK_PORT: u16 = 0xEA;
/// The irqs-off MSI's handler acks here.
pub const IRQOFF_ACK_PORT: u16 = 0xEC;
/// The guest marks a moment for the VMM ([`MARK_IRQOFF`]).
pub const MARK_PORT: u16 = 0xEE;
/// Mark: interrupts are disabled and the irqs-off spin starts: raise the MSI now.
pub const MARK_IRQOFF: u8 = 1;
/// The interrupt line pulsed with `KVM_IRQ_LINE` (master PIC input; the demo
/// creates no PIT, so nothing else drives it).
pub const DEMO_IRQ: u32 = 0;
/// Vector of the MSI path.
pub const MSI_VECTOR: u8 = 0x40;
/// Vector of the MSI raised during an irqs-off phase.
pub const IRQOFF_VECTOR: u8 = 0x41;
/// Vector of the guest's LAPIC timer.
pub const TIMER_VECTOR: u8 = 0x50;
/// MSI address: the LAPIC of APIC id 0 (the only vCPU), physical destination mode.
pub const MSI_ADDRESS: u32 = 0xFEE0_0000;
/// Name of the vCPU thread, as QEMU names its first vCPU thread.
pub const VCPU_THREAD_NAME: &str = "CPU 0/KVM";
/// Name of the thread that raises the interrupts.
pub const IRQ_THREAD_NAME: &str = "kvmtrace-irq";

// The guest uses the short `out imm8` forms, so every port must fit a byte;
// the IRQ must be a master PIC input other than the cascade (IR2).
const _: () = assert!(READY_PORT <= 0xFF && ACK_PORT <= 0xFF);
const _: () = assert!(WORK_PORT <= 0xFF && VECTOR_PORT <= 0xFF);
const _: () = assert!(DEMO_IRQ < 8 && DEMO_IRQ != 2);
const _: () = assert!(MSI_ACK_PORT <= 0xFF && TIMER_ACK_PORT <= 0xFF);
const _: () = assert!(IRQOFF_ACK_PORT <= 0xFF && MARK_PORT <= 0xFF);
// LAPIC vectors clear of the exceptions and of the PIC's 0x20-0x2F.
const _: () = assert!(MSI_VECTOR >= 0x30 && IRQOFF_VECTOR >= 0x30 && TIMER_VECTOR >= 0x30);

/// Guest memory: 64 KiB of anonymous memory at guest-physical address 0.
const MEM_SIZE: usize = 0x1_0000;
/// Master PIC vector base (IRQ n -> vector 0x20 + n), clear of CPU exceptions.
const VECTOR_BASE: u8 = 0x20;
/// Slave PIC vector base (unused: the slave is fully masked).
const SLAVE_VECTOR_BASE: u8 = 0x28;
/// Word: work exits per interrupt, written by the VMM before start.
const DATA_WORK_COUNT: u16 = 0x0500;
/// Word: interrupts handled (incremented by the handler).
const DATA_COUNTER: u16 = 0x0502;
/// Word: interrupts whose work the main loop has done.
const DATA_DONE: u16 = 0x0504;
/// Words: acks per path (PIC, MSI, timer, irqs-off), each handler's own counter.
const DATA_ACKS: u16 = 0x0510;
/// Dword: the LAPIC timer's initial count (ns per tick), written by the VMM.
const DATA_TIMER_COUNT: u16 = 0x0520;
/// Dword: TSC ticks of each irqs-off spin, written by the VMM.
const DATA_IRQOFF_TICKS: u16 = 0x0524;
/// Dword: the LAPIC timer's current count, read first thing by its handler.
const DATA_TIMER_TMCCT: u16 = 0x0528;
/// 256 four-byte stubs for unexpected vectors.
const STUBS_ADDR: u16 = 0x0600;
/// Guest entry point (CS = 0).
const CODE_ADDR: u16 = 0x1000;
/// The PIC path's interrupt handler (the main code must end before it).
const HANDLER_ADDR: u16 = 0x1200;
/// The LAPIC handlers: MSI, timer, irqs-off MSI (64 bytes each at most).
const MSI_HANDLER_ADDR: u16 = 0x1240;
const TIMER_HANDLER_ADDR: u16 = 0x1280;
const IRQOFF_HANDLER_ADDR: u16 = 0x12C0;
// The handlers end well below the stack, which grows down from STACK_TOP.
const _: () = assert!(IRQOFF_HANDLER_ADDR + 0x40 <= STACK_TOP - 0x1000);
/// Initial SP (SS = 0); the stack grows down towards the code.
const STACK_TOP: u16 = 0x8000;
/// Three pages KVM on Intel needs for real mode without unrestricted guest
/// (the address QEMU and Firecracker use; outside guest memory).
const TSS_ADDR: usize = 0xfffb_d000;
/// The xAPIC MMIO page, loaded as the guest's FS base: real-mode code reaches
/// it as `fs:offset` and never reloads FS (that would set the base to
/// selector * 16). Needs SVM, or VMX with unrestricted guest (every VMX CPU
/// since 2010), or an emulating backend (PVM).
const LAPIC_BASE: u64 = 0xFEE0_0000;
/// xAPIC registers (offsets in the MMIO page); every access is 32 bits wide.
const LAPIC_EOI: u16 = 0xB0;
const LAPIC_SVR: u16 = 0xF0;
const LAPIC_LVT_TIMER: u16 = 0x320;
const LAPIC_TMICT: u16 = 0x380;
const LAPIC_TMCCT: u16 = 0x390;
const LAPIC_TDCR: u16 = 0x3E0;
/// SVR: APIC software-enabled (bit 8), spurious vector 0xFF.
const LAPIC_SPURIOUS_VECTOR: u8 = 0xFF;
/// LVT timer mode bit 17: periodic.
const LVT_TIMER_PERIODIC: u32 = 1 << 17;
/// TDCR 0b1011: divide by 1.
const TDCR_DIVIDE_BY_1: u32 = 0x0B;
/// KVM clamps periodic LAPIC timers below this (its `min_timer_period_us`).
const MIN_TIMER_PERIOD: Duration = Duration::from_micros(200);

/// How long start() waits for the guest's ready write.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long stop() waits for each thread before giving up on it.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Interval between kicks while stopping.
const KICK_INTERVAL: Duration = Duration::from_micros(200);
/// Longest single sleep of the interrupt thread, so it notices stop even
/// with a long period.
const MAX_SLEEP_NS: u64 = 50_000_000;
const NS_PER_SEC: u64 = 1_000_000_000;

/// `KVM_SET_SIGNAL_MASK` = `_IOW(KVMIO, 0x8b, struct kvm_signal_mask)`; not
/// exported by kvm-ioctls.
const KVM_SET_SIGNAL_MASK: u64 =
    ioc_write(0xAE, 0x8B, mem::size_of::<kvm_bindings::kvm_signal_mask>());

const fn ioc_write(ty: u64, nr: u64, size: usize) -> u64 {
    // _IOC(_IOC_WRITE = 1, type, nr, size) with the generic (x86) layout.
    (1 << 30) | ((size as u64) << 16) | (ty << 8) | nr
}

/// One of the demo guest's interrupt paths (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DemoPath {
    /// `KVM_IRQ_LINE` on the PIC; truth: raise -> the handler's ack.
    Pic,
    /// `KVM_SIGNAL_MSI` into the LAPIC; truth: raise -> ack.
    Msi,
    /// The guest's periodic LAPIC timer; truth: due time -> ack.
    Timer,
    /// An MSI that meets a phase with interrupts disabled; truth: raise -> ack.
    IrqOff,
}

impl DemoPath {
    pub const ALL: [DemoPath; 4] = [
        DemoPath::Pic,
        DemoPath::Msi,
        DemoPath::Timer,
        DemoPath::IrqOff,
    ];

    /// Its value in `DemoAck.slots[3]` ([`kvmtrace_common::demo_path`]).
    pub const fn code(self) -> u64 {
        use kvmtrace_common::demo_path;
        match self {
            DemoPath::Pic => demo_path::PIC,
            DemoPath::Msi => demo_path::MSI,
            DemoPath::Timer => demo_path::TIMER,
            DemoPath::IrqOff => demo_path::IRQOFF,
        }
    }

    pub fn name(self) -> &'static str {
        kvmtrace_common::demo_path::name(self.code())
    }

    const fn index(self) -> usize {
        self as usize
    }

    /// The port its handler acks on.
    pub const fn ack_port(self) -> u16 {
        match self {
            DemoPath::Pic => ACK_PORT,
            DemoPath::Msi => MSI_ACK_PORT,
            DemoPath::Timer => TIMER_ACK_PORT,
            DemoPath::IrqOff => IRQOFF_ACK_PORT,
        }
    }
}

/// A set of [`DemoPath`]s; parses from `pic,msi,timer,irqoff` or `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoPaths(u8);

impl DemoPaths {
    pub const PIC: DemoPaths = DemoPaths(1);
    pub const ALL: DemoPaths = DemoPaths(0b1111);

    pub fn new(paths: impl IntoIterator<Item = DemoPath>) -> DemoPaths {
        DemoPaths(paths.into_iter().fold(0, |m, p| m | (1 << p.index())))
    }

    pub fn contains(self, p: DemoPath) -> bool {
        self.0 & (1 << p.index()) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = DemoPath> {
        DemoPath::ALL.into_iter().filter(move |p| self.contains(*p))
    }

    /// The paths that run: an irqs-off phase follows the handling of another
    /// interrupt, so `irqoff` alone brings `msi` along to drive it.
    pub fn effective(self) -> DemoPaths {
        let drivers = DemoPaths::new([DemoPath::Pic, DemoPath::Msi, DemoPath::Timer]);
        if self.contains(DemoPath::IrqOff) && self.0 & drivers.0 == 0 {
            DemoPaths(self.0 | (1 << DemoPath::Msi.index()))
        } else {
            self
        }
    }

    /// Does the guest use its LAPIC?
    fn lapic(self) -> bool {
        self.contains(DemoPath::Msi)
            || self.contains(DemoPath::Timer)
            || self.contains(DemoPath::IrqOff)
    }

    /// Paths the interrupt thread raises, in turn.
    fn raised_by_thread(self) -> Vec<DemoPath> {
        [DemoPath::Pic, DemoPath::Msi]
            .into_iter()
            .filter(|p| self.contains(*p))
            .collect()
    }
}

impl Default for DemoPaths {
    fn default() -> Self {
        DemoPaths::PIC
    }
}

impl std::fmt::Display for DemoPaths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.iter().map(DemoPath::name).collect();
        f.write_str(&names.join(","))
    }
}

impl std::str::FromStr for DemoPaths {
    type Err = String;

    fn from_str(s: &str) -> Result<DemoPaths, String> {
        let mut paths = Vec::new();
        for word in s.split(',').map(str::trim) {
            match word {
                "all" => paths.extend(DemoPath::ALL),
                w => match DemoPath::ALL.into_iter().find(|p| p.name() == w) {
                    Some(p) => paths.push(p),
                    None => {
                        return Err(format!(
                            "unknown demo path {w:?}: give pic, msi, timer, irqoff or all, comma-separated"
                        ))
                    }
                },
            }
        }
        Ok(DemoPaths::new(paths))
    }
}

/// Demo settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoConfig {
    /// Interval between interrupts (default 1 ms, an NFV device-interrupt test):
    /// between two raises of the interrupt thread (the PIC and MSI paths take
    /// turns when both run), and the LAPIC timer's period.
    pub irq_period: Duration,
    /// Port I/O exits the guest makes after each interrupt, handled by the
    /// VMM in userspace (default 4; at most 65535).
    pub work_exits_per_irq: u32,
    /// Extra time the VMM spends (sleeping) on each work port exit (default 0).
    pub slow_io: Duration,
    /// Pin the vCPU thread to this host CPU if set.
    pub vcpu_cpu: Option<usize>,
    /// Interrupt paths (default: the PIC).
    pub paths: DemoPaths,
    /// How long each irqs-off phase keeps interrupts disabled (default 200 µs;
    /// below `irq_period`).
    pub irqoff: Duration,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            irq_period: Duration::from_millis(1),
            work_exits_per_irq: 4,
            slow_io: Duration::ZERO,
            vcpu_cpu: None,
            paths: DemoPaths::default(),
            irqoff: Duration::from_micros(200),
        }
    }
}

/// One interrupt, raised by the VMM (or due, for the timer) and acknowledged by
/// the guest's handler. Times are CLOCK_MONOTONIC ns (the clock of
/// `bpf_ktime_get_ns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoSample {
    /// Sequence number of the raise this ack was paired with (from 1); for the
    /// timer, the tick number.
    pub seq: u64,
    /// Just before `KVM_IRQ_LINE(1)` / `KVM_SIGNAL_MSI`; for the timer, when
    /// the tick was due.
    pub raised_ns: u64,
    /// When the vCPU thread saw the handler's write to its ack port.
    pub acked_ns: u64,
    pub path: DemoPath,
    /// For [`DemoPath::IrqOff`]: how long the guest kept interrupts disabled
    /// after the raise (its TSC spin); 0 otherwise.
    pub irqoff_ns: u64,
}

/// Per-path counters in [`DemoStats::paths`] (indexed by [`DemoPath`] order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathCounts {
    /// Raises (for the timer: periods elapsed since it was armed).
    pub raised: u64,
    /// Handler acks.
    pub acked: u64,
}

/// Counters returned by [`DemoGuest::stop`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DemoStats {
    /// Interrupts raised by the VMM (all paths but the timer).
    pub raised: u64,
    /// Handler acks seen by the vCPU thread (all paths).
    pub acked: u64,
    /// Work port exits handled.
    pub work_exits: u64,
    /// `KVM_EXIT_HLT` exits that reached userspace (0 with the in-kernel irqchip).
    pub hlt_exits: u64,
    /// By path: pic, msi, timer, irqoff.
    pub paths: [PathCounts; 4],
    /// MSIs the LAPIC refused (`KVM_SIGNAL_MSI` returned 0).
    pub msi_blocked: u64,
}

impl DemoStats {
    pub fn path(&self, p: DemoPath) -> PathCounts {
        self.paths[p.index()]
    }
}

/// Everything that can make the demo fail.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("no /dev/kvm: the kvm module is not loaded (modprobe kvm_intel or kvm_amd), or this machine has no virtualization support")]
    NoKvm,
    #[error("permission denied opening /dev/kvm: run as root or join the kvm group")]
    KvmPermission,
    #[error("opening /dev/kvm: {0}")]
    OpenKvm(kvm_ioctls::Error),
    #[error("KVM API version {0} is not the supported 12")]
    KvmApiVersion(i32),
    #[error("KVM lacks {0}")]
    MissingCapability(&'static str),
    #[error("{what} failed: {source}")]
    Ioctl {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("mapping guest memory: {0}")]
    GuestMemory(io::Error),
    #[error("invalid demo config: {0}")]
    InvalidConfig(String),
    #[error("unexpected vCPU exit: {reason}")]
    UnexpectedExit { reason: String },
    #[error("spawning a demo thread: {0}")]
    Thread(io::Error),
    #[error("the demo {0} thread panicked")]
    ThreadPanicked(&'static str),
    #[error("pinning the vCPU thread to CPU {cpu}: {source}")]
    Affinity { cpu: usize, source: io::Error },
    #[error("setting up the vCPU kick signal: {0}")]
    Signal(io::Error),
    #[error("interrupt timer: {0}")]
    Timer(io::Error),
    #[error("the demo guest did not signal ready within {0:?}")]
    GuestNotReady(Duration),
    #[error("the demo {0} thread did not stop within {1:?}")]
    StopTimeout(&'static str, Duration),
    #[error("building the guest code: {0}")]
    GuestCode(&'static str),
}

/// A running demo VM. Dropping it stops it too (ignoring errors).
pub struct DemoGuest {
    shared: Arc<Shared>,
    vcpu: Option<JoinHandle<Result<VcpuCounts, DemoError>>>,
    irq: Option<JoinHandle<Result<IrqCounts, DemoError>>>,
    vcpu_tid: u32,
    irq_tid: u32,
}

impl DemoGuest {
    /// Creates the VM, starts the vCPU thread ("CPU 0/KVM") and the interrupt
    /// thread ("kvmtrace-irq"), and returns once the guest has programmed its
    /// PIC and is about to idle (a raise from then on is latched by the PIC,
    /// so none is lost).
    pub fn start(cfg: DemoConfig, samples: Sender<DemoSample>) -> Result<DemoGuest, DemoError> {
        let period_ns = u64::try_from(cfg.irq_period.as_nanos())
            .ok()
            .filter(|&ns| ns > 0)
            .ok_or_else(|| {
                DemoError::InvalidConfig(format!(
                    "irq_period {:?} must be > 0 and < 584 years",
                    cfg.irq_period
                ))
            })?;
        if let Some(cpu) = cfg.vcpu_cpu {
            if cpu >= libc::CPU_SETSIZE as usize {
                return Err(DemoError::InvalidConfig(format!(
                    "vcpu_cpu {cpu} is beyond CPU_SETSIZE"
                )));
            }
        }
        let paths = cfg.paths.effective();
        let plan = GuestPlan::new(&cfg, paths, period_ns)?;
        install_kick_handler()?;

        let kvm = Kvm::new().map_err(|e| match e.errno() {
            libc::ENOENT | libc::ENXIO | libc::ENODEV => DemoError::NoKvm,
            libc::EACCES | libc::EPERM => DemoError::KvmPermission,
            _ => DemoError::OpenKvm(e),
        })?;
        let api = kvm.get_api_version();
        if api != 12 {
            return Err(DemoError::KvmApiVersion(api));
        }
        for (cap, name) in [
            (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
            (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(DemoError::MissingCapability(name));
            }
        }
        let raises_msi = paths.contains(DemoPath::Msi) || paths.contains(DemoPath::IrqOff);
        if raises_msi && !kvm.check_extension(Cap::SignalMsi) {
            return Err(DemoError::MissingCapability("KVM_CAP_SIGNAL_MSI"));
        }
        let vm = kvm.create_vm().map_err(ioctl_err("KVM_CREATE_VM"))?;
        vm.set_tss_address(TSS_ADDR)
            .map_err(ioctl_err("KVM_SET_TSS_ADDR"))?;
        vm.create_irq_chip()
            .map_err(ioctl_err("KVM_CREATE_IRQCHIP"))?;

        let mem = GuestMemory::new(MEM_SIZE)?;
        load_guest(&mem, &plan)?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: MEM_SIZE as u64,
            userspace_addr: mem.host_addr(),
        };
        // SAFETY: the region is a private anonymous mapping of exactly
        // MEM_SIZE bytes that stays mapped until the vCPU (the only user of
        // guest memory) is gone: the vCPU thread owns an Arc of it and drops
        // it after the VcpuFd. Nothing else in this process aliases it.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(ioctl_err("KVM_SET_USER_MEMORY_REGION"))?;

        let vcpu = vm
            .create_vcpu(u64::from(VCPU_ID))
            .map_err(ioctl_err("KVM_CREATE_VCPU"))?;
        // CPUID as KVM supports it, as every VMM sets it: KVM derives guest state from
        // it, e.g. which LAPIC timer modes exist (without it the periodic mode bit is
        // dropped and the timer fires once).
        let cpuid = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(ioctl_err("KVM_GET_SUPPORTED_CPUID"))?;
        vcpu.set_cpuid2(&cpuid)
            .map_err(ioctl_err("KVM_SET_CPUID2"))?;
        setup_vcpu(&vcpu)?;

        let vm = Arc::new(vm);
        let mem = Arc::new(mem);
        let shared = Arc::new(Shared::default());
        let (events_tx, events_rx) = mpsc::channel();

        let vcpu_thread = {
            let run = VcpuRun {
                shared: Arc::clone(&shared),
                vm: Arc::clone(&vm),
                slow_io: cfg.slow_io,
                paths,
                period_ns,
                irqoff_ns: plan.irqoff_ns,
            };
            let pin = cfg.vcpu_cpu;
            thread::Builder::new()
                .name(VCPU_THREAD_NAME.to_owned())
                .spawn(move || vcpu_thread_main(vcpu, mem, run, pin, events_tx, samples))
                .map_err(DemoError::Thread)?
        };
        // From here on, dropping `guest` (on any error) stops what was started.
        let mut guest = DemoGuest {
            shared: Arc::clone(&shared),
            vcpu: Some(vcpu_thread),
            irq: None,
            vcpu_tid: 0,
            irq_tid: 0,
        };
        guest.wait_vcpu_ready(&events_rx)?;

        let (tid_tx, tid_rx) = mpsc::channel();
        let irq_thread = {
            let vm = Arc::clone(&vm);
            let raised = paths.raised_by_thread();
            thread::Builder::new()
                .name(IRQ_THREAD_NAME.to_owned())
                .spawn(move || {
                    let _ = tid_tx.send(gettid());
                    raise_loop(&vm, &shared, period_ns, &raised)
                })
                .map_err(DemoError::Thread)?
        };
        guest.irq = Some(irq_thread);
        guest.irq_tid = match tid_rx.recv_timeout(READY_TIMEOUT) {
            Ok(tid) => tid,
            Err(_) => return Err(guest.failed_start("irq")),
        };
        Ok(guest)
    }

    /// Kernel thread id of the vCPU thread.
    pub fn vcpu_tid(&self) -> u32 {
        self.vcpu_tid
    }

    /// Kernel thread id of the interrupt thread.
    pub fn irq_tid(&self) -> u32 {
        self.irq_tid
    }

    /// Stops both threads (kicking the vCPU out of `KVM_RUN`, even from HLT),
    /// joins them and returns the counters, or the first error either met.
    pub fn stop(mut self) -> Result<DemoStats, DemoError> {
        self.shutdown()
    }

    fn wait_vcpu_ready(&mut self, events: &Receiver<VcpuEvent>) -> Result<(), DemoError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match events.recv_timeout(left) {
                Ok(VcpuEvent::Tid(tid)) => self.vcpu_tid = tid,
                Ok(VcpuEvent::Ready) => return Ok(()),
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.shutdown();
                    return Err(DemoError::GuestNotReady(READY_TIMEOUT));
                }
                Err(RecvTimeoutError::Disconnected) => return Err(self.failed_start("vCPU")),
            }
        }
    }

    /// A thread ended (or went silent) during start: stop everything and
    /// return the error that explains it.
    fn failed_start(&mut self, which: &'static str) -> DemoError {
        match self.shutdown() {
            Err(e) => e,
            Ok(_) => DemoError::UnexpectedExit {
                reason: format!("the {which} thread ended during start"),
            },
        }
    }

    fn shutdown(&mut self) -> Result<DemoStats, DemoError> {
        self.shared.stop.store(true, Ordering::SeqCst);
        let vcpu = join_with_kicks(self.vcpu.take(), "vCPU");
        let irq = join_with_kicks(self.irq.take(), "irq");
        let counts = vcpu?.unwrap_or_default();
        let irq = irq?.unwrap_or_default();
        let mut paths = [PathCounts::default(); 4];
        for p in DemoPath::ALL {
            let i = p.index();
            paths[i] = PathCounts {
                raised: irq.raised[i] + counts.raised[i],
                acked: counts.acked[i],
            };
        }
        Ok(DemoStats {
            raised: paths
                .iter()
                .zip(DemoPath::ALL)
                .filter(|(_, p)| *p != DemoPath::Timer)
                .map(|(c, _)| c.raised)
                .sum(),
            acked: counts.acked.iter().sum(),
            work_exits: counts.work_exits,
            hlt_exits: counts.hlt_exits,
            paths,
            msi_blocked: irq.msi_blocked + counts.msi_blocked,
        })
    }
}

impl Drop for DemoGuest {
    fn drop(&mut self) {
        if self.vcpu.is_some() || self.irq.is_some() {
            let _ = self.shutdown();
        }
    }
}

/// Sets the stop flag's effect in motion for one thread: kicks it until it
/// has finished (at most STOP_TIMEOUT), then joins it. A thread that does
/// not finish is left detached; it owns everything it uses.
fn join_with_kicks<T>(
    handle: Option<JoinHandle<Result<T, DemoError>>>,
    which: &'static str,
) -> Result<Option<T>, DemoError> {
    let Some(handle) = handle else {
        return Ok(None);
    };
    let deadline = Instant::now() + STOP_TIMEOUT;
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            return Err(DemoError::StopTimeout(which, STOP_TIMEOUT));
        }
        // SAFETY: the pthread_t comes from a JoinHandle that is not joined
        // yet, so it names a live (or finished but unjoined) thread; the kick
        // signal has a no-op handler installed by start(). A failure (only
        // ESRCH-like races) is harmless: we re-check is_finished().
        unsafe { libc::pthread_kill(handle.as_pthread_t(), kick_signal()) };
        thread::sleep(KICK_INTERVAL);
    }
    match handle.join() {
        Ok(result) => result.map(Some),
        Err(_) => Err(DemoError::ThreadPanicked(which)),
    }
}

// ---------------------------------------------------------------------------
// Shared state

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// Raises of the interrupt thread, by path (only PIC and MSI are used).
    raises: [RaiseLog; 4],
}

/// The latest two raises, published by the interrupt thread (single writer)
/// and read by the vCPU thread, as a seqlock so a reader never sees a torn
/// (seq, ns) pair.
#[derive(Default)]
struct RaiseLog {
    version: AtomicU64,
    cur_seq: AtomicU64,
    cur_ns: AtomicU64,
    prev_seq: AtomicU64,
    prev_ns: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Raises {
    cur: (u64, u64),
    prev: (u64, u64),
}

impl RaiseLog {
    /// Records raise `seq` at `ns`. Only the interrupt thread calls this.
    fn publish(&self, seq: u64, ns: u64) {
        let v = self.version.load(Ordering::Relaxed);
        self.version.store(v.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.prev_seq
            .store(self.cur_seq.load(Ordering::Relaxed), Ordering::Relaxed);
        self.prev_ns
            .store(self.cur_ns.load(Ordering::Relaxed), Ordering::Relaxed);
        self.cur_seq.store(seq, Ordering::Relaxed);
        self.cur_ns.store(ns, Ordering::Relaxed);
        self.version.store(v.wrapping_add(2), Ordering::Release);
    }

    fn snapshot(&self) -> Raises {
        let mut spins = 0u32;
        loop {
            let v1 = self.version.load(Ordering::Acquire);
            if v1 & 1 == 0 {
                let r = Raises {
                    cur: (
                        self.cur_seq.load(Ordering::Relaxed),
                        self.cur_ns.load(Ordering::Relaxed),
                    ),
                    prev: (
                        self.prev_seq.load(Ordering::Relaxed),
                        self.prev_ns.load(Ordering::Relaxed),
                    ),
                };
                fence(Ordering::Acquire);
                if self.version.load(Ordering::Relaxed) == v1 {
                    return r;
                }
            }
            spins += 1;
            if spins.is_multiple_of(64) {
                // The writer was preempted mid-publish.
                thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

impl Raises {
    /// The latest raise at or before `acked_ns` (a raise published after the
    /// ack was timestamped cannot be what the guest acked).
    fn latest_before(&self, acked_ns: u64) -> Option<(u64, u64)> {
        [self.cur, self.prev]
            .into_iter()
            .find(|&(seq, ns)| seq != 0 && ns <= acked_ns)
    }
}

// ---------------------------------------------------------------------------
// vCPU thread

enum VcpuEvent {
    Tid(u32),
    Ready,
}

#[derive(Debug, Default, Clone, Copy)]
struct VcpuCounts {
    /// By path.
    acked: [u64; 4],
    /// Raised from the vCPU thread (irqs-off MSIs) or, for the timer, periods elapsed.
    raised: [u64; 4],
    work_exits: u64,
    hlt_exits: u64,
    msi_blocked: u64,
}

/// What the vCPU thread needs besides its vCPU.
struct VcpuRun {
    shared: Arc<Shared>,
    /// For the irqs-off MSI, raised from this thread.
    vm: Arc<VmFd>,
    slow_io: Duration,
    paths: DemoPaths,
    period_ns: u64,
    irqoff_ns: u64,
}

/// The timer sample for an ack at `acked_ns` whose handler read the current
/// count `tmcct` (ns to the next tick) of a `period_ns` timer: the tick was due
/// `period_ns - tmcct` before that read. None if the count cannot be one.
fn timer_sample(acked_ns: u64, tmcct: u32, period_ns: u64) -> Option<u64> {
    let since_due = period_ns.checked_sub(u64::from(tmcct))?;
    acked_ns.checked_sub(since_due)
}

fn vcpu_thread_main(
    vcpu: VcpuFd,
    mem: Arc<GuestMemory>,
    run: VcpuRun,
    pin: Option<usize>,
    events: Sender<VcpuEvent>,
    samples: Sender<DemoSample>,
) -> Result<VcpuCounts, DemoError> {
    // Declared first so it is dropped last: guest memory stays mapped until
    // the vCPU fd is closed.
    let _mem = mem;
    let mut vcpu = vcpu;
    let _ = events.send(VcpuEvent::Tid(gettid()));
    if let Some(cpu) = pin {
        pin_current_thread(cpu)?;
    }
    block_kick_outside_kvm_run(&vcpu)?;
    run_vcpu(&mut vcpu, &_mem, &run, &events, &samples)
}

/// The MSI message for `vector` to APIC id 0 (fixed delivery, edge).
fn msi(vector: u8) -> kvm_bindings::kvm_msi {
    kvm_bindings::kvm_msi {
        address_lo: MSI_ADDRESS,
        data: u32::from(vector),
        ..Default::default()
    }
}

fn run_vcpu(
    vcpu: &mut VcpuFd,
    mem: &GuestMemory,
    run: &VcpuRun,
    events: &Sender<VcpuEvent>,
    samples: &Sender<DemoSample>,
) -> Result<VcpuCounts, DemoError> {
    let shared = &*run.shared;
    let mut counts = VcpuCounts::default();
    // When the guest said it is ready (its timer armed just before).
    let mut ready_ns: Option<u64> = None;
    // The irqs-off MSI raised and not yet acknowledged: (seq, raised_ns).
    let mut irqoff: Option<(u64, u64)> = None;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            if let (Some(t), true) = (ready_ns, run.paths.contains(DemoPath::Timer)) {
                counts.raised[DemoPath::Timer.index()] =
                    monotonic_ns().saturating_sub(t) / run.period_ns.max(1);
            }
            return Ok(counts);
        }
        let exit = vcpu.run();
        let now = monotonic_ns();
        let unexpected = match exit {
            Ok(VcpuExit::IoOut(port, data))
                if DemoPath::ALL
                    .iter()
                    .any(|p| p.ack_port() == port && run.paths.contains(*p)) =>
            {
                let Some(path) = DemoPath::ALL.into_iter().find(|p| p.ack_port() == port) else {
                    continue;
                };
                let acked = &mut counts.acked[path.index()];
                *acked += 1;
                // Each handler sends the low 16 bits of its own counter: a gap
                // would mean an ack this VMM never saw.
                let counter = match data {
                    [lo, hi] => u16::from_le_bytes([*lo, *hi]),
                    _ => 0,
                };
                if counter != *acked as u16 {
                    return Err(DemoError::UnexpectedExit {
                        reason: format!(
                            "guest {} ack counter is {counter}, expected {} (missed acks)",
                            path.name(),
                            *acked as u16
                        ),
                    });
                }
                let raise = match path {
                    DemoPath::Pic | DemoPath::Msi => {
                        shared.raises[path.index()].snapshot().latest_before(now)
                    }
                    DemoPath::Timer => {
                        let tmcct = mem.read_u32(DATA_TIMER_TMCCT).unwrap_or(u32::MAX);
                        match timer_sample(now, tmcct, run.period_ns) {
                            Some(due_ns) => Some((*acked, due_ns)),
                            None => {
                                return Err(DemoError::UnexpectedExit {
                                    reason: format!(
                                        "the timer handler read a current count of {tmcct} \
                                         with a period of {} ns",
                                        run.period_ns
                                    ),
                                })
                            }
                        }
                    }
                    DemoPath::IrqOff => irqoff.take(),
                };
                let irqoff_ns = if path == DemoPath::IrqOff {
                    run.irqoff_ns
                } else {
                    0
                };
                match raise {
                    Some((seq, raised_ns)) => {
                        // A closed receiver only means nobody listens any more.
                        let _ = samples.send(DemoSample {
                            seq,
                            raised_ns,
                            acked_ns: now,
                            path,
                            irqoff_ns,
                        });
                        None
                    }
                    // An MSI or PIC ack always follows a published raise (the
                    // raise is published before the ioctl).
                    None if path == DemoPath::IrqOff => {
                        Some("an irqs-off ack with no raise known to this VMM".to_string())
                    }
                    None => None,
                }
            }
            Ok(VcpuExit::IoOut(MARK_PORT, [MARK_IRQOFF]))
                if run.paths.contains(DemoPath::IrqOff) =>
            {
                // The guest has interrupts disabled and starts its spin when
                // this KVM_RUN returns: raise the MSI now.
                let seq = counts.raised[DemoPath::IrqOff.index()] + 1;
                let raised_ns = monotonic_ns();
                match run.vm.signal_msi(msi(IRQOFF_VECTOR)) {
                    Ok(0) => counts.msi_blocked += 1,
                    Ok(_) => {
                        counts.raised[DemoPath::IrqOff.index()] = seq;
                        irqoff = Some((seq, raised_ns));
                    }
                    Err(e) => {
                        return Err(DemoError::Ioctl {
                            what: "KVM_SIGNAL_MSI (irqs-off phase)",
                            source: e,
                        })
                    }
                }
                None
            }
            Ok(VcpuExit::IoOut(WORK_PORT, _)) => {
                counts.work_exits += 1;
                if !run.slow_io.is_zero() {
                    thread::sleep(run.slow_io);
                }
                None
            }
            Ok(VcpuExit::IoOut(READY_PORT, _)) => {
                ready_ns = Some(now);
                let _ = events.send(VcpuEvent::Ready);
                None
            }
            Ok(VcpuExit::IoOut(VECTOR_PORT, data)) => Some(format!(
                "guest took unexpected interrupt/exception vector {:#04x}",
                data.first().copied().unwrap_or(0)
            )),
            Ok(VcpuExit::IoOut(port, data)) => {
                Some(format!("out to port {port:#x} with data {data:02x?}"))
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                Some(format!("in from port {port:#x} ({} bytes)", data.len()))
            }
            Ok(VcpuExit::Hlt) => {
                counts.hlt_exits += 1;
                None
            }
            Ok(VcpuExit::Intr) => None,
            Ok(other) => Some(format!("{other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
            Err(e) => {
                return Err(DemoError::Ioctl {
                    what: "KVM_RUN",
                    source: e,
                })
            }
        };
        if let Some(reason) = unexpected {
            let at = match (vcpu.get_sregs(), vcpu.get_regs()) {
                (Ok(s), Ok(r)) => format!(" at cs:ip {:04x}:{:04x}", s.cs.selector, r.rip),
                _ => String::new(),
            };
            return Err(DemoError::UnexpectedExit {
                reason: format!("{reason}{at}"),
            });
        }
    }
}

/// Real mode, CS:IP = 0000:CODE_ADDR, interrupts off until the guest is set up;
/// FS reaches the xAPIC page (LAPIC_BASE).
fn setup_vcpu(vcpu: &VcpuFd) -> Result<(), DemoError> {
    let mut sregs = vcpu.get_sregs().map_err(ioctl_err("KVM_GET_SREGS"))?;
    for seg in [
        &mut sregs.cs,
        &mut sregs.ds,
        &mut sregs.es,
        &mut sregs.ss,
        &mut sregs.fs,
        &mut sregs.gs,
    ] {
        seg.base = 0;
        seg.selector = 0;
    }
    sregs.fs.base = LAPIC_BASE;
    vcpu.set_sregs(&sregs).map_err(ioctl_err("KVM_SET_SREGS"))?;
    let regs = kvm_bindings::kvm_regs {
        rip: u64::from(CODE_ADDR),
        rsp: u64::from(STACK_TOP),
        rflags: 0x2, // bit 1 is reserved and always set; IF = 0
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(ioctl_err("KVM_SET_REGS"))
}

fn pin_current_thread(cpu: usize) -> Result<(), DemoError> {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: start() checked cpu < CPU_SETSIZE, so the bit is inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(DemoError::Affinity {
            cpu,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Kick signal

fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

extern "C" fn kick_handler(_sig: libc::c_int) {
    // Nothing to do: its only purpose is to make KVM_RUN / clock_nanosleep
    // return EINTR.
}

/// Installs a no-op handler for the kick signal once per process (unless
/// the program already handles that signal), so a kick interrupts a blocking
/// call instead of killing the process.
fn install_kick_handler() -> Result<(), DemoError> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        let sig = kick_signal();
        // SAFETY: all-zero is a valid `struct sigaction` to be filled in.
        let mut old: libc::sigaction = unsafe { mem::zeroed() };
        // SAFETY: a null new action only queries; `old` is a valid out pointer.
        if unsafe { libc::sigaction(sig, ptr::null(), &mut old) } != 0 {
            return Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL));
        }
        if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
            return Ok(()); // someone's handler: it interrupts syscalls just as well
        }
        // SAFETY: as above.
        let mut act: libc::sigaction = unsafe { mem::zeroed() };
        act.sa_sigaction =
            kick_handler as extern "C" fn(libc::c_int) as *const () as libc::sighandler_t;
        act.sa_flags = 0; // no SA_RESTART: the point is to interrupt

        // SAFETY: `act.sa_mask` is a valid sigset_t to initialise.
        unsafe { libc::sigemptyset(&mut act.sa_mask) };
        // SAFETY: `act` is fully initialised; the handler is async-signal-safe (empty).
        if unsafe { libc::sigaction(sig, &act, ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL));
        }
        Ok(())
    });
    (*result).map_err(|errno| DemoError::Signal(io::Error::from_raw_os_error(errno)))
}

/// Blocks the kick signal in the calling (vCPU) thread and tells KVM to
/// unblock it only while in KVM_RUN: a kick that arrives while the thread is
/// in userspace stays pending and makes the next KVM_RUN return EINTR at
/// once, so no kick is lost between the stop check and KVM_RUN.
fn block_kick_outside_kvm_run(vcpu: &VcpuFd) -> Result<(), DemoError> {
    let sig = kick_signal();
    // SAFETY: all-zero sigset_t values are initialised by sigemptyset below.
    let mut block: libc::sigset_t = unsafe { mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { mem::zeroed() };
    // SAFETY: valid sigset_t pointers and a valid signal number.
    unsafe {
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, sig);
    }
    // SAFETY: valid pointers; only the calling thread's mask changes.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old) };
    if rc != 0 {
        return Err(DemoError::Signal(io::Error::from_raw_os_error(rc)));
    }
    // The mask during KVM_RUN: the thread's previous mask without the kick
    // signal, in the kernel's 64-bit sigset layout (bit n-1 = signal n).
    let mut bits = 0u64;
    for s in 1..=64 {
        // SAFETY: `old` was filled in by pthread_sigmask; s is in 1..=64.
        if s != sig && unsafe { libc::sigismember(&old, s) } == 1 {
            bits |= 1 << (s - 1);
        }
    }
    #[repr(C)]
    struct KvmSignalMask {
        len: u32,
        sigset: [u8; 8],
    }
    let arg = KvmSignalMask {
        len: 8,
        sigset: bits.to_ne_bytes(),
    };
    // SAFETY: KVM_SET_SIGNAL_MASK reads a `struct kvm_signal_mask` header
    // followed by `len` (8) bytes, which `arg` provides; the fd is a vCPU fd.
    let rc = unsafe { libc::ioctl(vcpu.as_raw_fd(), KVM_SET_SIGNAL_MASK as _, &arg) };
    if rc < 0 {
        return Err(DemoError::Ioctl {
            what: "KVM_SET_SIGNAL_MASK",
            source: kvm_ioctls::Error::last(),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Interrupt thread

/// What the interrupt thread did.
#[derive(Debug, Default, Clone, Copy)]
struct IrqCounts {
    /// By path.
    raised: [u64; 4],
    msi_blocked: u64,
}

/// Raises the `paths` in turn, one every `period_ns` (none: waits for stop).
fn raise_loop(
    vm: &VmFd,
    shared: &Shared,
    period_ns: u64,
    paths: &[DemoPath],
) -> Result<IrqCounts, DemoError> {
    let mut counts = IrqCounts::default();
    if paths.is_empty() {
        // Nothing to raise (the timer path alone): stay out of the vCPU's way.
        while !shared.stop.load(Ordering::SeqCst) {
            sleep_until(monotonic_ns().saturating_add(MAX_SLEEP_NS)).map_err(DemoError::Timer)?;
        }
        return Ok(counts);
    }
    let mut ticks = 0usize;
    let mut deadline = monotonic_ns().saturating_add(period_ns);
    loop {
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                return Ok(counts);
            }
            let now = monotonic_ns();
            if now >= deadline {
                break;
            }
            sleep_until(deadline.min(now.saturating_add(MAX_SLEEP_NS)))
                .map_err(DemoError::Timer)?;
        }
        if let Some(&path) = paths.get(ticks % paths.len().max(1)) {
            let raised = &mut counts.raised[path.index()];
            let seq = *raised + 1;
            shared.raises[path.index()].publish(seq, monotonic_ns());
            match path {
                DemoPath::Msi => match vm.signal_msi(msi(MSI_VECTOR)) {
                    // The LAPIC refused it (disabled): nothing will ack it.
                    Ok(0) => counts.msi_blocked += 1,
                    Ok(_) => {}
                    Err(e) => {
                        return Err(DemoError::Ioctl {
                            what: "KVM_SIGNAL_MSI",
                            source: e,
                        })
                    }
                },
                _ => {
                    vm.set_irq_line(DEMO_IRQ, true)
                        .map_err(ioctl_err("KVM_IRQ_LINE (raise)"))?;
                    vm.set_irq_line(DEMO_IRQ, false)
                        .map_err(ioctl_err("KVM_IRQ_LINE (lower)"))?;
                }
            }
            *raised = seq;
        }
        ticks = ticks.wrapping_add(1);
        // Absolute deadlines: the period does not drift. Ticks missed while
        // this thread was not running are skipped, keeping the phase.
        deadline = deadline.saturating_add(period_ns);
        let now = monotonic_ns();
        if deadline <= now {
            let missed = (now - deadline) / period_ns + 1;
            deadline = deadline.saturating_add(missed.saturating_mul(period_ns));
        }
    }
}

// ---------------------------------------------------------------------------
// Clock helpers

/// CLOCK_MONOTONIC in ns, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out pointer; CLOCK_MONOTONIC always exists on
    // Linux, so this cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(NS_PER_SEC)
        .saturating_add(ts.tv_nsec as u64)
}

/// Sleeps until CLOCK_MONOTONIC reaches `deadline_ns`, or a signal arrives.
fn sleep_until(deadline_ns: u64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / NS_PER_SEC) as libc::time_t,
        tv_nsec: (deadline_ns % NS_PER_SEC) as libc::c_long,
    };
    // SAFETY: `ts` is a valid timespec; no remainder is needed with TIMER_ABSTIME.
    let rc = unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            ptr::null_mut(),
        )
    };
    match rc {
        0 | libc::EINTR => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    tid as u32
}

fn ioctl_err(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> DemoError {
    move |source| DemoError::Ioctl { what, source }
}

// ---------------------------------------------------------------------------
// Guest memory and code

/// A private anonymous mapping used as guest RAM.
struct GuestMemory {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; the VMM only
// writes it (through `write`) before the vCPU runs, and after that only the
// guest touches it, through KVM.
unsafe impl Send for GuestMemory {}
// SAFETY: as above; `&GuestMemory` gives no access to the bytes except `write`,
// which start() calls before sharing.
unsafe impl Sync for GuestMemory {}

impl GuestMemory {
    fn new(len: usize) -> Result<GuestMemory, DemoError> {
        // SAFETY: a fresh anonymous mapping with no address hint: it aliases nothing.
        let ptr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(DemoError::GuestMemory(io::Error::last_os_error()));
        }
        Ok(GuestMemory {
            ptr: ptr.cast(),
            len,
        })
    }

    fn host_addr(&self) -> u64 {
        self.ptr as u64
    }

    /// Copies `bytes` to guest-physical address `gpa`.
    fn write(&self, gpa: u16, bytes: &[u8]) -> Result<(), DemoError> {
        let start = usize::from(gpa);
        if start
            .checked_add(bytes.len())
            .is_none_or(|end| end > self.len)
        {
            return Err(DemoError::GuestCode(
                "guest image does not fit guest memory",
            ));
        }
        // SAFETY: [start, start + len) is inside the mapping (checked above)
        // and `bytes` cannot overlap it (it is not reachable as a slice).
        unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(start), bytes.len()) };
        Ok(())
    }
}

impl GuestMemory {
    /// Reads a little-endian dword the guest wrote, at guest-physical `gpa`.
    /// Call only while the vCPU is out of KVM_RUN (from its own thread).
    fn read_u32(&self, gpa: u16) -> Option<u32> {
        let start = usize::from(gpa);
        if start.checked_add(4).is_none_or(|end| end > self.len) {
            return None;
        }
        // SAFETY: [start, start + 4) is inside the mapping (checked above); the
        // only other writer is the guest, which is not running while its vCPU
        // thread (the caller) is out of KVM_RUN. Unaligned and volatile: the
        // compiler must not assume it knows the bytes.
        let v = unsafe { ptr::read_volatile(self.ptr.add(start).cast::<[u8; 4]>()) };
        Some(u32::from_le_bytes(v))
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly the mapping made in new(), unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// What the guest image is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GuestPlan {
    /// Effective paths ([`DemoPaths::effective`]).
    paths: DemoPaths,
    /// Work exits after each handled interrupt.
    work_count: u16,
    /// The LAPIC timer's initial count: its period in ns (divide-by-1, and
    /// KVM's APIC bus runs at 1 GHz).
    timer_count: u32,
    /// TSC ticks of each irqs-off spin.
    irqoff_ticks: u32,
    /// The irqs-off time those ticks stand for.
    irqoff_ns: u64,
}

impl GuestPlan {
    fn new(cfg: &DemoConfig, paths: DemoPaths, period_ns: u64) -> Result<GuestPlan, DemoError> {
        let work_count = u16::try_from(cfg.work_exits_per_irq).map_err(|_| {
            DemoError::InvalidConfig(format!(
                "work_exits_per_irq {} exceeds 65535",
                cfg.work_exits_per_irq
            ))
        })?;
        if paths.is_empty() {
            return Err(DemoError::InvalidConfig("no demo path selected".into()));
        }
        let mut plan = GuestPlan {
            paths,
            work_count,
            timer_count: 0,
            irqoff_ticks: 0,
            irqoff_ns: 0,
        };
        if paths.contains(DemoPath::Timer) {
            plan.timer_count = u32::try_from(period_ns)
                .ok()
                .filter(|_| cfg.irq_period >= MIN_TIMER_PERIOD)
                .ok_or_else(|| {
                    DemoError::InvalidConfig(format!(
                        "the timer path needs a period between {MIN_TIMER_PERIOD:?} (KVM clamps \
                         shorter periodic LAPIC timers) and {:?} (a 32-bit count), not {:?}",
                        Duration::from_nanos(u64::from(u32::MAX)),
                        cfg.irq_period
                    ))
                })?;
        }
        if paths.contains(DemoPath::IrqOff) {
            if cfg.irqoff.is_zero() || cfg.irqoff >= cfg.irq_period {
                return Err(DemoError::InvalidConfig(format!(
                    "irqoff {:?} must be above 0 and below the period {:?}",
                    cfg.irqoff, cfg.irq_period
                )));
            }
            plan.irqoff_ns = cfg.irqoff.as_nanos() as u64;
            let ticks = u128::from(tsc_hz()) * cfg.irqoff.as_nanos() / u128::from(NS_PER_SEC);
            plan.irqoff_ticks = u32::try_from(ticks).map_err(|_| {
                DemoError::InvalidConfig(format!("irqoff {:?} is too long", cfg.irqoff))
            })?;
        }
        Ok(plan)
    }

    /// The vectors the guest handles and their handlers' addresses.
    fn vectors(&self) -> Vec<(u8, u16)> {
        let mut v = Vec::new();
        for p in self.paths.iter() {
            v.push(match p {
                DemoPath::Pic => (VECTOR_BASE + DEMO_IRQ as u8, HANDLER_ADDR),
                DemoPath::Msi => (MSI_VECTOR, MSI_HANDLER_ADDR),
                DemoPath::Timer => (TIMER_VECTOR, TIMER_HANDLER_ADDR),
                DemoPath::IrqOff => (IRQOFF_VECTOR, IRQOFF_HANDLER_ADDR),
            });
        }
        v
    }
}

/// TSC ticks per second against CLOCK_MONOTONIC, over 20 ms. A KVM guest's TSC
/// runs at the host's rate unless the VMM asks for another (this one does not).
fn tsc_hz() -> u64 {
    fn read() -> (u64, u64) {
        let ns = monotonic_ns();
        // SAFETY: RDTSC reads a register and touches no memory. It exists on every
        // x86_64 CPU; if the process disabled it (prctl PR_SET_TSC) it faults
        // (SIGSEGV), which is loud, not unsound.
        let tsc = unsafe { std::arch::x86_64::_rdtsc() };
        (ns, tsc)
    }
    let (n0, t0) = read();
    thread::sleep(Duration::from_millis(20));
    let (n1, t1) = read();
    let ns = n1.saturating_sub(n0).max(1);
    (u128::from(t1.saturating_sub(t0)) * u128::from(NS_PER_SEC) / u128::from(ns)) as u64
}

/// Writes the IVT, unexpected-vector stubs, data words, code and handlers.
fn load_guest(mem: &GuestMemory, plan: &GuestPlan) -> Result<(), DemoError> {
    let spurious = VECTOR_BASE + 7; // the master PIC's spurious IRQ7
    for vector in 0..=255u8 {
        let stub = STUBS_ADDR + 4 * u16::from(vector);
        let mut ivt = [0u8; 4];
        ivt[..2].copy_from_slice(&stub.to_le_bytes()); // offset; ivt[2..4] = segment 0
        mem.write(4 * u16::from(vector), &ivt)?;
        let mut c = Code::default();
        if vector == spurious || vector == LAPIC_SPURIOUS_VECTOR {
            c.op(&[0xCF]); //                         iret    ; spurious (PIC IRQ7, LAPIC): no EOI
        } else {
            c.op(&[0xB0, vector]); //                 mov al, vector
            c.op(&[0xE6, VECTOR_PORT as u8]); //      out VECTOR_PORT, al ; the VMM reports an error
        }
        mem.write(stub, &c.bytes)?;
    }
    mem.write(DATA_WORK_COUNT, &plan.work_count.to_le_bytes())?;
    mem.write(DATA_TIMER_COUNT, &plan.timer_count.to_le_bytes())?;
    mem.write(DATA_IRQOFF_TICKS, &plan.irqoff_ticks.to_le_bytes())?;
    let main = main_code(plan)?;
    if main.len() > usize::from(HANDLER_ADDR - CODE_ADDR) {
        return Err(DemoError::GuestCode("main code overlaps the handlers"));
    }
    mem.write(CODE_ADDR, &main)?;
    mem.write(HANDLER_ADDR, &handler_code())?;
    for (path, at) in [
        (DemoPath::Msi, MSI_HANDLER_ADDR),
        (DemoPath::Timer, TIMER_HANDLER_ADDR),
        (DemoPath::IrqOff, IRQOFF_HANDLER_ADDR),
    ] {
        mem.write(at, &lapic_handler_code(path))?;
    }
    Ok(())
}

/// The guest's ack counter word for a path.
fn ack_counter(path: DemoPath) -> u16 {
    DATA_ACKS + 2 * path.index() as u16
}

/// `mov dword [fs:reg], value`: a 32-bit write to an xAPIC register.
fn lapic_write(reg: u16, value: u32) -> Vec<u8> {
    let [rl, rh] = reg.to_le_bytes();
    let [v0, v1, v2, v3] = value.to_le_bytes();
    vec![0x64, 0x66, 0xC7, 0x06, rl, rh, v0, v1, v2, v3]
}

/// The PIC path's interrupt handler (CS = DS = 0, entered with IF = 0).
fn handler_code() -> Vec<u8> {
    let [al, ah] = ack_counter(DemoPath::Pic).to_le_bytes();
    let [cl, ch] = DATA_COUNTER.to_le_bytes();
    let mut c = Code::default();
    c.op(&[0x50]); //                  push ax
    c.op(&[0xFF, 0x06, al, ah]); //    inc word [ACK_PIC]
    c.op(&[0xA1, al, ah]); //          mov ax, [ACK_PIC]
    c.op(&[0xE7, ACK_PORT as u8]); //  out ACK_PORT, ax      ; ack: the VMM timestamps this exit
    c.op(&[0xFF, 0x06, cl, ch]); //    inc word [DATA_COUNTER] ; work for the main loop
    c.op(&[0xB0, 0x20]); //            mov al, 0x20          ; OCW2: non-specific EOI
    c.op(&[0xE6, 0x20]); //            out 0x20, al          ; to the master PIC
    c.op(&[0x58]); //                  pop ax
    c.op(&[0xCF]); //                  iret
    c.bytes
}

/// A LAPIC-delivered path's handler: ack with its own counter, count work
/// (not for the irqs-off MSI, whose phase follows work), EOI to the LAPIC.
/// The timer's handler first reads the timer's current count (its latency).
fn lapic_handler_code(path: DemoPath) -> Vec<u8> {
    let [al, ah] = ack_counter(path).to_le_bytes();
    let [cl, ch] = DATA_COUNTER.to_le_bytes();
    let [ml, mh] = LAPIC_TMCCT.to_le_bytes();
    let [tl, th] = DATA_TIMER_TMCCT.to_le_bytes();
    let mut c = Code::default();
    c.op(&[0x66, 0x50]); //                   push eax
    if path == DemoPath::Timer {
        c.op(&[0x64, 0x66, 0xA1, ml, mh]); // mov eax, [fs:TMCCT]   ; ns to the next tick
        c.op(&[0x66, 0xA3, tl, th]); //       mov [DATA_TIMER_TMCCT], eax ; the VMM reads it at the ack
    }
    c.op(&[0xFF, 0x06, al, ah]); //           inc word [ACK_path]
    c.op(&[0xA1, al, ah]); //                 mov ax, [ACK_path]
    c.op(&[0xE7, path.ack_port() as u8]); //  out ACK_path_PORT, ax ; ack: the VMM timestamps this exit
    if path != DemoPath::IrqOff {
        c.op(&[0xFF, 0x06, cl, ch]); //       inc word [DATA_COUNTER] ; work for the main loop
    }
    c.op(&lapic_write(LAPIC_EOI, 0)); //      mov dword [fs:EOI], 0
    c.op(&[0x66, 0x58]); //                   pop eax
    c.op(&[0xCF]); //                         iret
    c.bytes
}

/// Setup, then the idle/work loop.
fn main_code(plan: &GuestPlan) -> Result<Vec<u8>, DemoError> {
    let [sl, sh] = STACK_TOP.to_le_bytes();
    let [wl, wh] = DATA_WORK_COUNT.to_le_bytes();
    let [cl, ch] = DATA_COUNTER.to_le_bytes();
    let [dl, dh] = DATA_DONE.to_le_bytes();
    let [tl, th] = DATA_TIMER_COUNT.to_le_bytes();
    let [il, ih] = DATA_IRQOFF_TICKS.to_le_bytes();
    let [ml, mh] = LAPIC_TMICT.to_le_bytes();
    let unmask = !(1u8 << DEMO_IRQ);

    let mut c = Code::default();
    c.op(&[0xFA]); //                     cli                    ; (IF is already 0)
    c.op(&[0x31, 0xC0]); //               xor ax, ax
    c.op(&[0x8E, 0xD8]); //               mov ds, ax
    c.op(&[0x8E, 0xC0]); //               mov es, ax             ; (not FS: its base is the LAPIC)
    c.op(&[0x8E, 0xD0]); //               mov ss, ax
    c.op(&[0xBC, sl, sh]); //             mov sp, STACK_TOP

    // Master PIC.
    c.op(&[0xB0, 0x11]); //               mov al, 0x11           ; ICW1: edge, cascade, ICW4 follows
    c.op(&[0xE6, 0x20]); //               out 0x20, al
    c.op(&[0xB0, VECTOR_BASE]); //        mov al, VECTOR_BASE    ; ICW2: IRQ0-7 -> 0x20-0x27
    c.op(&[0xE6, 0x21]); //               out 0x21, al
    c.op(&[0xB0, 0x04]); //               mov al, 0x04           ; ICW3: slave on IR2
    c.op(&[0xE6, 0x21]); //               out 0x21, al
    c.op(&[0xB0, 0x01]); //               mov al, 0x01           ; ICW4: 8086 mode, normal EOI
    c.op(&[0xE6, 0x21]); //               out 0x21, al
    c.op(&[0xB0, 0xFF]); //               mov al, 0xFF           ; OCW1: all masked for now
    c.op(&[0xE6, 0x21]); //               out 0x21, al

    // Slave PIC: initialised, fully masked.
    c.op(&[0xB0, 0x11]); //               mov al, 0x11           ; ICW1
    c.op(&[0xE6, 0xA0]); //               out 0xA0, al
    c.op(&[0xB0, SLAVE_VECTOR_BASE]); //  mov al, 0x28           ; ICW2: IRQ8-15 -> 0x28-0x2F
    c.op(&[0xE6, 0xA1]); //               out 0xA1, al
    c.op(&[0xB0, 0x02]); //               mov al, 0x02           ; ICW3: cascade identity 2
    c.op(&[0xE6, 0xA1]); //               out 0xA1, al
    c.op(&[0xB0, 0x01]); //               mov al, 0x01           ; ICW4: 8086 mode
    c.op(&[0xE6, 0xA1]); //               out 0xA1, al
    c.op(&[0xB0, 0xFF]); //               mov al, 0xFF           ; OCW1: mask all
    c.op(&[0xE6, 0xA1]); //               out 0xA1, al

    // IVT entries for our vectors -> 0000:handler; counters to 0.
    for (vector, handler) in plan.vectors() {
        let [v0l, v0h] = (4 * u16::from(vector)).to_le_bytes();
        let [v2l, v2h] = (4 * u16::from(vector) + 2).to_le_bytes();
        let [hl, hh] = handler.to_le_bytes();
        c.op(&[0xC7, 0x06, v0l, v0h, hl, hh]); // mov word [4*vector], handler
        c.op(&[0xC7, 0x06, v2l, v2h, 0, 0]); //   mov word [4*vector+2], 0
    }
    c.op(&[0xC7, 0x06, cl, ch, 0, 0]); //     mov word [DATA_COUNTER], 0
    c.op(&[0xC7, 0x06, dl, dh, 0, 0]); //     mov word [DATA_DONE], 0
    for p in DemoPath::ALL {
        let [al, ah] = ack_counter(p).to_le_bytes();
        c.op(&[0xC7, 0x06, al, ah, 0, 0]); // mov word [ACK_path], 0
    }

    if plan.paths.lapic() {
        // The LAPIC accepts fixed interrupts (MSIs, its timer) once software-enabled;
        // LINT0 stays ExtINT (KVM's reset value for the BSP), so the PIC still works.
        let svr = 0x100 | u32::from(LAPIC_SPURIOUS_VECTOR);
        c.op(&lapic_write(LAPIC_SVR, svr)); //   mov dword [fs:SVR], 0x1FF
        c.op(&[0x66, 0xB9, 0x1B, 0, 0, 0]); //  mov ecx, 0x1B          ; IA32_APIC_BASE
        c.op(&[0x0F, 0x32]); //                 rdmsr                  ; where the LAPIC is (an MSR exit)
    }
    if plan.paths.contains(DemoPath::Timer) {
        let lvt = LVT_TIMER_PERIODIC | u32::from(TIMER_VECTOR);
        c.op(&lapic_write(LAPIC_TDCR, TDCR_DIVIDE_BY_1)); // mov dword [fs:TDCR], 0x0B
        c.op(&lapic_write(LAPIC_LVT_TIMER, lvt)); //         mov dword [fs:LVTT], periodic | vector
        c.op(&[0x66, 0xA1, tl, th]); //         mov eax, [DATA_TIMER_COUNT]
        c.op(&[0x64, 0x66, 0xA3, ml, mh]); //   mov [fs:TMICT], eax    ; the timer starts
    }

    // Unmask only our IRQ (PIC path), then tell the VMM we are ready.
    if plan.paths.contains(DemoPath::Pic) {
        c.op(&[0xB0, unmask]); //         mov al, ~(1 << DEMO_IRQ)
        c.op(&[0xE6, 0x21]); //           out 0x21, al           ; OCW1
    }
    c.op(&[0xE6, READY_PORT as u8]); //   out READY_PORT, al

    // idle: sleep until the handler has counted an interrupt not yet worked on.
    let idle = c.here();
    c.op(&[0xFA]); //                     idle: cli
    c.op(&[0xA1, cl, ch]); //             mov ax, [DATA_COUNTER]
    c.op(&[0x3B, 0x06, dl, dh]); //       cmp ax, [DATA_DONE]
    let to_work = c.jump_forward(0x75); // jne have_work
    c.op(&[0xFB]); //                     sti                    ; shadow: no interrupt before hlt
    c.op(&[0xF4]); //                     hlt                    ; wait for the interrupt
    c.jump_back(0xEB, idle)?; //          jmp idle
    c.patch_forward(to_work)?; //         have_work:
    c.op(&[0xFF, 0x06, dl, dh]); //       inc word [DATA_DONE]
    c.op(&[0xFB]); //                     sti                    ; interrupts may arrive during work
    c.op(&[0x8B, 0x0E, wl, wh]); //       mov cx, [DATA_WORK_COUNT]
    let no_work = c.jump_forward(0xE3); // jcxz done
    let work = c.here();
    c.op(&[0xE6, WORK_PORT as u8]); //    work: out WORK_PORT, al ; handled by the VMM
    c.jump_back(0xE2, work)?; //          loop work
    c.patch_forward(no_work)?; //         done:
    if plan.paths.contains(DemoPath::IrqOff) {
        // An irqs-off phase: the VMM raises an MSI at the mark; it must wait
        // for the interrupt window, which opens at the sti after the spin.
        c.op(&[0xFA]); //                 cli
        c.op(&[0xB0, MARK_IRQOFF]); //    mov al, MARK_IRQOFF
        c.op(&[0xE6, MARK_PORT as u8]); // out MARK_PORT, al     ; the VMM raises the MSI now
        c.op(&[0x0F, 0x31]); //           rdtsc                  ; edx:eax = TSC
        c.op(&[0x66, 0x89, 0xC3]); //     mov ebx, eax           ; start (low 32 bits suffice)
        let spin = c.here();
        c.op(&[0x0F, 0x31]); //           spin: rdtsc
        c.op(&[0x66, 0x29, 0xD8]); //     sub eax, ebx           ; ticks since the start, mod 2^32
        c.op(&[0x66, 0x3B, 0x06, il, ih]); // cmp eax, [DATA_IRQOFF_TICKS]
        c.jump_back(0x72, spin)?; //      jb spin
        c.op(&[0xFB]); //                 sti                    ; the MSI arrives after the next instruction
    }
    c.jump_back(0xEB, idle)?; //          jmp idle
    Ok(c.bytes)
}

/// A byte buffer with short-jump helpers.
#[derive(Default)]
struct Code {
    bytes: Vec<u8>,
}

impl Code {
    fn op(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    fn here(&self) -> usize {
        self.bytes.len()
    }

    /// `opcode rel8` to an earlier offset.
    fn jump_back(&mut self, opcode: u8, target: usize) -> Result<(), DemoError> {
        let distance = self.here() + 2 - target;
        let rel = i8::try_from(distance)
            .map(|d| (-d) as u8)
            .map_err(|_| DemoError::GuestCode("backward jump out of range"))?;
        self.op(&[opcode, rel]);
        Ok(())
    }

    /// `opcode rel8` to a later offset; returns where to patch it.
    fn jump_forward(&mut self, opcode: u8) -> usize {
        self.op(&[opcode, 0]);
        self.here() - 1
    }

    /// Points the forward jump whose rel8 is at `at` to the current offset.
    fn patch_forward(&mut self, at: usize) -> Result<(), DemoError> {
        let rel = i8::try_from(self.here() - (at + 1))
            .map_err(|_| DemoError::GuestCode("forward jump out of range"))?;
        match self.bytes.get_mut(at) {
            Some(b) => {
                *b = rel as u8;
                Ok(())
            }
            None => Err(DemoError::GuestCode("bad jump patch offset")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(paths: DemoPaths) -> GuestPlan {
        GuestPlan {
            paths,
            work_count: 4,
            timer_count: 1_000_000,
            irqoff_ticks: 1000,
            irqoff_ns: 200_000,
        }
    }

    /// Every combination of paths.
    fn all_plans() -> impl Iterator<Item = GuestPlan> {
        (1..16u8).map(|m| plan(DemoPaths(m)))
    }

    fn find(code: &[u8], needle: &[u8]) -> Option<usize> {
        code.windows(needle.len()).position(|w| w == needle)
    }

    #[test]
    fn main_loop_jumps_land_on_idle() {
        for p in all_plans() {
            let code = main_code(&p).expect("guest code");
            let ready = find(&code, &[0xE6, READY_PORT as u8]).expect("ready write");
            let idle = ready + 2;
            assert_eq!(code[idle], 0xFA, "idle starts with cli ({})", p.paths);
            // The code ends with `jmp idle`.
            let n = code.len();
            assert_eq!(code[n - 2], 0xEB);
            assert_eq!(n as isize + isize::from(code[n - 1] as i8), idle as isize);
            // `jne have_work` skips exactly `sti; hlt; jmp idle`.
            let jne = idle + 1 + 3 + 4;
            assert_eq!(code[jne], 0x75);
            assert_eq!(code[jne + 1], 4);
            assert!(
                code.len() + usize::from(CODE_ADDR) <= usize::from(HANDLER_ADDR),
                "{} bytes for {}",
                code.len(),
                p.paths
            );
        }
    }

    #[test]
    fn handler_acks_then_eois() {
        let h = handler_code();
        assert_eq!(h.first(), Some(&0x50));
        assert_eq!(h.last(), Some(&0xCF));
        let ack = h.windows(2).position(|w| w == [0xE7, ACK_PORT as u8]);
        let eoi = h.windows(4).position(|w| w == [0xB0, 0x20, 0xE6, 0x20]);
        assert!(ack.is_some() && eoi.is_some() && ack < eoi);
    }

    #[test]
    fn lapic_handlers_ack_then_eoi_at_the_lapic() {
        let eoi = lapic_write(LAPIC_EOI, 0);
        assert_eq!(eoi, [0x64, 0x66, 0xC7, 0x06, 0xB0, 0x00, 0, 0, 0, 0]);
        let work = {
            let [cl, ch] = DATA_COUNTER.to_le_bytes();
            [0xFF, 0x06, cl, ch]
        };
        for (path, at) in [
            (DemoPath::Msi, MSI_HANDLER_ADDR),
            (DemoPath::Timer, TIMER_HANDLER_ADDR),
            (DemoPath::IrqOff, IRQOFF_HANDLER_ADDR),
        ] {
            let h = lapic_handler_code(path);
            assert!(
                h.len() <= 0x40,
                "{path:?} handler overlaps the next at {at:#x}"
            );
            assert_eq!(
                (&h[..2], h.last()),
                (&[0x66, 0x50][..], Some(&0xCF)),
                "push/pop eax"
            );
            let ack = find(&h, &[0xE7, path.ack_port() as u8]).expect("ack");
            let e = find(&h, &eoi).expect("EOI");
            assert!(ack < e, "{path:?}");
            // The irqs-off MSI comes after the work it follows: it makes none.
            assert_eq!(
                find(&h, &work).is_some(),
                path != DemoPath::IrqOff,
                "{path:?}"
            );
            // The timer's handler reads the current count before anything else.
            let tmcct = find(&h, &[0x64, 0x66, 0xA1, 0x90, 0x03]);
            assert_eq!(tmcct, (path == DemoPath::Timer).then_some(2), "{path:?}");
        }
    }

    #[test]
    fn lapic_setup_only_when_a_lapic_path_runs() {
        let svr = lapic_write(LAPIC_SVR, 0x1FF);
        let pic = main_code(&plan(DemoPaths::PIC)).unwrap();
        assert!(find(&pic, &svr).is_none());
        // The PIC's IRQ is unmasked only for the PIC path.
        assert!(find(&pic, &[0xB0, 0xFE, 0xE6, 0x21]).is_some());
        let msi = main_code(&plan(DemoPaths::new([DemoPath::Msi]))).unwrap();
        assert!(find(&msi, &svr).is_some());
        assert!(find(&msi, &[0xB0, 0xFE, 0xE6, 0x21]).is_none());
        let ready = find(&msi, &[0xE6, READY_PORT as u8]).unwrap();
        assert!(find(&msi, &svr).unwrap() < ready);
    }

    #[test]
    fn timer_is_armed_before_ready() {
        let code = main_code(&plan(DemoPaths::new([DemoPath::Timer]))).unwrap();
        let lvt = lapic_write(LAPIC_LVT_TIMER, (1 << 17) | u32::from(TIMER_VECTOR));
        let tmict = find(&code, &[0x64, 0x66, 0xA3, 0x80, 0x03]).unwrap();
        let ready = find(&code, &[0xE6, READY_PORT as u8]).unwrap();
        assert!(find(&code, &lvt).unwrap() < tmict && tmict < ready);
        // And the guest reads its APIC base MSR once (an MSR exit).
        assert!(find(&code, &[0x66, 0xB9, 0x1B, 0, 0, 0, 0x0F, 0x32]).unwrap() < ready);
    }

    #[test]
    fn irqoff_phase_spins_with_interrupts_disabled() {
        let code = main_code(&plan(DemoPaths::new([DemoPath::IrqOff]).effective())).unwrap();
        let mark = find(&code, &[0xB0, MARK_IRQOFF, 0xE6, MARK_PORT as u8]).unwrap();
        assert_eq!(code[mark - 1], 0xFA, "cli right before the mark");
        let spin = mark + 4 + 2 + 3;
        assert_eq!(&code[spin..spin + 2], [0x0F, 0x31], "rdtsc");
        let jb = spin + 2 + 3 + 5;
        assert_eq!(code[jb], 0x72);
        assert_eq!(
            jb as isize + 2 + isize::from(code[jb + 1] as i8),
            spin as isize
        );
        assert_eq!(code[jb + 2], 0xFB, "sti after the spin");
        assert_eq!(code[jb + 3], 0xEB, "then jmp idle");
        // No exit between cli and sti but the mark (no out/in opcodes).
        assert!(!code[mark + 4..jb + 2]
            .iter()
            .any(|b| [0xE6, 0xE7, 0xE4, 0xE5].contains(b)));
    }

    #[test]
    fn paths_parse_and_bring_a_driver_for_irqoff() {
        assert_eq!("pic".parse::<DemoPaths>(), Ok(DemoPaths::PIC));
        assert_eq!("all".parse::<DemoPaths>(), Ok(DemoPaths::ALL));
        let two: DemoPaths = "msi, timer".parse().unwrap();
        assert_eq!(
            two.iter().collect::<Vec<_>>(),
            [DemoPath::Msi, DemoPath::Timer]
        );
        assert_eq!(two.to_string(), "msi,timer");
        assert!("pci".parse::<DemoPaths>().unwrap_err().contains("pci"));
        let irqoff: DemoPaths = "irqoff".parse().unwrap();
        assert_eq!(irqoff.effective().to_string(), "msi,irqoff");
        let with_timer: DemoPaths = "timer,irqoff".parse().unwrap();
        assert_eq!(with_timer.effective(), with_timer);
        assert_eq!(
            DemoPaths::ALL.raised_by_thread(),
            [DemoPath::Pic, DemoPath::Msi]
        );
        assert!(DemoPaths::new([DemoPath::Timer])
            .raised_by_thread()
            .is_empty());
        for p in DemoPath::ALL {
            assert_eq!(kvmtrace_common::demo_path::name(p.code()), p.name());
        }
    }

    #[test]
    fn timer_samples_from_the_current_count() {
        let p = 1_000_000;
        // Read 30 us after the tick was due: 970 us left to the next one.
        assert_eq!(timer_sample(5_000_000, 970_000, p), Some(4_970_000));
        assert_eq!(timer_sample(5_000_000, 1_000_000, p), Some(5_000_000));
        // A count above the period, or a due time before the clock began, is not one.
        assert_eq!(timer_sample(5_000_000, 1_000_001, p), None);
        assert_eq!(timer_sample(10, 0, p), None);
    }

    #[test]
    fn plan_checks_the_timer_period_and_irqoff_time() {
        let cfg = |period_us, irqoff_us, paths| DemoConfig {
            irq_period: Duration::from_micros(period_us),
            irqoff: Duration::from_micros(irqoff_us),
            paths,
            ..DemoConfig::default()
        };
        let timer = DemoPaths::new([DemoPath::Timer]);
        let p = GuestPlan::new(&cfg(1000, 200, timer), timer, 1_000_000).unwrap();
        assert_eq!(p.timer_count, 1_000_000);
        assert!(GuestPlan::new(&cfg(100, 50, timer), timer, 100_000).is_err());
        let irqoff = DemoPaths::new([DemoPath::IrqOff]).effective();
        assert!(GuestPlan::new(&cfg(1000, 1000, irqoff), irqoff, 1_000_000).is_err());
        assert!(GuestPlan::new(&cfg(1000, 0, irqoff), irqoff, 1_000_000).is_err());
        let p = GuestPlan::new(&cfg(1000, 200, irqoff), irqoff, 1_000_000).unwrap();
        assert!(p.irqoff_ticks > 0 && p.irqoff_ns == 200_000);
        assert!(GuestPlan::new(&cfg(1000, 200, DemoPaths(0)), DemoPaths(0), 1_000_000).is_err());
    }

    #[test]
    fn acks_pair_with_the_latest_raise_before_them() {
        let log = RaiseLog::default();
        assert_eq!(log.snapshot().latest_before(100), None);
        log.publish(1, 1_000);
        assert_eq!(log.snapshot().latest_before(999), None);
        assert_eq!(log.snapshot().latest_before(1_500), Some((1, 1_000)));
        log.publish(2, 2_000);
        // An ack timestamped before raise 2 was published belongs to raise 1.
        assert_eq!(log.snapshot().latest_before(1_900), Some((1, 1_000)));
        assert_eq!(log.snapshot().latest_before(2_000), Some((2, 2_000)));
    }

    #[test]
    fn signal_mask_ioctl_number() {
        assert_eq!(KVM_SET_SIGNAL_MASK, 0x4004_AE8B);
    }
}
