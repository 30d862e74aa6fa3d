//! sched:* tracepoints: keep the vCPU threads' scheduling and the per-CPU filter state.

use aya_ebpf::programs::TracePointContext;
use kvmtrace_common::{cpu_state, switch_prev_runnable, Kind};

use crate::{
    filter::{cpu_state_of, is_vcpu, is_vm, mark_waiting, set_cpu_state, vm_selected},
    record::{current_ids, emit, read_event, this_cpu},
    PASS,
};

program! {
    pub fn sched_switch(ctx: TracePointContext) -> u32 {
        let cpu = this_cpu();
        let ev = read_event(&ctx, Kind::SchedSwitch, cpu);
        let prev = ev.slots[0] as u32;
        let prev_state = ev.slots[1];
        let next = ev.slots[2] as u32;
        let prev_vcpu = is_vcpu(prev);
        let next_vcpu = is_vcpu(next);
        let old = cpu_state_of(cpu);
        let mut new = old;
        if next_vcpu {
            new = cpu_state::RUNNING;
        } else {
            new &= !cpu_state::RUNNING;
            if prev_vcpu && switch_prev_runnable(prev_state) {
                // Preempted: still runnable here.
                new |= cpu_state::WAITING;
            }
        }
        if new != old {
            set_cpu_state(cpu, new);
        }
        if prev_vcpu || next_vcpu {
            emit(&ev);
        }
        PASS
    }
}

program! {
    pub fn sched_wakeup(ctx: TracePointContext) -> u32 {
        let ev = read_event(&ctx, Kind::SchedWakeup, this_cpu());
        if is_vcpu(ev.slots[0] as u32) {
            mark_waiting(ev.slots[1] as u32);
            emit(&ev);
        }
        PASS
    }
}

program! {
    pub fn sched_wakeup_new(ctx: TracePointContext) -> u32 {
        // Fires in the parent: a VMM starting a thread (perhaps a new vCPU).
        let (_, tgid) = current_ids();
        if is_vm(tgid) && vm_selected(tgid) {
            emit(&read_event(&ctx, Kind::SchedWakeupNew, this_cpu()));
        }
        PASS
    }
}

program! {
    pub fn sched_migrate_task(ctx: TracePointContext) -> u32 {
        let ev = read_event(&ctx, Kind::SchedMigrateTask, this_cpu());
        if is_vcpu(ev.slots[0] as u32) {
            mark_waiting(ev.slots[2] as u32);
            emit(&ev);
        }
        PASS
    }
}
