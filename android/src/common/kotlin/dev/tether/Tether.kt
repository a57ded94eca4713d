// The Kotlin face of the SDK, shared by the Android library and the JVM tests
// (bindings/kotlin): flows instead of a listener, a suspend lambda instead of a
// TokenProvider, a suspend send taking a JsonElement, a suspend roomPresence. Nothing here is Android-specific; the Android module
// adds the connectivity and lifecycle observers and the TLS init (android/src/main).

package dev.tether

import dev.tether.sdk.AppState
import dev.tether.sdk.ClientConfig
import dev.tether.sdk.ClientStats
import dev.tether.sdk.ConnectionStatus
import dev.tether.sdk.EventListener
import dev.tether.sdk.InboundMessage
import dev.tether.sdk.LogLevel
import dev.tether.sdk.LogSink
import dev.tether.sdk.NetworkState
import dev.tether.sdk.RoomPresence
import dev.tether.sdk.SendOptions
import dev.tether.sdk.TetherClient
import dev.tether.sdk.TetherException
import dev.tether.sdk.TokenException
import dev.tether.sdk.TokenProvider
import dev.tether.sdk.setLogSink
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.currentCoroutineContext
import kotlinx.coroutines.ensureActive
import kotlinx.coroutines.channels.BufferOverflow
import kotlinx.coroutines.flow.MutableSharedFlow
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.SharedFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asSharedFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.runBlocking
import kotlinx.serialization.json.JsonElement
import kotlin.time.Duration

/**
 * One connection to the Tether gateway.
 *
 * Start collecting [messages] before calling [connect]: a message that arrives while no
 * one collects is not buffered for later collectors (it is still [lastMessage]), and the
 * SDK counts it as delivered. Collectors that fall behind slow the SDK down rather than
 * lose messages: up to [MESSAGE_BUFFER] messages wait, then delivery pauses.
 *
 * @param tokens called before every connection attempt and after the gateway refuses a
 *   token, and shortly before the connection's token runs out (the new one then goes to
 *   the gateway without reconnecting); never twice at once, as a coroutine of its own (on `Dispatchers.Default`): call
 *   the app's suspend token refresh from it, and switch to `Dispatchers.IO` for blocking
 *   work. It is cancelled when it runs past 30 s (that attempt fails and is retried) or
 *   when the client closes. Return `null` when the user is signed out: the status becomes
 *   `Failed` and nothing is retried until [connect] is called again. Throw when there is
 *   no token for now (the refresh failed): the exception's message reaches [errors] (kind
 *   `AUTH`) and the SDK retries with backoff.
 * @throws TetherException with kind `InvalidConfig` or `Storage` when the config is wrong
 *   or the storage directory cannot be opened.
 */
class Tether(config: ClientConfig, tokens: suspend () -> String?) : AutoCloseable {
    private val statusFlow = MutableStateFlow<ConnectionStatus>(ConnectionStatus.Idle)
    private val messageFlow = MutableSharedFlow<InboundMessage>(extraBufferCapacity = MESSAGE_BUFFER)
    private val ackFlow = events<String>()
    private val errorFlow = events<TetherException>()
    private val expiredFlow = events<String>()
    private val replacedFlow = events<Replaced>()
    private val streamResetFlow = events<String?>()

    /** The underlying generated client, for what this wrapper does not cover. */
    val client: TetherClient = TetherClient(config, Listener(), Tokens(tokens))

    /** The connection status; starts at `Idle`. */
    val status: StateFlow<ConnectionStatus> = statusFlow.asStateFlow()

    /**
     * Messages from the backend, in order, each once. Messages of a stream (a room with
     * history, the app's broadcasts when the gateway keeps them) carry `offset`, strictly
     * increasing within the stream; the SDK replays what a stream missed while
     * disconnected (or while the app was killed) and reports [streamResets] when it cannot.
     */
    val messages: SharedFlow<InboundMessage> = messageFlow.asSharedFlow()

    /** Ids of sent messages the gateway stored (the id [send] returned). */
    val acks: SharedFlow<String> = ackFlow.asSharedFlow()

    /** Failures the SDK reports; it already retries what can be retried. */
    val errors: SharedFlow<TetherException> = errorFlow.asSharedFlow()

    /** Ids of sent messages dropped unsent: older than `maxMessageAgeS` or their `ttl`. */
    val expired: SharedFlow<String> = expiredFlow.asSharedFlow()

    /**
     * Messages dropped unsent because a newer one with the same `replaceKey` was queued
     * while they waited (latest wins).
     */
    val replaced: SharedFlow<Replaced> = replacedFlow.asSharedFlow()

    /**
     * Streams that lost messages for good: the room (`null`: the app's broadcast stream)
     * whose history no longer held what came after the last message the app processed
     * (it was away too long, or the gateway lost the history). Refetch that room's state
     * from the backend; [messages] goes on with the ones that follow. Emitted before the
     * first message after the gap is emitted to [messages]; counted in
     * `stats().streamResets`.
     */
    val streamResets: SharedFlow<String?> = streamResetFlow.asSharedFlow()

    /** Whether the status is `Connected`. */
    val isConnected: Boolean get() = status.value is ConnectionStatus.Connected

    /** Connects, and keeps connecting after failures. Idempotent. */
    fun connect() = client.connect()

    /** Disconnects and stays disconnected until [connect]; queued messages are kept. */
    fun disconnect() = client.disconnect()

    /** Drops the socket and connects again now. */
    fun reconnect() = client.reconnect()

    /**
     * Queues a message and returns its id once it is on disk. It is sent now when
     * connected, else after the next connect; its id appears in [acks] when the gateway
     * stored it.
     *
     * @throws TetherException `InvalidMessage` (bad type, too large), `QueueFull`,
     *   `Storage`, `Shutdown`.
     */
    suspend fun send(type: String, data: JsonElement): String = client.sendMessage(type, data.toString())

    /** [send] with the payload already encoded as JSON text. */
    suspend fun sendJson(type: String, dataJson: String): String = client.sendMessage(type, dataJson)

    /**
     * [send] for messages whose value is the newest one or that are worthless late.
     *
     * @param replaceKey latest wins: queued messages with the same key that are not on
     *   their way yet (written to the socket, waiting for the ack) are dropped and appear
     *   in [replaced]; e.g. `"location"` for a courier's position. 1 to 256 bytes.
     * @param ttl dropped (its id in [expired]) instead of sent once queued this long;
     *   `maxMessageAgeS` still applies when shorter. Positive; counted in whole
     *   milliseconds, at least one.
     * @throws TetherException as [send]; `InvalidMessage` for a bad key.
     * @throws IllegalArgumentException for a time to live that is not positive.
     */
    suspend fun send(
        type: String,
        data: JsonElement,
        replaceKey: String? = null,
        ttl: Duration? = null,
    ): String = sendJson(type, data.toString(), replaceKey, ttl)

    /** [send] with a replace key and time to live, the payload already encoded as JSON text. */
    suspend fun sendJson(
        type: String,
        dataJson: String,
        replaceKey: String? = null,
        ttl: Duration? = null,
    ): String {
        require(ttl == null || ttl.isPositive()) { "ttl must be positive, got $ttl" }
        val ttlMs = ttl?.inWholeMilliseconds?.coerceAtLeast(1)?.toULong()
        return client.sendMessageWith(type, dataJson, SendOptions(replaceKey, ttlMs))
    }

    /**
     * Takes back a queued message that is not on its way yet: true when it was removed
     * and will not be sent again; false when it is no longer queued (acked, expired,
     * replaced, cancelled) or written to the open connection and waiting for the ack.
     */
    suspend fun cancel(id: String): Boolean = client.cancelMessage(id)

    /** Joins [room] now and after every reconnect. @throws TetherException on a bad name. */
    fun joinRoom(room: String) = client.joinRoom(room)

    /** Leaves [room] and stops re-joining it. @throws TetherException on a bad name. */
    fun leaveRoom(room: String) = client.leaveRoom(room)

    /**
     * Who is in [room] (a room this client has joined), on every gateway node: distinct
     * `users`, their `connections`, and `members` ordered by user id (at most 1,000;
     * `truncated` when there are more). Calls for the same room at the same time share
     * one request.
     *
     * @throws TetherException `Network` when not connected, when the connection drops or
     *   after 10 s without an answer; `InvalidMessage` for a bad room name; `Auth` when the
     *   room was not joined (join it first); `Protocol` when the gateway refused for now
     *   (rate limited, unavailable); `Shutdown`.
     */
    suspend fun roomPresence(room: String): RoomPresence = client.roomPresence(room)

    /** What the OS reports about the network (the Android module feeds this). */
    fun setNetwork(state: NetworkState) = client.setNetwork(state)

    /** Foreground or background (the Android module feeds this). */
    fun setAppState(state: AppState) = client.setAppState(state)

    /** Counters and gauges. */
    fun stats(): ClientStats = client.stats()

    /** The last message delivered, if any. */
    fun lastMessage(): InboundMessage? = client.lastMessage()

    /** The last error reported, if any. */
    fun lastError(): TetherException? = client.lastError()

    /** Stops the client and releases its storage directory; returns once released. */
    suspend fun shutdown() = client.shutdown()

    /** [shutdown], blocking, then frees the native object. */
    override fun close() {
        runBlocking { client.shutdown() }
        client.close()
    }

    private inner class Listener : EventListener {
        override fun onStatus(status: ConnectionStatus) {
            statusFlow.value = status
        }

        override fun onMessage(message: InboundMessage) {
            // Called on the SDK's dispatcher thread, which exists to be blocked: waiting
            // here for room in the buffer is how a slow collector slows the SDK down.
            runBlocking { messageFlow.emit(message) }
        }

        override fun onAck(id: String) {
            ackFlow.tryEmit(id)
        }

        override fun onError(error: TetherException) {
            errorFlow.tryEmit(error)
        }

        override fun onExpired(id: String) {
            expiredFlow.tryEmit(id)
        }

        override fun onReplaced(id: String, by: String) {
            replacedFlow.tryEmit(Replaced(id, by))
        }

        override fun onStreamReset(room: String?) {
            streamResetFlow.tryEmit(room)
        }
    }

    private class Tokens(private val fetch: suspend () -> String?) : TokenProvider {
        // The SDK awaits this as a coroutine the generated code launches, and cancels it
        // past its time limit or at shutdown. Anything else the lambda throws becomes
        // TokenException.Failed with its message: left to the generated code, the reason
        // would be the exception's toString(), class name first, and an Error (TODO(),
        // AssertionError) would escape to the thread's handler and end an Android app.
        override suspend fun fetchToken(): String? =
            try {
                fetch()
            } catch (e: CancellationException) {
                // The SDK's cancellation goes on; the lambda's own (a withTimeout of the
                // app's) is a failure like any other.
                currentCoroutineContext().ensureActive()
                throw TokenException.Failed(e.message ?: "cancelled")
            } catch (e: TokenException) {
                throw e
            } catch (e: VirtualMachineError) {
                throw e // out of memory, stack overflow: not the provider's answer
            } catch (e: Throwable) {
                throw TokenException.Failed(e.message ?: e.javaClass.name)
            }
    }

    companion object {
        /** Messages waiting for slow collectors before delivery pauses. */
        const val MESSAGE_BUFFER = 64

        /**
         * Events (acks, errors, expiries, stream resets) kept for slow collectors; older
         * ones are dropped.
         */
        const val EVENT_BUFFER = 256

        private fun <T> events() =
            MutableSharedFlow<T>(extraBufferCapacity = EVENT_BUFFER, onBufferOverflow = BufferOverflow.DROP_OLDEST)

        /**
         * Sends the SDK's log lines at [level] and above to [sink] (Logcat, the app's
         * logger). Once per process. @throws TetherException when a sink is already set.
         */
        fun setLogger(level: LogLevel, sink: (level: LogLevel, target: String, message: String) -> Unit) {
            setLogSink(
                object : LogSink {
                    override fun log(level: LogLevel, target: String, message: String) = sink(level, target, message)
                },
                level,
            )
        }
    }
}

/** Message [id] was dropped unsent: message [by], with the same replace key, took its place. */
data class Replaced(val id: String, val by: String)
