//! `tether pub user|room|app`: `POST /v1/send/...` with the admin key; prints the
//! gateway's answer.

use crate::args::{PubMessage, PubTarget};
use crate::http::Api;
use crate::json;
use anyhow::Result;
use serde_json::Value;
use std::process::ExitCode;
use tether::protocol::api::{OutgoingMessage, SendToApp, SendToRoom, SendToUser};

/// Publishes and prints the answer as pretty JSON.
pub async fn run(target: PubTarget) -> Result<ExitCode> {
    let answer = match target {
        PubTarget::User { user, message } => {
            let (api, app, outgoing) = prepare(message)?;
            let body = SendToUser {
                user_id: user,
                app,
                message: outgoing,
            };
            api.post("/v1/send/user", &body).await?
        }
        PubTarget::Room { room, message } => {
            let (api, app, outgoing) = prepare(message)?;
            let body = SendToRoom {
                room,
                app,
                message: outgoing,
            };
            api.post("/v1/send/room", &body).await?
        }
        PubTarget::App { message } => {
            let (api, app, outgoing) = prepare(message)?;
            api.post(
                "/v1/send/app",
                &SendToApp {
                    app,
                    message: outgoing,
                },
            )
            .await?
        }
    };
    print_json(&answer);
    Ok(ExitCode::SUCCESS)
}

/// The client, the app and the message, every argument checked before any call.
fn prepare(message: PubMessage) -> Result<(Api, String, OutgoingMessage)> {
    let data = json::payload(&message.data)?;
    let key = Api::admin_key(message.admin.admin_key)?;
    let api = Api::new(&message.admin.server.server, Some(key))?;
    let outgoing = OutgoingMessage {
        kind: message.kind,
        id: message.id,
        data: Some(data),
    };
    Ok((api, message.app, outgoing))
}

/// Pretty JSON on stdout.
pub fn print_json(value: &Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(_) => println!("{value}"),
    }
}
