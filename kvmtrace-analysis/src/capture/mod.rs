//! The capture file: a versioned header, then checksummed blocks of event records, then a
//! trailer written when the recording ends cleanly. See docs/capture-format.md.
//!
//! A file cut short (kill -9, full disk) still opens: the reader returns every complete
//! block and says where the damage starts.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use kvmtrace_common::Event;
use serde::{Deserialize, Serialize};

use crate::format::Format;
use crate::host::HostFacts;

pub const MAGIC: &[u8; 8] = b"KVMTRACE";
/// Version 2: blocks are column-wise and zstd-compressed (`KTB2`); version-1 files (raw
/// `KTB1` blocks) are still read.
pub const VERSION: u16 = 2;
const RAW_BLOCK_MAGIC: &[u8; 4] = b"KTB1";
const ZSTD_BLOCK_MAGIC: &[u8; 4] = b"KTB2";
const ZSTD_LEVEL: i32 = 3;

/// Lays a block's events out field by field (timestamps as deltas), which zstd compresses
/// several times better than whole records: `n * 64` bytes in, `n * 64` out.
pub fn encode_columns(events: &[Event], out: &mut Vec<u8>) {
    out.clear();
    let mut prev = 0u64;
    for e in events {
        out.extend_from_slice(&e.ts_ns.wrapping_sub(prev).to_le_bytes());
        prev = e.ts_ns;
    }
    for e in events {
        out.extend_from_slice(&e.tid.to_le_bytes());
    }
    for e in events {
        out.extend_from_slice(&e.tgid.to_le_bytes());
    }
    for e in events {
        out.extend_from_slice(&e.cpu.to_le_bytes());
    }
    for e in events {
        out.extend_from_slice(&e.kind.to_le_bytes());
    }
    out.extend(events.iter().map(|e| e.missing));
    out.extend(events.iter().map(|e| e._pad));
    for s in 0..kvmtrace_common::NSLOTS {
        for e in events {
            out.extend_from_slice(&e.slot(s).to_le_bytes());
        }
    }
}

/// The inverse of [`encode_columns`], appending row-major records to `out`; None when
/// `cols` is not `n` records long.
pub fn decode_columns(cols: &[u8], n: usize, out: &mut Vec<u8>) -> Option<()> {
    if cols.len() != n * Event::SIZE {
        return None;
    }
    let u64_at = |at: usize| -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&cols[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let u32_at = |at: usize| -> u32 {
        let mut w = [0u8; 4];
        w.copy_from_slice(&cols[at..at + 4]);
        u32::from_le_bytes(w)
    };
    let (ts0, tid0, tgid0, cpu0, kind0) = (0, 8 * n, 12 * n, 16 * n, 20 * n);
    let (missing0, pad0, slots0) = (22 * n, 23 * n, 24 * n);
    let mut ts = 0u64;
    out.reserve(n * Event::SIZE);
    for i in 0..n {
        ts = ts.wrapping_add(u64_at(ts0 + 8 * i));
        let mut slots = [0u64; kvmtrace_common::NSLOTS];
        for (s, v) in slots.iter_mut().enumerate() {
            *v = u64_at(slots0 + s * 8 * n + 8 * i);
        }
        let ev = Event {
            ts_ns: ts,
            tid: u32_at(tid0 + 4 * i),
            tgid: u32_at(tgid0 + 4 * i),
            cpu: u32_at(cpu0 + 4 * i),
            kind: u16::from_le_bytes([cols[kind0 + 2 * i], cols[kind0 + 2 * i + 1]]),
            missing: cols[missing0 + i],
            _pad: cols[pad0 + i],
            slots,
        };
        out.extend_from_slice(&ev.to_le_bytes());
    }
    Some(())
}
const TRAILER_MAGIC: &[u8; 4] = b"KTE1";
/// Events per block: 64 KiB of records.
pub const EVENTS_PER_BLOCK: usize = 1024;
/// Largest header or trailer accepted (a corrupt length must not make us allocate GiBs).
const MAX_JSON: u32 = 16 << 20;

/// What the capture says about itself, written before the first event.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptureHeader {
    pub tool: String,
    pub tool_version: String,
    /// Wall-clock start, seconds since the Unix epoch.
    pub created_unix: u64,
    /// CLOCK_MONOTONIC at start, the clock of every event.
    pub start_ns: u64,
    pub host: HostFacts,
    /// `-p` pids; empty = every VM.
    pub pids: Vec<u32>,
    pub demo: bool,
    pub probes: Vec<ProbeStatus>,
    /// The format files whose offsets the probes used, by tracepoint.
    pub formats: std::collections::BTreeMap<String, Format>,
    /// Kernel address of KVM's LAPIC timer callback, to recognise its hrtimer (0: unknown).
    #[serde(default)]
    pub apic_timer_fn: u64,
    /// How `--stacks` took kernel stacks (docs/stacks.md); absent without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stacks: Option<StackCapture>,
    /// Where kvmtrace ran its own threads (absent from older captures).
    #[serde(default)]
    pub placement: Option<Placement>,
}

/// Where kvmtrace placed its own threads (reader, writer, TUI), decided at start: CPUs that
/// host no traced vCPU and are not isolated, or `--housekeeping CPUS`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The CPUs kvmtrace's threads were confined to; empty: not confined (`off`).
    pub cpus: Vec<u32>,
    /// How they were chosen: `auto`, `--housekeeping` or `off`.
    pub how: String,
    /// CPUs that hosted a traced vCPU at start.
    pub vcpu_cpus: Vec<u32>,
    /// CPUs isolated from the scheduler (`isolcpus`, `nohz_full`).
    pub isolated: Vec<u32>,
    /// Why the choice is a compromise, when it is (every CPU hosts a vCPU).
    #[serde(default)]
    pub note: Option<String>,
    /// When the threads were confined (CLOCK_MONOTONIC): events before it come from
    /// start-up (loading the probes, starting the demo) wherever the threads then ran.
    #[serde(default)]
    pub since_ns: u64,
}

/// What a capture says about its kernel stacks (`--stacks`, docs/stacks.md).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackCapture {
    /// The profile's `cpu-clock` frequency per CPU (0: no profile).
    pub hz: u32,
    /// Distinct stacks the kernel's stack map holds, and frames kept per stack.
    pub max_stacks: u32,
    pub depth: u32,
    /// Each stack program: where it is attached, and whether it is.
    pub programs: Vec<StackProgram>,
    /// Why frames could not be named when recording (they then show as addresses).
    #[serde(default)]
    pub symbols_problem: Option<String>,
}

/// One stack program's attachment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackProgram {
    pub program: String,
    /// `category:tracepoint`, or `perf:cpu-clock` for the profile.
    pub attach: String,
    pub attached: bool,
    pub reason: Option<String>,
}

/// What happened to one tracepoint's probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeStatus {
    /// `category:name`.
    pub tracepoint: String,
    pub attached: bool,
    /// Why it is not attached.
    pub reason: Option<String>,
    /// Fields this kernel lacks (their slots read as 0).
    pub missing_fields: Vec<String>,
    /// How the attached program is hooked in (absent in captures made before kvmtrace
    /// recorded it, and for a probe not attached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ProbeMode>,
}

/// How a probe's program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeMode {
    /// A classic tracepoint program: the kernel builds the perf record, the program reads
    /// its fields at the format file's offsets.
    #[serde(rename = "tracepoint")]
    Tracepoint,
    /// A BTF tracepoint program: called with the tracepoint's typed arguments, no perf
    /// record built.
    #[serde(rename = "tp_btf")]
    TpBtf,
}

impl ProbeMode {
    pub const fn name(self) -> &'static str {
        match self {
            ProbeMode::Tracepoint => "tracepoint",
            ProbeMode::TpBtf => "tp_btf",
        }
    }
}

/// Flight recorder: a sample over the trigger threshold (kept in the trailer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Trigger {
    pub tid: u32,
    pub open_ns: u64,
    pub total_ns: u64,
}

/// Why a recording stopped (a string in the trailer and the report).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    /// `--duration` elapsed.
    #[serde(rename = "duration")]
    Duration,
    /// Ctrl-C.
    #[serde(rename = "SIGINT")]
    Sigint,
    #[serde(rename = "SIGTERM")]
    Sigterm,
    /// The flight recorder wrote `--max-triggers` windows.
    #[serde(rename = "triggers")]
    Triggers,
    /// Writing the capture failed (the trailer says so when it could still be written).
    #[serde(rename = "write-error")]
    WriteError,
    /// A reason this kvmtrace does not know (written by a newer one).
    #[default]
    #[serde(other, rename = "unknown")]
    Unknown,
}

impl StopReason {
    /// As in the trailer: `duration`, `SIGINT`, `SIGTERM`, `triggers`, `write-error`.
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Duration => "duration",
            StopReason::Sigint => "SIGINT",
            StopReason::Sigterm => "SIGTERM",
            StopReason::Triggers => "triggers",
            StopReason::WriteError => "write-error",
            StopReason::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Written when a recording ends cleanly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureTrailer {
    pub events: u64,
    /// Records lost in the kernel (ring buffer full).
    pub kernel_drops: u64,
    /// Records that reached userspace but could not be decoded.
    pub malformed: u64,
    pub end_ns: u64,
    /// Why the recording stopped.
    pub stop_reason: StopReason,
    /// Flight recorder: the samples that triggered a write, in order.
    #[serde(default)]
    pub triggers: Vec<Trigger>,
    /// CPU time kvmtrace's own threads used from the start of tracing to the end (user and
    /// system; the demo guest's threads, the traced workload, not included).
    #[serde(default)]
    pub tracer_cpu_ns: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{path}: already exists (use --force to overwrite)")]
    Exists { path: PathBuf },
    #[error("{path}: cannot create: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: write failed: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a kvmtrace capture (no KVMTRACE magic at offset 0)")]
    NotACapture { path: PathBuf },
    #[error("{path}: capture format version {version} is newer than this kvmtrace reads ({VERSION}); upgrade kvmtrace")]
    FutureVersion { path: PathBuf, version: u16 },
    #[error("{path}: truncated inside the header (offset {offset}): nothing can be read")]
    TruncatedHeader { path: PathBuf, offset: u64 },
    #[error("{path}: corrupt header at offset {offset}: {what}")]
    BadHeader {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("{path}: read failed at offset {offset}: {source}")]
    Read {
        path: PathBuf,
        offset: u64,
        source: std::io::Error,
    },
}

/// Creates `path` with mode 0600, refusing to clobber unless `force`.
pub fn create_output(path: &Path, force: bool) -> Result<File, CaptureError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(0o600);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    opts.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            CaptureError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            CaptureError::Create {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Writes a capture block by block. Each block is flushed to the file when it fills, so a
/// crash loses at most the block being filled.
pub struct CaptureWriter {
    path: PathBuf,
    out: BufWriter<File>,
    block: Vec<Event>,
    cols: Vec<u8>,
    zstd: zstd::bulk::Compressor<'static>,
    events: u64,
    bytes: u64,
}

impl CaptureWriter {
    /// Creates `path` (0600, no clobber unless `force`) and writes the header.
    pub fn create(path: &Path, force: bool, header: &CaptureHeader) -> Result<Self, CaptureError> {
        CaptureWriter::new(create_output(path, force)?, path, header)
    }

    /// Writes the header to `file`, already created with [`create_output`].
    pub fn new(file: File, path: &Path, header: &CaptureHeader) -> Result<Self, CaptureError> {
        let zstd =
            zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(|source| CaptureError::Write {
                path: path.to_path_buf(),
                source,
            })?;
        let mut w = CaptureWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(256 << 10, file),
            block: Vec::with_capacity(EVENTS_PER_BLOCK),
            cols: Vec::with_capacity(EVENTS_PER_BLOCK * Event::SIZE),
            zstd,
            events: 0,
            bytes: 0,
        };
        let json = serde_json::to_vec(header).map_err(|e| w.werr(e.into()))?;
        let mut head = Vec::with_capacity(16 + json.len());
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&0u16.to_le_bytes());
        head.extend_from_slice(&(json.len() as u32).to_le_bytes());
        head.extend_from_slice(&json);
        w.out.write_all(&head).map_err(|e| w.werr(e))?;
        w.out.flush().map_err(|e| w.werr(e))?;
        w.bytes = head.len() as u64;
        Ok(w)
    }

    fn werr(&self, source: std::io::Error) -> CaptureError {
        CaptureError::Write {
            path: self.path.clone(),
            source,
        }
    }

    pub fn push(&mut self, ev: &Event) -> Result<(), CaptureError> {
        self.block.push(*ev);
        self.events += 1;
        if self.block.len() >= EVENTS_PER_BLOCK {
            self.flush_block()?;
        }
        Ok(())
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes the partly filled block, if any, and flushes it to the file.
    pub fn flush_block(&mut self) -> Result<(), CaptureError> {
        if self.block.is_empty() {
            return Ok(());
        }
        encode_columns(&self.block, &mut self.cols);
        let n = self.block.len() as u32;
        self.block.clear();
        let payload = self.zstd.compress(&self.cols).map_err(|e| self.werr(e))?;
        let mut head = [0u8; 16];
        head[0..4].copy_from_slice(ZSTD_BLOCK_MAGIC);
        head[4..8].copy_from_slice(&n.to_le_bytes());
        head[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        head[12..16].copy_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        let r = self
            .out
            .write_all(&head)
            .and_then(|()| self.out.write_all(&payload))
            .and_then(|()| self.out.flush());
        self.bytes += (head.len() + payload.len()) as u64;
        r.map_err(|e| self.werr(e))
    }

    /// Writes the last block and the trailer, and syncs the file.
    pub fn finish(mut self, trailer: &CaptureTrailer) -> Result<(), CaptureError> {
        self.flush_block()?;
        let json = serde_json::to_vec(trailer).map_err(|e| self.werr(e.into()))?;
        let mut head = [0u8; 12];
        head[0..4].copy_from_slice(TRAILER_MAGIC);
        head[4..8].copy_from_slice(&(json.len() as u32).to_le_bytes());
        head[8..12].copy_from_slice(&crc32fast::hash(&json).to_le_bytes());
        self.out.write_all(&head).map_err(|e| self.werr(e))?;
        self.out.write_all(&json).map_err(|e| self.werr(e))?;
        self.out.flush().map_err(|e| self.werr(e))?;
        self.out.get_ref().sync_all().map_err(|e| self.werr(e))
    }
}

/// Where reading stopped early, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Damage {
    pub offset: u64,
    pub what: String,
}

/// Reads a capture: the header at open, then events block by block.
pub struct CaptureReader<R: Read> {
    path: PathBuf,
    input: R,
    offset: u64,
    pub header: CaptureHeader,
    pub version: u16,
    pub trailer: Option<CaptureTrailer>,
    /// Set when the file ends without a trailer or a block is damaged.
    pub damage: Option<Damage>,
    block: Vec<u8>,
    payload: Vec<u8>,
    pos: usize,
    done: bool,
}

impl CaptureReader<std::io::BufReader<File>> {
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let f = File::open(path).map_err(|source| CaptureError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        CaptureReader::new(path, std::io::BufReader::with_capacity(256 << 10, f))
    }
}

/// Reads exactly `buf.len()` bytes; Ok(false) on a clean EOF before the first byte, an
/// error naming the offset on a short read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

impl<R: Read> CaptureReader<R> {
    pub fn new(path: &Path, mut input: R) -> Result<Self, CaptureError> {
        let path = path.to_path_buf();
        let rerr = |offset, source| CaptureError::Read {
            path: path.clone(),
            offset,
            source,
        };
        let mut fixed = [0u8; 16];
        let got = read_full(&mut input, &mut fixed).map_err(|e| rerr(0, e))?;
        if got < 8 || &fixed[0..8] != MAGIC {
            return Err(CaptureError::NotACapture { path });
        }
        if got < 16 {
            return Err(CaptureError::TruncatedHeader {
                path,
                offset: got as u64,
            });
        }
        let version = u16::from_le_bytes([fixed[8], fixed[9]]);
        if version > VERSION {
            return Err(CaptureError::FutureVersion { path, version });
        }
        let len = u32::from_le_bytes([fixed[12], fixed[13], fixed[14], fixed[15]]);
        if len > MAX_JSON {
            return Err(CaptureError::BadHeader {
                path,
                offset: 12,
                what: format!("header length {len} is implausible"),
            });
        }
        let mut json = vec![0u8; len as usize];
        let got = read_full(&mut input, &mut json).map_err(|e| rerr(16, e))?;
        if got < json.len() {
            return Err(CaptureError::TruncatedHeader {
                path,
                offset: 16 + got as u64,
            });
        }
        let header: CaptureHeader =
            serde_json::from_slice(&json).map_err(|e| CaptureError::BadHeader {
                path: path.clone(),
                offset: 16,
                what: e.to_string(),
            })?;
        Ok(CaptureReader {
            path,
            input,
            offset: 16 + len as u64,
            header,
            version,
            trailer: None,
            damage: None,
            block: Vec::new(),
            payload: Vec::new(),
            pos: 0,
            done: false,
        })
    }

    fn damaged(&mut self, offset: u64, what: impl Into<String>) {
        self.damage = Some(Damage {
            offset,
            what: what.into(),
        });
        self.done = true;
    }

    /// Loads the next block; false at the end (clean or damaged).
    fn next_block(&mut self) -> Result<bool, CaptureError> {
        let start = self.offset;
        let mut magic = [0u8; 4];
        let got = read_full(&mut self.input, &mut magic).map_err(|source| CaptureError::Read {
            path: self.path.clone(),
            offset: start,
            source,
        })?;
        if got == 0 {
            self.damaged(
                start,
                "the file ends without a trailer: the recording did not finish cleanly",
            );
            return Ok(false);
        }
        if got < 4 {
            self.damaged(start, "truncated inside a block header");
            return Ok(false);
        }
        if &magic == TRAILER_MAGIC {
            self.read_trailer(start)?;
            self.done = true;
            return Ok(false);
        }
        let compressed = match &magic {
            m if m == ZSTD_BLOCK_MAGIC => true,
            m if m == RAW_BLOCK_MAGIC => false,
            _ => {
                self.damaged(start, "bad block magic: corrupt data");
                return Ok(false);
            }
        };
        let mut head = [0u8; 12];
        let got = read_full(&mut self.input, &mut head).map_err(|source| CaptureError::Read {
            path: self.path.clone(),
            offset: start + 4,
            source,
        })?;
        if got < 12 {
            self.damaged(start, "truncated inside a block header");
            return Ok(false);
        }
        let n = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let crc = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        let raw_len = n * Event::SIZE;
        let plausible = if compressed {
            len <= 2 * raw_len + 1024
        } else {
            len == raw_len
        };
        if n > 16 * EVENTS_PER_BLOCK || !plausible {
            self.damaged(
                start,
                format!("block header says {n} events in {len} bytes: corrupt"),
            );
            return Ok(false);
        }
        let mut payload = std::mem::take(&mut self.payload);
        payload.resize(len, 0);
        let got =
            read_full(&mut self.input, &mut payload).map_err(|source| CaptureError::Read {
                path: self.path.clone(),
                offset: start + 16,
                source,
            })?;
        if got < len {
            self.damaged(
                start,
                format!("truncated inside a block ({got} of {len} bytes)"),
            );
            return Ok(false);
        }
        if crc32fast::hash(&payload) != crc {
            self.damaged(start, "block checksum mismatch: corrupt data");
            return Ok(false);
        }
        self.block.clear();
        if compressed {
            let cols = match zstd::bulk::decompress(&payload, raw_len) {
                Ok(c) => c,
                Err(e) => {
                    self.damaged(start, format!("block does not decompress: {e}"));
                    return Ok(false);
                }
            };
            if decode_columns(&cols, n, &mut self.block).is_none() {
                self.damaged(start, "block decompresses to the wrong size: corrupt data");
                return Ok(false);
            }
        } else {
            self.block.extend_from_slice(&payload);
        }
        self.payload = payload;
        self.offset = start + 16 + len as u64;
        self.pos = 0;
        Ok(true)
    }

    fn read_trailer(&mut self, start: u64) -> Result<(), CaptureError> {
        let mut head = [0u8; 8];
        let got = read_full(&mut self.input, &mut head).map_err(|source| CaptureError::Read {
            path: self.path.clone(),
            offset: start + 4,
            source,
        })?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        if got < 8 || len > MAX_JSON {
            self.damaged(start, "truncated or corrupt trailer");
            return Ok(());
        }
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let mut json = vec![0u8; len as usize];
        let got = read_full(&mut self.input, &mut json).map_err(|source| CaptureError::Read {
            path: self.path.clone(),
            offset: start + 12,
            source,
        })?;
        if got < json.len() || crc32fast::hash(&json) != crc {
            self.damaged(start, "truncated or corrupt trailer");
            return Ok(());
        }
        match serde_json::from_slice(&json) {
            Ok(t) => self.trailer = Some(t),
            Err(e) => self.damaged(start, format!("unreadable trailer: {e}")),
        }
        Ok(())
    }

    /// The next event; None at the end of the readable data.
    pub fn next_event(&mut self) -> Result<Option<Event>, CaptureError> {
        loop {
            if self.pos + Event::SIZE <= self.block.len() {
                let ev = Event::from_le_bytes(&self.block[self.pos..]);
                self.pos += Event::SIZE;
                return Ok(ev);
            }
            if self.done || !self.next_block()? {
                return Ok(None);
            }
        }
    }

    /// Bytes of the file consumed so far (whole blocks).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// True when the capture ended with its trailer and no damage.
    pub fn complete(&self) -> bool {
        self.trailer.is_some() && self.damage.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvmtrace_common::Kind;

    fn ev(i: u64) -> Event {
        Event {
            ts_ns: 1000 + i,
            tid: 7,
            tgid: 7,
            cpu: (i % 2) as u32,
            kind: Kind::KvmPio as u16,
            slots: [i, 0x80, 1, 0, 0],
            ..Default::default()
        }
    }

    fn write(path: &Path, n: u64, finish: bool) {
        let mut w = CaptureWriter::create(path, true, &CaptureHeader::default()).unwrap();
        for i in 0..n {
            w.push(&ev(i)).unwrap();
        }
        if finish {
            w.finish(&CaptureTrailer {
                events: n,
                ..Default::default()
            })
            .unwrap();
        } else {
            w.flush_block().unwrap();
        }
    }

    fn read_all(path: &Path) -> (Vec<Event>, CaptureReader<std::io::BufReader<File>>) {
        let mut r = CaptureReader::open(path).unwrap();
        let mut out = Vec::new();
        while let Some(e) = r.next_event().unwrap() {
            out.push(e);
        }
        (out, r)
    }

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("kvmtrace-cap-{}-{name}", std::process::id()))
    }

    #[test]
    fn round_trip_and_no_clobber() {
        let p = tmp("rt");
        let _ = std::fs::remove_file(&p);
        write(&p, 2500, true);
        let (evs, r) = read_all(&p);
        assert_eq!(evs.len(), 2500);
        assert_eq!(evs[1234], ev(1234));
        assert!(r.complete());
        assert_eq!(r.trailer.as_ref().unwrap().events, 2500);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let e = CaptureWriter::create(&p, false, &CaptureHeader::default()).err();
        assert!(matches!(e, Some(CaptureError::Exists { .. })), "{e:?}");
        std::fs::remove_file(&p).unwrap();
    }

    /// (start offset, events) of each block, read from the block headers.
    fn blocks_of(full: &[u8]) -> (usize, Vec<(usize, usize, usize)>, usize) {
        let header_len = 16 + u32::from_le_bytes(full[12..16].try_into().unwrap()) as usize;
        let mut at = header_len;
        let mut blocks = Vec::new();
        while &full[at..at + 4] != TRAILER_MAGIC {
            let n = u32::from_le_bytes(full[at + 4..at + 8].try_into().unwrap()) as usize;
            let len = u32::from_le_bytes(full[at + 8..at + 12].try_into().unwrap()) as usize;
            blocks.push((at, n, 16 + len));
            at += 16 + len;
        }
        (header_len, blocks, at)
    }

    #[test]
    fn truncation_keeps_every_complete_block() {
        let p = tmp("trunc");
        write(&p, 3000, true);
        let full = std::fs::read(&p).unwrap();
        let (header_len, blocks, trailer_at) = blocks_of(&full);
        assert_eq!(
            blocks.iter().map(|b| b.1).collect::<Vec<_>>(),
            vec![1024, 1024, 952]
        );
        let mut cuts: Vec<usize> = (header_len..full.len()).step_by(97).collect();
        for &(start, _, size) in &blocks {
            cuts.extend([start, start + 3, start + 16, start + size - 1]);
        }
        cuts.extend([trailer_at, trailer_at + 5, full.len() - 1]);
        for cut in cuts {
            std::fs::write(&p, &full[..cut]).unwrap();
            let (evs, r) = read_all(&p);
            let complete: Vec<&(usize, usize, usize)> = blocks
                .iter()
                .filter(|(start, _, size)| start + size <= cut)
                .collect();
            let expect: usize = complete.iter().map(|(_, n, _)| n).sum();
            assert_eq!(evs.len(), expect, "cut at {cut}");
            assert_eq!(
                evs.last().copied(),
                expect.checked_sub(1).map(|i| ev(i as u64))
            );
            assert!(!r.complete(), "cut at {cut}");
            let damage_at = blocks
                .get(complete.len())
                .map_or(trailer_at, |(start, _, _)| *start);
            assert_eq!(
                r.damage.as_ref().unwrap().offset as usize,
                damage_at,
                "cut at {cut}"
            );
        }
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn columns_round_trip_and_compress() {
        // A demo-like stream: port I/O exits every few microseconds from one thread.
        let evs: Vec<Event> = (0..1024u64)
            .map(|i| Event {
                ts_ns: 1_000_000_000 + i * 3_100 + (i * 7919) % 500,
                tid: 4242,
                tgid: 4240,
                cpu: (i % 2) as u32,
                kind: if i % 2 == 0 {
                    Kind::KvmPio as u16
                } else {
                    Kind::KvmUserspaceExit as u16
                },
                slots: [1, 0xe4, 2, 1 + i % 5, 0],
                ..Default::default()
            })
            .collect();
        let mut cols = Vec::new();
        encode_columns(&evs, &mut cols);
        assert_eq!(cols.len(), evs.len() * Event::SIZE);
        let mut rows = Vec::new();
        decode_columns(&cols, evs.len(), &mut rows).unwrap();
        let back: Vec<Event> = rows
            .chunks(Event::SIZE)
            .filter_map(Event::from_le_bytes)
            .collect();
        assert_eq!(back, evs);
        assert!(decode_columns(&cols[1..], evs.len(), &mut rows).is_none());
        let z = zstd::bulk::compress(&cols, ZSTD_LEVEL).unwrap();
        let per_event = z.len() as f64 / evs.len() as f64;
        assert!(per_event < 8.0, "{per_event} bytes per event");
    }

    #[test]
    fn version_1_raw_blocks_are_still_read() {
        let p = tmp("v1");
        let json = serde_json::to_vec(&CaptureHeader::default()).unwrap();
        let mut f = Vec::new();
        f.extend_from_slice(MAGIC);
        f.extend_from_slice(&1u16.to_le_bytes());
        f.extend_from_slice(&0u16.to_le_bytes());
        f.extend_from_slice(&(json.len() as u32).to_le_bytes());
        f.extend_from_slice(&json);
        let payload: Vec<u8> = (0..3).flat_map(|i| ev(i).to_le_bytes()).collect();
        f.extend_from_slice(RAW_BLOCK_MAGIC);
        f.extend_from_slice(&3u32.to_le_bytes());
        f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        f.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        f.extend_from_slice(&payload);
        std::fs::write(&p, &f).unwrap();
        let (evs, r) = read_all(&p);
        assert_eq!(r.version, 1);
        assert_eq!(evs, vec![ev(0), ev(1), ev(2)]);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn corruption_and_foreign_files_are_named() {
        let p = tmp("corrupt");
        write(&p, 10, false);
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0xff;
        std::fs::write(&p, &bytes).unwrap();
        let (evs, r) = read_all(&p);
        assert!(evs.is_empty());
        assert!(r.damage.unwrap().what.contains("checksum"));

        std::fs::write(&p, b"hello world, not a capture").unwrap();
        let e = CaptureReader::open(&p).err().unwrap();
        assert!(e.to_string().contains("not a kvmtrace capture"), "{e}");

        std::fs::write(&p, b"KVMTRACE\x09\x00\x00\x00\x00\x00\x00\x00").unwrap();
        let e = CaptureReader::open(&p).err().unwrap();
        assert!(e.to_string().contains("version 9 is newer"), "{e}");

        std::fs::write(&p, b"KVMTRACE\x01\x00\x00\x00\xff\x00\x00\x00{").unwrap();
        let e = CaptureReader::open(&p).err().unwrap();
        assert!(e.to_string().contains("truncated inside the header"), "{e}");
        std::fs::remove_file(&p).unwrap();
    }
}
