//! `cargo xtask svm-host` and `svm-demo`: a real AMD SVM KVM host inside QEMU's software
//! emulation (TCG), where `kvm_exit`, `kvm_entry`, `kvm_inj_virq` and `kvm_apic_accept_irq`
//! fire (on the PVM backend of the development machines they never do).
//!
//! How it works (docs/svm-host.md has the details and timings):
//! 1. An initramfs under `target/svm-host/<pid>/`: busybox, the kvm modules of the newest
//!    installed kernel that has `kvm-amd.ko` (in `modules.dep` order), the kvmtrace binary and
//!    the libraries `ldd` lists for both, and a generated `/init`.
//! 2. `qemu-system-x86_64 -accel tcg -machine q35 -cpu max -smp 1` boots that kernel with it.
//!    `/init` mounts proc, sysfs, devtmpfs, tmpfs, debugfs and tracefs, loads the modules,
//!    checks `/dev/kvm` (and says clearly when KVM is missing), runs the command, then sends
//!    the named files back over the second serial port (`/dev/ttyS1`, a plain file on this
//!    side) as base64 between marker lines that carry each file's size and CRC-32, ends with
//!    the command's exit status, and powers off. The first serial port is the console,
//!    echoed here live.
//! 3. Everything is bounded: QEMU is killed at the timeout; a watchdog in `/init` dumps the
//!    inner kernel's stacks (sysrq `l`, `w`, `t`) to the console before that. A boot that
//!    hangs, panics or ends without the end marker is retried once (with `-smp 2` the inner
//!    kernel sometimes froze on these 2-core machines; `-smp 1` is the default).
//!
//! The pure parts (kernel choice, module order, `ldd` output, the `/init` script, the
//! transfer decoding) are functions tested below.

use std::cmp::Ordering;
use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// The module that makes `/dev/kvm` on AMD, relative to `/lib/modules/<version>/`.
pub const KVM_AMD: &str = "kernel/arch/x86/kvm/kvm-amd.ko";
/// Marker lines on the transfer port start with this.
const MARK: &str = "=== kvmtrace-svm-host";
/// Lines `/init` prints on the console start with this.
const SAY: &str = "svm-host:";
/// The console port inside and the transfer port.
const DATA_TTY: &str = "/dev/ttyS1";
/// Console lines kept for the failure message.
const TAIL_LINES: usize = 80;
const QEMU: &str = "qemu-system-x86_64";

/// What to run inside the SVM host.
#[derive(Clone, Debug)]
pub struct Options {
    /// The kvmtrace binary to put in `/bin` (with its libraries).
    pub kvmtrace: PathBuf,
    /// Command and arguments, run by `/init` in `/tmp` (a tmpfs).
    pub cmd: Vec<String>,
    /// Files to copy out after the command (absolute paths inside); they land in `out_dir`
    /// under their base names.
    pub copy_out: Vec<String>,
    pub out_dir: PathBuf,
    /// Scratch space (initramfs, console log); a subdirectory per run is made in it.
    pub work_dir: PathBuf,
    /// Whole boot + command + transfer, per attempt.
    pub timeout: Duration,
    /// QEMU `-cpu` model: it must expose SVM (`max`, or `EPYC,+svm,+npt`).
    pub cpu: String,
    pub smp: u32,
    /// Echo the console here live (else only its tail on failure).
    pub echo: bool,
}

/// A finished run.
#[derive(Debug)]
pub struct Outcome {
    /// The copied files, on this side.
    pub files: Vec<PathBuf>,
    pub kernel: String,
    pub qemu_version: String,
    /// Boot attempts made (1, or 2 after a retry).
    pub attempts: u32,
    /// From QEMU's start to `/init` and to the command's start, and the whole attempt.
    pub init_after: Option<Duration>,
    pub command_after: Option<Duration>,
    pub total: Duration,
}

/// The kernel the SVM host boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    pub version: String,
    pub vmlinuz: PathBuf,
    pub modules: PathBuf,
}

/// Checks what the SVM host needs on this machine; the error says what to install.
pub fn preflight(boot: &Path, lib_modules: &Path) -> anyhow::Result<(Kernel, String)> {
    let qemu = qemu_version_of(QEMU)?;
    let kernel = find_kernel(boot, lib_modules)?;
    std::fs::File::open(&kernel.vmlinuz).with_context(|| {
        format!(
            "{} is not readable (some distributions install it mode 0600: run as root)",
            kernel.vmlinuz.display()
        )
    })?;
    if !have("busybox") {
        bail!("busybox is not installed: run `cargo xtask setup` (installs busybox-static)");
    }
    if !have("cpio") || !have("gzip") {
        bail!("cpio and gzip are needed to build the initramfs: run `cargo xtask setup`");
    }
    Ok((kernel, qemu))
}

fn qemu_version_of(program: &str) -> anyhow::Result<String> {
    let out = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => bail!(
            "`{program} --version` failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{program} is not installed: run `cargo xtask setup` (installs qemu-system-x86)")
        }
        Err(e) => return Err(e).with_context(|| format!("running {program} --version")),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    parse_qemu_version(&text)
        .with_context(|| format!("cannot read a version from `{program} --version`: {text}"))
}

/// `QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)` -> `7.2.22`.
pub fn parse_qemu_version(text: &str) -> Option<String> {
    let rest = text.lines().next()?.split("version").nth(1)?;
    let v = rest.split_whitespace().next()?;
    (v.chars().next()?.is_ascii_digit() && v.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .then(|| v.to_string())
}

/// The newest kernel in `lib_modules` that has both `kvm-amd` and a `vmlinuz` in `boot`.
pub fn find_kernel(boot: &Path, lib_modules: &Path) -> anyhow::Result<Kernel> {
    let versions: Vec<String> = std::fs::read_dir(lib_modules)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    let usable: Vec<&String> = versions
        .iter()
        .filter(|v| {
            boot.join(format!("vmlinuz-{v}")).is_file()
                && module_file(&lib_modules.join(v), KVM_AMD).is_some()
        })
        .collect();
    let Some(version) = usable.into_iter().max_by(|a, b| version_cmp(a, b)) else {
        bail!(
            "no kernel with kvm-amd to boot: found no {}/<version>/{KVM_AMD} with a {}/vmlinuz-<version> \
             (kernels seen: {}). Run `cargo xtask setup` (installs linux-image-amd64; the running kernel is not touched)",
            lib_modules.display(),
            boot.display(),
            if versions.is_empty() { "none".to_string() } else { versions.join(", ") }
        );
    };
    Ok(Kernel {
        version: version.clone(),
        vmlinuz: boot.join(format!("vmlinuz-{version}")),
        modules: lib_modules.join(version),
    })
}

/// Orders kernel versions: digit runs compare as numbers (`6.10` after `6.9`).
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    fn parts(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let o = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

/// A module as installed: plain or compressed (`.ko.xz`, `.ko.zst`, `.ko.gz`).
fn module_file(modules: &Path, rel: &str) -> Option<PathBuf> {
    ["", ".xz", ".zst", ".gz"]
        .iter()
        .map(|ext| modules.join(format!("{rel}{ext}")))
        .find(|p| p.is_file())
}

/// The modules to load for `target` (a path as `modules.dep` writes it, compression
/// suffix optional), dependencies first: `modules.dep` lists a module's dependencies so that
/// they load from the last to the first (as modprobe does).
pub fn module_load_order(modules_dep: &str, target: &str) -> anyhow::Result<Vec<String>> {
    let strip = |s: &str| -> String {
        [".xz", ".zst", ".gz"]
            .iter()
            .find_map(|ext| s.strip_suffix(ext))
            .unwrap_or(s)
            .to_string()
    };
    let want = strip(target);
    for line in modules_dep.lines() {
        let Some((module, deps)) = line.split_once(':') else {
            continue;
        };
        if strip(module.trim()) != want {
            continue;
        }
        let mut order: Vec<String> = deps.split_whitespace().rev().map(str::to_string).collect();
        order.push(module.trim().to_string());
        let mut seen = BTreeSet::new();
        order.retain(|m| seen.insert(m.clone()));
        return Ok(order);
    }
    bail!("{target} is not in modules.dep")
}

/// The libraries `ldd` lists (absolute paths; the vDSO has none). A static binary has none.
pub fn parse_ldd(output: &str) -> anyhow::Result<Vec<PathBuf>> {
    if output.contains("not a dynamic executable") || output.contains("statically linked") {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = match line.split_once("=>") {
            Some((name, target)) => {
                let target = target.trim();
                if target.starts_with("not found") {
                    bail!("ldd: library {} not found", name.trim());
                }
                target.split_whitespace().next().unwrap_or("")
            }
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Quotes a word for `sh` (single quotes; a quote inside becomes `'\''`).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What `/init` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitSpec {
    /// Module file names under `/lib/modules/`, in load order.
    pub modules: Vec<String>,
    pub cmd: Vec<String>,
    /// Absolute paths inside, sent back under their base names.
    pub copy_out: Vec<String>,
    /// Seconds after `/init` starts when the watchdog dumps stacks and powers off.
    pub watchdog_secs: u64,
}

/// The `/init` script (busybox sh).
pub fn init_script(spec: &InitSpec) -> String {
    let mut s = String::new();
    let cmd: Vec<String> = spec.cmd.iter().map(|a| shell_quote(a)).collect();
    let _ = write!(
        s,
        r#"#!/bin/sh
# Generated by `cargo xtask svm-host` (xtask/src/svm.rs): boots, loads KVM, runs the
# command, sends files back on {DATA_TTY} and powers off.
# busybox finds itself through /proc/self/exe: proc first, then the applet links.
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin HOME=/tmp RUST_BACKTRACE=1 RUST_LOG_STYLE=never NO_COLOR=1
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing
say() {{ echo "{SAY} $*"; }}
off() {{ sync; /bin/busybox poweroff -f; }}
up() {{ cut -d' ' -f1 /proc/uptime; }}
say "init at $(up) s, kernel $(uname -r)"
(
    sleep {watchdog}
    say "watchdog: the command did not finish within {watchdog} s; stacks follow"
    echo 8 > /proc/sys/kernel/printk
    echo 1 > /proc/sys/kernel/sysrq
    for k in l w t; do echo $k > /proc/sysrq-trigger; sleep 1; done
    say "watchdog: powering off"
    off
) &
for m in {modules}; do
    if ! insmod /lib/modules/$m; then
        say "no-kvm: insmod $m failed"
        dmesg | tail -n 15
        off
    fi
done
if [ ! -c /dev/kvm ]; then
    say "no-kvm: /dev/kvm does not exist after loading the modules (does the QEMU CPU model expose SVM?)"
    dmesg | grep -i -e kvm -e svm | tail -n 15
    off
fi
say "kvm ready at $(up) s: $(dmesg | grep -o 'SVM: .*' | tr '\n' ' ')"
cd /tmp
say "running: {cmd_text}"
{cmd}
rc=$?
say "command exited with status $rc at $(up) s"
stty -F {DATA_TTY} raw -echo clocal 2>/dev/null
{{
"#,
        watchdog = spec.watchdog_secs,
        modules = spec
            .modules
            .iter()
            .map(|m| shell_quote(m))
            .collect::<Vec<_>>()
            .join(" "),
        cmd_text = cmd.join(" ").replace(['"', '$', '`', '\\'], "_"),
        cmd = cmd.join(" "),
    );
    for path in &spec.copy_out {
        let name = base_name(path);
        let (q, n) = (shell_quote(path), shell_quote(name));
        let _ = writeln!(
            s,
            r#"    if [ -f {q} ]; then
        echo "{MARK} BEGIN "{n}" $(wc -c < {q}) $(crc32 < {q})"
        base64 {q}
        echo "{MARK} END "{n}
    else
        echo "{MARK} MISSING "{n}
    fi"#
        );
    }
    let _ = write!(
        s,
        r#"    echo "{MARK} DONE $rc"
}} > {DATA_TTY}
say "files sent at $(up) s"
off
"#
    );
    s
}

/// The last path component (what a copied file is called on this side).
pub fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// What came back on the transfer port.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Transfer {
    pub files: Vec<(String, Vec<u8>)>,
    pub missing: Vec<String>,
    /// The command's exit status; None when the end marker never came.
    pub status: Option<i32>,
}

/// Decodes the transfer port's text; checks every file's size and CRC-32.
pub fn decode_transfer(text: &str) -> anyhow::Result<Transfer> {
    let mut t = Transfer::default();
    let mut open: Option<(String, usize, u32, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        let Some(rest) = line.strip_prefix(MARK) else {
            if let Some((_, _, _, body)) = &mut open {
                body.push_str(line.trim());
            }
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        match words.as_slice() {
            ["BEGIN", name, size, crc] => {
                if open.is_some() {
                    bail!("transfer line {}: BEGIN inside a file", i + 1);
                }
                let size = size
                    .parse()
                    .with_context(|| format!("transfer line {}: size {size}", i + 1))?;
                let crc = u32::from_str_radix(crc, 16)
                    .with_context(|| format!("transfer line {}: crc {crc}", i + 1))?;
                open = Some((name.to_string(), size, crc, String::new()));
            }
            ["END", name] => {
                let Some((open_name, size, crc, body)) = open.take() else {
                    bail!("transfer line {}: END without BEGIN", i + 1);
                };
                if open_name != *name {
                    bail!("transfer line {}: END {name} closes {open_name}", i + 1);
                }
                let bytes = base64_decode(&body).with_context(|| format!("file {name}"))?;
                if bytes.len() != size {
                    bail!(
                        "file {name}: {} bytes arrived, {size} were sent",
                        bytes.len()
                    );
                }
                let got = crc32(&bytes);
                if got != crc {
                    bail!("file {name}: CRC-32 {got:08x}, {crc:08x} was sent");
                }
                t.files.push((open_name, bytes));
            }
            ["MISSING", name] => t.missing.push(name.to_string()),
            ["DONE", rc] => {
                if let Some((name, ..)) = &open {
                    bail!("transfer ended inside file {name}");
                }
                t.status = Some(
                    rc.parse()
                        .with_context(|| format!("transfer line {}: status {rc}", i + 1))?,
                );
            }
            _ => bail!("transfer line {}: unknown marker {line:?}", i + 1),
        }
    }
    if let Some((name, ..)) = open {
        if t.status.is_some() {
            bail!("transfer ended inside file {name}");
        }
    }
    Ok(t)
}

/// Standard base64 (RFC 4648, `=` padding), whitespace ignored.
pub fn base64_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0u32;
    let mut pad = 0;
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                pad += 1;
                continue;
            }
            _ => bail!("invalid base64 character {:?}", c as char),
        };
        if pad > 0 {
            bail!("base64 data after padding");
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if pad > 2 || bits >= 6 {
        bail!("truncated base64");
    }
    Ok(out)
}

/// CRC-32 as zlib and busybox `crc32` compute it (reflected 0xEDB88320).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Why an attempt failed.
#[derive(Debug)]
enum Failure {
    /// KVM does not work inside: retrying would not help.
    NoKvm(String),
    /// The command ran and failed: not the machinery's fault.
    Command(i32),
    /// Anything else (hang, panic, QEMU died, lost transfer): worth one retry.
    Boot(String),
}

fn have(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

fn check_args(opts: &Options) -> anyhow::Result<()> {
    if opts.cmd.is_empty() {
        bail!("svm-host needs a command to run inside (after `--`)");
    }
    let mut names = BTreeSet::new();
    for p in &opts.copy_out {
        let name = base_name(p);
        if !p.starts_with('/') || name.is_empty() || name == "." || name == ".." {
            bail!("--copy-out {p}: give an absolute path to a file inside the SVM host");
        }
        if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("--copy-out {p}: no whitespace in paths, please");
        }
        if !names.insert(name) {
            bail!("--copy-out: two files are called {name}");
        }
    }
    if opts.timeout < Duration::from_secs(20) {
        bail!("--timeout must be at least 20 s (the boot alone takes about 4 s)");
    }
    Ok(())
}

/// Builds the initramfs and runs the command inside the SVM host (retrying a failed boot
/// once), copying the named files to `opts.out_dir`.
pub fn run(opts: &Options) -> anyhow::Result<Outcome> {
    check_args(opts)?;
    let (kernel, qemu_version) = preflight(Path::new("/boot"), Path::new("/lib/modules"))?;
    let dir = opts.work_dir.join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for p in [&dir, &opts.out_dir] {
        if p.to_string_lossy().contains(',') {
            bail!("{}: QEMU cannot take a path with a comma", p.display());
        }
    }
    let modules = module_load_order(
        &std::fs::read_to_string(kernel.modules.join("modules.dep"))
            .with_context(|| format!("reading {}/modules.dep", kernel.modules.display()))?,
        KVM_AMD,
    )?;
    // The watchdog fires inside a little before QEMU is killed here (init starts ~4 s after
    // QEMU does), leaving time for the stacks to reach the console.
    let watchdog_secs = opts.timeout.as_secs().saturating_sub(15).max(10);
    let spec = InitSpec {
        modules: modules.iter().map(|m| flat_module_name(m)).collect(),
        cmd: opts.cmd.clone(),
        copy_out: opts.copy_out.clone(),
        watchdog_secs,
    };
    let t = Instant::now();
    let initrd = build_initramfs(&dir, &kernel, &modules, &spec, &opts.kvmtrace)?;
    eprintln!(
        "xtask: svm-host: initramfs {} ({:.1} MiB, {:.1} s); kernel {}, QEMU {qemu_version}",
        initrd.display(),
        std::fs::metadata(&initrd).map_or(0.0, |m| m.len() as f64 / 1048576.0),
        t.elapsed().as_secs_f64(),
        kernel.version
    );
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;

    let mut last = String::new();
    for attempt in 1..=2u32 {
        let a = boot_once(opts, &kernel, &qemu_version, &initrd, &dir, attempt)?;
        let console_log = opts.out_dir.join("console.log");
        let _ = std::fs::write(&console_log, a.console.join("\n") + "\n");
        match a.result {
            Ok(files) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Ok(Outcome {
                    files,
                    kernel: kernel.version,
                    qemu_version,
                    attempts: attempt,
                    init_after: a.init_after,
                    command_after: a.command_after,
                    total: a.total,
                });
            }
            Err(Failure::NoKvm(why)) => {
                print_tail(&a.console, opts.echo);
                bail!(
                    "KVM does not work inside the SVM host: {why}. QEMU's CPU model ({}) must expose SVM; \
                     console log in {}",
                    opts.cpu,
                    console_log.display()
                );
            }
            Err(Failure::Command(rc)) => {
                print_tail(&a.console, opts.echo);
                bail!(
                    "the command inside the SVM host failed with status {rc} (files it left were copied to {}; \
                     console log in {})",
                    opts.out_dir.display(),
                    console_log.display()
                );
            }
            Err(Failure::Boot(why)) => {
                print_tail(&a.console, opts.echo);
                eprintln!("xtask: svm-host: attempt {attempt} failed: {why}");
                last = why;
            }
        }
    }
    bail!(
        "the SVM host failed twice; last: {last} (console log in {}, work files in {})",
        opts.out_dir.join("console.log").display(),
        dir.display()
    )
}

fn print_tail(console: &[String], echoed: bool) {
    if echoed {
        return;
    }
    let from = console.len().saturating_sub(40);
    eprintln!("xtask: svm-host: last console lines:");
    for l in &console[from..] {
        eprintln!("  | {l}");
    }
}

/// `kernel/arch/x86/kvm/kvm-amd.ko.xz` -> `kvm-amd.ko` (decompressed in the initramfs).
fn flat_module_name(rel: &str) -> String {
    let name = base_name(rel);
    [".xz", ".zst", ".gz"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .unwrap_or(name)
        .to_string()
}

fn build_initramfs(
    dir: &Path,
    kernel: &Kernel,
    modules: &[String],
    spec: &InitSpec,
    kvmtrace: &Path,
) -> anyhow::Result<PathBuf> {
    let root = dir.join("root");
    for d in ["bin", "lib/modules", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    let busybox = which("busybox").context("busybox is not installed")?;
    copy_file(&busybox, &root.join("bin/busybox"))?;
    std::os::unix::fs::symlink("busybox", root.join("bin/sh"))?;
    copy_file(kvmtrace, &root.join("bin/kvmtrace"))
        .with_context(|| format!("the kvmtrace binary {}", kvmtrace.display()))?;
    let mut libs = BTreeSet::new();
    for bin in [&busybox, &kvmtrace.to_path_buf()] {
        let out = Command::new("ldd")
            .arg(bin)
            .output()
            .context("running ldd")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        libs.extend(parse_ldd(&text).with_context(|| format!("ldd {}", bin.display()))?);
    }
    for lib in &libs {
        let rel = lib.strip_prefix("/").unwrap_or(lib);
        copy_file(lib, &root.join(rel))?;
    }
    for (rel, name) in modules.iter().zip(&spec.modules) {
        let src = module_file(&kernel.modules, rel)
            .or_else(|| Some(kernel.modules.join(rel)).filter(|p| p.is_file()))
            .with_context(|| format!("module {rel} is in modules.dep but not installed"))?;
        let dst = root.join("lib/modules").join(name);
        let decompress = match src.extension().and_then(|e| e.to_str()) {
            Some("xz") => Some("xz"),
            Some("zst") => Some("zstd"),
            Some("gz") => Some("gzip"),
            _ => None,
        };
        match decompress {
            None => copy_file(&src, &dst)?,
            Some(tool) => {
                let out = Command::new(tool)
                    .args(["-dc"])
                    .arg(&src)
                    .output()
                    .with_context(|| format!("{tool} -dc {} (install {tool})", src.display()))?;
                if !out.status.success() {
                    bail!("{tool} -dc {} failed", src.display());
                }
                std::fs::write(&dst, out.stdout)?;
            }
        }
    }
    let init = root.join("init");
    std::fs::write(&init, init_script(spec))?;
    set_mode(&init, 0o755)?;
    let initrd = dir.join("initrd.gz");
    let pipeline = format!(
        "cd {} && find . -print0 | cpio --null -o -H newc --quiet -R 0:0 | gzip -1 > {}",
        shell_quote(&root.to_string_lossy()),
        shell_quote(&initrd.to_string_lossy())
    );
    let st = Command::new("bash")
        .args(["-c", &format!("set -o pipefail; {pipeline}")])
        .status()
        .context("running cpio")?;
    if !st.success() {
        bail!("building the initramfs failed: {pipeline}");
    }
    Ok(initrd)
}

fn which(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

fn copy_file(src: &Path, dst: &Path) -> anyhow::Result<()> {
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(src, dst)
        .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    Ok(())
}

fn set_mode(p: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", p.display()))
}

struct Attempt {
    result: Result<Vec<PathBuf>, Failure>,
    console: Vec<String>,
    init_after: Option<Duration>,
    command_after: Option<Duration>,
    total: Duration,
}

/// Kills QEMU (our own child, by its pid) when dropped, unless it has been reaped.
struct QemuChild(Option<Child>);

impl Drop for QemuChild {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_reader<R: Read + Send + 'static>(r: R, prefix: &'static str, tx: Sender<String>) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']);
                    if tx.send(format!("{prefix}{line}")).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

fn boot_once(
    opts: &Options,
    kernel: &Kernel,
    qemu_version: &str,
    initrd: &Path,
    dir: &Path,
    attempt: u32,
) -> anyhow::Result<Attempt> {
    let data = dir.join(format!("transfer-{attempt}.txt"));
    let _ = std::fs::remove_file(&data);
    let append = format!(
        "console=ttyS0 panic=-1 quiet loglevel=4 kvmtrace.qemu={qemu_version} kvmtrace.accel=tcg"
    );
    let mut cmd = Command::new(QEMU);
    cmd.args(["-accel", "tcg,thread=multi", "-machine", "q35", "-cpu"])
        .arg(&opts.cpu)
        .args(["-m", "2G", "-smp"])
        .arg(opts.smp.to_string())
        .args(["-nodefaults", "-display", "none", "-monitor", "none"])
        .args(["-serial", "stdio", "-serial"])
        .arg(format!("file:{}", data.display()))
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &append, "-no-reboot"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!(
        "xtask: svm-host: attempt {attempt}: booting (timeout {} s): {cmd:?}",
        opts.timeout.as_secs()
    );
    let start = Instant::now();
    let deadline = start + opts.timeout;
    let mut child =
        QemuChild(Some(cmd.spawn().with_context(|| {
            format!("starting {QEMU} (run `cargo xtask setup`)")
        })?));
    let (tx, rx) = mpsc::channel();
    if let Some(c) = child.0.as_mut() {
        if let Some(out) = c.stdout.take() {
            spawn_reader(out, "", tx.clone());
        }
        if let Some(err) = c.stderr.take() {
            spawn_reader(err, "qemu: ", tx);
        }
    }
    let mut watch = ConsoleWatch::default();
    let status = wait_qemu(&mut child, &rx, deadline, opts.echo, &mut watch, start);
    let total = start.elapsed();
    let console: Vec<String> = watch.tail.iter().cloned().collect();
    let finish = |result| Attempt {
        result,
        console: console.clone(),
        init_after: watch.init_after,
        command_after: watch.command_after,
        total,
    };
    if let Some(why) = &watch.no_kvm {
        return Ok(finish(Err(Failure::NoKvm(why.clone()))));
    }
    let status = match status {
        Ok(s) => s,
        Err(why) => return Ok(finish(Err(Failure::Boot(why)))),
    };
    let text = std::fs::read(&data)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let transfer = match decode_transfer(&text) {
        Ok(t) => t,
        Err(e) => return Ok(finish(Err(Failure::Boot(format!("transfer: {e:#}"))))),
    };
    let Some(rc) = transfer.status else {
        let why = if watch.watchdog {
            "the watchdog inside fired (the command hung; stacks are in the console log)"
                .to_string()
        } else if watch.panic {
            "the inner kernel panicked".to_string()
        } else if watch.init_after.is_none() {
            format!("QEMU exited ({status}) before /init ran")
        } else {
            format!("QEMU exited ({status}) before the command finished")
        };
        return Ok(finish(Err(Failure::Boot(why))));
    };
    let mut files = Vec::new();
    for (name, bytes) in &transfer.files {
        let p = opts.out_dir.join(name);
        std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
        files.push(p);
    }
    eprintln!(
        "xtask: svm-host: done in {:.1} s (init at {:.1} s, command at {:.1} s); copied {}",
        total.as_secs_f64(),
        watch.init_after.unwrap_or_default().as_secs_f64(),
        watch.command_after.unwrap_or_default().as_secs_f64(),
        if files.is_empty() {
            "nothing".to_string()
        } else {
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    if rc != 0 {
        return Ok(finish(Err(Failure::Command(rc))));
    }
    if !transfer.missing.is_empty() {
        bail!(
            "the command succeeded but left no {} inside the SVM host",
            transfer.missing.join(", ")
        );
    }
    Ok(finish(Ok(files)))
}

/// What the console said so far.
#[derive(Default)]
struct ConsoleWatch {
    tail: VecDeque<String>,
    init_after: Option<Duration>,
    command_after: Option<Duration>,
    no_kvm: Option<String>,
    watchdog: bool,
    panic: bool,
}

impl ConsoleWatch {
    fn line(&mut self, line: String, since_start: Duration, echo: bool) {
        if echo {
            eprintln!("  | {line}");
        }
        if let Some(said) = line.trim_start().strip_prefix(SAY) {
            let said = said.trim();
            if said.starts_with("init at") {
                self.init_after = Some(since_start);
            } else if said.starts_with("running:") {
                self.command_after = Some(since_start);
            } else if let Some(why) = said.strip_prefix("no-kvm:") {
                self.no_kvm = Some(why.trim().to_string());
            } else if said.starts_with("watchdog:") {
                self.watchdog = true;
            }
        }
        if line.contains("Kernel panic") {
            self.panic = true;
        }
        self.tail.push_back(line);
        if self.tail.len() > TAIL_LINES {
            self.tail.pop_front();
        }
    }
}

/// Echoes the console until QEMU exits or the deadline passes (then kills it).
fn wait_qemu(
    child: &mut QemuChild,
    rx: &Receiver<String>,
    deadline: Instant,
    echo: bool,
    watch: &mut ConsoleWatch,
    start: Instant,
) -> Result<ExitStatus, String> {
    let mut open = true;
    loop {
        let now = Instant::now();
        if now >= deadline {
            if let Some(mut c) = child.0.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            for line in rx.try_iter() {
                watch.line(line, start.elapsed(), echo);
            }
            return Err(format!(
                "timed out after {:.0} s{}; QEMU killed",
                (now - start).as_secs_f64(),
                if watch.watchdog {
                    " (the watchdog inside fired: stacks are in the console)"
                } else if watch.init_after.is_none() {
                    " before /init ran"
                } else {
                    ""
                }
            ));
        }
        if open {
            match rx.recv_timeout((deadline - now).min(Duration::from_millis(200))) {
                Ok(line) => {
                    watch.line(line, start.elapsed(), echo);
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(c) = child.0.as_mut() {
            match c.try_wait() {
                Ok(Some(status)) => {
                    child.0 = None;
                    // The readers end at EOF: take what they still hold.
                    let until = Instant::now() + Duration::from_secs(2);
                    while let Ok(line) =
                        rx.recv_timeout(until.saturating_duration_since(Instant::now()))
                    {
                        watch.line(line, start.elapsed(), echo);
                    }
                    return Ok(status);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("waiting for QEMU: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_version_from_its_banner() {
        assert_eq!(
            parse_qemu_version(
                "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022"
            )
            .as_deref(),
            Some("7.2.22")
        );
        assert_eq!(
            parse_qemu_version("QEMU emulator version 10.0.2\n").as_deref(),
            Some("10.0.2")
        );
        assert_eq!(parse_qemu_version("something else"), None);
        assert_eq!(parse_qemu_version("version x1"), None);
    }

    #[test]
    fn kernel_versions_order_numerically() {
        assert_eq!(
            version_cmp("6.1.0-57-amd64", "6.1.0-9-amd64"),
            Ordering::Greater
        );
        assert_eq!(
            version_cmp("6.10.0-1-amd64", "6.9.0-1-amd64"),
            Ordering::Greater
        );
        assert_eq!(
            version_cmp("6.1.0-57-amd64", "6.1.0-57-amd64"),
            Ordering::Equal
        );
        assert_eq!(version_cmp("6.1", "6.1.0"), Ordering::Less);
        let mut v = ["6.12.1+deb13-amd64", "6.1.0-57-amd64", "6.1.0-58-amd64"];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(v.last(), Some(&"6.12.1+deb13-amd64"));
    }

    #[test]
    fn newest_kernel_with_kvm_amd_and_a_vmlinuz() {
        let d = std::env::temp_dir().join(format!("xtask-svm-kernel-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let (boot, lm) = (d.join("boot"), d.join("modules"));
        std::fs::create_dir_all(&boot).unwrap();
        let e = find_kernel(&boot, &lm).unwrap_err().to_string();
        assert!(e.contains("linux-image-amd64"), "{e}");
        for (v, vmlinuz, kvm) in [
            ("6.1.0-9-amd64", true, true),
            ("6.1.0-57-amd64", true, true),
            ("6.1.0-60-amd64", false, true), // no vmlinuz
            ("6.1.0-61-amd64", true, false), // no kvm-amd
        ] {
            std::fs::create_dir_all(lm.join(v).join("kernel/arch/x86/kvm")).unwrap();
            if vmlinuz {
                std::fs::write(boot.join(format!("vmlinuz-{v}")), b"k").unwrap();
            }
            if kvm {
                std::fs::write(lm.join(v).join(KVM_AMD), b"m").unwrap();
            }
        }
        let k = find_kernel(&boot, &lm).unwrap();
        assert_eq!(k.version, "6.1.0-57-amd64");
        assert_eq!(k.vmlinuz, boot.join("vmlinuz-6.1.0-57-amd64"));
        // A compressed module counts too.
        std::fs::write(
            lm.join("6.1.0-61-amd64").join(format!("{KVM_AMD}.xz")),
            b"m",
        )
        .unwrap();
        assert_eq!(find_kernel(&boot, &lm).unwrap().version, "6.1.0-61-amd64");
        std::fs::remove_dir_all(&d).unwrap();
    }

    const MODULES_DEP: &str = "\
kernel/arch/x86/kvm/kvm.ko: kernel/virt/lib/irqbypass.ko
kernel/arch/x86/kvm/kvm-intel.ko: kernel/arch/x86/kvm/kvm.ko kernel/virt/lib/irqbypass.ko
kernel/arch/x86/kvm/kvm-amd.ko: kernel/drivers/crypto/ccp/ccp.ko kernel/arch/x86/kvm/kvm.ko kernel/virt/lib/irqbypass.ko
kernel/drivers/crypto/ccp/ccp.ko:
kernel/virt/lib/irqbypass.ko:
";

    #[test]
    fn kvm_amd_loads_after_its_dependencies() {
        assert_eq!(
            module_load_order(MODULES_DEP, KVM_AMD).unwrap(),
            [
                "kernel/virt/lib/irqbypass.ko",
                "kernel/arch/x86/kvm/kvm.ko",
                "kernel/drivers/crypto/ccp/ccp.ko",
                "kernel/arch/x86/kvm/kvm-amd.ko"
            ]
        );
        // Debian 13 compresses its modules.
        let xz = MODULES_DEP.replace(".ko", ".ko.xz");
        let order = module_load_order(&xz, KVM_AMD).unwrap();
        assert_eq!(order.last().unwrap(), "kernel/arch/x86/kvm/kvm-amd.ko.xz");
        assert_eq!(flat_module_name(&order[0]), "irqbypass.ko");
        assert!(module_load_order("", KVM_AMD).is_err());
    }

    #[test]
    fn ldd_output_to_library_paths() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd3f5f6000)
\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0e4b1e0000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e4ae1e000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f0e4b213000)
";
        assert_eq!(
            parse_ldd(out).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tnot a dynamic executable\n")
            .unwrap()
            .is_empty());
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
        let e = parse_ldd("\tlibzstd.so.1 => not found\n").unwrap_err();
        assert!(e.to_string().contains("libzstd.so.1"), "{e}");
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("kvmtrace"), "kvmtrace");
        assert_eq!(shell_quote("/tmp/a.kvmtrace"), "/tmp/a.kvmtrace");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's $x"), r"'it'\''s $x'");
    }

    fn spec() -> InitSpec {
        InitSpec {
            modules: vec!["irqbypass.ko".into(), "kvm.ko".into(), "kvm-amd.ko".into()],
            cmd: vec!["sh".into(), "-c".into(), "echo 'hi' > /tmp/x; true".into()],
            copy_out: vec!["/tmp/x".into(), "/tmp/d/out.kvmtrace".into()],
            watchdog_secs: 100,
        }
    }

    #[test]
    fn init_script_loads_kvm_runs_the_command_and_sends_files() {
        let s = init_script(&spec());
        assert!(s.starts_with("#!/bin/sh\n"));
        let pos = |needle: &str| {
            s.find(needle)
                .unwrap_or_else(|| panic!("{needle:?} missing from:\n{s}"))
        };
        // Filesystems, then the watchdog, modules in order, the KVM check, the command,
        // the files, the end marker, power-off.
        let order = [
            "mount -t proc proc /proc",
            "mount -t devtmpfs devtmpfs /dev",
            "mount -t tracefs tracefs /sys/kernel/tracing",
            "sleep 100",
            "for m in irqbypass.ko kvm.ko kvm-amd.ko; do",
            "if [ ! -c /dev/kvm ]; then",
            r#"sh -c 'echo '\''hi'\'' > /tmp/x; true'"#,
            "rc=$?",
            r#"BEGIN "x" $(wc -c < /tmp/x) $(crc32 < /tmp/x)"#,
            "base64 /tmp/d/out.kvmtrace",
            r#"MISSING "out.kvmtrace"#,
            "DONE $rc",
            "} > /dev/ttyS1",
        ];
        for w in order.windows(2) {
            assert!(pos(w[0]) < pos(w[1]), "{:?} not before {:?}", w[0], w[1]);
        }
        assert!(s.trim_end().ends_with("\noff"));
        assert!(pos("/bin/busybox mount -t proc") < pos("/bin/busybox --install"));
        assert!(s.contains("say \"no-kvm: insmod $m failed\""));
        assert!(s.contains("echo $k > /proc/sysrq-trigger"));
        // The echoed command line cannot break the script's own quoting.
        let running = s.lines().find(|l| l.contains("say \"running:")).unwrap();
        assert_eq!(running.matches('"').count(), 2, "{running}");
    }

    #[test]
    fn init_script_runs_under_sh() {
        // The generated shell parses (syntax check only: -n).
        let path = std::env::temp_dir().join(format!("xtask-init-{}.sh", std::process::id()));
        std::fs::write(&path, init_script(&spec())).unwrap();
        let st = Command::new("sh").arg("-n").arg(&path).status().unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(st.success());
    }

    fn b64(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in bytes.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }

    #[test]
    fn base64_and_crc32_match_busybox() {
        assert_eq!(base64_decode("aGVsbG8K").unwrap(), b"hello\n");
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbA==\n").unwrap(), b"hell");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("aGVsb*8=").is_err());
        assert!(base64_decode("aGVsbA==aa").is_err());
        assert!(base64_decode("a").is_err());
        // `printf 'hello\n' | busybox crc32` and zlib.crc32.
        assert_eq!(crc32(b"hello\n"), 0x363a_3020);
        assert_eq!(crc32(b""), 0);
        let all: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        assert_eq!(base64_decode(&b64(&all)).unwrap(), all);
    }

    fn transfer_text(files: &[(&str, &[u8])], rc: Option<i32>) -> String {
        let mut s = String::from("noise from the tty\r\n");
        for (name, bytes) in files {
            s += &format!(
                "{MARK} BEGIN {name} {} {:08x}\r\n",
                bytes.len(),
                crc32(bytes)
            );
            let enc = b64(bytes);
            for chunk in enc.as_bytes().chunks(76) {
                s += std::str::from_utf8(chunk).unwrap();
                s += "\r\n";
            }
            s += &format!("{MARK} END {name}\r\n");
        }
        s += &format!("{MARK} MISSING gone.txt\r\n");
        if let Some(rc) = rc {
            s += &format!("{MARK} DONE {rc}\r\n");
        }
        s
    }

    #[test]
    fn transfer_decodes_files_missing_and_status() {
        let big: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let text = transfer_text(&[("a.kvmtrace", &big), ("empty", b"")], Some(3));
        let t = decode_transfer(&text).unwrap();
        assert_eq!(t.status, Some(3));
        assert_eq!(t.missing, ["gone.txt"]);
        assert_eq!(t.files.len(), 2);
        assert_eq!(t.files[0], ("a.kvmtrace".to_string(), big));
        assert_eq!(t.files[1], ("empty".to_string(), Vec::new()));
        // Without the end marker the run did not finish.
        let t = decode_transfer(&transfer_text(&[("x", b"abc")], None)).unwrap();
        assert_eq!(t.status, None);
    }

    #[test]
    fn transfer_damage_is_an_error() {
        let good = transfer_text(&[("x", b"some bytes here")], Some(0));
        // A changed character: the CRC catches it.
        let b = b64(b"some bytes here");
        let flipped = good.replacen(&b[..4], "AAAA", 1);
        let e = decode_transfer(&flipped).unwrap_err().to_string();
        assert!(e.contains("CRC-32"), "{e}");
        // A lost line: the size catches it.
        let lost = good.replacen(&format!("{b}\r\n"), "", 1);
        let e = decode_transfer(&lost).unwrap_err().to_string();
        assert!(e.contains("bytes arrived"), "{e}");
        // Cut inside a file, then the end marker.
        let cut = format!("{MARK} BEGIN x 3 0\n{MARK} DONE 0\n");
        assert!(decode_transfer(&cut).is_err());
        assert!(decode_transfer(&format!("{MARK} WHAT\n")).is_err());
        assert!(decode_transfer(&format!("{MARK} END x\n")).is_err());
    }

    #[test]
    fn arguments_are_checked_before_anything_runs() {
        let ok = Options {
            kvmtrace: "k".into(),
            cmd: vec!["true".into()],
            copy_out: vec!["/tmp/a".into(), "/tmp/b/c".into()],
            out_dir: "o".into(),
            work_dir: "w".into(),
            timeout: Duration::from_secs(60),
            cpu: "max".into(),
            smp: 1,
            echo: false,
        };
        assert!(check_args(&ok).is_ok());
        for (bad, why) in [
            (
                Options {
                    cmd: vec![],
                    ..ok.clone()
                },
                "command",
            ),
            (
                Options {
                    copy_out: vec!["rel/a".into()],
                    ..ok.clone()
                },
                "absolute",
            ),
            (
                Options {
                    copy_out: vec!["/tmp/a".into(), "/x/a".into()],
                    ..ok.clone()
                },
                "two files",
            ),
            (
                Options {
                    copy_out: vec!["/tmp/a b".into()],
                    ..ok.clone()
                },
                "whitespace",
            ),
            (
                Options {
                    timeout: Duration::from_secs(5),
                    ..ok.clone()
                },
                "timeout",
            ),
        ] {
            let e = check_args(&bad).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }
}
