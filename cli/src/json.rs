//! JSON payloads from the command line (`--data`): text, `@file` or `-` for stdin,
//! checked before anything is sent.

use anyhow::{Context, Result};
use serde_json::value::RawValue;
use std::io::Read;

/// Reads and validates a `--data` argument; returns the JSON text as given.
pub fn payload(arg: &str) -> Result<Box<RawValue>> {
    let (text, source) = if arg == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read --data from stdin")?;
        (text, "stdin".to_owned())
    } else if let Some(path) = arg.strip_prefix('@') {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --data file {path:?}"))?;
        (text, format!("file {path:?}"))
    } else {
        (arg.to_owned(), "--data".to_owned())
    };
    RawValue::from_string(text.trim().to_owned())
        .with_context(|| format!("{source} is not valid JSON"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn json_text_is_kept_as_given() {
        assert_eq!(payload(r#" {"a": 1} "#).unwrap().get(), r#"{"a": 1}"#);
    }

    #[test]
    fn bad_json_names_the_flag_and_the_reason() {
        let e = format!("{:#}", payload("{oops").unwrap_err());
        assert!(e.contains("--data is not valid JSON"), "{e}");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn a_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        std::fs::write(&path, "[1,2]\n").unwrap();
        let arg = format!("@{}", path.display());
        assert_eq!(payload(&arg).unwrap().get(), "[1,2]");
        let missing = format!("@{}", dir.path().join("none").display());
        assert!(format!("{:#}", payload(&missing).unwrap_err()).contains("cannot read"));
    }
}
