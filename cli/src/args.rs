//! The command line: every subcommand, its flags, their environment variables and help.

use crate::duration;
use clap::{ArgAction, Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

const EXAMPLES: &str = "\
Examples (a local gateway; the CLI reads the gateway's own JWT_SECRET and ADMIN_API_KEY):
  export JWT_SECRET=$(openssl rand -hex 32) ADMIN_API_KEY=dev-admin-key-0123456789
  cargo run -p tether-server -- --dev &
  TOKEN=$(tether token --user alice --app demo --ttl 1h)
  tether listen --app demo --token \"$TOKEN\" --room lobby
  tether pub user --user alice --app demo --type notification --data '{\"text\":\"hi\"}'
  tether send --app demo --token \"$TOKEN\" --type chat --data '{\"text\":\"hello\"}'
  tether stats
  tether health
The token the --dev banner prints (user dev-user, app demo) works with --token as well.";

/// Command line of the Tether gateway and SDK.
#[derive(Debug, Parser)]
#[command(
    name = "tether",
    version,
    about = "Command line of the Tether gateway and SDK",
    long_about = "Command line of the Tether gateway and SDK.\n\n\
        `token` mints a development token; `listen` and `send` connect through the SDK core \
        exactly as a phone does (durable queue, acks, reconnects); `pub` publishes through \
        the gateway's HTTP API; `stats` and `health` read it.\n\n\
        Results go to stdout (one JSON document or line each), progress and errors to \
        stderr. Exit code 0: it worked; 1: it failed (the reason is on stderr); 2: bad usage.",
    after_help = EXAMPLES
)]
pub struct Cli {
    /// More logs on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mint an HS256 client token with the claims the gateway checks (development, tests).
    #[command(after_help = "\
Examples:
  tether token --user alice --app demo --secret \"$JWT_SECRET\"
  tether token --user bob --app demo,admin-app --rooms 'order:*,lobby' --ttl 30m --type partner
  TOKEN=$(JWT_SECRET=... tether token --user alice --app demo)")]
    Token(TokenArgs),
    /// Connect through the SDK and print every message as one JSON line.
    #[command(after_help = "\
Messages go to stdout, one JSON object per line:
  {\"type\":\"notification\",\"id\":\"...\",\"seq\":3,\"room\":null,\"data\":{...},\"ts\":1732500000000}
Connection status changes and errors go to stderr. Runs until Ctrl-C (or SIGTERM), or until
--count messages were printed. After the first connection the SDK reconnects on its own;
a refused token (it expired) or a kick ends the command with exit code 1.

Messages to the user are durable: a new device (the default: a new id per run) first gets
those no device of the user has acknowledged yet; with --device and --data-dir a later
run resumes where that device left off. Room and app messages are live only.

Examples:
  tether listen --app demo --token \"$TOKEN\"
  tether listen --app demo --token \"$TOKEN\" --room lobby --room order:42 --count 1
  tether listen --url wss://gw.example.com/ws --app demo --token \"$TOKEN\" --device laptop --data-dir ~/.tether")]
    Listen(ListenArgs),
    /// Send an app message through the SDK's durable queue and wait for the gateway's ack.
    #[command(after_help = "\
Prints the message id on stdout once the gateway acknowledged (stored) the message; the
backend reads it with GET /v1/inbound. Without --data-dir the queue lives in a temporary
directory, so a message not acknowledged before --timeout is dropped; with --data-dir it
stays queued and goes out on the next run with the same directory. Messages to the user
that arrive while it is connected are acknowledged as any client would, not printed.

Examples:
  tether send --app demo --token \"$TOKEN\" --type chat --data '{\"text\":\"hello\"}'
  tether send --app demo --token \"$TOKEN\" --type upload --data @payload.json --timeout 30s")]
    Send(SendArgs),
    /// Publish a message to a user, a room or an app through the HTTP API (/v1/send/...).
    #[command(name = "pub")]
    Pub(PubArgs),
    /// Print the gateway's counters (GET /v1/stats, admin key required).
    #[command(after_help = "\
Examples:
  tether stats --admin-key \"$ADMIN_API_KEY\"
  TETHER_URL=https://gw.example.com tether stats")]
    Stats(AdminArgs),
    /// Print the gateway's health (GET /health); exit code 1 when it is unhealthy.
    #[command(after_help = "\
Examples:
  tether health
  tether health --server https://gw.example.com && echo up")]
    Health(ServerArgs),
}

/// Where the gateway's HTTP side is.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Base URL of the gateway (http:// or https://); the WebSocket URL is derived from it.
    #[arg(
        long,
        env = "TETHER_URL",
        default_value = "http://127.0.0.1:8080",
        value_parser = parse_http_url
    )]
    pub server: Url,
}

/// The HTTP API with its admin key.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The gateway's admin API key (its ADMIN_API_KEY); read from TETHER_ADMIN_KEY, else
    /// ADMIN_API_KEY.
    #[arg(long, env = "TETHER_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
}

/// How `listen` and `send` connect through the SDK.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// WebSocket URL of the gateway (ws:// or wss://); default: --server with ws(s):// and /ws.
    #[arg(long, env = "TETHER_WS_URL")]
    pub url: Option<String>,
    /// App to connect to (one of the token's `apps`).
    #[arg(long, env = "TETHER_APP")]
    pub app: String,
    /// Client token (JWT), e.g. from `tether token`.
    #[arg(long, env = "TETHER_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Device id ([A-Za-z0-9._:-], 1-128); default: a new `cli-...` id per run. The same
    /// device connected twice replaces its older connection.
    #[arg(long)]
    pub device: Option<String>,
    /// Directory of the SDK's database (queue and inbox cursor), kept between runs;
    /// default: a temporary directory removed at exit.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// `tether token`
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// User id (the `sub` claim).
    #[arg(long)]
    pub user: String,
    /// App(s) the token grants (the `apps` claim); repeat or separate with commas.
    #[arg(long, required = true, value_delimiter = ',')]
    pub app: Vec<String>,
    /// Room patterns the user may join (`rooms` claim; `*` as a trailing wildcard);
    /// default: any room.
    #[arg(long, value_delimiter = ',')]
    pub rooms: Option<Vec<String>>,
    /// Lifetime: 90s, 30m, 1h, 7d (a bare number is seconds).
    #[arg(long, default_value = "1h", value_parser = duration::parse)]
    pub ttl: Duration,
    /// User type (`type` claim: customer, admin, partner, ...); default: none (customer).
    #[arg(long = "type", value_name = "TYPE")]
    pub user_type: Option<String>,
    /// Issuer (`iss` claim), for a gateway with JWT_ISSUER set.
    #[arg(long)]
    pub issuer: Option<String>,
    /// Audience (`aud` claim), for a gateway with JWT_AUDIENCE set.
    #[arg(long)]
    pub audience: Option<String>,
    /// The gateway's HS256 secret (its JWT_SECRET).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub secret: String,
}

/// `tether listen`
#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Room to join (kept across reconnects); repeat or separate with commas.
    #[arg(long, value_delimiter = ',')]
    pub room: Vec<String>,
    /// Stop after printing this many messages (messages arriving after it are not printed).
    #[arg(long)]
    pub count: Option<u64>,
    /// Give up when the first connection is not up within this time (0: keep trying).
    #[arg(long, default_value = "10s", value_parser = duration::parse)]
    pub connect_timeout: Duration,
}

/// `tether send`
#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Message type ([a-z0-9_.:-], 1-64, not a reserved type).
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: String,
    /// Payload: JSON text, `@file` to read a file, `-` to read stdin.
    #[arg(long, default_value = "{}")]
    pub data: String,
    /// How long to wait for the gateway's ack (connecting included).
    #[arg(long, default_value = "10s", value_parser = duration::parse)]
    pub timeout: Duration,
}

/// `tether pub`
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Examples:
  tether pub user --user alice --app demo --type notification --data '{\"text\":\"hi\"}'
  tether pub room --room lobby --app demo --type chat --data '{\"text\":\"hello room\"}'
  tether pub app --app demo --type maintenance_notice --data '{\"at\":\"02:00\"}'")]
pub struct PubArgs {
    /// Who receives it.
    #[command(subcommand)]
    pub target: PubTarget,
}

/// The audience of a published message.
#[derive(Debug, Clone, Subcommand)]
pub enum PubTarget {
    /// To one user: durable (kept in the user's inbox, replayed on reconnect). Prints
    /// {"id","seq","delivered","queued"}.
    User {
        /// User id (the token's `sub`).
        #[arg(long)]
        user: String,
        #[command(flatten)]
        message: PubMessage,
    },
    /// To the members of a room: live only, or kept in the room's history when the
    /// gateway keeps one (WS_ROOM_HISTORY). Prints {"id","delivered"}, with
    /// "offset","epoch" for a room with history.
    Room {
        /// Room name.
        #[arg(long)]
        room: String,
        #[command(flatten)]
        message: PubMessage,
    },
    /// To every connection of the app: live only, or kept when the gateway keeps the
    /// app's broadcasts (WS_APP_HISTORY_SIZE). Prints {"id"}, with "offset","epoch"
    /// then.
    App {
        #[command(flatten)]
        message: PubMessage,
    },
}

/// What `pub` sends, and where.
#[derive(Debug, Clone, Args)]
pub struct PubMessage {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// App.
    #[arg(long, env = "TETHER_APP")]
    pub app: String,
    /// Message type ([a-z0-9_.:-], 1-64, not a reserved type).
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: String,
    /// Payload: JSON text, `@file` to read a file, `-` to read stdin.
    #[arg(long, default_value = "{}")]
    pub data: String,
    /// Message id of your own (default: the gateway makes one).
    #[arg(long)]
    pub id: Option<String>,
}

fn parse_http_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(url),
        "http" | "https" => Err(format!("{text:?} has no host")),
        other => Err(format!(
            "{text:?} must start with http:// or https:// (got {other}://); \
             use --url for a ws:// or wss:// URL"
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn server_urls_must_be_http() {
        assert!(parse_http_url("http://127.0.0.1:8080").is_ok());
        assert!(parse_http_url("https://gw.example.com").is_ok());
        assert!(parse_http_url("ws://x").unwrap_err().contains("--url"));
        assert!(parse_http_url("nope").unwrap_err().contains("not a URL"));
    }
}
