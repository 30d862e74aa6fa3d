//! `kvmtrace check`.
use std::path::Path;

pub fn run(_root: &Path, _capture: Option<&Path>, _json: bool) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
