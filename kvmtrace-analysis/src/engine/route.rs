//! Interrupts on their way to a vCPU: the raise-side events (`kvm_set_irq` and the chips'
//! events, MSIs, LAPIC acceptance, the LAPIC timer's hrtimer) and the vCPU they target.

use kvmtrace_common::{ev, Event};

use super::window::OpenedBy;
use super::{Engine, Vcpu};

impl Engine {
    /// `kvm_set_irq`: level 1 raises; the chips' events that follow in the same thread say
    /// where it goes. Level 0 lowers the line.
    pub(super) fn on_set_irq(&mut self, e: &Event, x: &ev::KvmSetIrq, ts: u64) {
        let level = (x.level != 0).then_some(ts);
        self.pending_raise.insert(e.tid, level);
    }

    /// `kvm_pic_set_irq`: the PIC's INTR line goes to the bootstrap processor (vCPU 0);
    /// ignored when the pin is masked.
    pub(super) fn on_pic_set_irq(&mut self, e: &Event, x: &ev::KvmPicSetIrq, ts: u64) {
        let pin = x.pin as u32;
        let raised = self.raised_at(e.tid, ts);
        if let (Some(at), true) = (raised, x.imr & (1 << (pin & 7)) == 0) {
            if x.coalesced != 0 {
                self.count_coalesced(e.tgid, Some(0));
            } else {
                self.raise(e, at, Some(0), OpenedBy::SetIrq);
            }
        }
    }

    /// `kvm_ioapic_set_irq`: the redirection entry's destination (physical mode; the lowest
    /// bit in logical mode); ignored when masked or coalesced.
    pub(super) fn on_ioapic_set_irq(&mut self, e: &Event, x: &ev::KvmIoapicSetIrq, ts: u64) {
        let masked = x.e & (1 << 16) != 0;
        let raised = self.raised_at(e.tid, ts);
        if let (Some(at), true) = (raised, !masked && x.coalesced == 0) {
            let dest = ((x.e >> 56) & 0xff) as u32;
            let logical = x.e & (1 << 11) != 0;
            let target = if logical {
                (dest != 0).then(|| dest.trailing_zeros())
            } else {
                Some(dest)
            };
            self.raise(e, at, target, OpenedBy::SetIrq);
        }
    }

    /// `kvm_msi_set_irq`: the destination APIC id in the address (bits 12-19).
    pub(super) fn on_msi_set_irq(&mut self, e: &Event, x: &ev::KvmMsiSetIrq, ts: u64) {
        let dest = ((x.address >> 12) & 0xff) as u32;
        self.raise(e, ts, Some(dest), OpenedBy::MsiSetIrq);
    }

    /// `kvm_apic_accept_irq`: the accepting LAPIC's `apicid`.
    pub(super) fn on_apic_accept_irq(&mut self, e: &Event, x: &ev::KvmApicAcceptIrq, ts: u64) {
        self.raise(e, ts, Some(x.apicid as u32), OpenedBy::ApicAcceptIrq);
    }

    /// An hrtimer expiry: KVM's LAPIC timer callback is a guest timer interrupt, for the
    /// vCPU that last ran on that CPU.
    pub(super) fn on_hrtimer_expire(&mut self, e: &Event, x: &ev::HrtimerExpireEntry, ts: u64) {
        if self.cfg.apic_timer_fn == 0 || x.function != self.cfg.apic_timer_fn {
            return;
        }
        let target = self.cpus.get(e.cpu as usize).and_then(|c| c.last_vcpu);
        match target {
            Some(tid) => self.open_window(tid, ts, OpenedBy::LapicTimer, e),
            None => self.unresolved_raises += 1,
        }
    }

    /// A raise the chip merged with one still pending.
    fn count_coalesced(&mut self, tgid: u32, target: Option<u32>) {
        if let Some(tid) = self.resolve(tgid, target) {
            if let Some(v) = self.vcpus.get_mut(&tid) {
                v.stats.coalesced += 1;
            }
        }
    }

    /// When the line a chip event reports was raised: at the thread's `kvm_set_irq`
    /// (level 1), never for a lowered line, or at the chip event when no `kvm_set_irq` was
    /// seen from this thread.
    fn raised_at(&self, tid: u32, ts: u64) -> Option<u64> {
        match self.pending_raise.get(&tid) {
            Some(level) => *level,
            None => Some(ts),
        }
    }

    /// An interrupt raised for vCPU `target` of the raising thread's VM.
    fn raise(&mut self, e: &Event, ts: u64, target: Option<u32>, by: OpenedBy) {
        match self.resolve(e.tgid, target) {
            Some(tid) => self.open_window(tid, ts, by, e),
            None => self.unresolved_raises += 1,
        }
    }

    /// The vCPU thread with id `target` in the VM of `tgid` (or the only VM, when the event
    /// fired in interrupt context).
    fn resolve(&self, tgid: u32, target: Option<u32>) -> Option<u32> {
        let in_vm: Vec<&Vcpu> = {
            let own: Vec<&Vcpu> = self.vcpus.values().filter(|v| v.tgid == tgid).collect();
            if own.is_empty() {
                let mut vms: Vec<u32> = self.vcpus.values().map(|v| v.tgid).collect();
                vms.sort_unstable();
                vms.dedup();
                if vms.len() != 1 {
                    return None;
                }
                self.vcpus.values().collect()
            } else {
                own
            }
        };
        let target = target?;
        if let Some(v) = in_vm.iter().find(|v| v.vcpu_id == Some(target)) {
            return Some(v.tid);
        }
        // vCPU ids unknown and a single vCPU: it is the one.
        (in_vm.len() == 1 && in_vm[0].vcpu_id.is_none()).then(|| in_vm[0].tid)
    }
}
