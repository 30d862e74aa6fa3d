//! A CPU hog for the privileged tests: `sh` spinning, pinned to one CPU, with a higher
//! weight than the vCPU thread (nice -10), so it takes the CPU from the vCPU. Killed when
//! dropped.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

pub struct Hog(pub Child);

impl Drop for Hog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Hog {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

/// Starts the hog on `cpu`.
pub fn busy_on(cpu: usize) -> Hog {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "while :; do :; done"]);
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::setpriority(libc::PRIO_PROCESS, 0, -10);
            Ok(())
        });
    }
    Hog(cmd.spawn().expect("spawn the busy loop"))
}
