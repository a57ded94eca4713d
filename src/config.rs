//! The client's configuration: the [`ClientConfig`] record the host app fills in, and the
//! validated [`Settings`] the engine runs on (durations instead of raw milliseconds, a
//! parsed URL), so a bad config fails in the constructor and never later.

use crate::error::Error;
use std::time::Duration;
use tether_protocol::names;
use url::Url;

/// The gateway's default de-duplication window (`WS_DEDUP_TTL`, 7 days): a message older
/// than this could be stored twice if resent, so the SDK never keeps one longer.
pub const MAX_MESSAGE_AGE_S: u64 = 604_800;

/// Everything a client needs to run. Defaults are the values of the SDK surface doc.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ClientConfig {
    /// `wss://host/ws` (or `ws://` for local development and tests).
    pub url: String,
    /// The app name, e.g. `shoofi-app`; must be one of the token's `apps`.
    pub app: String,
    /// Stable per install; the app stores it. 1-128 chars of `[A-Za-z0-9._:-]`.
    pub device_id: String,
    /// Directory of the on-disk database (created when missing). One client per directory.
    pub storage_dir: String,
    /// How long one connection attempt (DNS, TCP, TLS, upgrade) may take.
    #[uniffi(default = 10000)]
    pub connect_timeout_ms: u64,
    /// First reconnect delay ceiling; doubles per failed attempt.
    #[uniffi(default = 500)]
    pub backoff_base_ms: u64,
    /// Largest reconnect delay ceiling.
    #[uniffi(default = 30000)]
    pub backoff_cap_ms: u64,
    /// In the background, how long to stay connected before a clean disconnect.
    #[uniffi(default = 30000)]
    pub background_grace_ms: u64,
    /// How long an authenticated session must stay up before the backoff starts over.
    #[uniffi(default = 30000)]
    pub backoff_reset_after_ms: u64,
    /// Most messages kept in the outbound queue.
    #[uniffi(default = 1000)]
    pub max_queued_messages: u32,
    /// Most bytes kept in the outbound queue.
    #[uniffi(default = 8388608)]
    pub max_queued_bytes: u64,
    /// Largest encoded frame the SDK sends; keep it at or below the gateway's
    /// `WS_MAX_MESSAGE_BYTES` (a larger frame would be refused forever).
    #[uniffi(default = 65536)]
    pub max_message_bytes: u32,
    /// Messages older than this are dropped (reported by `on_expired`) instead of sent;
    /// at most the gateway's de-duplication window (7 days).
    #[uniffi(default = 604800)]
    pub max_message_age_s: u64,
    /// PEM of the only root CA to trust instead of the platform's trust store (private
    /// deployments, tests). `None`: the platform verifier on Android/iOS, Mozilla's roots
    /// elsewhere.
    #[uniffi(default = None)]
    pub tls_root_ca_pem: Option<String>,
    /// Other addresses of the same gateway cluster (another load balancer, DNS name or
    /// zone; the same Redis behind them), tried in order after an attempt at the current
    /// one fails in a way another address could fix (network, timeout, a refusal that is
    /// not about the client: 5xx, 404, 421). The SDK goes back to `url` at the first attempt
    /// 10 minutes after it left it, when the network returns and on foreground. Same rules
    /// as `url`; no repeats, and not `url` itself.
    #[uniffi(default = [])]
    pub fallback_urls: Vec<String>,
}

impl ClientConfig {
    /// A config with the four required fields and every default.
    pub fn new(
        url: impl Into<String>,
        app: impl Into<String>,
        device_id: impl Into<String>,
        storage_dir: impl Into<String>,
    ) -> Self {
        ClientConfig {
            url: url.into(),
            app: app.into(),
            device_id: device_id.into(),
            storage_dir: storage_dir.into(),
            connect_timeout_ms: 10_000,
            backoff_base_ms: 500,
            backoff_cap_ms: 30_000,
            background_grace_ms: 30_000,
            backoff_reset_after_ms: 30_000,
            max_queued_messages: 1_000,
            max_queued_bytes: 8 * 1024 * 1024,
            max_message_bytes: 65_536,
            max_message_age_s: MAX_MESSAGE_AGE_S,
            tls_root_ca_pem: None,
            fallback_urls: Vec::new(),
        }
    }
}

/// A validated config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The gateway URL without query (the transport adds `app`, `device`, `since`).
    pub url: Url,
    /// The fallback addresses, checked like `url`, in the app's order.
    pub fallback_urls: Vec<Url>,
    /// App name.
    pub app: String,
    /// Device id.
    pub device_id: String,
    /// Database directory.
    pub storage_dir: std::path::PathBuf,
    /// Per-attempt connect timeout.
    pub connect_timeout: Duration,
    /// Backoff base.
    pub backoff_base: Duration,
    /// Backoff cap.
    pub backoff_cap: Duration,
    /// Background grace period.
    pub background_grace: Duration,
    /// Session age that resets the backoff.
    pub backoff_reset_after: Duration,
    /// Queue count limit.
    pub max_queued_messages: u32,
    /// Queue byte limit.
    pub max_queued_bytes: u64,
    /// Frame size limit.
    pub max_message_bytes: usize,
    /// Message expiry.
    pub max_message_age: Duration,
    /// Custom root CA.
    pub tls_root_ca_pem: Option<String>,
}

/// Most fallback addresses: each failed one costs an attempt and a backoff step.
pub const MAX_FALLBACK_URLS: usize = 8;

/// Checks a gateway address (`name` says which field in errors): ws or wss, a host, the
/// `/ws` path when none is given, no query or fragment.
fn gateway_url(name: &str, text: &str) -> Result<Url, Error> {
    let mut url = Url::parse(text)
        .map_err(|e| Error::Config(format!("{name} {text:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "ws" | "wss") {
        return Err(Error::Config(format!(
            "{name} must start with wss:// (or ws:// for local tests), got {}://",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::Config(format!("{name} has no host")));
    }
    if url.path().is_empty() || url.path() == "/" {
        url.set_path(tether_protocol::WS_PATH);
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

fn positive(name: &str, value: u64) -> Result<Duration, Error> {
    if value == 0 {
        return Err(Error::Config(format!("{name} must be above 0")));
    }
    Ok(Duration::from_millis(value))
}

impl Settings {
    /// Checks every rule; the error names the field and the rule.
    pub fn from_config(config: &ClientConfig) -> Result<Settings, Error> {
        let url = gateway_url("url", &config.url)?;
        let fallback_urls = config
            .fallback_urls
            .iter()
            .enumerate()
            .map(|(i, text)| gateway_url(&format!("fallback_urls[{i}]"), text))
            .collect::<Result<Vec<Url>, Error>>()?;
        if fallback_urls.len() > MAX_FALLBACK_URLS {
            return Err(Error::Config(format!(
                "fallback_urls holds {} addresses, at most {MAX_FALLBACK_URLS}",
                fallback_urls.len()
            )));
        }
        for (i, fallback) in fallback_urls.iter().enumerate() {
            // A repeated address would spend an attempt and a backoff step on a host
            // that just failed.
            if *fallback == url {
                return Err(Error::Config(format!(
                    "fallback_urls[{i}] is the same address as url"
                )));
            }
            if let Some(j) = fallback_urls[..i].iter().position(|f| f == fallback) {
                return Err(Error::Config(format!(
                    "fallback_urls[{i}] repeats fallback_urls[{j}]"
                )));
            }
        }
        names::validate_app(&config.app).map_err(|e| Error::Config(e.to_string()))?;
        names::validate_device(&config.device_id).map_err(|e| Error::Config(e.to_string()))?;
        if config.storage_dir.trim().is_empty() {
            return Err(Error::Config("storage_dir must name a directory".into()));
        }
        let backoff_base = positive("backoff_base_ms", config.backoff_base_ms)?;
        let backoff_cap = positive("backoff_cap_ms", config.backoff_cap_ms)?;
        if backoff_cap < backoff_base {
            return Err(Error::Config(
                "backoff_cap_ms must be at least backoff_base_ms".into(),
            ));
        }
        if config.max_queued_messages == 0 || config.max_queued_bytes == 0 {
            return Err(Error::Config(
                "max_queued_messages and max_queued_bytes must be above 0".into(),
            ));
        }
        if config.max_message_bytes < 256 {
            return Err(Error::Config(
                "max_message_bytes must be at least 256".into(),
            ));
        }
        if config.max_message_age_s == 0 || config.max_message_age_s > MAX_MESSAGE_AGE_S {
            return Err(Error::Config(format!(
                "max_message_age_s must be 1..={MAX_MESSAGE_AGE_S} (the gateway's de-duplication window)"
            )));
        }
        Ok(Settings {
            url,
            fallback_urls,
            app: config.app.clone(),
            device_id: config.device_id.clone(),
            storage_dir: config.storage_dir.clone().into(),
            connect_timeout: positive("connect_timeout_ms", config.connect_timeout_ms)?,
            backoff_base,
            backoff_cap,
            background_grace: Duration::from_millis(config.background_grace_ms),
            backoff_reset_after: Duration::from_millis(config.backoff_reset_after_ms),
            max_queued_messages: config.max_queued_messages,
            max_queued_bytes: config.max_queued_bytes,
            max_message_bytes: config.max_message_bytes as usize,
            max_message_age: Duration::from_secs(config.max_message_age_s),
            tls_root_ca_pem: config.tls_root_ca_pem.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClientConfig {
        ClientConfig::new("wss://gw.example/ws", "shoofi-app", "ios:ABC-1", "/tmp/x")
    }

    #[test]
    fn a_good_config_validates_and_keeps_the_path() {
        let s = Settings::from_config(&config()).unwrap();
        assert_eq!(s.url.as_str(), "wss://gw.example/ws");
        assert_eq!(s.backoff_cap, Duration::from_secs(30));
    }

    #[test]
    fn a_bare_host_gets_the_ws_path() {
        let mut c = config();
        c.url = "ws://127.0.0.1:9000".into();
        assert_eq!(
            Settings::from_config(&c).unwrap().url.as_str(),
            "ws://127.0.0.1:9000/ws"
        );
    }

    type Breaker = fn(&mut ClientConfig);

    #[test]
    fn bad_configs_name_the_field() {
        let cases: Vec<(Breaker, &str)> = vec![
            (|c| c.url = "https://x/ws".into(), "wss://"),
            (|c| c.url = "not a url".into(), "not a URL"),
            (|c| c.app = "bad app".into(), "app"),
            (|c| c.device_id = String::new(), "device"),
            (|c| c.storage_dir = " ".into(), "storage_dir"),
            (|c| c.backoff_cap_ms = 10, "backoff_cap_ms"),
            (|c| c.backoff_base_ms = 0, "backoff_base_ms"),
            (|c| c.connect_timeout_ms = 0, "connect_timeout_ms"),
            (|c| c.max_queued_messages = 0, "max_queued_messages"),
            (
                |c| c.max_message_age_s = MAX_MESSAGE_AGE_S + 1,
                "max_message_age_s",
            ),
            (|c| c.max_message_bytes = 10, "max_message_bytes"),
            (
                |c| c.fallback_urls = vec!["wss://ok/ws".into(), "http://x".into()],
                "fallback_urls[1] must start with wss://",
            ),
            (
                |c| c.fallback_urls = vec!["wss://".into()],
                "fallback_urls[0]",
            ),
            (
                |c| c.fallback_urls = vec!["wss://x/ws".into(); MAX_FALLBACK_URLS + 1],
                "at most 8",
            ),
            (
                |c| c.fallback_urls = vec!["wss://b/ws".into(), "wss://b/ws".into()],
                "fallback_urls[1] repeats fallback_urls[0]",
            ),
            (
                |c| c.fallback_urls = vec!["wss://gw.example/ws".into()],
                "fallback_urls[0] is the same address as url",
            ),
        ];
        for (breaks, field) in cases {
            let mut c = config();
            breaks(&mut c);
            let e = Settings::from_config(&c).unwrap_err();
            assert!(matches!(e, Error::Config(_)));
            assert!(e.to_string().contains(field), "{e} should name {field}");
        }
    }
}
