//! The connection's I/O loop: waits for the socket, the hub's queue and the timers,
//! writes what the hub queued in batches, fills the gaps live delivery left from the inbox
//! and the stream histories, and runs the closing handshake.

use super::*;

/// How long a connection waits before repeating a catch-up read that failed.
const RESYNC_RETRY: Duration = Duration::from_millis(500);

impl Connection {
    pub(super) async fn serve(&mut self) -> End {
        if self.socket.has_buffered_input() {
            let mut events = Vec::new();
            if let Err(end) = self.socket.decode_buffered(&mut events).map_err(read_end) {
                return end;
            }
            if let Some(end) = Box::pin(self.handle_events(&mut events)).await {
                return end;
            }
        }

        loop {
            if let Some((code, reason)) = self.cell.close_requested() {
                return if code == ABANDON {
                    End::Killed
                } else {
                    End::Close(code, reason)
                };
            }
            if self.shared.draining() {
                // Admitted just before shutdown began, after every socket was told to close.
                return End::Close(close::SERVICE_RESTART, "server restarting");
            }
            if self.cell.take_resync() {
                if let Some(end) = Box::pin(self.resync()).await {
                    return end;
                }
            }
            if self.socket.unsent() == 0 && self.cell.has_frames() {
                match self.write_queued() {
                    Ok(None) => {}
                    Ok(Some(Gap::Inbox(gap))) => {
                        // Fill the gap from the inbox first (what is gone for good, trimmed
                        // by length or age, stays a gap); then the queued frames go on.
                        if let Some(end) = Box::pin(self.resync()).await {
                            return end;
                        }
                        self.gaps_checked_upto = gap;
                        continue;
                    }
                    Ok(Some(Gap::Stream {
                        room,
                        after,
                        epoch,
                        upto,
                    })) => {
                        // The same for a stream, from its history.
                        if let Some(end) =
                            Box::pin(self.fill_stream(room.clone(), after, epoch)).await
                        {
                            return end;
                        }
                        self.positions().gap_checked(room.as_deref(), upto);
                        continue;
                    }
                    Err(e) => {
                        debug!(error = %e, "write failed");
                        return End::Gone;
                    }
                }
            }
            if self.socket.unsent() > MAX_UNSENT {
                return End::Close(close::POLICY_VIOLATION, "too slow: not reading");
            }
            // One small hand-written wait instead of a select over separate futures: an
            // idle connection's task stays a few hundred bytes.
            let this = &*self;
            let woke = std::future::poll_fn(|cx| {
                if this.cell.poll_signal(cx).is_ready() {
                    return Poll::Ready(Wake::Signal);
                }
                if this.socket.unsent() > 0 {
                    if let Poll::Ready(ready) = this.socket.poll_write_ready(cx) {
                        return Poll::Ready(Wake::Writable(ready.is_ok()));
                    }
                }
                if let Poll::Ready(ready) = this.socket.poll_read_ready(cx) {
                    return Poll::Ready(Wake::Readable(ready.is_ok()));
                }
                Poll::Pending
            })
            .await;
            match woke {
                Wake::Signal => {}
                Wake::Writable(ok) => {
                    if !ok || self.socket.write_pending().is_err() {
                        return End::Gone;
                    }
                }
                Wake::Readable(ok) => {
                    if !ok {
                        return End::Gone;
                    }
                    let mut events = Vec::new();
                    match self.socket.read_available(&mut events) {
                        Ok(true) => {}
                        Ok(false) => return End::Gone,
                        Err(e) => return read_end(e),
                    }
                    if !events.is_empty() {
                        // Any frame counts as life (the hub's sweep closes silent ones).
                        self.cell.touch(now_ms());
                        // Boxed: handling a frame (broker calls and all) needs far more
                        // state than waiting does, and only for a moment.
                        if let Some(end) = Box::pin(self.handle_events(&mut events)).await {
                            return end;
                        }
                    }
                }
            }
        }
    }

    /// Writes the frames the hub queued, as many as wait (up to a batch), in one write.
    /// Returns the gap a user or stream message would leave after what was sent (live
    /// messages were missed); it stays queued until the gap is filled.
    pub(super) fn write_queued(&mut self) -> std::io::Result<Option<Gap>> {
        let Connection {
            cell,
            socket,
            sent_upto,
            gaps_checked_upto,
            streams,
            ..
        } = self;
        let gaps_checked_upto = *gaps_checked_upto;
        let mut gap = None;
        let written = socket.send_with(|out| {
            let mut written = 0u64;
            cell.take(MAX_BATCH, |frame| {
                if let Some(seq) = frame.seq {
                    // Already sent by the replay or a fill: it arrived live meanwhile.
                    if seq <= *sent_upto {
                        return true;
                    }
                    if seq > *sent_upto + 1 && seq > gaps_checked_upto {
                        gap = Some(Gap::Inbox(seq));
                        return false;
                    }
                    *sent_upto = seq;
                }
                if let (Some(mark), Some(positions)) = (&frame.stream, streams.as_mut()) {
                    match positions.check(mark) {
                        Check::Send => {}
                        Check::Duplicate => return true,
                        Check::Gap { after, epoch } => {
                            gap = Some(Gap::Stream {
                                room: mark.room.clone(),
                                after,
                                epoch,
                                upto: mark.offset,
                            });
                            return false;
                        }
                    }
                }
                frame::write_frame(out, Opcode::Text, frame.text.as_bytes());
                written += 1;
                true
            });
            written
        })?;
        self.frames_out += written;
        self.shared.metrics.frames_out.increment(written);
        Ok(gap)
    }

    /// The connection's stream places, allocated at the first stream.
    pub(super) fn positions(&mut self) -> &mut Positions {
        self.streams.get_or_insert_with(Box::default)
    }

    /// Sends what the stream of `room` holds after `after` (of `epoch`): a gap, or what
    /// may have been missed while the broker's subscription was down.
    pub(super) async fn fill_stream(
        &mut self,
        room: Option<Arc<str>>,
        after: u64,
        epoch: Arc<str>,
    ) -> Option<End> {
        let shared = self.shared.clone();
        let name = match &room {
            Some(room) => StreamName::Room(room.clone()),
            None => StreamName::App,
        };
        let limits = shared.config.history_of(&name)?;
        let app = self.info().app.clone();
        match streams::fill(&*shared.broker, &app, &name, after, &epoch, limits).await {
            Ok(frames) => {
                let (last, _) = frames.last()?;
                counter!("tether_stream_gap_filled_total").increment(frames.len() as u64);
                self.positions().set(room.as_deref(), &epoch, *last);
                return self.send_frames(frames.iter().map(|(_, f)| f.as_bytes()));
            }
            Err(e) => {
                debug!(error = %e, "stream fill failed; the client recovers when it joins again")
            }
        }
        None
    }

    /// Sends frames (counted); `Some(End::Gone)` when the socket is gone.
    pub(super) fn send_frames<'a>(
        &mut self,
        frames: impl ExactSizeIterator<Item = &'a [u8]>,
    ) -> Option<End> {
        if frames.len() == 0 {
            return None;
        }
        self.frames_out += frames.len() as u64;
        self.socket.send_texts(frames).is_err().then_some(End::Gone)
    }

    /// Live messages may have been missed (the broker's subscription was down): sends what
    /// the inbox, and each stream the connection reads, hold after what it got.
    pub(super) async fn resync(&mut self) -> Option<End> {
        let held = self.streams.as_ref().map(|p| p.held()).unwrap_or_default();
        for (room, epoch, after) in held {
            if let Some(end) = Box::pin(self.fill_stream(room, after, epoch)).await {
                return Some(end);
            }
        }
        let shared = self.shared.clone();
        match shared
            .broker
            .read_inbox(&self.info().app, &self.info().user, self.sent_upto)
            .await
        {
            Ok(frames) if !frames.is_empty() => {
                self.sent_upto = frames.last().map_or(self.sent_upto, |(seq, _)| *seq);
                return self.send_frames(frames.iter().map(|(_, f)| f.as_bytes()));
            }
            Ok(_) => {}
            Err(e) => {
                // Typically the first command on a connection Redis dropped: it fails while
                // the client reconnects. Nothing else would ask again while both links
                // look healthy, so this connection asks itself, a moment later.
                debug!(error = %e, "catch-up read failed; trying again shortly");
                let cell = self.cell.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(RESYNC_RETRY).await;
                    cell.request_resync();
                });
            }
        }
        None
    }

    pub(super) async fn handle_events(&mut self, events: &mut Vec<Incoming>) -> Option<End> {
        for event in std::mem::take(events) {
            match event {
                Incoming::Text(text) => {
                    self.frames_in += 1;
                    self.shared.metrics.frames_in.increment(1);
                    let replies = match self.handle_text(&text).await {
                        Ok(replies) => replies,
                        Err(end) => return Some(end),
                    };
                    if let Some(end) = self.send_frames(replies.iter().map(String::as_bytes)) {
                        return Some(end);
                    }
                }
                Incoming::Binary(_) => {
                    return Some(End::Close(
                        close::UNSUPPORTED_DATA,
                        "binary frames are not accepted",
                    ))
                }
                // Pings are answered by the socket; any frame counts as life.
                Incoming::Ping | Incoming::Pong => {}
                Incoming::Close(code) => return Some(End::ClientClosed(code)),
            }
        }
        None
    }

    /// Sends a close frame and waits briefly for the client's answer, so the client reads
    /// the code before the socket goes away.
    pub(super) async fn close(&mut self, code: u16, reason: &str) {
        let socket = &mut self.socket;
        let _ = tokio::time::timeout(CLOSE_GRACE, async move {
            if socket.send_close(code, reason).is_err() || socket.flush().await.is_err() {
                return;
            }
            let mut events = Vec::new();
            loop {
                if socket.readable().await.is_err() {
                    return;
                }
                match socket.read_available(&mut events) {
                    Ok(true) if events.iter().any(|e| matches!(e, Incoming::Close(_))) => return,
                    Ok(true) => events.clear(),
                    Ok(false) | Err(_) => return,
                }
            }
        })
        .await;
    }
}
