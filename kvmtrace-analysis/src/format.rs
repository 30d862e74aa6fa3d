//! Parsing of tracefs `events/<category>/<name>/format` files.
//!
//! kvmtrace never hard-codes a field offset: the loader reads each tracepoint's format file,
//! and [`Format::spec_for`] turns a field into the [`FieldSpec`] the eBPF programs use.

use kvmtrace_common::{FieldSpec, Kind, NSLOTS};
use serde::{Deserialize, Serialize};

/// One field of a tracepoint record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// Field name (`prev_comm`, not `char prev_comm[16]`).
    pub name: String,
    /// The C declaration as the kernel prints it.
    pub decl: String,
    pub offset: usize,
    pub size: usize,
    pub signed: bool,
}

/// A parsed format file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Format {
    pub name: String,
    pub id: u32,
    /// The event's own fields, without the `common_*` header.
    pub fields: Vec<Field>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("line {line}: cannot parse field description `{text}`")]
    BadField { line: usize, text: String },
    #[error("no `{0}:` line")]
    Missing(&'static str),
}

/// Why a field cannot be copied by the eBPF programs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FieldError {
    #[error("field `{0}` is absent")]
    Absent(String),
    #[error("field `{name}` has size {size}, which kvmtrace cannot copy")]
    BadSize { name: String, size: usize },
    #[error(
        "field `{name}` is at offset {offset}, beyond the first {} bytes kvmtrace copies",
        kvmtrace_common::RAW_BYTES
    )]
    BadOffset { name: String, offset: usize },
}

impl Format {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The [`FieldSpec`] for `name`: sizes 1, 2, 4, 8, and 16 for a `char[16]` comm.
    pub fn spec_for(&self, name: &str) -> Result<FieldSpec, FieldError> {
        let f = self
            .field(name)
            .ok_or_else(|| FieldError::Absent(name.to_string()))?;
        let is_comm = f.size == 16 && f.decl.starts_with("char ");
        if !matches!(f.size, 1 | 2 | 4 | 8) && !is_comm {
            return Err(FieldError::BadSize {
                name: name.to_string(),
                size: f.size,
            });
        }
        if f.offset + f.size > kvmtrace_common::RAW_BYTES {
            return Err(FieldError::BadOffset {
                name: name.to_string(),
                offset: f.offset,
            });
        }
        let offset = f.offset as u16;
        Ok(FieldSpec {
            offset,
            size: f.size as u8,
            signed: u8::from(f.signed),
        })
    }

    /// Field specs for every slot of `kind`, and the slot fields this kernel lacks.
    pub fn specs_for(&self, kind: Kind) -> ([FieldSpec; NSLOTS], Vec<FieldError>) {
        let mut specs = [FieldSpec::default(); NSLOTS];
        let mut missing = Vec::new();
        for (i, name) in kind.slots().iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            match self.spec_for(name) {
                Ok(spec) if spec.size == 16 && i + 1 >= NSLOTS => {
                    missing.push(FieldError::BadSize {
                        name: name.to_string(),
                        size: 16,
                    })
                }
                Ok(spec) => specs[i] = spec,
                Err(e) => missing.push(e),
            }
        }
        (specs, missing)
    }
}

/// Parses the text of a format file.
pub fn parse(text: &str) -> Result<Format, FormatError> {
    let mut name = None;
    let mut id = None;
    let mut fields = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(rest) = line.strip_prefix("name:") {
            name = Some(rest.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("ID:") {
            id = rest.trim().parse::<u32>().ok();
        } else if line.starts_with("field:") {
            let field = parse_field(line).ok_or_else(|| FormatError::BadField {
                line: idx + 1,
                text: line.to_string(),
            })?;
            if !field.name.starts_with("common_") {
                fields.push(field);
            }
        }
    }
    Ok(Format {
        name: name.ok_or(FormatError::Missing("name"))?,
        id: id.ok_or(FormatError::Missing("ID"))?,
        fields,
    })
}

/// `field:unsigned int vcpu_id;<TAB>offset:8;<TAB>size:4;<TAB>signed:0;`
fn parse_field(line: &str) -> Option<Field> {
    let mut decl = None;
    let mut offset = None;
    let mut size = None;
    let mut signed = false;
    for part in line.split(';') {
        let part = part.trim();
        if let Some(d) = part.strip_prefix("field:") {
            decl = Some(d.trim().to_string());
        } else if let Some(v) = part.strip_prefix("offset:") {
            offset = v.trim().parse().ok();
        } else if let Some(v) = part.strip_prefix("size:") {
            size = v.trim().parse().ok();
        } else if let Some(v) = part.strip_prefix("signed:") {
            signed = v.trim() == "1";
        }
    }
    let decl = decl?;
    // The name is the last word, without any array suffix: `char prev_comm[16]`,
    // `__data_loc char[] name`.
    let last = decl.split_whitespace().last()?;
    let name = last.split('[').next()?.trim_start_matches('*').to_string();
    if name.is_empty() {
        return None;
    }
    Some(Field {
        name,
        decl,
        offset: offset?,
        size: size?,
        signed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> String {
        let p = format!(
            "{}/../tests/fixtures/formats/{path}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    #[test]
    fn kvm_exit_of_this_kernel() {
        let f = parse(&fixture("6.18/kvm_exit.format")).unwrap();
        assert_eq!(f.name, "kvm_exit");
        assert_eq!(f.id, 103);
        assert_eq!(
            f.spec_for("exit_reason").unwrap(),
            FieldSpec {
                offset: 8,
                size: 4,
                signed: 0
            }
        );
        assert_eq!(f.spec_for("vcpu_id").unwrap().offset, 56);
        assert_eq!(f.spec_for("guest_rip").unwrap().size, 8);
        let (specs, missing) = f.specs_for(Kind::KvmExit);
        assert!(missing.is_empty(), "{missing:?}");
        assert_eq!(specs[1].offset, 24, "isa");
        assert_eq!(specs[4].offset, 32, "info1");
        assert!(f.field("common_pid").is_none(), "common fields are dropped");
    }

    #[test]
    fn kvm_exit_of_a_4_19_kernel_has_no_vcpu_id() {
        let f = parse(&fixture("4.19/kvm_exit.format")).unwrap();
        assert_eq!(f.id, 1020);
        let (specs, missing) = f.specs_for(Kind::KvmExit);
        assert_eq!(missing, vec![FieldError::Absent("vcpu_id".into())]);
        assert_eq!(specs[0].offset, 8);
        assert_eq!(specs[2].size, 0, "absent vcpu_id leaves the slot empty");
        assert_eq!(specs[3].offset, 16, "guest_rip");
        let e = parse(&fixture("4.19/kvm_entry.format")).unwrap();
        let (specs, missing) = e.specs_for(Kind::KvmEntry);
        assert_eq!(specs[0].offset, 8);
        assert_eq!(
            missing.len(),
            3,
            "rip, intr_info and immediate_exit came later: {missing:?}"
        );
    }

    #[test]
    fn sched_switch_comm_and_signed_fields() {
        let f = parse(&fixture("6.18/sched_switch.format")).unwrap();
        let (specs, missing) = f.specs_for(Kind::SchedSwitch);
        assert!(missing.is_empty(), "{missing:?}");
        assert_eq!(
            specs[0],
            FieldSpec {
                offset: 24,
                size: 4,
                signed: 1
            }
        );
        assert_eq!(specs[1].size, 8, "prev_state is a long");
        assert_eq!(
            specs[3],
            FieldSpec {
                offset: 40,
                size: 16,
                signed: 0
            },
            "next_comm"
        );
    }

    #[test]
    fn data_loc_strings_are_named_but_not_copied() {
        let f = parse(&fixture("6.18/irq_handler_entry.format")).unwrap();
        assert_eq!(f.field("name").unwrap().size, 4);
        assert!(f.field("name").unwrap().decl.starts_with("__data_loc"));
        let (specs, missing) = f.specs_for(Kind::IrqHandlerEntry);
        assert!(missing.is_empty());
        assert_eq!(specs[0].signed, 1);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(parse(""), Err(FormatError::Missing("name")));
        assert!(matches!(
            parse("name: x\nID: 1\nformat:\n\tfield:int a;\toffset:zz;\n"),
            Err(FormatError::BadField { line: 4, .. })
        ));
        let f = parse(
            "name: x\nID: 1\nformat:\n\tfield:char blob[40];\toffset:8;\tsize:40;\tsigned:0;\n",
        )
        .unwrap();
        assert_eq!(
            f.spec_for("blob"),
            Err(FieldError::BadSize {
                name: "blob".into(),
                size: 40
            })
        );
        assert_eq!(f.spec_for("nope"), Err(FieldError::Absent("nope".into())));
    }
}
