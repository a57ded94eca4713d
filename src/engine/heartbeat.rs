//! Liveness of one session: when to ping, when the socket counts as dead, and the round
//! trip time. Pure: the engine passes the monotonic and wall clocks in, so tests drive it
//! with tokio's paused clock.
//!
//! Dead means no frame for two intervals (docs/protocol.md §7). A phone that slept, or a process
//! that was stopped, wakes with timers long overdue and a socket that may be dead although
//! nothing said so: when the clock jumped past the expected tick, the session is not trusted
//! and must answer a ping within a short probe deadline.

use std::time::Duration;
use tokio::time::Instant;

/// What to do after a wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing yet.
    Idle,
    /// Send a ping carrying this wall-clock timestamp (ms).
    Ping(u64),
    /// No frame arrived in time: the connection is dead.
    Dead,
}

/// Heartbeat state of one session.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    interval: Duration,
    probe: Duration,
    /// A frame must arrive before this instant.
    deadline: Instant,
    next_ping: Instant,
    /// When `next_wake` last told the engine to wake, to notice a late wake-up.
    expected_wake: Instant,
    last_wake_wall_ms: u64,
    last_wake_mono: Instant,
    outstanding: Option<(u64, Instant)>,
    last_rtt: Option<Duration>,
    suspensions: u64,
}

impl Heartbeat {
    /// Slack before a late wake-up counts as a suspension: timers are never exact, but a
    /// second late on top of a quarter interval means the process did not run.
    fn slack(&self) -> Duration {
        Duration::from_secs(1) + self.interval / 4
    }

    /// Starts a session's heartbeat at `now` with the gateway's interval; `probe` is how
    /// long a suspected socket has to answer.
    pub fn new(interval: Duration, probe: Duration, now: Instant, wall_ms: u64) -> Self {
        let interval = interval.max(Duration::from_millis(100));
        Heartbeat {
            interval,
            probe: probe.min(interval),
            deadline: now + interval * 2,
            next_ping: now + interval,
            expected_wake: now + interval,
            last_wake_wall_ms: wall_ms,
            last_wake_mono: now,
            outstanding: None,
            last_rtt: None,
            suspensions: 0,
        }
    }

    /// The gateway's interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The last measured round trip.
    pub fn last_rtt(&self) -> Option<Duration> {
        self.last_rtt
    }

    /// How many suspensions were noticed.
    pub fn suspensions(&self) -> u64 {
        self.suspensions
    }

    /// When the engine must call [`Heartbeat::on_wake`] next.
    pub fn next_wake(&mut self) -> Instant {
        self.expected_wake = self.next_ping.min(self.deadline);
        self.expected_wake
    }

    /// Any frame arrived: the socket is alive.
    pub fn on_frame(&mut self, now: Instant) {
        self.deadline = now + self.interval * 2;
    }

    /// A `pong` echoing `ts` arrived; returns the round trip when it answers our last ping.
    pub fn on_pong(&mut self, echoed_ts: Option<&str>, now: Instant) -> Option<Duration> {
        let (ts, sent) = self.outstanding?;
        if echoed_ts.and_then(|t| t.trim().parse::<u64>().ok()) != Some(ts) {
            return None;
        }
        self.outstanding = None;
        let rtt = now.saturating_duration_since(sent);
        self.last_rtt = Some(rtt);
        Some(rtt)
    }

    /// Suspect the socket (app resumed, network path changed): ping now and require an
    /// answer within the probe deadline.
    pub fn probe(&mut self, now: Instant, wall_ms: u64) -> Verdict {
        self.deadline = self.deadline.min(now + self.probe);
        self.ping(now, wall_ms)
    }

    fn ping(&mut self, now: Instant, wall_ms: u64) -> Verdict {
        self.next_ping = now + self.interval;
        // A ts equal to the previous one would make its pong ambiguous.
        let ts = match self.outstanding {
            Some((previous, _)) if previous >= wall_ms => previous + 1,
            _ => wall_ms,
        };
        self.outstanding = Some((ts, now));
        Verdict::Ping(ts)
    }

    /// A timer fired (or the engine woke for another reason) at `now`.
    pub fn on_wake(&mut self, now: Instant, wall_ms: u64) -> Verdict {
        let late = now.saturating_duration_since(self.expected_wake);
        // The wall clock keeps running while a phone sleeps even where the monotonic clock
        // stops, so compare both.
        let mono_elapsed = now.saturating_duration_since(self.last_wake_mono);
        let wall_elapsed = Duration::from_millis(wall_ms.saturating_sub(self.last_wake_wall_ms));
        let jumped =
            late > self.slack() || wall_elapsed > mono_elapsed + self.slack().max(self.interval);
        self.last_wake_mono = now;
        self.last_wake_wall_ms = wall_ms;
        if jumped {
            // Frames that arrived while we were frozen are read before this wake-up, so a
            // live socket answers the probe; a dead one fails it quickly.
            self.suspensions += 1;
            self.deadline = now + self.probe;
            return self.ping(now, wall_ms);
        }
        if now >= self.deadline {
            return Verdict::Dead;
        }
        if now >= self.next_ping {
            return self.ping(now, wall_ms);
        }
        Verdict::Idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_secs(10);
    const P: Duration = Duration::from_secs(3);

    #[tokio::test(start_paused = true)]
    async fn pings_every_interval_and_measures_rtt() {
        let start = Instant::now();
        let mut hb = Heartbeat::new(I, P, start, 1_000);
        assert_eq!(hb.next_wake(), start + I);
        tokio::time::advance(I).await;
        let verdict = hb.on_wake(Instant::now(), 11_000);
        assert_eq!(verdict, Verdict::Ping(11_000));
        tokio::time::advance(Duration::from_millis(40)).await;
        hb.on_frame(Instant::now());
        assert_eq!(hb.on_pong(Some("999"), Instant::now()), None);
        assert_eq!(
            hb.on_pong(Some("11000"), Instant::now()),
            Some(Duration::from_millis(40))
        );
        assert_eq!(hb.last_rtt(), Some(Duration::from_millis(40)));
    }

    #[tokio::test(start_paused = true)]
    async fn two_silent_intervals_mean_dead() {
        let start = Instant::now();
        let mut hb = Heartbeat::new(I, P, start, 0);
        let mut wall = 0;
        let mut verdicts = Vec::new();
        loop {
            let wake = hb.next_wake();
            wall += (wake - Instant::now()).as_millis() as u64;
            tokio::time::sleep_until(wake).await;
            let v = hb.on_wake(Instant::now(), wall);
            verdicts.push(v);
            if v == Verdict::Dead {
                break;
            }
        }
        assert_eq!(Instant::now() - start, I * 2);
        assert_eq!(verdicts, [Verdict::Ping(10_000), Verdict::Dead]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_wake_up_is_a_suspension_that_needs_a_quick_answer() {
        let start = Instant::now();
        let mut hb = Heartbeat::new(I, P, start, 0);
        let _ = hb.next_wake();
        // The process was stopped for a minute: the timer fires far too late.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(hb.on_wake(Instant::now(), 60_000), Verdict::Ping(60_000));
        assert_eq!(hb.suspensions(), 1);
        // Not dead yet although 2 intervals passed: it gets the probe deadline.
        let wake = hb.next_wake();
        assert_eq!(wake - Instant::now(), P);
        tokio::time::advance(P).await;
        assert_eq!(hb.on_wake(Instant::now(), 63_000), Verdict::Dead);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wall_clock_jump_is_a_suspension_too() {
        let start = Instant::now();
        let mut hb = Heartbeat::new(I, P, start, 0);
        let _ = hb.next_wake();
        tokio::time::advance(I).await;
        // The monotonic clock stood still while the phone slept for an hour.
        assert_eq!(
            hb.on_wake(Instant::now(), 3_600_000),
            Verdict::Ping(3_600_000)
        );
        assert_eq!(hb.suspensions(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answered_probe_keeps_the_session() {
        let start = Instant::now();
        let mut hb = Heartbeat::new(I, P, start, 0);
        let Verdict::Ping(ts) = hb.probe(start, 5) else {
            panic!("probe pings")
        };
        tokio::time::advance(Duration::from_secs(1)).await;
        hb.on_frame(Instant::now());
        assert!(hb.on_pong(Some(&ts.to_string()), Instant::now()).is_some());
        let wake = hb.next_wake();
        tokio::time::sleep_until(wake).await;
        assert!(matches!(
            hb.on_wake(Instant::now(), 10_000),
            Verdict::Ping(_)
        ));
    }
}
