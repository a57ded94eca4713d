//! A bound on JSON nesting. A message nested thousands of levels deep is valid JSON, but
//! many backends' parsers (Python's `json`, recursive decoders) fail on it, so one such
//! message stored by a client would break every reader of the page it lands in. Client
//! frames and API bodies deeper than [`MAX_DEPTH`] are refused before they are decoded.

/// Deepest nesting of arrays and objects accepted (the outermost object is level 1).
pub const MAX_DEPTH: usize = 64;

/// Whether `json` nests arrays and objects deeper than `max` levels. Brackets inside
/// strings do not count. The text is not validated: malformed JSON is the decoder's to
/// refuse.
pub fn exceeds(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in json {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The refusal's text.
pub fn refusal() -> String {
    format!("JSON nested deeper than {MAX_DEPTH} levels")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> String {
        format!("{}{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn depth_counts_arrays_and_objects_but_not_strings() {
        assert!(!exceeds(nested(64).as_bytes(), 64));
        assert!(exceeds(nested(65).as_bytes(), 64));
        let object = format!(r#"{{"a":{}}}"#, nested(63));
        assert!(!exceeds(object.as_bytes(), 64));
        let object = format!(r#"{{"a":{}}}"#, nested(64));
        assert!(exceeds(object.as_bytes(), 64));
        let in_string = format!(r#"{{"a":"{}\"{}"}}"#, "[".repeat(500), "{".repeat(500));
        assert!(!exceeds(in_string.as_bytes(), 64));
        // Siblings do not add up.
        let wide = format!("[{}]", vec![nested(60); 100].join(","));
        assert!(!exceeds(wide.as_bytes(), 64));
    }
}
