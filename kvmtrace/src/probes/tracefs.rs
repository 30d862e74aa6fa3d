//! Finding tracefs, mounting it when it is missing (as perf and bpftrace do), and reading
//! format files.

use std::path::{Path, PathBuf};

use super::format::{self, Format};

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it at {path} failed: {source} \
         (mount it with `mount -t tracefs nodev /sys/kernel/tracing`)"
    )]
    Mount {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tracepoint {category}:{name} does not exist on this kernel")]
    NoTracepoint { category: String, name: String },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: format::FormatError,
    },
}

/// A tracefs mount.
#[derive(Clone, Debug)]
pub struct Tracefs {
    pub root: PathBuf,
    /// True when kvmtrace mounted it (it is left mounted, like perf does).
    pub mounted_by_us: bool,
}

const DEFAULT: &str = "/sys/kernel/tracing";

impl Tracefs {
    /// Finds tracefs in /proc/mounts (or the debugfs copy); mounts it at
    /// `/sys/kernel/tracing` when it is nowhere.
    pub fn find_or_mount() -> Result<Tracefs, TracefsError> {
        if let Some(root) = find_mounted() {
            return Ok(Tracefs {
                root,
                mounted_by_us: false,
            });
        }
        mount_tracefs(Path::new(DEFAULT))?;
        log::info!("tracefs was not mounted: mounted it at {DEFAULT}");
        Ok(Tracefs {
            root: PathBuf::from(DEFAULT),
            mounted_by_us: true,
        })
    }

    /// A tracefs tree somewhere else (tests use copies of format files).
    pub fn at(root: impl Into<PathBuf>) -> Tracefs {
        Tracefs {
            root: root.into(),
            mounted_by_us: false,
        }
    }

    pub fn event_dir(&self, category: &str, name: &str) -> PathBuf {
        self.root.join("events").join(category).join(name)
    }

    /// Reads and parses `events/<category>/<name>/format`.
    pub fn format(&self, category: &str, name: &str) -> Result<Format, TracefsError> {
        let path = self.event_dir(category, name).join("format");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TracefsError::NoTracepoint {
                    category: category.to_string(),
                    name: name.to_string(),
                })
            }
            Err(source) => return Err(TracefsError::Read { path, source }),
        };
        format::parse(&text).map_err(|source| TracefsError::Parse { path, source })
    }
}

fn find_mounted() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let _dev = it.next()?;
            let dir = it.next()?;
            let fstype = it.next()?;
            match fstype {
                "tracefs" => Some(PathBuf::from(dir)),
                "debugfs" => Some(Path::new(dir).join("tracing")),
                _ => None,
            }
        })
        .find(|p| p.join("events").is_dir())
}

/// Where KVM's debugfs lives: which thread runs which vcpu_id (`vcpu<N>/pid`).
const DEBUGFS: &str = "/sys/kernel/debug";

/// Mounts debugfs at `/sys/kernel/debug` when it is not mounted there, as perf and trace-cmd
/// do, so that KVM's vCPU threads are known by KVM's own ids. Not being able to is no error:
/// the ids then come from the threads' names and KVM's events.
pub fn ensure_debugfs() {
    let mounted = std::fs::read_to_string("/proc/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            let mut it = l.split_whitespace().skip(1);
            (it.next(), it.next()) == (Some(DEBUGFS), Some("debugfs"))
        })
    });
    if mounted || !Path::new(DEBUGFS).is_dir() {
        return;
    }
    match mount_fs(Path::new(DEBUGFS), c"debugfs") {
        Ok(()) => log::info!("debugfs was not mounted: mounted it at {DEBUGFS}"),
        Err(e) => log::debug!("{e}: vCPU ids from thread names and KVM's events only"),
    }
}

fn mount_tracefs(at: &Path) -> Result<(), TracefsError> {
    mount_fs(at, c"tracefs")
}

fn mount_fs(at: &Path, fstype: &std::ffi::CStr) -> Result<(), TracefsError> {
    use std::ffi::CString;
    let err = |source| TracefsError::Mount {
        path: at.to_path_buf(),
        source,
    };
    let target = CString::new(at.as_os_str().as_encoded_bytes())
        .map_err(|_| err(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; data is null.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tracepoint_is_named() {
        let t = Tracefs::at("/nonexistent-kvmtrace");
        let e = t.format("kvm", "kvm_exit").unwrap_err();
        assert_eq!(
            e.to_string(),
            "tracepoint kvm:kvm_exit does not exist on this kernel"
        );
    }
}
