//! The connection state machine, one test per rule (docs/sdk.md, docs/protocol.md §2, §8),
//! plus properties over random event sequences. Pure: no socket, no clock.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on purpose

use proptest::prelude::*;
use std::time::Duration;
use tether::engine::backoff::Backoff;
use tether::engine::state::{Action, ConnectFailure, ConnectionStatus, Event, Machine, Timings};
use tether::{AppState, ErrorKind};

fn timings() -> Timings {
    Timings {
        backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
        background_grace: Duration::from_secs(30),
        backoff_reset_after: Duration::from_secs(30),
    }
}

fn machine() -> Machine {
    Machine::new(timings(), 42)
}

fn connected() -> Machine {
    let mut m = machine();
    m.handle(Event::ConnectRequested);
    m.handle(Event::TokenReady);
    m.handle(Event::Established);
    assert_eq!(m.status(), &ConnectionStatus::Connected);
    m
}

fn retry_delay(actions: &[Action]) -> Option<Duration> {
    actions.iter().find_map(|a| match a {
        Action::ScheduleRetry(d) => Some(*d),
        _ => None,
    })
}

#[test]
fn connect_fetches_a_token_then_opens_the_socket() {
    let mut m = machine();
    assert_eq!(m.status(), &ConnectionStatus::Idle);
    let actions = m.handle(Event::ConnectRequested);
    assert!(actions.contains(&Action::FetchToken));
    assert_eq!(m.status(), &ConnectionStatus::Connecting);
    assert_eq!(m.handle(Event::TokenReady), [Action::OpenSocket]);
    let actions = m.handle(Event::Established);
    assert_eq!(m.status(), &ConnectionStatus::Connected);
    assert!(actions.contains(&Action::SessionStarted));
    assert!(actions.contains(&Action::StartStable(Duration::from_secs(30))));
}

#[test]
fn connect_is_idempotent() {
    let mut m = connected();
    assert!(m.handle(Event::ConnectRequested).is_empty());
    assert_eq!(m.status(), &ConnectionStatus::Connected);
}

#[test]
fn no_token_is_a_terminal_failure_without_retry() {
    let mut m = machine();
    m.handle(Event::ConnectRequested);
    let actions = m.handle(Event::SignedOut);
    assert!(matches!(m.status(), ConnectionStatus::Failed { .. }));
    assert!(retry_delay(&actions).is_none());
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::ReportError(ErrorKind::Auth, _))));
    // Nothing wakes it up but the app.
    for event in [
        Event::RetryElapsed,
        Event::NetworkChanged { available: true },
        Event::AppStateChanged(AppState::Foreground),
    ] {
        let actions = m.handle(event);
        assert!(!actions.contains(&Action::FetchToken));
    }
    assert!(m
        .handle(Event::ConnectRequested)
        .contains(&Action::FetchToken));
}

#[test]
fn first_401_refetches_the_token_at_once_later_ones_back_off() {
    let mut m = machine();
    m.handle(Event::ConnectRequested);
    m.handle(Event::TokenReady);
    let actions = m.handle(Event::ConnectFailed(ConnectFailure::Unauthorized(
        "401".into(),
    )));
    assert!(actions.contains(&Action::FetchToken));
    assert_eq!(m.status(), &ConnectionStatus::Connecting);
    m.handle(Event::TokenReady);
    let actions = m.handle(Event::ConnectFailed(ConnectFailure::Unauthorized(
        "401".into(),
    )));
    assert!(retry_delay(&actions).is_some());
    assert!(matches!(
        m.status(),
        ConnectionStatus::Reconnecting { attempt: 1, .. }
    ));
}

#[test]
fn refused_params_or_app_fail_without_retry() {
    let mut m = machine();
    m.handle(Event::ConnectRequested);
    m.handle(Event::TokenReady);
    let actions = m.handle(Event::ConnectFailed(ConnectFailure::Fatal("403".into())));
    assert!(matches!(m.status(), ConnectionStatus::Failed { .. }));
    assert!(retry_delay(&actions).is_none());
}

#[test]
fn retry_after_is_a_floor_on_the_delay() {
    let mut m = machine();
    m.handle(Event::ConnectRequested);
    m.handle(Event::TokenReady);
    let actions = m.handle(Event::ConnectFailed(ConnectFailure::Retryable {
        reason: "429".into(),
        retry_after: Some(Duration::from_secs(7)),
    }));
    assert!(retry_delay(&actions).unwrap() >= Duration::from_secs(7));
}

#[test]
fn consecutive_failures_grow_the_ceiling_and_report_the_attempt() {
    let mut m = machine();
    m.handle(Event::ConnectRequested);
    let backoff = timings().backoff;
    for n in 0..10u32 {
        m.handle(Event::TokenReady);
        let actions = m.handle(Event::ConnectFailed(ConnectFailure::Retryable {
            reason: "refused".into(),
            retry_after: None,
        }));
        let delay = retry_delay(&actions).unwrap();
        assert!(delay <= backoff.ceiling(n), "attempt {n}: {delay:?}");
        match m.status() {
            ConnectionStatus::Reconnecting {
                attempt,
                retry_in_ms,
            } => {
                assert_eq!(*attempt, n + 1);
                assert_eq!(*retry_in_ms, delay.as_millis() as u64);
            }
            other => panic!("{other:?}"),
        }
        assert!(m.handle(Event::RetryElapsed).contains(&Action::FetchToken));
    }
}

#[test]
fn backoff_resets_only_after_the_session_stayed_up() {
    let mut m = machine();
    m.handle(Event::ConnectRequested);
    for _ in 0..5 {
        m.handle(Event::TokenReady);
        m.handle(Event::Lost("x".into()));
        m.handle(Event::RetryElapsed);
    }
    assert_eq!(m.attempt(), 5);
    m.handle(Event::TokenReady);
    m.handle(Event::Established);
    // A session that dies at once keeps the grown backoff (a flapping gateway).
    m.handle(Event::Lost("x".into()));
    assert_eq!(m.attempt(), 6);
    m.handle(Event::RetryElapsed);
    m.handle(Event::TokenReady);
    m.handle(Event::Established);
    m.handle(Event::StableElapsed);
    assert_eq!(m.attempt(), 0);
}

#[test]
fn close_codes_follow_the_protocol_table() {
    // 1000, 4403, 4409: stay disconnected.
    for code in [1000u16, 4403, 4409] {
        let mut m = connected();
        let actions = m.handle(Event::Closed(code));
        assert_eq!(m.status(), &ConnectionStatus::Disconnected, "{code}");
        assert!(retry_delay(&actions).is_none());
        assert!(!m.wanted());
        assert!(m
            .handle(Event::NetworkChanged { available: true })
            .is_empty());
        let reported = actions.iter().any(|a| matches!(a, Action::ReportError(..)));
        assert_eq!(reported, code != 1000, "{code}");
    }
    // 1001, 1012: at once, with at most `base` of jitter.
    for code in [1001u16, 1012] {
        let mut m = connected();
        let delay = retry_delay(&m.handle(Event::Closed(code))).unwrap();
        assert!(delay <= Duration::from_millis(500), "{code}: {delay:?}");
    }
    // 4001: a fresh token, then reconnect.
    let mut m = connected();
    assert!(m.handle(Event::Closed(4001)).contains(&Action::FetchToken));
    assert_eq!(m.status(), &ConnectionStatus::Connecting);
    // 1003, 1007, 1009 report a protocol error and back off; 4000 and 4008 back off.
    for code in [1003u16, 1007, 1009, 4000, 4008] {
        let mut m = connected();
        let actions = m.handle(Event::Closed(code));
        assert!(retry_delay(&actions).is_some(), "{code}");
        let expected = if code < 4000 {
            ErrorKind::Protocol
        } else {
            ErrorKind::Network
        };
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::ReportError(k, _) if *k == expected)),
            "{code}"
        );
    }
}

#[test]
fn no_network_means_waiting_without_a_retry_loop() {
    let mut m = connected();
    let actions = m.handle(Event::NetworkChanged { available: false });
    assert_eq!(m.status(), &ConnectionStatus::WaitingForNetwork);
    assert!(actions.contains(&Action::CancelRetry));
    assert!(actions.contains(&Action::CloseSocket(1001)));
    // Failures and timers while offline schedule nothing.
    assert!(m.handle(Event::RetryElapsed).is_empty());
    assert!(m.handle(Event::ConnectRequested).is_empty());
    // The network returns: connect now, no wait.
    let actions = m.handle(Event::NetworkChanged { available: true });
    assert!(actions.contains(&Action::FetchToken));
    assert!(retry_delay(&actions).is_none());
    assert_eq!(m.status(), &ConnectionStatus::Connecting);
}

#[test]
fn the_network_returning_skips_the_backoff_wait() {
    let mut m = machine();
    m.handle(Event::ConnectRequested);
    for _ in 0..6 {
        m.handle(Event::TokenReady);
        m.handle(Event::Lost("x".into()));
        m.handle(Event::RetryElapsed);
    }
    m.handle(Event::TokenReady);
    m.handle(Event::Lost("x".into()));
    assert!(matches!(m.status(), ConnectionStatus::Reconnecting { .. }));
    let actions = m.handle(Event::NetworkChanged { available: true });
    assert!(actions.contains(&Action::FetchToken));
    assert_eq!(m.attempt(), 0);
}

#[test]
fn a_network_change_while_connected_probes_the_socket() {
    let mut m = connected();
    assert_eq!(
        m.handle(Event::NetworkChanged { available: true }),
        [Action::Probe]
    );
}

#[test]
fn background_disconnects_after_the_grace_period_and_foreground_connects_at_once() {
    let mut m = connected();
    let actions = m.handle(Event::AppStateChanged(AppState::Background));
    assert_eq!(actions, [Action::StartGrace(Duration::from_secs(30))]);
    assert_eq!(m.status(), &ConnectionStatus::Connected);
    let actions = m.handle(Event::GraceElapsed);
    assert_eq!(m.status(), &ConnectionStatus::Suspended);
    assert!(actions.contains(&Action::CloseSocket(1000)));
    // No retries while suspended.
    assert!(m.handle(Event::RetryElapsed).is_empty());
    assert!(m.handle(Event::Lost("x".into())).is_empty());
    let actions = m.handle(Event::AppStateChanged(AppState::Foreground));
    assert!(actions.contains(&Action::FetchToken));
    assert_eq!(m.status(), &ConnectionStatus::Connecting);
}

#[test]
fn coming_back_within_the_grace_period_keeps_the_session_but_probes_it() {
    let mut m = connected();
    m.handle(Event::AppStateChanged(AppState::Background));
    let actions = m.handle(Event::AppStateChanged(AppState::Foreground));
    assert_eq!(actions, [Action::CancelGrace, Action::Probe]);
    assert_eq!(m.status(), &ConnectionStatus::Connected);
}

#[test]
fn disconnect_is_user_intent_and_sticks() {
    let mut m = connected();
    let actions = m.handle(Event::DisconnectRequested);
    assert!(actions.contains(&Action::CloseSocket(1000)));
    assert_eq!(m.status(), &ConnectionStatus::Disconnected);
    assert!(m
        .handle(Event::NetworkChanged { available: true })
        .is_empty());
    assert!(m
        .handle(Event::AppStateChanged(AppState::Foreground))
        .iter()
        .all(|a| *a == Action::CancelGrace));
}

#[test]
fn reconnect_drops_the_socket_and_resets_the_backoff() {
    let mut m = machine();
    m.handle(Event::ConnectRequested);
    for _ in 0..4 {
        m.handle(Event::TokenReady);
        m.handle(Event::Lost("x".into()));
        m.handle(Event::RetryElapsed);
    }
    let actions = m.handle(Event::ReconnectRequested);
    assert_eq!(actions[0], Action::CloseSocket(1000));
    assert!(actions.contains(&Action::FetchToken));
    assert_eq!(m.attempt(), 0);
}

#[test]
fn stale_events_change_nothing() {
    let mut m = machine();
    for event in [
        Event::TokenReady,
        Event::Established,
        Event::Closed(1012),
        Event::Lost("x".into()),
        Event::RetryElapsed,
        Event::ConnectFailed(ConnectFailure::Fatal("x".into())),
    ] {
        assert!(m.handle(event).is_empty());
        assert_eq!(m.status(), &ConnectionStatus::Idle);
    }
}

#[test]
fn signed_out_during_a_session_ends_it_without_retry() {
    let mut m = connected();
    let actions = m.handle(Event::SignedOut);
    assert!(matches!(m.status(), ConnectionStatus::Failed { .. }));
    assert!(actions.contains(&Action::CloseSocket(1000)));
    assert!(retry_delay(&actions).is_none());
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::ReportError(ErrorKind::Auth, _))));
}

fn arb_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        Just(Event::ConnectRequested),
        Just(Event::DisconnectRequested),
        Just(Event::ReconnectRequested),
        any::<bool>().prop_map(|available| Event::NetworkChanged { available }),
        Just(Event::AppStateChanged(AppState::Background)),
        Just(Event::AppStateChanged(AppState::Foreground)),
        Just(Event::GraceElapsed),
        Just(Event::TokenReady),
        Just(Event::SignedOut),
        Just(Event::TokenFailed("x".into())),
        Just(Event::Established),
        Just(Event::ConnectFailed(ConnectFailure::Unauthorized(
            "x".into()
        ))),
        Just(Event::ConnectFailed(ConnectFailure::Retryable {
            reason: "x".into(),
            retry_after: None
        })),
        prop::sample::select(vec![
            1000u16, 1001, 1003, 1012, 4000, 4001, 4008, 4403, 4409
        ])
        .prop_map(Event::Closed),
        Just(Event::Lost("x".into())),
        Just(Event::RetryElapsed),
        Just(Event::StableElapsed),
    ]
}

proptest! {
    #[test]
    fn invariants_hold_for_any_event_sequence(events in prop::collection::vec(arb_event(), 1..80)) {
        let mut m = machine();
        let mut network = true;
        let backoff = timings().backoff;
        for event in events {
            if let Event::NetworkChanged { available } = event {
                network = available;
            }
            let attempt_before = m.attempt();
            let actions = m.handle(event);
            // Every delay is within the ceiling of the attempt it was drawn for.
            if let Some(delay) = retry_delay(&actions) {
                prop_assert!(delay <= backoff.ceiling(attempt_before).max(Duration::from_millis(500)));
                let reconnecting = matches!(m.status(), ConnectionStatus::Reconnecting { .. });
                prop_assert!(reconnecting, "a retry was scheduled outside Reconnecting");
            }
            // Offline, nothing is ever attempted.
            if !network {
                prop_assert!(!actions.contains(&Action::FetchToken));
                prop_assert!(!actions.contains(&Action::OpenSocket));
                prop_assert!(retry_delay(&actions).is_none());
            }
            // Reconnecting always carries the delay it scheduled.
            if let ConnectionStatus::Reconnecting { attempt, .. } = m.status() {
                prop_assert_eq!(*attempt, m.attempt());
            }
            // Opening needs a token fetched for a Connecting state.
            if actions.contains(&Action::OpenSocket) {
                prop_assert_eq!(m.status(), &ConnectionStatus::Connecting);
            }
        }
    }
}

/// Drives the machine as the engine does, with timers on tokio's paused clock: every
/// attempt fails until the gateway comes back; returns when the session is up.
async fn drive_until_up(m: &mut Machine, gateway_up_at: tokio::time::Instant) -> Vec<Duration> {
    let mut delays = Vec::new();
    let mut actions = m.handle(Event::ConnectRequested);
    loop {
        if actions.contains(&Action::FetchToken) {
            actions = m.handle(Event::TokenReady);
            continue;
        }
        if actions.contains(&Action::OpenSocket) {
            actions = if tokio::time::Instant::now() >= gateway_up_at {
                m.handle(Event::Established)
            } else {
                m.handle(Event::ConnectFailed(ConnectFailure::Retryable {
                    reason: "refused".into(),
                    retry_after: None,
                }))
            };
            continue;
        }
        if let Some(delay) = retry_delay(&actions) {
            delays.push(delay);
            tokio::time::sleep(delay).await;
            actions = m.handle(Event::RetryElapsed);
            continue;
        }
        return delays;
    }
}

#[tokio::test(start_paused = true)]
async fn on_the_clock_retries_stop_when_the_gateway_returns_and_reset_after_a_stable_session() {
    let start = tokio::time::Instant::now();
    let mut m = machine();
    let delays = drive_until_up(&mut m, start + Duration::from_secs(60)).await;
    assert_eq!(m.status(), &ConnectionStatus::Connected);
    let elapsed = tokio::time::Instant::now() - start;
    assert!(elapsed >= Duration::from_secs(60), "{elapsed:?}");
    // The wait after the gateway returned is at most one (capped) delay.
    assert!(elapsed <= Duration::from_secs(90), "{elapsed:?}");
    let backoff = timings().backoff;
    for (n, delay) in delays.iter().enumerate() {
        assert!(*delay <= backoff.ceiling(n as u32));
    }
    let failures = m.attempt();
    assert_eq!(failures as usize, delays.len());
    // The session must stay up for the reset delay before the backoff starts over.
    tokio::time::sleep(Duration::from_secs(29)).await;
    m.handle(Event::Lost("flap".into()));
    assert_eq!(m.attempt(), failures + 1, "29 s was not long enough");
    let mut m = machine();
    let _ = drive_until_up(&mut m, tokio::time::Instant::now()).await;
    tokio::time::sleep(timings().backoff_reset_after).await;
    m.handle(Event::StableElapsed);
    assert_eq!(m.attempt(), 0);
}
