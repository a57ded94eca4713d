//! The gateway's HTTP side: one client with the base URL and, for `/v1`, the admin key.
//! Failures become one line a person can act on: `cannot reach http://...: connection
//! refused`, or the server's own error code and message.

use anyhow::{anyhow, bail, Context, Result};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;
use url::Url;

/// How long one HTTP call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A JSON answer, whatever its status.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Body (`null` when empty).
    pub body: Value,
}

/// Client of one gateway.
#[derive(Debug)]
pub struct Api {
    base: Url,
    admin_key: Option<String>,
    http: reqwest::Client,
}

impl Api {
    /// A client of the gateway at `base`; `admin_key` for `/v1` calls.
    pub fn new(base: &Url, admin_key: Option<String>) -> Result<Api> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .user_agent(concat!("tether-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Api {
            base: base.clone(),
            admin_key,
            http,
        })
    }

    /// The admin key from the flag, `TETHER_ADMIN_KEY` (clap reads both), or the
    /// gateway's own variable `ADMIN_API_KEY`.
    pub fn admin_key(flag: Option<String>) -> Result<String> {
        flag.or_else(|| std::env::var("ADMIN_API_KEY").ok())
            .filter(|k| !k.trim().is_empty())
            .ok_or_else(|| {
                anyhow!(
                    "no admin key: pass --admin-key or set TETHER_ADMIN_KEY \
                     (the gateway's ADMIN_API_KEY)"
                )
            })
    }

    /// `GET path`, any status.
    pub async fn get(&self, path: &str) -> Result<Answer> {
        self.call(Method::GET, path, None::<&()>).await
    }

    /// `POST path` with a JSON body; a non-2xx answer is an error carrying the server's
    /// code and message.
    pub async fn post<T: Serialize>(&self, path: &str, body: &T) -> Result<Value> {
        let url = self.url(path)?;
        let answer = self.call(Method::POST, path, Some(body)).await?;
        ok_body(&url, answer)
    }

    /// `GET path`, a non-2xx answer being an error.
    pub async fn get_ok(&self, path: &str) -> Result<Value> {
        let url = self.url(path)?;
        let answer = self.get(path).await?;
        ok_body(&url, answer)
    }

    /// `path` under the base URL's own path (a gateway behind `https://host/tether/`).
    fn url(&self, path: &str) -> Result<Url> {
        let mut url = self.base.clone();
        let full = format!("{}{path}", self.base.path().trim_end_matches('/'));
        url.set_path(&full);
        url.set_query(None);
        url.set_fragment(None);
        Ok(url)
    }

    async fn call<T: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&T>,
    ) -> Result<Answer> {
        let url = self.url(path)?;
        let mut request = self.http.request(method.clone(), url.clone());
        if let Some(key) = &self.admin_key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        tracing::debug!(%method, %url, "calling the gateway");
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(&url, &e))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| transport_error(&url, &e))?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Answer { status, body })
    }
}

/// The body of a 2xx answer, or an error naming the server's code and message.
fn ok_body(url: &Url, answer: Answer) -> Result<Value> {
    if answer.status.is_success() {
        return Ok(answer.body);
    }
    bail!("{}", http_error(url, &answer))
}

/// `POST http://…/v1/send/user: HTTP 401 unauthorized: wrong API key`.
pub fn http_error(url: &Url, answer: &Answer) -> String {
    let status = answer.status.as_u16();
    let error = &answer.body["error"];
    match (error["code"].as_str(), error["message"].as_str()) {
        (Some(code), Some(message)) => format!("{url}: HTTP {status} {code}: {message}"),
        _ => {
            let text = match &answer.body {
                Value::String(s) => s.chars().take(200).collect(),
                Value::Null => answer
                    .status
                    .canonical_reason()
                    .unwrap_or("no body")
                    .to_owned(),
                other => other.to_string(),
            };
            format!("{url}: HTTP {status}: {text}")
        }
    }
}

/// `cannot reach http://127.0.0.1:1/health: connection refused`.
fn transport_error(url: &Url, e: &reqwest::Error) -> anyhow::Error {
    if e.is_timeout() {
        return anyhow!("no answer from {url} within {}s", CALL_TIMEOUT.as_secs());
    }
    anyhow!("cannot reach {url}: {}", root_cause(e))
}

/// The innermost cause, which names the real problem (`connection refused`, DNS).
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if let Some(io) = cause.downcast_ref::<std::io::Error>() {
        match io.kind() {
            std::io::ErrorKind::ConnectionRefused => return "connection refused".into(),
            std::io::ErrorKind::ConnectionReset => return "connection reset".into(),
            _ => {}
        }
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn url() -> Url {
        Url::parse("http://127.0.0.1:8080/v1/stats").unwrap()
    }

    #[test]
    fn the_servers_error_body_is_shown() {
        let answer = Answer {
            status: StatusCode::UNAUTHORIZED,
            body: json!({"error": {"code": "unauthorized", "message": "wrong API key"}}),
        };
        assert_eq!(
            http_error(&url(), &answer),
            "http://127.0.0.1:8080/v1/stats: HTTP 401 unauthorized: wrong API key"
        );
    }

    #[test]
    fn other_bodies_are_shown_shortened() {
        let answer = Answer {
            status: StatusCode::BAD_GATEWAY,
            body: Value::String("x".repeat(500)),
        };
        let text = http_error(&url(), &answer);
        assert!(text.contains("HTTP 502: xxx"), "{text}");
        assert!(text.len() < 300);
        let empty = Answer {
            status: StatusCode::NOT_FOUND,
            body: Value::Null,
        };
        assert!(http_error(&url(), &empty).ends_with("HTTP 404: Not Found"));
    }

    #[test]
    fn paths_go_under_the_base_path() {
        let api = Api::new(&Url::parse("https://gw.example.com/tether/").unwrap(), None).unwrap();
        assert_eq!(
            api.url("/v1/stats").unwrap().as_str(),
            "https://gw.example.com/tether/v1/stats"
        );
        let api = Api::new(&Url::parse("http://127.0.0.1:8080").unwrap(), None).unwrap();
        assert_eq!(
            api.url("/health").unwrap().as_str(),
            "http://127.0.0.1:8080/health"
        );
    }

    #[test]
    fn a_missing_admin_key_says_where_to_put_it() {
        if std::env::var("ADMIN_API_KEY").is_err() {
            let e = Api::admin_key(None).unwrap_err().to_string();
            assert!(
                e.contains("--admin-key") && e.contains("TETHER_ADMIN_KEY"),
                "{e}"
            );
        }
        assert_eq!(Api::admin_key(Some("k".into())).unwrap(), "k");
    }
}
