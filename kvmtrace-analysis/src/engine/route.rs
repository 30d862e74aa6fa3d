//! Interrupts on their way to a vCPU (docs/attribution.md, "opening"; the kernel paths in
//! docs/kvm-source-notes.md §1).
//!
//! The target comes from KVM itself: the vCPU that `kvm_apic_accept_irq` /
//! `kvm_apicv_accept_irq` names (`apicid` is KVM's vcpu_id, lapic.c `__apic_accept_irq`),
//! the PIC's bootstrap processor, the vCPU whose LAPIC timer hrtimer expired, or the vCPU the
//! raise woke. Raise-side events (`kvm_set_irq`, `kvm_msi_set_irq`, `kvm_apic_ipi`, the
//! timer's expiry) only give the raise's start: a *chain* is the run of events one raise
//! produces back to back in the raising task on one CPU, and its windows open at the
//! chain's first event. The VM is the target vCPU's: the raiser's process when it runs
//! that vCPU id, else a `vhost-PID`/`kvm-pit/PID` kernel thread's owner, else, when several
//! VMs have the id (a kworker, an OVS-DPDK thread, a hard IRQ that interrupted anyone), a
//! tentative window on each, kept by the first to show evidence (a wake-up, an injection).

use kvmtrace_common::{ev, Event};

use super::vcpu::IdSource;

use super::window::{OpenedBy, Opening};
use super::Engine;

/// Events of one raise follow each other within this in the raising task.
const CHAIN_GAP_NS: u64 = 200_000;
/// Chains followed at once (one per raising task); stale ones are dropped beyond this.
const MAX_CHAINS: usize = 4096;
/// Candidates a tentative window is opened on; a raise that could be for more is counted
/// as unresolved.
const MAX_CANDIDATES: usize = 8;
/// Tentative groups open at once.
const MAX_GROUPS: usize = 4096;
/// LAPIC timer hrtimers remembered (one per vCPU normally).
const MAX_TIMERS: usize = 65536;

/// A raise in progress in one task.
pub(super) struct Chain {
    start_ns: u64,
    last_ns: u64,
    cpu: u32,
    by: OpenedBy,
    /// Its target was given (an accept, a PIC or timer opening): a new raise-side event
    /// starts a new chain.
    targeted: bool,
    /// The line was lowered (`kvm_set_irq` level 0): the chips' events that follow are the
    /// lowering's, not a raise.
    lowered: bool,
    /// The raise reached a LAPIC (an accept): the same GSI's PIC path is not also a
    /// delivery (a guest that uses the IOAPIC masks ExtINT in LVT0).
    accepted: bool,
    /// The PIC path opened a window on this vCPU thread (dropped if an accept follows).
    pic_window: Option<u32>,
    /// vCPU ids accepted in this chain: one raise reaches a LAPIC once, so a second accept
    /// for the same id is the next raise.
    accepted_ids: Vec<u32>,
}

/// Who a raise is for.
enum Target {
    One(u32),
    Several(Vec<u32>),
    Nobody,
}

/// APIC delivery modes that are interrupts (Fixed, LowestPriority); NMI, SMI, INIT, SIPI
/// and ExtINT deliveries are not (`dm` is the raw `APIC_DM_*`, shifted by 8).
fn is_interrupt_mode(dm: Option<u64>) -> bool {
    dm.is_none_or(|dm| matches!((dm >> 8) & 7, 0 | 1))
}

impl Engine {
    /// The chain `e` continues, or a new one it starts (`by` says what kind of raise).
    fn chain(&mut self, e: &Event, ts: u64, by: OpenedBy, start_event: bool) -> &mut Chain {
        let key = (e.tid, e.cpu);
        let live = self.chains.get(&key).is_some_and(|c| {
            c.cpu == e.cpu
                && ts.saturating_sub(c.last_ns) <= CHAIN_GAP_NS
                && !(start_event && (c.targeted || c.lowered))
        });
        if !live {
            if self.chains.len() >= MAX_CHAINS {
                let now = ts;
                self.chains
                    .retain(|_, c| now.saturating_sub(c.last_ns) <= CHAIN_GAP_NS);
            }
            self.chains.insert(
                key,
                Chain {
                    start_ns: ts,
                    last_ns: ts,
                    cpu: e.cpu,
                    by,
                    targeted: false,
                    lowered: false,
                    accepted: false,
                    pic_window: None,
                    accepted_ids: Vec::new(),
                },
            );
        }
        let c = self
            .chains
            .get_mut(&key)
            .unwrap_or_else(|| unreachable!("inserted above"));
        c.last_ns = ts;
        c
    }

    /// `kvm_set_irq`: level 1 starts a raise; the chips' events that follow in the same task
    /// say where it goes. Level 0 lowers the line.
    pub(super) fn on_set_irq(&mut self, e: &Event, x: &ev::KvmSetIrq, ts: u64) {
        let lower = x.level == 0;
        let c = self.chain(e, ts, OpenedBy::SetIrq, true);
        c.lowered = lower;
    }

    /// `kvm_msi_set_irq`: an MSI starts (or, after `kvm_set_irq` of an MSI route,
    /// continues) a raise. Its target comes from the accept that follows; only a stream
    /// without accepts decodes the address.
    pub(super) fn on_msi_set_irq(&mut self, e: &Event, x: &ev::KvmMsiSetIrq, ts: u64) {
        let start = self.chain(e, ts, OpenedBy::MsiSetIrq, true).start_ns;
        if self.cfg.accepts_traced {
            return;
        }
        // x86_msi_msg_get_destid: bits 12-19, and bits 40-63 of the printed address in
        // x2APIC format.
        let dest = (((x.address >> 12) & 0xff) | ((x.address >> 32) & 0xffff_ff00)) as u32;
        let logical = x.address & (1 << 2) != 0;
        let dm = (x.data >> 8) & 7;
        let vector = (x.data & 0xff) as u32;
        if logical || !is_interrupt_mode(Some(dm << 8)) {
            self.unresolved_raises += 1;
            return;
        }
        self.raise_to_id(e, start, OpenedBy::MsiSetIrq, dest, Some(vector));
    }

    /// `kvm_apic_ipi`: a guest IPI starts in the sender's vCPU thread.
    pub(super) fn on_apic_ipi(&mut self, e: &Event, ts: u64) {
        self.chain(e, ts, OpenedBy::Ipi, true);
    }

    /// `kvm_pic_set_irq`: the PIC's INTR goes to the bootstrap processor (the first vCPU
    /// whose LAPIC takes ExtINT, i8259.c `pic_unlock`; no accept is traced on this path).
    /// A masked pin goes nowhere; `coalesced` is the same pin raised while still pending.
    pub(super) fn on_pic_set_irq(&mut self, e: &Event, x: &ev::KvmPicSetIrq, ts: u64) {
        let c = self.chain(e, ts, OpenedBy::SetIrq, false);
        if c.lowered || c.accepted || x.imr & (1 << (x.pin & 7)) != 0 {
            return;
        }
        c.targeted = true;
        let (start, by) = (c.start_ns, c.by);
        let bsp = self.target_of_id(e, 0);
        if x.coalesced != 0 {
            if let Target::One(tid) = bsp {
                if let Some(v) = self.vcpus.get_mut(&tid) {
                    v.stats.coalesced += 1;
                }
            }
            return;
        }
        let pic_tid = match bsp {
            Target::One(tid) => Some(tid),
            _ => None,
        };
        self.open_for(e, start, by, None, bsp);
        if let (Some(tid), Some(c)) = (pic_tid, self.chains.get_mut(&(e.tid, e.cpu))) {
            c.pic_window = Some(tid);
        }
    }

    /// `kvm_ioapic_set_irq`: traced after the delivery it made (ioapic.c `ioapic_set_irq`),
    /// so its accepts came first. Only a stream without accepts decodes the entry.
    pub(super) fn on_ioapic_set_irq(&mut self, e: &Event, x: &ev::KvmIoapicSetIrq, ts: u64) {
        let accepts_traced = self.cfg.accepts_traced;
        let c = self.chain(e, ts, OpenedBy::SetIrq, false);
        if c.lowered || c.targeted || accepts_traced {
            return;
        }
        let masked = x.e & (1 << 16) != 0;
        let logical = x.e & (1 << 11) != 0;
        if masked || x.coalesced != 0 {
            return;
        }
        c.targeted = true;
        let (start, by) = (c.start_ns, c.by);
        if logical {
            self.unresolved_raises += 1;
            return;
        }
        let dest = ((x.e >> 56) & 0xff) as u32;
        let vector = (x.e & 0xff) as u32;
        self.raise_to_id(e, start, by, dest, Some(vector));
    }

    /// `kvm_apic_accept_irq`: the target's LAPIC accepted vector `vec` (traced before any
    /// check, lapic.c `__apic_accept_irq`). The window opens at the chain's start.
    pub(super) fn on_apic_accept_irq(&mut self, e: &Event, x: &ev::KvmApicAcceptIrq, ts: u64) {
        if !is_interrupt_mode(x.dm) {
            return;
        }
        let vector = x.vec as u32;
        let id = x.apicid as u32;
        // The vCPU's own thread accepting for itself while its timer window waits: the
        // timer's vector, delivered from the vCPU thread (x86.c
        // `kvm_inject_pending_timer_irqs`), not a new interrupt.
        if let Some(v) = self.vcpus.get_mut(&e.tid) {
            if v.vcpu_id == Some(id) {
                if let Some(w) = v.windows.iter_mut().find(|w| {
                    w.vector.is_none()
                        && matches!(
                            w.opened_by,
                            OpenedBy::LapicTimer | OpenedBy::PreemptionTimer
                        )
                }) {
                    w.vector = Some(vector);
                    return;
                }
            }
        }
        let again = self
            .chains
            .get(&(e.tid, e.cpu))
            .is_some_and(|c| c.accepted_ids.contains(&id));
        if again {
            self.chains.remove(&(e.tid, e.cpu));
        }
        let c = self.chain(e, ts, OpenedBy::ApicAcceptIrq, false);
        c.targeted = true;
        c.accepted = true;
        if c.accepted_ids.len() < MAX_CANDIDATES * 32 {
            c.accepted_ids.push(id);
        }
        let (start, by) = (c.start_ns, c.by);
        if let Some(tid) = c.pic_window.take() {
            // QEMU routes a GSI to the PIC first, then the IOAPIC: the accept says the
            // LAPIC path delivers this raise, not the PIC's ExtINT.
            self.drop_pic_window(tid, start);
        }
        self.raise_to_id(e, start, by, id, Some(vector));
    }

    /// Drops the PIC window opened at `start` on `tid` (the same raise took the IOAPIC path).
    fn drop_pic_window(&mut self, tid: u32, start: u64) {
        let Some(v) = self.vcpus.get(&tid) else {
            return;
        };
        if let Some(i) = v.windows.iter().position(|w| {
            w.vector.is_none() && w.opened_by == OpenedBy::SetIrq && w.open_ns == start
        }) {
            self.drop_window(tid, i);
        }
    }

    /// `kvm_apicv_accept_irq`: APICv/AVIC posted the vector (after the accept, and after the
    /// notification IPI or the wake-up, vmx.c `vmx_deliver_interrupt`). Into a running
    /// guest that is the delivery; otherwise the next entry is.
    pub(super) fn on_apicv_accept_irq(&mut self, e: &Event, x: &ev::KvmApicvAcceptIrq, ts: u64) {
        if !is_interrupt_mode(x.dm) {
            return;
        }
        let vector = x.vec as u32;
        let id = x.apicid as u32;
        let tids = match self.target_of_id(e, id) {
            Target::One(t) => vec![t],
            Target::Several(ts) => ts,
            Target::Nobody => return,
        };
        for tid in tids {
            let Some(v) = self.vcpus.get_mut(&tid) else {
                continue;
            };
            let in_guest = v.in_guest();
            let Some(i) = v.windows.iter().position(|w| w.vector == Some(vector)) else {
                continue;
            };
            v.windows[i].posted = true;
            if in_guest {
                self.close_window(tid, i, ts, super::EndMarker::PostedInGuest);
            }
        }
    }

    /// `hrtimer_start` of KVM's LAPIC timer callback in a vCPU thread: that hrtimer is this
    /// vCPU's timer, wherever it later fires.
    pub(super) fn on_hrtimer_start(&mut self, e: &Event, x: &ev::HrtimerStart) {
        if self.cfg.apic_timer_fn == 0 || x.function != self.cfg.apic_timer_fn {
            return;
        }
        if !self.vcpus.contains_key(&e.tid) {
            return;
        }
        if self.timers.len() >= MAX_TIMERS && !self.timers.contains_key(&x.hrtimer) {
            return;
        }
        self.timers.insert(x.hrtimer, e.tid);
    }

    /// An hrtimer expiry: KVM's LAPIC timer callback is a guest timer interrupt, for the
    /// vCPU that armed that hrtimer; an hrtimer not seen armed goes to the vCPU on this CPU
    /// (tentatively to each when several, kept by the one it wakes or that takes it).
    pub(super) fn on_hrtimer_expire(&mut self, e: &Event, x: &ev::HrtimerExpireEntry, ts: u64) {
        if self.cfg.apic_timer_fn == 0 || x.function != self.cfg.apic_timer_fn {
            return;
        }
        let c = self.chain(e, ts, OpenedBy::LapicTimer, true);
        c.targeted = true;
        let start = c.start_ns;
        let target = match self.timers.get(&x.hrtimer) {
            Some(&tid) if self.vcpus.contains_key(&tid) => Target::One(tid),
            _ => {
                // KVM keeps a vCPU's timer on the CPU it runs on (KVM_REQ_MIGRATE_TIMER at
                // vcpu_load) and a halted vCPU's on the CPU it blocked on.
                let here: Vec<u32> = self
                    .vcpus
                    .values()
                    .filter(|v| v.cpu() == Some(e.cpu))
                    .map(|v| v.tid)
                    .collect();
                match here.len() {
                    0 => Target::Nobody,
                    1 => Target::One(here[0]),
                    _ => Target::Several(here),
                }
            }
        };
        self.open_for(e, start, OpenedBy::LapicTimer, None, target);
    }

    /// A raise for vCPU id `id`: opens its window(s).
    fn raise_to_id(&mut self, e: &Event, start: u64, by: OpenedBy, id: u32, vector: Option<u32>) {
        let target = self.target_of_id(e, id);
        self.open_for(e, start, by, vector, target);
    }

    fn open_for(&mut self, e: &Event, at: u64, by: OpenedBy, vector: Option<u32>, t: Target) {
        match t {
            Target::One(tid) => {
                let o = Opening {
                    at,
                    by,
                    vector,
                    tentative: None,
                };
                self.open_window(tid, o, e);
            }
            Target::Several(tids)
                if tids.len() <= MAX_CANDIDATES && self.tentative.len() < MAX_GROUPS =>
            {
                let g = self.next_group;
                self.next_group += 1;
                let mut opened = Vec::with_capacity(tids.len());
                for tid in tids {
                    let o = Opening {
                        at,
                        by,
                        vector,
                        tentative: Some(g),
                    };
                    if self.open_window(tid, o, e) {
                        opened.push(tid);
                    }
                }
                if !opened.is_empty() {
                    self.tentative.insert(g, opened);
                }
            }
            Target::Several(_) | Target::Nobody => self.unresolved_raises += 1,
        }
    }

    /// The vCPU thread(s) with KVM vcpu_id `id` that a raise from `e`'s task may be for.
    fn target_of_id(&self, e: &Event, id: u32) -> Target {
        let empty = Vec::new();
        let vm = self.raiser_vm(e);
        // A raise the raiser's VM makes is for that VM's vCPU: another VM's vCPU with the
        // same id (a VM that exited, another tenant) is never it.
        let all = self.by_id.get(&id).unwrap_or(&empty);
        let in_vm: Vec<u32>;
        let cands = match vm {
            Some(vm) => {
                in_vm = all
                    .iter()
                    .copied()
                    .filter(|t| self.vcpus.get(t).is_some_and(|v| v.tgid == vm))
                    .collect();
                &in_vm
            }
            None => all,
        };
        if cands.is_empty() {
            // No vCPU has that id; with ids unknown, a VM's only vCPU is the one.
            let pool: Vec<u32> = self
                .vcpus
                .values()
                .filter(|v| v.vcpu_id.is_none() && vm.is_none_or(|vm| v.tgid == vm))
                .map(|v| v.tid)
                .collect();
            let vms = self.vm_count();
            return match pool.as_slice() {
                [one] if vm.is_some() || vms == 1 => Target::One(*one),
                _ => Target::Nobody,
            };
        }
        if let [one] = cands.as_slice() {
            return Target::One(*one);
        }
        if let Some(vm) = vm {
            let own: Vec<u32> = cands
                .iter()
                .copied()
                .filter(|t| self.vcpus.get(t).is_some_and(|v| v.tgid == vm))
                .collect();
            if let [one] = own.as_slice() {
                return Target::One(*one);
            }
            // One VM has each vcpu_id once (kvm_main.c `kvm_vm_ioctl_create_vcpu` refuses a
            // duplicate): an id KVM gave beats one guessed from a thread name.
            let kvm: Vec<u32> = own
                .iter()
                .copied()
                .filter(|t| {
                    self.vcpus
                        .get(t)
                        .is_some_and(|v| v.id_source == IdSource::Kvm)
                })
                .collect();
            if let [one] = kvm.as_slice() {
                return Target::One(*one);
            }
        }
        // Likewise across VMs: drop, per VM, name-guessed candidates when KVM named one.
        let firm: Vec<u32> = cands
            .iter()
            .copied()
            .filter(|t| {
                self.vcpus.get(t).is_some_and(|v| {
                    v.id_source == IdSource::Kvm
                        || !cands.iter().any(|o| {
                            self.vcpus
                                .get(o)
                                .is_some_and(|w| w.tgid == v.tgid && w.id_source == IdSource::Kvm)
                        })
                })
            })
            .collect();
        match firm.as_slice() {
            [one] => Target::One(*one),
            _ => Target::Several(firm),
        }
    }

    /// The VM a raise from `e`'s task is for, when the task says: a thread of a VMM
    /// process, or a kernel thread named after its VMM (`vhost-PID` when vhost workers are
    /// kernel threads: before Linux 6.4, or with fork_from_owner off; `kvm-pit/PID`); the
    /// only VM, when there is one.
    fn raiser_vm(&self, e: &Event) -> Option<u32> {
        // A raise from inside a hard IRQ handler (VFIO's `vfio_msihandler` → irqfd, run in
        // whatever task it interrupted, maybe another VM's vCPU: eventfd.c
        // `irqfd_wakeup`) says nothing about its VM through that task.
        let in_hardirq = self.cpus.get(e.cpu as usize).is_some_and(|c| {
            c.overlays
                .iter()
                .any(|o| matches!(o.cause, super::Cause::Hardirq { .. }))
        });
        if !in_hardirq {
            if let Some(vm) = self.task_vm(e) {
                return Some(vm);
            }
        }
        match self.vms.keys().next() {
            Some(&only) if self.vms.len() == 1 => Some(only),
            _ => None,
        }
    }

    /// The VM the raising task itself belongs to or is named after. A kernel thread named
    /// after a process that is no VM here (another VM, not traced; with `-p` its raises still
    /// come through on a traced vCPU's CPU) gives that process: no vCPU here is its target.
    /// `vhost-PID` names the thread that called VHOST_SET_OWNER (vhost.c:850, 6.12), its
    /// VMM's; `kvm-pit/PID` the VMM (i8254.c:681-684).
    fn task_vm(&self, e: &Event) -> Option<u32> {
        if self.is_vm(e.tgid) {
            return Some(e.tgid);
        }
        let name = self.threads.name(e.tid).unwrap_or_default();
        let owner = name
            .strip_prefix("vhost-")
            .or_else(|| name.strip_prefix("kvm-pit/"))
            .and_then(|p| p.parse::<u32>().ok())?;
        if self.is_vm(owner) {
            return Some(owner);
        }
        Some(
            self.vcpus
                .get(&owner)
                .map(|v| v.tgid)
                .or_else(|| self.threads.get(owner).map(|t| t.tgid).filter(|&t| t != 0))
                .unwrap_or(owner),
        )
    }

    fn is_vm(&self, tgid: u32) -> bool {
        self.vms.contains_key(&tgid)
    }

    fn vm_count(&self) -> usize {
        self.vms.len()
    }
}
