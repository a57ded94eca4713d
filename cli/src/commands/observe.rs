//! `tether stats` (`GET /v1/stats`) and `tether health` (`GET /health`).

use super::publish::print_json;
use crate::args::{AdminArgs, ServerArgs};
use crate::http::{http_error, Api};
use anyhow::{bail, Result};
use serde_json::Value;
use std::process::ExitCode;

/// Prints the gateway's counters.
pub async fn stats(args: AdminArgs) -> Result<ExitCode> {
    let key = Api::admin_key(args.admin_key)?;
    let api = Api::new(&args.server.server, Some(key))?;
    print_json(&api.get_ok("/v1/stats").await?);
    Ok(ExitCode::SUCCESS)
}

/// Prints the health document; success only for `200` with `"status": "healthy"`.
pub async fn health(args: ServerArgs) -> Result<ExitCode> {
    let api = Api::new(&args.server, None)?;
    let answer = api.get("/health").await?;
    let status = answer.body.get("status").and_then(Value::as_str);
    let Some(status) = status else {
        let url = args.server.join("/health").unwrap_or(args.server);
        bail!("{} (is this a Tether gateway?)", http_error(&url, &answer));
    };
    print_json(&answer.body);
    if answer.status.is_success() && status == "healthy" {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("the gateway is {status} (HTTP {})", answer.status.as_u16());
        Ok(ExitCode::FAILURE)
    }
}
