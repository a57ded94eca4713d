//! The connection state machine, pure: `handle(event)` moves the state and returns the
//! actions the engine must carry out (open a socket, arm a timer, report an error). It does
//! no I/O and reads no clock; the only randomness is the backoff jitter, from a seeded RNG,
//! so every transition is reproducible in tests.

use super::backoff::Backoff;
use crate::error::ErrorKind;
use crate::lifecycle::AppState;
use rand::{rngs::SmallRng, SeedableRng};
use std::time::Duration;
use tether_protocol::close::{self, CloseCode, ReconnectAdvice};

/// The connection's state as the app sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum ConnectionStatus {
    /// Created; `connect()` not called yet.
    Idle,
    /// Getting a token, opening the socket, waiting for `connection_established`.
    Connecting,
    /// Authenticated and live.
    Connected,
    /// Waiting `retry_in_ms` before attempt number `attempt`.
    Reconnecting {
        /// Consecutive failed attempts so far (1 for the first retry).
        attempt: u32,
        /// The delay chosen before the next attempt.
        retry_in_ms: u64,
    },
    /// The OS reports no network; nothing is tried until it returns.
    WaitingForNetwork,
    /// In the background past the grace period: disconnected cleanly, queue kept.
    Suspended,
    /// Disconnected on purpose (the app asked, or the gateway said to stay away).
    Disconnected,
    /// Stopped for a reason retrying cannot fix (signed out, app refused); `connect()`
    /// starts over.
    Failed {
        /// Why, for humans.
        reason: String,
    },
}

impl ConnectionStatus {
    /// Whether the SDK is trying to be connected right now.
    fn is_active(&self) -> bool {
        matches!(
            self,
            ConnectionStatus::Connecting
                | ConnectionStatus::Connected
                | ConnectionStatus::Reconnecting { .. }
                | ConnectionStatus::WaitingForNetwork
        )
    }

    /// Whether a socket or an attempt may be open.
    fn has_socket(&self) -> bool {
        matches!(
            self,
            ConnectionStatus::Connecting | ConnectionStatus::Connected
        )
    }
}

/// Why an attempt failed before the socket was up, sorted by what to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// HTTP 401: get a fresh token, then retry.
    Unauthorized(String),
    /// Retrying cannot help (400 invalid params, 403 origin or app).
    Fatal(String),
    /// Network, timeout, 429, 503: retry with backoff, waiting at least `retry_after`.
    Retryable {
        /// For humans.
        reason: String,
        /// The gateway's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The app called `connect()`.
    ConnectRequested,
    /// The app called `disconnect()`.
    DisconnectRequested,
    /// The app called `reconnect()`.
    ReconnectRequested,
    /// The OS reported the network.
    NetworkChanged {
        /// Any usable path.
        available: bool,
    },
    /// The app moved to the foreground or the background.
    AppStateChanged(AppState),
    /// The background grace period ran out.
    GraceElapsed,
    /// The token provider gave a token.
    TokenReady,
    /// The token provider gave none: the user is signed out.
    SignedOut,
    /// The token provider failed (threw, timed out).
    TokenFailed(String),
    /// `connection_established` arrived.
    Established,
    /// The attempt failed before `connection_established`.
    ConnectFailed(ConnectFailure),
    /// The gateway closed the socket with this code.
    Closed(CloseCode),
    /// The socket died without a close frame, or the heartbeat declared it dead.
    Lost(String),
    /// The retry delay ran out.
    RetryElapsed,
    /// The session has stayed up long enough to trust the network again.
    StableElapsed,
    /// The client is shutting down.
    Shutdown,
}

/// Something the engine must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask the token provider (single-flight) and answer with `TokenReady` / `SignedOut`.
    FetchToken,
    /// Open the socket with the token just fetched.
    OpenSocket,
    /// Close the socket with this code, or abandon the attempt in progress.
    CloseSocket(CloseCode),
    /// Fire `RetryElapsed` after this delay (replacing any earlier retry timer).
    ScheduleRetry(Duration),
    /// Forget the retry timer.
    CancelRetry,
    /// Fire `GraceElapsed` after this delay.
    StartGrace(Duration),
    /// Forget the grace timer.
    CancelGrace,
    /// Fire `StableElapsed` after this delay.
    StartStable(Duration),
    /// The session is live: re-join rooms, flush the queue, start the heartbeat.
    SessionStarted,
    /// The socket may be dead without anyone knowing (app resumed, network path changed):
    /// ping now and expect an answer soon.
    Probe,
    /// Tell the app.
    ReportError(ErrorKind, String),
    /// Stop the engine.
    Stop,
}

/// Timings the machine needs.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// Reconnect backoff.
    pub backoff: Backoff,
    /// Background grace period.
    pub background_grace: Duration,
    /// Session age that resets the backoff.
    pub backoff_reset_after: Duration,
}

/// The state machine.
#[derive(Debug, Clone)]
pub struct Machine {
    status: ConnectionStatus,
    /// The app wants a connection (`connect()` without a later `disconnect()`).
    wanted: bool,
    network_available: bool,
    foreground: bool,
    /// Consecutive failed attempts; reset only after a session stayed up.
    attempt: u32,
    /// Consecutive 401s: the first gets a fresh token at once, later ones back off.
    auth_failures: u32,
    timings: Timings,
    rng: SmallRng,
}

impl Machine {
    /// A machine in `Idle`, network assumed up and app in the foreground until told otherwise.
    pub fn new(timings: Timings, seed: u64) -> Self {
        Machine {
            status: ConnectionStatus::Idle,
            wanted: false,
            network_available: true,
            foreground: true,
            attempt: 0,
            auth_failures: 0,
            timings,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// The current state.
    pub fn status(&self) -> &ConnectionStatus {
        &self.status
    }

    /// Consecutive failed attempts.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether the app wants to be connected.
    pub fn wanted(&self) -> bool {
        self.wanted
    }

    /// Applies one event; returns what to do, in order.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::ConnectRequested => {
                self.wanted = true;
                match self.status {
                    ConnectionStatus::Idle
                    | ConnectionStatus::Disconnected
                    | ConnectionStatus::Failed { .. }
                    | ConnectionStatus::Suspended => {
                        self.attempt = 0;
                        self.auth_failures = 0;
                        self.connect_now(&mut out);
                        if !self.foreground {
                            out.push(Action::StartGrace(self.timings.background_grace));
                        }
                    }
                    // Already on it: connect() is idempotent.
                    _ => {}
                }
            }
            Event::DisconnectRequested => {
                self.wanted = false;
                self.attempt = 0;
                out.extend([
                    Action::CancelRetry,
                    Action::CancelGrace,
                    Action::CloseSocket(close::NORMAL),
                ]);
                self.status = ConnectionStatus::Disconnected;
            }
            Event::ReconnectRequested => {
                self.wanted = true;
                self.attempt = 0;
                self.auth_failures = 0;
                out.push(Action::CloseSocket(close::NORMAL));
                self.connect_now(&mut out);
            }
            Event::NetworkChanged { available: false } => {
                self.network_available = false;
                if self.status.is_active() {
                    // The OS says there is no path: the socket is gone or about to be, and
                    // retrying now would only burn battery.
                    out.extend([Action::CancelRetry, Action::CloseSocket(close::GOING_AWAY)]);
                    self.status = ConnectionStatus::WaitingForNetwork;
                }
            }
            Event::NetworkChanged { available: true } => {
                let was_available = self.network_available;
                self.network_available = true;
                match self.status {
                    ConnectionStatus::WaitingForNetwork | ConnectionStatus::Reconnecting { .. }
                        if self.wanted =>
                    {
                        // The failures were the network's fault: start over, no wait.
                        self.attempt = 0;
                        self.connect_now(&mut out);
                    }
                    // A new path (Wi-Fi to cellular) can leave a socket that looks open but
                    // is dead.
                    ConnectionStatus::Connected if was_available => out.push(Action::Probe),
                    _ => {}
                }
            }
            Event::AppStateChanged(AppState::Background) => {
                self.foreground = false;
                if self.status.is_active() {
                    out.push(Action::StartGrace(self.timings.background_grace));
                }
            }
            Event::AppStateChanged(AppState::Foreground) => {
                self.foreground = true;
                out.push(Action::CancelGrace);
                match self.status {
                    ConnectionStatus::Suspended | ConnectionStatus::Reconnecting { .. }
                        if self.wanted =>
                    {
                        self.attempt = 0;
                        self.connect_now(&mut out);
                    }
                    // The process may have been frozen: do not trust the socket.
                    ConnectionStatus::Connected => out.push(Action::Probe),
                    _ => {}
                }
            }
            Event::GraceElapsed => {
                if !self.foreground && self.status.is_active() {
                    out.extend([Action::CancelRetry, Action::CloseSocket(close::NORMAL)]);
                    self.status = ConnectionStatus::Suspended;
                }
            }
            Event::TokenReady => {
                if self.status == ConnectionStatus::Connecting {
                    out.push(Action::OpenSocket);
                }
            }
            Event::SignedOut => {
                // Before connecting, or when asked for a refresh during a session (which
                // then ends at once rather than when its token runs out).
                let connected = self.status == ConnectionStatus::Connected;
                if connected || self.status == ConnectionStatus::Connecting {
                    let reason = "signed out: the token provider returned no token".to_string();
                    out.push(Action::CancelRetry);
                    if connected {
                        out.push(Action::CloseSocket(close::NORMAL));
                    }
                    out.push(Action::ReportError(ErrorKind::Auth, reason.clone()));
                    self.status = ConnectionStatus::Failed { reason };
                }
            }
            Event::TokenFailed(reason) => {
                if self.status == ConnectionStatus::Connecting {
                    out.push(Action::ReportError(
                        ErrorKind::Auth,
                        format!("token provider failed: {reason}"),
                    ));
                    self.retry_later(None, &mut out);
                }
            }
            Event::Established => {
                if self.status == ConnectionStatus::Connecting {
                    self.auth_failures = 0;
                    self.status = ConnectionStatus::Connected;
                    out.extend([
                        Action::SessionStarted,
                        Action::StartStable(self.timings.backoff_reset_after),
                    ]);
                }
            }
            Event::StableElapsed => {
                if self.status == ConnectionStatus::Connected {
                    self.attempt = 0;
                }
            }
            Event::ConnectFailed(failure) => {
                if self.status == ConnectionStatus::Connecting {
                    self.connect_failed(failure, &mut out);
                }
            }
            Event::Closed(code) => {
                if self.status.has_socket() {
                    self.closed(code, &mut out);
                }
            }
            Event::Lost(reason) => {
                if self.status.has_socket() {
                    out.push(Action::ReportError(ErrorKind::Network, reason));
                    self.retry_later(None, &mut out);
                }
            }
            Event::RetryElapsed => {
                if matches!(self.status, ConnectionStatus::Reconnecting { .. }) {
                    self.connect_now(&mut out);
                }
            }
            Event::Shutdown => {
                self.wanted = false;
                out.extend([
                    Action::CancelRetry,
                    Action::CancelGrace,
                    Action::CloseSocket(close::NORMAL),
                    Action::Stop,
                ]);
                self.status = ConnectionStatus::Disconnected;
            }
        }
        out
    }

    fn connect_now(&mut self, out: &mut Vec<Action>) {
        out.push(Action::CancelRetry);
        if self.network_available {
            self.status = ConnectionStatus::Connecting;
            out.push(Action::FetchToken);
        } else {
            self.status = ConnectionStatus::WaitingForNetwork;
        }
    }

    /// Waits a backoff delay (at least `floor`), unless waiting cannot help.
    fn retry_later(&mut self, floor: Option<Duration>, out: &mut Vec<Action>) {
        if !self.wanted {
            self.status = ConnectionStatus::Disconnected;
            return;
        }
        if !self.network_available {
            self.status = ConnectionStatus::WaitingForNetwork;
            return;
        }
        let delay = self
            .timings
            .backoff
            .delay(self.attempt, &mut self.rng)
            .max(floor.unwrap_or_default());
        self.schedule(delay, out);
    }

    fn schedule(&mut self, delay: Duration, out: &mut Vec<Action>) {
        self.attempt = self.attempt.saturating_add(1);
        self.status = ConnectionStatus::Reconnecting {
            attempt: self.attempt,
            retry_in_ms: delay.as_millis().min(u128::from(u64::MAX)) as u64,
        };
        out.push(Action::ScheduleRetry(delay));
    }

    fn connect_failed(&mut self, failure: ConnectFailure, out: &mut Vec<Action>) {
        match failure {
            ConnectFailure::Unauthorized(reason) => {
                self.auth_failures = self.auth_failures.saturating_add(1);
                out.push(Action::ReportError(ErrorKind::Auth, reason));
                if self.auth_failures == 1 {
                    // Most likely the token simply expired: one fresh token, at once.
                    out.push(Action::FetchToken);
                } else {
                    self.retry_later(None, out);
                }
            }
            ConnectFailure::Fatal(reason) => {
                out.extend([
                    Action::CancelRetry,
                    Action::ReportError(ErrorKind::Auth, reason.clone()),
                ]);
                self.status = ConnectionStatus::Failed { reason };
            }
            ConnectFailure::Retryable {
                reason,
                retry_after,
            } => {
                out.push(Action::ReportError(ErrorKind::Network, reason));
                self.retry_later(retry_after, out);
            }
        }
    }

    fn closed(&mut self, code: CloseCode, out: &mut Vec<Action>) {
        let what = format!("connection closed with {code} ({})", close::describe(code));
        match ReconnectAdvice::for_code(code) {
            ReconnectAdvice::Stay => {
                // The gateway asked us to stay away (kicked, replaced): retrying would
                // fight the backend or the user's other session.
                self.wanted = false;
                self.status = ConnectionStatus::Disconnected;
                let kind = if code == close::KICKED {
                    ErrorKind::Auth
                } else {
                    ErrorKind::Protocol
                };
                if code != close::NORMAL {
                    out.push(Action::ReportError(kind, what));
                }
            }
            ReconnectAdvice::Immediately => {
                let delay = self.timings.backoff.immediate(&mut self.rng);
                self.schedule(delay, out);
            }
            ReconnectAdvice::RefreshToken => {
                // The gateway closes with 4001 when the token expired mid-session: get a
                // fresh one and reconnect at once. A provider that keeps handing out an
                // expired token then meets 401s, which back off.
                self.status = ConnectionStatus::Connecting;
                out.push(Action::FetchToken);
            }
            ReconnectAdvice::Backoff => {
                let kind = match code {
                    close::UNSUPPORTED_DATA | close::INVALID_PAYLOAD | close::MESSAGE_TOO_BIG => {
                        ErrorKind::Protocol
                    }
                    _ => ErrorKind::Network,
                };
                out.push(Action::ReportError(kind, what));
                self.retry_later(None, out);
            }
        }
    }
}
