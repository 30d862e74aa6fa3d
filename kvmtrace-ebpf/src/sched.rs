//! sched:* tracepoints: keep the vCPU threads' scheduling and the per-CPU filter state.
//!
//! Each tracepoint has a classic program (fields from the perf record, at format-file
//! offsets) and a BTF one (fields loaded from the `task_struct` arguments at BTF offsets);
//! both share the filter and state logic below.

use aya_ebpf::programs::TracePointContext;
use kvmtrace_common::{cpu_state, ev, switch_prev_runnable, Event, Kind, VcpuThread};

use crate::{
    btf::{
        arg_i32, arg_ptr, arg_u32, arg_u8, switch_prev_state, task_comm, task_cpu, task_pid,
        task_prio, task_tgid,
    },
    exits::arm_thread,
    filter::{cpu_state_of, is_vcpu, is_vm, mark_waiting, set_cpu_state, vcpu_thread, vm_selected},
    record::{current_ids, emit, read_event, this_cpu, typed_event},
    PASS,
};

/// A context switch on `cpu` from `prev` to `next`: updates the CPU's filter state. Returns
/// whether the event is wanted (a traced vCPU is involved, or one waits for this CPU: the
/// engine gives each task that holds the CPU meanwhile its share of the wait), and the state
/// of `next` when it is a vCPU (switched in: the caller arms its exit streaming).
#[inline(always)]
fn on_switch(cpu: u32, prev: u32, prev_state: u64, next: u32) -> (bool, Option<*mut VcpuThread>) {
    let prev_vcpu = is_vcpu(prev);
    let next_thread = vcpu_thread(next);
    let next_vcpu = next_thread.is_some();
    let old = cpu_state_of(cpu);
    // Preempted: still runnable here.
    let prev_waits = prev_vcpu && switch_prev_runnable(prev_state);
    let waiting = if prev_waits { cpu_state::WAITING } else { 0 };
    let new = if next_vcpu {
        // Another vCPU may still wait here: WAITING stays until the CPU idles.
        cpu_state::RUNNING | (old & cpu_state::WAITING) | waiting
    } else if next == 0 {
        // The idle task runs when nothing else is runnable here, or when what is runnable
        // may not run (CFS bandwidth throttling, core scheduling's forced idle): nothing
        // waits here unless the vCPU switched out runnable does. (A vCPU woken here and
        // pulled elsewhere no longer keeps the CPU's switches flowing.)
        waiting
    } else {
        (old & !cpu_state::RUNNING) | waiting
    };
    if new != old {
        set_cpu_state(cpu, new);
    }
    let waited_on = old & cpu_state::WAITING != 0;
    (prev_vcpu || next_vcpu || waited_on, next_thread)
}

/// A wake-up of `pid` onto `target_cpu`: its state when it is a traced vCPU (the event is
/// wanted, and the caller arms its exit streaming).
#[inline(always)]
fn on_wakeup(pid: u32, target_cpu: Option<u64>) -> Option<*mut VcpuThread> {
    let t = vcpu_thread(pid)?;
    if let Some(cpu) = target_cpu {
        mark_waiting(cpu as u32);
    }
    Some(t)
}

/// A migration of `pid` to `dest_cpu`: true when it is a traced vCPU's.
#[inline(always)]
fn on_migrate(pid: u32, dest_cpu: u64) -> bool {
    if is_vcpu(pid) {
        mark_waiting(dest_cpu as u32);
        return true;
    }
    false
}

/// Emits `e`, arming `t`'s exit streaming at the event's time.
#[inline(always)]
fn emit_arming(e: &Event, t: Option<*mut VcpuThread>) {
    if let Some(t) = t {
        arm_thread(t, e.ts_ns);
    }
    emit(e);
}

/// A new thread started by the current process: wanted when that is a traced VM.
#[inline(always)]
fn on_wakeup_new(tgid: u32) -> bool {
    is_vm(tgid) && vm_selected(tgid)
}

program! {
    pub fn sched_switch(ctx: TracePointContext) -> u32 {
        let cpu = this_cpu();
        let e = read_event(&ctx, Kind::SchedSwitch, cpu);
        if let Some(sw) = e.get::<ev::SchedSwitch>() {
            let (wanted, next) =
                on_switch(cpu, sw.prev_pid as u32, sw.prev_state, sw.next_pid as u32);
            if wanted {
                emit_arming(&e, next);
            }
        }
        PASS
    }
}

program! {
    pub fn sched_wakeup(ctx: TracePointContext) -> u32 {
        let e = read_event(&ctx, Kind::SchedWakeup, this_cpu());
        if let Some(w) = e.get::<ev::SchedWakeup>() {
            if let Some(t) = on_wakeup(w.pid as u32, w.target_cpu) {
                emit_arming(&e, Some(t));
            }
        }
        PASS
    }
}

program! {
    pub fn sched_wakeup_new(ctx: TracePointContext) -> u32 {
        // Fires in the parent: a VMM starting a thread (perhaps a new vCPU).
        let (_, tgid) = current_ids();
        if on_wakeup_new(tgid) {
            emit(&read_event(&ctx, Kind::SchedWakeupNew, this_cpu()));
        }
        PASS
    }
}

program! {
    pub fn sched_migrate_task(ctx: TracePointContext) -> u32 {
        let e = read_event(&ctx, Kind::SchedMigrateTask, this_cpu());
        if let Some(m) = e.get::<ev::SchedMigrateTask>() {
            if on_migrate(m.pid as u32, m.dest_cpu) {
                emit(&e);
            }
        }
        PASS
    }
}

btf_program! {
    // (bool preempt, struct task_struct *prev, struct task_struct *next,
    //  unsigned int prev_state). Runs in `prev`, so the event's task is `prev`: no helper
    // call for the current ids.
    pub fn sched_switch_btf(ctx: BtfTracePointContext) -> u32 {
        let prev = arg_ptr(&ctx, 1);
        let next = arg_ptr(&ctx, 2);
        let prev_pid = task_pid(prev);
        let next_pid = task_pid(next);
        let cpu = this_cpu();
        let prev_state = switch_prev_state(arg_u8(&ctx, 0) != 0, arg_u32(&ctx, 3) as u32, prev);
        let (wanted, next_thread) = on_switch(cpu, prev_pid, prev_state, next_pid);
        if wanted {
            let rec = ev::SchedSwitch {
                prev_pid: prev_pid as u64,
                prev_state,
                next_pid: next_pid as u64,
                next_comm: task_comm(next),
            };
            emit_arming(&typed_event(cpu, (prev_pid, task_tgid(prev)), &rec), next_thread);
        }
        PASS
    }
}

btf_program! {
    // (struct task_struct *p): fires in the waker.
    pub fn sched_wakeup_btf(ctx: BtfTracePointContext) -> u32 {
        let p = arg_ptr(&ctx, 0);
        let pid = task_pid(p);
        let target_cpu = task_cpu(p);
        if let Some(t) = on_wakeup(pid, Some(target_cpu)) {
            let rec = ev::SchedWakeup {
                pid: pid as u64,
                target_cpu: Some(target_cpu),
                prio: Some(task_prio(p)),
                comm: task_comm(p),
            };
            emit_arming(&typed_event(this_cpu(), current_ids(), &rec), Some(t));
        }
        PASS
    }
}

btf_program! {
    // (struct task_struct *p): fires in the parent.
    pub fn sched_wakeup_new_btf(ctx: BtfTracePointContext) -> u32 {
        let ids = current_ids();
        if on_wakeup_new(ids.1) {
            let p = arg_ptr(&ctx, 0);
            let rec = ev::SchedWakeupNew {
                pid: task_pid(p) as u64,
                target_cpu: Some(task_cpu(p)),
                prio: Some(task_prio(p)),
                comm: task_comm(p),
            };
            emit(&typed_event(this_cpu(), ids, &rec));
        }
        PASS
    }
}

btf_program! {
    // (struct task_struct *p, int dest_cpu)
    pub fn sched_migrate_task_btf(ctx: BtfTracePointContext) -> u32 {
        let p = arg_ptr(&ctx, 0);
        let pid = task_pid(p);
        let dest_cpu = arg_i32(&ctx, 1);
        if on_migrate(pid, dest_cpu) {
            let rec = ev::SchedMigrateTask {
                pid: pid as u64,
                orig_cpu: task_cpu(p),
                dest_cpu,
            };
            emit(&typed_event(this_cpu(), current_ids(), &rec));
        }
        PASS
    }
}
