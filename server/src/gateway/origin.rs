//! The `Origin` allow-list (cross-site WebSocket hijacking protection).
//!
//! Native apps send no `Origin` header. A browser always does, so a request with an
//! `Origin` is only accepted when that origin is on `WS_ALLOWED_ORIGINS`.

/// Whether `origin` matches one of the allowed entries. An entry is an exact origin
/// (compared without regard to ASCII case) or contains one `*` standing for any run of
/// characters that does not cross a `/` (`https://*.example.com`).
pub fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    let origin = origin.to_ascii_lowercase();
    allowed.iter().any(|entry| {
        let entry = entry.to_ascii_lowercase();
        match entry.split_once('*') {
            None => entry == origin,
            Some((prefix, suffix)) => {
                origin.len() >= prefix.len() + suffix.len()
                    && origin.starts_with(prefix)
                    && origin.ends_with(suffix)
                    && !origin[prefix.len()..origin.len() - suffix.len()].contains('/')
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| (*e).to_owned()).collect()
    }

    #[test]
    fn exact_origins_match_without_case() {
        let allowed = list(&["https://app.example.com"]);
        assert!(origin_allowed("https://app.example.com", &allowed));
        assert!(origin_allowed("HTTPS://APP.example.com", &allowed));
        assert!(!origin_allowed(
            "https://app.example.com.evil.net",
            &allowed
        ));
        assert!(!origin_allowed("http://app.example.com", &allowed));
    }

    #[test]
    fn a_wildcard_covers_one_label_run_not_a_path() {
        let allowed = list(&["https://*.example.com"]);
        assert!(origin_allowed("https://a.example.com", &allowed));
        assert!(origin_allowed("https://a.b.example.com", &allowed));
        assert!(!origin_allowed("https://example.com", &allowed));
        assert!(!origin_allowed("https://evil.net/x.example.com", &allowed));
        assert!(!origin_allowed("https://a.example.com.evil.net", &allowed));
    }

    #[test]
    fn an_empty_list_allows_nothing() {
        assert!(!origin_allowed("https://a", &[]));
    }
}
