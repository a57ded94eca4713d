// Stream recovery through the Kotlin wrapper against a real gateway whose `feed:*` rooms
// and app broadcasts keep a history of 3 messages: stream messages carry their offset; a
// short disconnect (or a restart on the same storage) gets the missed messages once, in
// offset order, with no reset; a disconnect longer than the history emits the room (or
// null, for the app's broadcast stream) on `streamResets` and delivery goes on after the
// gap.

package dev.tether

import dev.tether.sdk.ConnectionStatus
import kotlinx.coroutines.runBlocking
import kotlinx.serialization.json.buildJsonObject
import kotlinx.serialization.json.put
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNotNull
import org.junit.jupiter.api.Test

class StreamRecoveryTest : GatewayTest() {
    override val gatewaySettings = mapOf(
        "WS_ROOM_HISTORY" to "feed:*",
        "WS_ROOM_HISTORY_SIZE" to "$HISTORY",
        "WS_APP_HISTORY_SIZE" to "$HISTORY",
    )

    private fun tick(n: Int) = buildJsonObject { put("n", n) }

    /** Publishes to [room] until the gateway counts this client in it (the join goes out after connecting). */
    private fun publishOnceJoined(room: String, n: Int): Published {
        var sent: Published? = null
        withRetry {
            sent = gateway.publishToRoom(room, "tick", tick(n))
            assertEquals(1L, sent!!.delivered)
        }
        return sent!!
    }

    /** Waits until the gateway no longer counts anyone in [room] (a disconnect closes the socket after the status says so). */
    private fun awaitEmpty(room: String) = withRetry { assertEquals(emptyList<String>(), gateway.presenceUsers(room)) }

    @Test
    fun `after a short disconnect the missed room messages arrive once, in offset order, with no reset`() = runBlocking {
        val room = "feed:${System.nanoTime()}"
        Tether(testConfig(gateway), tokens = { Gateway.token(newUser("recover")) }).use { tether ->
            val messages = record(tether.messages)
            val resets = record(tether.streamResets)
            tether.joinRoom(room)
            tether.connect()
            tether.awaitStatus<ConnectionStatus.Connected>()
            val first = publishOnceJoined(room, 0)
            val firstOffset = checkNotNull(first.offset) { "a room with history numbers its messages" }
            assertEquals(firstOffset, messages.next().offset?.toLong())

            tether.disconnect()
            tether.awaitStatus<ConnectionStatus.Disconnected>()
            awaitEmpty(room)
            val missed = (1 until HISTORY).map { gateway.publishToRoom(room, "tick", tick(it)) }
            assertEquals(List(HISTORY - 1) { 0L }, missed.map { it.delivered })
            tether.connect()
            val replayed = missed.map { messages.next() }
            assertEquals((1 until HISTORY).map { firstOffset + it }, replayed.map { it.offset?.toLong() })
            assertEquals(missed.map { it.offset }, replayed.map { it.offset?.toLong() })
            assertEquals((1 until HISTORY).map { """{"n":$it}""" }, replayed.map { it.dataJson })
            // The next live message comes right after: nothing was delivered twice.
            val live = gateway.publishToRoom(room, "tick", tick(HISTORY))
            assertEquals(1L, live.delivered)
            assertEquals(live.offset, messages.next().offset?.toLong())
            assertEquals(emptyList<String?>(), resets.drain(), "a recovered stream is not reset")
            assertEquals(0uL, tether.stats().streamResets)
            messages.stop()
            resets.stop()
        }
    }

    @Test
    fun `after a longer disconnect than the history holds, streamResets emits the room`() = runBlocking {
        val room = "feed:${System.nanoTime()}"
        Tether(testConfig(gateway), tokens = { Gateway.token(newUser("reset")) }).use { tether ->
            val messages = record(tether.messages)
            val resets = record(tether.streamResets)
            tether.joinRoom(room)
            tether.connect()
            tether.awaitStatus<ConnectionStatus.Connected>()
            val first = publishOnceJoined(room, 0)
            val got = messages.next()
            assertNotNull(got.offset, "a message of a room with history carries its offset")
            assertEquals(first.offset, got.offset?.toLong())
            assertEquals(room, got.room)

            tether.disconnect()
            tether.awaitStatus<ConnectionStatus.Disconnected>()
            awaitEmpty(room)
            repeat(HISTORY + 2) { gateway.publishToRoom(room, "tick", tick(it + 1)) }
            tether.connect()
            assertEquals(room, resets.next())
            assertEquals(1uL, tether.stats().streamResets)
            // Nothing of the lost stretch is replayed: delivery goes on with the next live one.
            val live = gateway.publishToRoom(room, "tick", tick(HISTORY + 3))
            assertEquals(1L, live.delivered)
            assertEquals(live.offset, messages.next().offset?.toLong())
            assertEquals(listOf(got), messages.seen.dropLast(1), "no message between the first and the live one")
            assertEquals(emptyList<String?>(), resets.drain(), "one reset")
            messages.stop()
            resets.stop()
        }
    }

    @Test
    fun `a restart on the same storage recovers the room from the position kept on disk`() = runBlocking {
        val room = "feed:${System.nanoTime()}"
        val user = newUser("restart")
        val storage = storageDir()
        val device = "jvm-restart-${System.nanoTime()}"
        val firstOffset = Tether(testConfig(gateway, storage, device), tokens = { Gateway.token(user) }).use { tether ->
            val messages = record(tether.messages)
            tether.joinRoom(room)
            tether.connect()
            tether.awaitStatus<ConnectionStatus.Connected>()
            publishOnceJoined(room, 0)
            val offset = checkNotNull(messages.next().offset) { "a stream message carries its offset" }
            // The SDK hands the listener the next event (this status) only once the
            // position of the message before it is on disk.
            tether.disconnect()
            tether.awaitStatus<ConnectionStatus.Disconnected>()
            messages.stop()
            offset.toLong()
        }
        // The app is gone (closed: the storage is released); the room goes on.
        awaitEmpty(room)
        val missed = (1 until HISTORY).map { gateway.publishToRoom(room, "tick", tick(it)).offset }
        Tether(testConfig(gateway, storage, device), tokens = { Gateway.token(user) }).use { tether ->
            val messages = record(tether.messages)
            val resets = record(tether.streamResets)
            tether.joinRoom(room)
            tether.connect()
            val replayed = missed.map { messages.next() }
            assertEquals((1 until HISTORY).map { firstOffset + it }, replayed.map { it.offset?.toLong() })
            assertEquals(missed, replayed.map { it.offset?.toLong() })
            val live = gateway.publishToRoom(room, "tick", tick(HISTORY))
            assertEquals(live.offset, messages.next().offset?.toLong())
            assertEquals(emptyList<String?>(), resets.drain())
            messages.stop()
            resets.stop()
        }
    }

    @Test
    fun `the app's broadcast stream resets with a null room`() = runBlocking {
        Tether(testConfig(gateway), tokens = { Gateway.token(newUser("app-stream")) }).use { tether ->
            val messages = record(tether.messages)
            val resets = record(tether.streamResets)
            tether.connect()
            tether.awaitStatus<ConnectionStatus.Connected>()
            // Connected means the handshake (and its app stream position) is done.
            val first = gateway.publishToApp("announcement", tick(0))
            val got = messages.next()
            assertEquals(null, got.room)
            assertNotNull(got.offset, "a kept broadcast carries its offset")
            assertEquals(first.offset, got.offset?.toLong())

            tether.disconnect()
            tether.awaitStatus<ConnectionStatus.Disconnected>()
            repeat(HISTORY + 2) { gateway.publishToApp("announcement", tick(it + 1)) }
            tether.connect()
            assertEquals(null, resets.next())
            assertEquals(1uL, tether.stats().streamResets)
            messages.stop()
            resets.stop()
        }
    }

    private companion object {
        /** Messages each stream keeps (WS_ROOM_HISTORY_SIZE, WS_APP_HISTORY_SIZE). */
        const val HISTORY = 3
    }
}
