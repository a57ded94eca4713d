// The Swift face of the SDK: AsyncStreams of the status and of messages instead of a
// listener, a closure instead of a TokenProvider, `send(type:data:)` taking any
// Encodable. The generated types (TetherClient, ConnectionStatus, InboundMessage,
// TetherError, ...) live in the same module (Generated/Tether.swift).

import Foundation

/// One connection to the Tether gateway.
///
/// Ask for `messages()` before `connect()`: a message that arrives while no stream is
/// being iterated is only kept as `lastMessage`.
public final class TetherConnection: @unchecked Sendable {
    /// The underlying generated client, for what this wrapper does not cover.
    public let client: TetherClient

    private let statusHub: Hub<ConnectionStatus>
    private let messageHub: Hub<InboundMessage>
    private let ackHub: Hub<String>
    private let errorHub: Hub<TetherError>
    private let expiredHub: Hub<String>
    private let replacedHub: Hub<Replaced>
    private let streamResetHub: Hub<String?>

    /// - Parameter tokens: called before every connection attempt and after the gateway
    ///   refuses a token, and shortly before the connection's token runs out (the new one
    ///   then goes to the gateway without reconnecting); never twice at once unless a
    ///   cancelled call goes on. The SDK awaits it as a Swift task, so it may
    ///   `await` a refresh over the network (a synchronous closure works too). It is
    ///   cancelled when it runs past 30 s (that attempt fails and is retried) or when the
    ///   client shuts down. Return nil when the user is signed out: the status becomes
    ///   `.failed` and nothing is retried until `connect()`. Throw when there is no token
    ///   for now (the refresh failed): the error's `localizedDescription` reaches
    ///   `errors()` and the SDK retries with backoff. `await`, never block (no semaphores,
    ///   no synchronous network calls): it would hold a thread of the cooperative pool.
    /// - Throws: `TetherError` with kind `.invalidConfig` or `.storage`.
    public init(config: ClientConfig, tokens: @escaping @Sendable () async throws -> String?) throws {
        let hubs = Listener(
            status: Hub<ConnectionStatus>(latest: .idle),
            messages: Hub<InboundMessage>(lossless: true),
            acks: Hub<String>(lossless: true),
            errors: Hub<TetherError>(lossless: false),
            expired: Hub<String>(lossless: true),
            replaced: Hub<Replaced>(lossless: true),
            streamResets: Hub<String?>(lossless: true)
        )
        statusHub = hubs.status
        messageHub = hubs.messages
        ackHub = hubs.acks
        errorHub = hubs.errors
        expiredHub = hubs.expired
        replacedHub = hubs.replaced
        streamResetHub = hubs.streamResets
        client = try TetherClient(config: config, listener: hubs, tokens: ClosureTokens(tokens))
    }

    /// The current status.
    public var status: ConnectionStatus { statusHub.latest ?? client.status() }

    /// Whether the status is `.connected`.
    public var isConnected: Bool { status == .connected }

    /// Every status change, starting with the current status. Each call gives a new
    /// stream; iterate as many as you like.
    public func statuses() -> AsyncStream<ConnectionStatus> { statusHub.stream() }

    /// Messages from the backend, in order, each once. Nothing is dropped: while a stream
    /// holds 256 unread messages, the SDK waits (it stops taking messages in and acking
    /// them) until the app reads on. Iterate every stream you ask for, or cancel its task.
    /// Messages of a stream (a room with history, the app's broadcasts when the gateway
    /// keeps them) carry `offset`, strictly increasing within the stream; what a stream
    /// missed while disconnected (or while the app was not running) is replayed, and
    /// `streamResets()` says when it cannot be.
    public func messages() -> AsyncStream<InboundMessage> { messageHub.stream() }

    /// Ids of sent messages the gateway stored (the ids `send` returned).
    public func acks() -> AsyncStream<String> { ackHub.stream() }

    /// Failures the SDK reports; it already retries what can be retried.
    public func errors() -> AsyncStream<TetherError> { errorHub.stream() }

    /// Ids of sent messages dropped unsent: older than `maxMessageAgeS` or their `ttl`.
    public func expired() -> AsyncStream<String> { expiredHub.stream() }

    /// Messages dropped unsent because a newer one with the same `replaceKey` was queued
    /// while they waited (latest wins).
    public func replaced() -> AsyncStream<Replaced> { replacedHub.stream() }

    /// Streams that lost messages for good: the room (nil: the app's broadcast stream)
    /// whose history no longer held what came after the last message the app processed
    /// (it was away too long, or the gateway lost the history). Refetch that room's state
    /// from the backend; `messages()` goes on with the ones that follow. Sent before the
    /// first message after the gap; counted in `stats().streamResets`.
    public func streamResets() -> AsyncStream<String?> { streamResetHub.stream() }

    /// Connects, and keeps connecting after failures. Idempotent.
    public func connect() { client.connect() }

    /// Disconnects and stays disconnected until `connect()`; queued messages are kept.
    public func disconnect() { client.disconnect() }

    /// Drops the socket and connects again now.
    public func reconnect() { client.reconnect() }

    /// Queues a message; returns its id once it is on disk. It is sent now when connected,
    /// else after the next connect. The two options are for messages whose value is the
    /// newest one or that are worthless late.
    /// - Parameters:
    ///   - replaceKey: latest wins: queued messages with the same key that are not on
    ///     their way yet (written to the socket, waiting for the ack) are dropped and
    ///     come out of `replaced()`; e.g. `"location"` for a courier's position.
    ///     1 to 256 bytes.
    ///   - ttl: seconds after which the message is dropped (its id out of `expired()`)
    ///     instead of sent; `maxMessageAgeS` still applies when shorter. Positive;
    ///     counted in whole milliseconds, at least one.
    /// - Throws: `TetherError` (`.invalidMessage` also for a bad key or a time to live that
    ///   is not positive, `.queueFull`, `.storage`, `.shutdown`), or `EncodingError` when
    ///   `data` does not encode to JSON.
    public func send<T: Encodable>(
        type: String, data: T, replaceKey: String? = nil, ttl: TimeInterval? = nil
    ) async throws -> String {
        let json = try JSONEncoder().encode(data)
        return try await send(
            type: type, json: String(decoding: json, as: UTF8.self), replaceKey: replaceKey, ttl: ttl)
    }

    /// `send(type:data:)` with the payload already encoded as JSON text.
    public func send(
        type: String, json: String, replaceKey: String? = nil, ttl: TimeInterval? = nil
    ) async throws -> String {
        let ttlMs: UInt64? = ttl.map(Self.milliseconds)
        let options = SendOptions(replaceKey: replaceKey, ttlMs: ttlMs)
        return try await client.sendMessageWith(type: type, dataJson: json, options: options)
    }

    /// A time to live in whole milliseconds, at least one. Not positive (or not a number)
    /// gives 0, which the core refuses with `.invalidMessage`; beyond `UInt64` (or
    /// infinite) gives the largest value, which the age limit bounds anyway.
    static func milliseconds(_ seconds: TimeInterval) -> UInt64 {
        guard seconds > 0 else { return 0 }
        let ms = (seconds * 1000).rounded(.down)
        if ms >= 1.8e19 { return UInt64.max }
        return max(1, UInt64(ms))
    }

    /// Takes back a queued message that is not on its way yet: true when it was removed
    /// and will not be sent again; false when it is no longer queued (acked, expired,
    /// replaced, cancelled) or written to the open connection and waiting for the ack.
    public func cancel(_ id: String) async throws -> Bool {
        try await client.cancelMessage(id: id)
    }

    /// Joins `room` now and after every reconnect.
    public func joinRoom(_ room: String) throws { try client.joinRoom(room: room) }

    /// Leaves `room` and stops re-joining it.
    public func leaveRoom(_ room: String) throws { try client.leaveRoom(room: room) }

    /// Who is in `room` (a room this connection has joined), on every gateway node:
    /// distinct `users`, their `connections`, and `members` ordered by user id (at most
    /// 1,000; `truncated` when there are more). Calls for the same room at the same time
    /// share one request.
    /// - Throws: `TetherError`: `.network` when not connected, when the connection drops
    ///   or after 10 s without an answer; `.invalidMessage` for a bad room name; `.auth`
    ///   when the room was not joined (join it first); `.protocol` when the gateway
    ///   refused for now (rate limited, unavailable); `.shutdown`.
    public func roomPresence(_ room: String) async throws -> RoomPresence {
        try await client.roomPresence(room: room)
    }

    /// What NWPathMonitor reports (NetworkMonitor does this for you).
    public func setNetwork(_ state: NetworkState) { client.setNetwork(state: state) }

    /// Foreground or background (AppLifecycle does this for you).
    public func setAppState(_ state: AppState) { client.setAppState(state: state) }

    /// Counters and gauges.
    public func stats() -> ClientStats { client.stats() }

    /// The last message delivered.
    public var lastMessage: InboundMessage? { client.lastMessage() }

    /// Stops the client, ends every stream and releases the storage directory.
    public func shutdown() async {
        await client.shutdown()
        statusHub.finish()
        messageHub.finish()
        ackHub.finish()
        errorHub.finish()
        expiredHub.finish()
        replacedHub.finish()
        streamResetHub.finish()
    }
}

/// Fans one sequence of values out to any number of AsyncStreams. Callbacks arrive on the
/// SDK's dispatcher thread, streams are iterated elsewhere, hence the lock.
///
/// A lossless hub (messages, acks, expirations, stream resets) never drops a value: when a stream's
/// buffer is full it holds the dispatcher thread until the app has read some, which is
/// what stops the SDK from acking messages the app has not seen (the SDK counts a message
/// as processed once `onMessage` returns). A lossy hub (status, errors) keeps the newest.
final class Hub<Element: Sendable>: @unchecked Sendable {
    /// Values each stream buffers before a lossless hub waits for its reader.
    static var capacity: Int { 256 }
    /// How often a waiting lossless hub looks again.
    static var retryInterval: TimeInterval { 0.005 }

    private let lock = NSLock()
    private var continuations: [UUID: AsyncStream<Element>.Continuation] = [:]
    private var finished = false
    private var current: Element?
    private let replaysLatest: Bool
    private let lossless: Bool

    /// A hub whose new streams start with the latest value (for the status); lossy.
    init(latest: Element) {
        self.current = latest
        self.replaysLatest = true
        self.lossless = false
    }

    /// A hub of events: new streams see only what comes after.
    init(lossless: Bool) {
        self.current = nil
        self.replaysLatest = false
        self.lossless = lossless
    }

    /// The last value sent (status hub only).
    var latest: Element? {
        lock.lock()
        defer { lock.unlock() }
        return current
    }

    func stream() -> AsyncStream<Element> {
        // Lossless streams refuse a value when full (bufferingOldest answers `.dropped`
        // with the new value, which send() then offers again); lossy ones drop the oldest.
        let policy: AsyncStream<Element>.Continuation.BufferingPolicy =
            lossless ? .bufferingOldest(Hub.capacity) : .bufferingNewest(Hub.capacity)
        return AsyncStream(bufferingPolicy: policy) { continuation in
            let id = UUID()
            self.lock.lock()
            if self.finished {
                self.lock.unlock()
                continuation.finish()
                return
            }
            self.continuations[id] = continuation
            if self.replaysLatest, let value = self.current {
                continuation.yield(value)
            }
            self.lock.unlock()
            continuation.onTermination = { [weak self] _ in self?.remove(id) }
        }
    }

    func send(_ value: Element) {
        lock.lock()
        if replaysLatest { current = value }
        let targets = Array(continuations.values)
        lock.unlock()
        for continuation in targets {
            deliver(value, to: continuation)
        }
    }

    private func deliver(_ value: Element, to continuation: AsyncStream<Element>.Continuation) {
        while true {
            switch continuation.yield(value) {
            case .enqueued, .terminated:
                return
            case .dropped:
                if !lossless || isFinished { return }
                // Full: wait for the reader. This is the SDK's dispatcher thread (never
                // the app's), so waiting here is the backpressure, not a stall of the UI.
                Thread.sleep(forTimeInterval: Hub.retryInterval)
            @unknown default:
                return
            }
        }
    }

    private var isFinished: Bool {
        lock.lock()
        defer { lock.unlock() }
        return finished
    }

    func finish() {
        lock.lock()
        finished = true
        let targets = Array(continuations.values)
        continuations.removeAll()
        lock.unlock()
        for continuation in targets {
            continuation.finish()
        }
    }

    private func remove(_ id: UUID) {
        lock.lock()
        continuations[id] = nil
        lock.unlock()
    }
}

/// Message `id` was dropped unsent: message `by`, with the same replace key, took its place.
public struct Replaced: Sendable, Equatable {
    public let id: String
    public let by: String
}

private final class Listener: EventListener, @unchecked Sendable {
    let status: Hub<ConnectionStatus>
    let messages: Hub<InboundMessage>
    let acks: Hub<String>
    let errors: Hub<TetherError>
    let expired: Hub<String>
    let replaced: Hub<Replaced>
    let streamResets: Hub<String?>

    init(
        status: Hub<ConnectionStatus>,
        messages: Hub<InboundMessage>,
        acks: Hub<String>,
        errors: Hub<TetherError>,
        expired: Hub<String>,
        replaced: Hub<Replaced>,
        streamResets: Hub<String?>
    ) {
        self.status = status
        self.messages = messages
        self.acks = acks
        self.errors = errors
        self.expired = expired
        self.replaced = replaced
        self.streamResets = streamResets
    }

    func onStatus(status: ConnectionStatus) { self.status.send(status) }
    func onMessage(message: InboundMessage) { messages.send(message) }
    func onAck(id: String) { acks.send(id) }
    func onError(error: TetherError) { errors.send(error) }
    func onExpired(id: String) { expired.send(id) }
    func onReplaced(id: String, by: String) { replaced.send(Replaced(id: id, by: by)) }
    func onStreamReset(room: String?) { streamResets.send(room) }
}

/// Hands the app's async token closure to the SDK, which awaits it as a Swift task of its
/// own and cancels that task when the call runs past 30 s or the client shuts down
/// (`Task.isCancelled` turns true; `URLSession` calls throw `URLError(.cancelled)`).
private final class ClosureTokens: TokenProvider, @unchecked Sendable {
    private let fetch: @Sendable () async throws -> String?

    init(_ fetch: @escaping @Sendable () async throws -> String?) { self.fetch = fetch }

    func fetchToken() async throws -> String? {
        do {
            return try await fetch()
        } catch let error as TokenError {
            throw error
        } catch {
            // localizedDescription, not String(describing:): an NSError's description
            // carries its userInfo (a failing URL with its query string).
            throw TokenError.Failed(reason: error.localizedDescription)
        }
    }
}
