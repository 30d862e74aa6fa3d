//! The KVM tracepoints that have no [`Kind`](crate::Kind) of their own, by number: a
//! [`Kind::KvmOther`](crate::Kind::KvmOther) record names its tracepoint by its index in
//! [`KVM_EVENTS`], so text imports and captures carry them the same way.
//!
//! The list is every tracepoint of the `kvm` and `kvmmmu` systems of Linux 6.12 and 6.1
//! (docs/kvm-source-notes.md §5) that kvmtrace has no kind for, then older names of the
//! same tracepoints (renamed or removed since 2.6.3x). **Append only**: an index, once given,
//! names that tracepoint for good (captures store it).
//!
//! `vcpu` says the tracepoint fires only in the vCPU thread itself (its `KVM_RUN` loop, an
//! exit handler, a vCPU ioctl), so an event of it says the current task is a vCPU thread that
//! is running. Tracepoints that also fire in other tasks (the VMM's VM ioctls, kworkers, MMU
//! notifiers in any task, hrtimer or IOMMU interrupts) have `vcpu: false`.

/// One KVM tracepoint without a kind of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvmEvent {
    /// Tracefs system: `kvm` or `kvmmmu`.
    pub system: &'static str,
    pub name: &'static str,
    /// Fires only in the vCPU thread (see the module doc).
    pub vcpu: bool,
}

const fn kvm(name: &'static str, vcpu: bool) -> KvmEvent {
    KvmEvent {
        system: "kvm",
        name,
        vcpu,
    }
}

const fn mmu(name: &'static str, vcpu: bool) -> KvmEvent {
    KvmEvent {
        system: "kvmmmu",
        name,
        vcpu,
    }
}

/// The table, by `KvmOther.name_id`. Append only.
pub const KVM_EVENTS: &[KvmEvent] = &[
    // include/trace/events/kvm.h (6.12)
    kvm("kvm_ioapic_delayed_eoi_inj", true),
    kvm("kvm_ack_irq", true),
    kvm("kvm_fpu", true),
    kvm("kvm_try_async_get_page", true),
    kvm("kvm_async_pf_repeated_fault", true),
    kvm("kvm_async_pf_not_present", true),
    kvm("kvm_async_pf_ready", true),
    kvm("kvm_async_pf_completed", false),
    kvm("kvm_halt_poll_ns", true),
    kvm("kvm_dirty_ring_push", false),
    kvm("kvm_dirty_ring_reset", false),
    kvm("kvm_dirty_ring_exit", true),
    kvm("kvm_unmap_hva_range", false),
    kvm("kvm_age_hva", false),
    kvm("kvm_test_age_hva", false),
    // arch/x86/kvm/trace.h (6.12)
    kvm("kvm_hypercall", true),
    kvm("kvm_hv_hypercall", true),
    kvm("kvm_hv_hypercall_done", true),
    kvm("kvm_xen_hypercall", true),
    kvm("kvm_fast_mmio", true),
    kvm("kvm_cpuid", true),
    kvm("kvm_apic", true),
    kvm("kvm_inj_exception", true),
    kvm("kvm_cr", true),
    kvm("kvm_pv_eoi", true),
    kvm("kvm_nested_vmenter", true),
    kvm("kvm_nested_intercepts", true),
    kvm("kvm_nested_vmexit", true),
    kvm("kvm_nested_vmexit_inject", true),
    kvm("kvm_nested_intr_vmexit", true),
    kvm("kvm_invlpga", true),
    kvm("kvm_skinit", true),
    kvm("kvm_emulate_insn", true),
    kvm("vcpu_match_mmio", true),
    // Also when a vCPU is created, which some VMMs do from their main thread; and from
    // KVM_SET_CLOCK and other VM ioctls in the VMM.
    kvm("kvm_write_tsc_offset", false),
    kvm("kvm_update_master_clock", false),
    kvm("kvm_track_tsc", false),
    kvm("kvm_pml_full", true),
    kvm("kvm_ple_window_update", true),
    kvm("kvm_pvclock_update", true),
    kvm("kvm_smm_transition", true),
    kvm("kvm_pi_irte_update", false),
    kvm("kvm_hv_notify_acked_sint", true),
    kvm("kvm_hv_synic_set_irq", true),
    kvm("kvm_hv_synic_send_eoi", true),
    kvm("kvm_hv_synic_set_msr", true),
    kvm("kvm_hv_stimer_set_config", true),
    kvm("kvm_hv_stimer_set_count", true),
    kvm("kvm_hv_stimer_start_periodic", true),
    kvm("kvm_hv_stimer_start_one_shot", true),
    // The stimer's hrtimer callback: hardirq, in whatever task it interrupted.
    kvm("kvm_hv_stimer_callback", false),
    kvm("kvm_hv_stimer_expiration", true),
    kvm("kvm_hv_stimer_cleanup", true),
    kvm("kvm_apicv_inhibit_changed", false),
    kvm("kvm_avic_incomplete_ipi", true),
    kvm("kvm_avic_unaccelerated_access", true),
    kvm("kvm_avic_ga_log", false),
    kvm("kvm_avic_kick_vcpu_slowpath", true),
    kvm("kvm_avic_doorbell", false),
    kvm("kvm_hv_timer_state", true),
    kvm("kvm_hv_flush_tlb", true),
    kvm("kvm_hv_flush_tlb_ex", true),
    kvm("kvm_hv_send_ipi", true),
    kvm("kvm_hv_send_ipi_ex", true),
    kvm("kvm_pv_tlb_flush", true),
    kvm("kvm_nested_vmenter_failed", true),
    kvm("kvm_hv_syndbg_set_msr", true),
    kvm("kvm_hv_syndbg_get_msr", true),
    kvm("kvm_vmgexit_enter", true),
    kvm("kvm_vmgexit_exit", true),
    kvm("kvm_vmgexit_msr_protocol_enter", true),
    kvm("kvm_vmgexit_msr_protocol_exit", true),
    kvm("kvm_rmp_fault", true),
    // arch/x86/kvm/mmu/mmutrace.h (6.12): the fault path runs in the vCPU thread; zapping,
    // splitting and MMU notifiers run in any task.
    mmu("kvm_mmu_pagetable_walk", true),
    mmu("kvm_mmu_paging_element", true),
    mmu("kvm_mmu_set_accessed_bit", true),
    mmu("kvm_mmu_set_dirty_bit", true),
    mmu("kvm_mmu_walker_error", true),
    mmu("kvm_mmu_get_page", true),
    mmu("kvm_mmu_sync_page", true),
    mmu("kvm_mmu_unsync_page", true),
    mmu("kvm_mmu_prepare_zap_page", false),
    mmu("mark_mmio_spte", true),
    mmu("handle_mmio_page_fault", true),
    mmu("fast_page_fault", true),
    mmu("kvm_mmu_zap_all_fast", false),
    mmu("check_mmio_spte", true),
    mmu("kvm_mmu_set_spte", true),
    mmu("kvm_mmu_spte_requested", true),
    mmu("kvm_tdp_mmu_spte_changed", false),
    mmu("kvm_mmu_split_huge_page", false),
    // Only in 6.1 (and older).
    mmu("kvm_set_spte_hva", false),
    // Older names of the tracepoints above, and tracepoints since removed.
    kvm("kvm_nested_vmrun", true),
    kvm("kvm_enter_smm", true),
    kvm("kvm_ple_window", true),
    kvm("kvm_async_pf_doublefault", true),
    kvm("kvm_age_page", false),
    kvm("kvm_iommu_map_page", false),
    kvm("kvm_iommu_unmap_page", false),
    mmu("kvm_mmu_zap_page", false),
    mmu("kvm_mmu_invalidate_zap_all_pages", false),
    mmu("kvm_mmu_audit", false),
];

/// The `name_id` of KVM tracepoint `name` (without its system).
pub fn kvm_event_id(name: &str) -> Option<u16> {
    KVM_EVENTS
        .iter()
        .position(|e| e.name == name)
        .and_then(|i| u16::try_from(i).ok())
}

/// The tracepoint a `name_id` stands for, None for an index this kvmtrace does not know (a
/// capture from a newer version).
pub fn kvm_event(name_id: u64) -> Option<&'static KvmEvent> {
    usize::try_from(name_id)
        .ok()
        .and_then(|i| KVM_EVENTS.get(i))
}

impl crate::ev::KvmOther {
    /// A record of KVM tracepoint `name`, None when the table has no such name.
    pub fn named(name: &str, numbers: [Option<u64>; 3]) -> Option<Self> {
        let id = kvm_event_id(name)?;
        Some(crate::ev::KvmOther {
            name_id: u64::from(id),
            a: numbers[0],
            b: numbers[1],
            c: numbers[2],
        })
    }

    /// The tracepoint, when this kvmtrace knows the `name_id`.
    pub fn event(&self) -> Option<&'static KvmEvent> {
        kvm_event(self.name_id)
    }

    /// Fires only in the vCPU thread (unknown ids: no).
    pub fn is_vcpu_context(&self) -> bool {
        self.event().is_some_and(|e| e.vcpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;

    #[test]
    fn names_are_unique_and_have_no_kind_of_their_own() {
        for (i, e) in KVM_EVENTS.iter().enumerate() {
            assert_eq!(kvm_event_id(e.name), Some(i as u16), "{} twice", e.name);
            assert!(
                !Kind::ALL.iter().any(|k| k.name() == e.name),
                "{} has a kind",
                e.name
            );
            assert!(e.system == "kvm" || e.system == "kvmmmu");
        }
        assert!(KVM_EVENTS.len() < 1 << 16);
        assert_eq!(kvm_event(u64::MAX), None);
    }

    #[test]
    fn records_name_their_tracepoint() {
        let r = crate::ev::KvmOther::named("kvm_cr", [Some(1), Some(0), None]).unwrap();
        assert_eq!(r.event().map(|e| e.name), Some("kvm_cr"));
        assert!(r.is_vcpu_context());
        let r = crate::ev::KvmOther::named("kvm_async_pf_completed", [None; 3]).unwrap();
        assert!(!r.is_vcpu_context(), "a kworker's");
        assert_eq!(crate::ev::KvmOther::named("kvm_exit", [None; 3]), None);
        let unknown = crate::ev::KvmOther {
            name_id: 60_000,
            ..Default::default()
        };
        assert!(unknown.event().is_none() && !unknown.is_vcpu_context());
    }
}
