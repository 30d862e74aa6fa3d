//! sched:* tracepoints: keep the vCPU threads' scheduling and the per-CPU filter state.

use aya_ebpf::programs::TracePointContext;
use kvmtrace_common::{cpu_state, ev, switch_prev_runnable, Kind};

use crate::{
    filter::{cpu_state_of, is_vcpu, is_vm, mark_waiting, set_cpu_state, vm_selected},
    record::{current_ids, emit, read_event, this_cpu},
    PASS,
};

program! {
    pub fn sched_switch(ctx: TracePointContext) -> u32 {
        let cpu = this_cpu();
        let e = read_event(&ctx, Kind::SchedSwitch, cpu);
        let Some(sw) = e.get::<ev::SchedSwitch>() else {
            return PASS;
        };
        let prev = sw.prev_pid as u32;
        let prev_state = sw.prev_state;
        let next = sw.next_pid as u32;
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
            emit(&e);
        }
        PASS
    }
}

program! {
    pub fn sched_wakeup(ctx: TracePointContext) -> u32 {
        let e = read_event(&ctx, Kind::SchedWakeup, this_cpu());
        if let Some(w) = e.get::<ev::SchedWakeup>() {
            if is_vcpu(w.pid as u32) {
                mark_waiting(w.target_cpu.unwrap_or(0) as u32);
                emit(&e);
            }
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
        let e = read_event(&ctx, Kind::SchedMigrateTask, this_cpu());
        if let Some(m) = e.get::<ev::SchedMigrateTask>() {
            if is_vcpu(m.pid as u32) {
                mark_waiting(m.dest_cpu as u32);
                emit(&e);
            }
        }
        PASS
    }
}
