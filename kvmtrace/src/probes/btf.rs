//! The running kernel's BTF (`/sys/kernel/btf/vmlinux`): which tracepoints a BTF tracepoint
//! program can attach to (`btf_trace_<name>` typedefs), and the offsets of the struct fields
//! those programs read ([`BtfOffsets`]).
//!
//! aya parses BTF too, but keeps struct members private; this reads only what kvmtrace needs
//! (type records, names, struct and union members), following the format in the kernel's
//! Documentation/bpf/btf.rst.

use std::collections::HashMap;

use kvmtrace_common::BtfOffsets;

/// Where the kernel publishes its own BTF.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("BTF: {0}")]
    Malformed(&'static str),
}

const MAGIC: u16 = 0xEB9F;

const KIND_INT: u8 = 1;
const KIND_ARRAY: u8 = 3;
const KIND_STRUCT: u8 = 4;
const KIND_UNION: u8 = 5;
const KIND_ENUM: u8 = 6;
const KIND_TYPEDEF: u8 = 8;
const KIND_VOLATILE: u8 = 9;
const KIND_CONST: u8 = 10;
const KIND_RESTRICT: u8 = 11;
const KIND_FUNC_PROTO: u8 = 13;
const KIND_VAR: u8 = 14;
const KIND_DATASEC: u8 = 15;
const KIND_DECL_TAG: u8 = 17;
const KIND_TYPE_TAG: u8 = 18;
const KIND_ENUM64: u8 = 19;

/// One type record.
#[derive(Clone, Copy, Debug)]
struct Type {
    name_off: u32,
    kind: u8,
    vlen: u16,
    kind_flag: bool,
    /// `size` or `type`, by kind.
    size_or_type: u32,
    /// Offset of the kind-specific data that follows the record, in the type section.
    extra: usize,
}

/// A parsed BTF blob.
pub struct KernelBtf {
    data: Vec<u8>,
    /// Start of the type and string sections in `data`.
    type_start: usize,
    str_start: usize,
    str_len: usize,
    /// Index `id - 1` (id 0 is `void`).
    types: Vec<Type>,
    /// (kind, name) -> id, for structs, unions and typedefs.
    names: HashMap<(u8, String), u32>,
}

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

impl KernelBtf {
    /// The running kernel's BTF.
    pub fn from_sys_fs() -> Result<KernelBtf, BtfError> {
        let data = std::fs::read(VMLINUX).map_err(|source| BtfError::Read {
            path: VMLINUX.to_string(),
            source,
        })?;
        KernelBtf::parse(data)
    }

    /// Parses a BTF blob (little-endian, as on x86).
    pub fn parse(data: Vec<u8>) -> Result<KernelBtf, BtfError> {
        let bad = BtfError::Malformed;
        if u16_at(&data, 0) != Some(MAGIC) {
            return Err(bad("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(&data, 4).ok_or(bad("short header"))? as usize;
        let field = |i: usize| u32_at(&data, 8 + 4 * i).map(|v| v as usize);
        let (type_off, type_len, str_off, str_len) = match (field(0), field(1), field(2), field(3))
        {
            (Some(a), Some(b), Some(c), Some(d)) => (a, b, c, d),
            _ => return Err(bad("short header")),
        };
        let type_start = hdr_len + type_off;
        let str_start = hdr_len + str_off;
        if type_start + type_len > data.len() || str_start + str_len > data.len() {
            return Err(bad("sections past the end of the data"));
        }
        let mut types = Vec::new();
        let mut at = 0usize;
        let sec = &data[type_start..type_start + type_len];
        while at < type_len {
            let (Some(name_off), Some(info), Some(size_or_type)) =
                (u32_at(sec, at), u32_at(sec, at + 4), u32_at(sec, at + 8))
            else {
                return Err(bad("truncated type record"));
            };
            let kind = ((info >> 24) & 0x1f) as u8;
            let vlen = (info & 0xffff) as u16;
            let extra = at + 12;
            let n = vlen as usize;
            let extra_len = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC => 12 * n,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * n,
                KIND_ENUM64 => 12 * n,
                0..=19 => 0,
                _ => return Err(bad("unknown type kind")),
            };
            types.push(Type {
                name_off,
                kind,
                vlen,
                kind_flag: info >> 31 != 0,
                size_or_type,
                extra,
            });
            at = extra + extra_len;
        }
        let mut btf = KernelBtf {
            data,
            type_start,
            str_start,
            str_len,
            types,
            names: HashMap::new(),
        };
        for (i, t) in btf.types.iter().enumerate() {
            if matches!(t.kind, KIND_STRUCT | KIND_UNION | KIND_TYPEDEF) && t.name_off != 0 {
                let name = btf.name(t.name_off).to_string();
                btf.names.entry((t.kind, name)).or_insert(i as u32 + 1);
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let off = off as usize;
        if off >= self.str_len {
            return "";
        }
        let s = &self.data[self.str_start + off..self.str_start + self.str_len];
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get((id as usize).checked_sub(1)?)
    }

    /// `id` with typedefs and qualifiers skipped.
    fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..32 {
            let t = self.ty(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Some(id),
            }
        }
        None
    }

    /// Is there a typedef named `name` (e.g. `btf_trace_sched_switch`)?
    pub fn has_typedef(&self, name: &str) -> bool {
        self.names.contains_key(&(KIND_TYPEDEF, name.to_string()))
    }

    /// Does the kernel's BTF describe tracepoint `name` (so a BTF program can attach)?
    pub fn has_tracepoint(&self, name: &str) -> bool {
        self.has_typedef(&format!("btf_trace_{name}"))
    }

    /// Byte offset of member `name` of struct or union `id`, looking into anonymous members;
    /// with the member's type.
    fn member(&self, id: u32, name: &str) -> Option<(u32, u32)> {
        let t = self.ty(id)?;
        if !matches!(t.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        let base = self.type_start + t.extra;
        for i in 0..t.vlen as usize {
            let at = base + 12 * i;
            let m_name = u32_at(&self.data, at)?;
            let m_type = u32_at(&self.data, at + 4)?;
            let m_off = u32_at(&self.data, at + 8)?;
            // With kind_flag the low 24 bits are the bit offset (the high 8 a bitfield size).
            let bits = if t.kind_flag {
                m_off & 0xff_ffff
            } else {
                m_off
            };
            if m_name == 0 {
                let inner = self.resolve(m_type)?;
                if let Some((off, ty)) = self.member(inner, name) {
                    return Some((bits / 8 + off, ty));
                }
            } else if self.name(m_name) == name {
                return Some((bits / 8, m_type));
            }
        }
        None
    }

    /// Byte offset of `path` (`["thread_info", "cpu"]`) inside `struct name`.
    pub fn field_offset(&self, name: &str, path: &[&str]) -> Option<u32> {
        let mut id = *self.names.get(&(KIND_STRUCT, name.to_string()))?;
        let mut off = 0;
        for (i, field) in path.iter().enumerate() {
            let (o, ty) = self.member(id, field)?;
            off += o;
            if i + 1 < path.len() {
                id = self.resolve(ty)?;
            }
        }
        Some(off)
    }

    /// The offsets the BTF programs need; a field not found stays 0 (its programs then run
    /// as classic tracepoints).
    pub fn offsets(&self) -> BtfOffsets {
        let task = |path: &[&str]| self.field_offset("task_struct", path).unwrap_or(0);
        BtfOffsets {
            task_pid: task(&["pid"]),
            task_tgid: task(&["tgid"]),
            task_comm: task(&["comm"]),
            task_prio: task(&["prio"]),
            task_exit_state: task(&["exit_state"]),
            // Since 5.16 with THREAD_INFO_IN_TASK; before, the task itself.
            task_cpu: self
                .field_offset("task_struct", &["thread_info", "cpu"])
                .or_else(|| self.field_offset("task_struct", &["cpu"]))
                .unwrap_or(0),
            hrtimer_function: self.field_offset("hrtimer", &["function"]).unwrap_or(0),
            hrtimer_expires: self
                .field_offset("hrtimer", &["node", "expires"])
                .unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BTF blob builder: types are added in id order.
    #[derive(Default)]
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Builder {
        fn new() -> Builder {
            Builder {
                types: Vec::new(),
                strings: vec![0],
            }
        }
        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }
        fn rec(&mut self, name: &str, kind: u8, vlen: u16, flag: bool, st: u32) {
            let n = self.s(name);
            let info = (u32::from(kind) << 24) | u32::from(vlen) | (u32::from(flag) << 31);
            for v in [n, info, st] {
                self.types.extend_from_slice(&v.to_le_bytes());
            }
        }
        fn int(&mut self, name: &str, size: u32) {
            self.rec(name, KIND_INT, 0, false, size);
            self.types.extend_from_slice(&(size * 8).to_le_bytes());
        }
        fn composite(&mut self, kind: u8, name: &str, size: u32, members: &[(&str, u32, u32)]) {
            self.rec(name, kind, members.len() as u16, false, size);
            for (m, ty, byte_off) in members {
                let n = self.s(m);
                for v in [n, *ty, byte_off * 8] {
                    self.types.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        fn build(self) -> Vec<u8> {
            let mut d = Vec::new();
            d.extend_from_slice(&MAGIC.to_le_bytes());
            d.push(1);
            d.push(0);
            for v in [24u32, 0, self.types.len() as u32, self.types.len() as u32] {
                d.extend_from_slice(&v.to_le_bytes());
            }
            d.extend_from_slice(&(self.strings.len() as u32).to_le_bytes());
            d.extend_from_slice(&self.types);
            d.extend_from_slice(&self.strings);
            d
        }
    }

    #[test]
    fn finds_fields_through_nested_and_anonymous_members_and_typedefs() {
        let mut b = Builder::new();
        b.int("int", 4); // 1
        b.composite(
            KIND_STRUCT,
            "thread_info",
            24,
            &[("flags", 1, 0), ("cpu", 1, 20)],
        ); // 2
        b.rec("pid_t", KIND_TYPEDEF, 0, false, 1); // 3
                                                   // 4: an anonymous union holding `prio`
        b.composite(KIND_UNION, "", 4, &[("prio", 1, 0)]);
        b.composite(
            KIND_STRUCT,
            "task_struct",
            4096,
            &[("thread_info", 2, 0), ("pid", 3, 1000), ("", 4, 2000)],
        ); // 5
        b.rec("btf_trace_sched_switch", KIND_TYPEDEF, 0, false, 1); // 6
        let btf = KernelBtf::parse(b.build()).unwrap();
        assert_eq!(btf.field_offset("task_struct", &["pid"]), Some(1000));
        assert_eq!(btf.field_offset("task_struct", &["prio"]), Some(2000));
        assert_eq!(
            btf.field_offset("task_struct", &["thread_info", "cpu"]),
            Some(20)
        );
        assert_eq!(btf.field_offset("task_struct", &["nope"]), None);
        assert_eq!(btf.field_offset("nope", &["pid"]), None);
        assert!(btf.has_tracepoint("sched_switch"));
        assert!(!btf.has_tracepoint("sched_wakeup"));
        let o = btf.offsets();
        assert_eq!((o.task_pid, o.task_cpu, o.task_comm), (1000, 20, 0));
        assert!(
            !o.has_task(),
            "comm is missing: the sched programs stay classic"
        );
    }

    #[test]
    fn rejects_what_is_not_btf() {
        assert!(KernelBtf::parse(vec![0; 8]).is_err());
        let mut d = Builder::new().build();
        d[15] = 0xff; // type_len past the end
        assert!(KernelBtf::parse(d).is_err());
    }

    #[test]
    fn the_running_kernels_btf_has_what_the_programs_read() {
        let Ok(btf) = KernelBtf::from_sys_fs() else {
            eprintln!("no {VMLINUX}: skipped");
            return;
        };
        let o = btf.offsets();
        assert!(o.has_task(), "{o:?}");
        assert!(o.has_hrtimer(), "{o:?}");
        assert!(btf.has_tracepoint("sched_switch"));
    }
}
