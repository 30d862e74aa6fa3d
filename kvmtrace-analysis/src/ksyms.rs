//! Kernel symbols: `/proc/kallsyms` (modules included) as a sorted table, and the lookup of
//! an instruction pointer to the function it is in. The recorder symbolises stack frames
//! with it and writes the symbols a capture uses into the capture (docs/stacks.md), so the
//! report never needs the recording host's kallsyms.

/// A function's address range and name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sym<'a> {
    pub start: u64,
    /// The next symbol's start (functions are not sized in kallsyms).
    pub end: u64,
    /// `name`, or `name [module]` for a module's symbol.
    pub text: &'a str,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KsymsError {
    #[error("kallsyms lists no text symbol")]
    Empty,
    #[error(
        "kallsyms shows every address as 0: kernel.kptr_restrict hides them (run as root, or \
         set kernel.kptr_restrict=0 or 1)"
    )]
    Hidden,
}

/// How far the last symbol is taken to reach.
const LAST_SYMBOL_SPAN: u64 = 1 << 16;

/// The text symbols of a kernel, sorted by address.
#[derive(Debug, Default)]
pub struct Ksyms {
    /// (start, offset in `names`, length), one per distinct start address.
    entries: Vec<(u64, u32, u32)>,
    names: String,
}

impl Ksyms {
    /// Parses `/proc/kallsyms` text: `ADDRESS TYPE NAME [\t[MODULE]]` per line. Only text
    /// symbols (`t`, `T`, `w`, `W`) are kept; `__pfx_` padding labels are left out (a
    /// return address never points into them); of several names at one address the first
    /// is kept.
    pub fn parse(text: &str) -> Result<Ksyms, KsymsError> {
        let mut raw: Vec<(u64, usize, usize)> = Vec::new();
        let mut names = String::new();
        let mut zeros = 0usize;
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(addr), Some(ty), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            if !matches!(ty, "t" | "T" | "w" | "W") || name.starts_with("__pfx_") {
                continue;
            }
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            if addr == 0 {
                zeros += 1;
                continue;
            }
            let at = names.len();
            names.push_str(name);
            if let Some(module) = it.next() {
                names.push(' ');
                names.push_str(module);
            }
            raw.push((addr, at, names.len() - at));
        }
        if raw.is_empty() {
            return Err(if zeros > 0 {
                KsymsError::Hidden
            } else {
                KsymsError::Empty
            });
        }
        // Stable: of equal addresses the first listed stays first.
        raw.sort_by_key(|e| e.0);
        raw.dedup_by_key(|e| e.0);
        let entries = raw
            .into_iter()
            .map(|(a, at, len)| (a, at as u32, len as u32))
            .collect();
        Ok(Ksyms { entries, names })
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn sym(&self, i: usize) -> Option<Sym<'_>> {
        let &(start, at, len) = self.entries.get(i)?;
        let end = self
            .entries
            .get(i + 1)
            .map_or(start.saturating_add(LAST_SYMBOL_SPAN), |e| e.0);
        let text = self.names.get(at as usize..(at + len) as usize)?;
        Some(Sym { start, end, text })
    }

    /// The function `ip` is in: the symbol with the largest start at or below it.
    pub fn lookup(&self, ip: u64) -> Option<Sym<'_>> {
        let i = self.entries.partition_point(|e| e.0 <= ip).checked_sub(1)?;
        self.sym(i).filter(|s| ip < s.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff81000000 T srso_alias_untrain_ret
ffffffff81000000 T _stext
ffffffff812b2010 T __pfx_kvm_arch_vcpu_ioctl_run
ffffffff812b2020 T kvm_arch_vcpu_ioctl_run
ffffffff812b3000 t vcpu_run
ffffffff81e00000 D some_data
ffffffff812b4000 W weak_fn
ffffffffc0201000 t ftrace_trampoline\t[__builtin__ftrace]
ffffffffc0300000 t vmx_vcpu_run\t[kvm_intel]
";

    #[test]
    fn looks_up_the_function_an_address_is_in() {
        let k = Ksyms::parse(SAMPLE).unwrap();
        assert_eq!(k.len(), 6, "data and __pfx_ left out, one name per address");
        let s = k.lookup(0xffffffff812b2020 + 0x35).unwrap();
        assert_eq!(s.text, "kvm_arch_vcpu_ioctl_run");
        assert_eq!((s.start, s.end), (0xffffffff812b2020, 0xffffffff812b3000));
        assert_eq!(k.lookup(0xffffffff812b3001).unwrap().text, "vcpu_run");
        assert_eq!(
            k.lookup(0xffffffff81000010).unwrap().text,
            "srso_alias_untrain_ret"
        );
        assert_eq!(
            k.lookup(0xffffffffc0300004).unwrap().text,
            "vmx_vcpu_run [kvm_intel]"
        );
        assert_eq!(k.lookup(0x1000), None, "below every symbol");
        assert_eq!(
            k.lookup(0xffffffffc0300000 + (1 << 20)),
            None,
            "past the last"
        );
    }

    #[test]
    fn hidden_addresses_are_named() {
        let hidden = "0000000000000000 T _stext\n0000000000000000 t vcpu_run\n";
        assert_eq!(Ksyms::parse(hidden).unwrap_err(), KsymsError::Hidden);
        assert_eq!(Ksyms::parse("").unwrap_err(), KsymsError::Empty);
    }

    #[test]
    fn parses_this_hosts_kallsyms_when_readable() {
        let Ok(text) = std::fs::read_to_string("/proc/kallsyms") else {
            return;
        };
        // Unprivileged readers see zeros: that is an error, not a table of wrong names.
        match Ksyms::parse(&text) {
            Ok(k) => {
                let s = k.entries[k.len() / 2];
                assert!(k.lookup(s.0).is_some());
            }
            Err(e) => assert_eq!(e, KsymsError::Hidden),
        }
    }
}
