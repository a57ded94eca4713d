// The Kotlin wrapper over the generated bindings against a real gateway: connecting,
// receiving (user inbox and rooms), sending with an ack, refusals with their error kind,
// and the status flow through network and lifecycle changes.

package dev.tether

import dev.tether.sdk.AppState
import dev.tether.sdk.ConnectionStatus
import dev.tether.sdk.ErrorKind
import dev.tether.sdk.NetworkKind
import dev.tether.sdk.NetworkState
import dev.tether.sdk.TetherException
import kotlinx.coroutines.runBlocking
import kotlinx.serialization.json.Json
import kotlinx.serialization.json.buildJsonObject
import kotlinx.serialization.json.int
import kotlinx.serialization.json.jsonObject
import kotlinx.serialization.json.jsonPrimitive
import kotlinx.serialization.json.put
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNotNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

class ConnectionTest : GatewayTest() {
    @Test
    fun `connects and the status flow goes Idle, Connecting, Connected`() = runBlocking {
        val user = newUser("connect")
        Tether(testConfig(gateway), tokens = { Gateway.token(user) }).use { tether ->
            assertEquals(ConnectionStatus.Idle, tether.status.value)
            assertFalse(tether.isConnected)
            val statuses = record(tether.status)
            tether.connect()
            statuses.until { it is ConnectionStatus.Connected }
            // A StateFlow keeps only the latest value, so a quick Connecting may be skipped;
            // nothing else may appear between Idle and Connected.
            assertEquals(ConnectionStatus.Idle, statuses.seen.first())
            assertTrue(statuses.seen.drop(1).dropLast(1).all { it == ConnectionStatus.Connecting }, "${statuses.seen}")
            assertTrue(tether.isConnected)
            assertEquals(ConnectionStatus.Connected, tether.stats().status)
            statuses.stop()
        }
    }

    @Test
    fun `receives the user's messages in order, each once, with their payload`() = runBlocking {
        val user = newUser("receive")
        Tether(testConfig(gateway), tokens = { Gateway.token(user) }).use { tether ->
            val messages = record(tether.messages)
            tether.connect()
            tether.awaitStatus<ConnectionStatus.Connected>()
            val seqs = (1..3).map { n ->
                gateway.sendToUser(user, "order_update", buildJsonObject { put("orderId", n); put("status", "delivered") })
            }
            val got = (1..3).map { messages.next() }
            assertEquals(seqs, got.map { it.seq?.toLong() })
            assertEquals(listOf("order_update", "order_update", "order_update"), got.map { it.type })
            assertEquals(listOf(1, 2, 3), got.map { Json.parseToJsonElement(it.dataJson).jsonObject.getValue("orderId").jsonPrimitive.int })
            assertEquals(got.last(), tether.lastMessage())
            assertEquals(3uL, tether.stats().received)
            messages.stop()
        }
    }

    @Test
    fun `messages sent while disconnected arrive after connecting again`() = runBlocking {
        val user = newUser("inbox")
        Tether(testConfig(gateway), tokens = { Gateway.token(user) }).use { tether ->
            val messages = record(tether.messages)
            tether.connect()
            tether.awaitStatus<ConnectionStatus.Connected>()
            val first = gateway.sendToUser(user, "note", buildJsonObject { put("n", 1) })
            assertEquals(first, messages.next().seq?.toLong())
            tether.disconnect()
            tether.awaitStatus<ConnectionStatus.Disconnected>()
            val second = gateway.sendToUser(user, "note", buildJsonObject { put("n", 2) })
            tether.connect()
            val replayed = messages.next()
            assertEquals(second, replayed.seq?.toLong())
            assertEquals("""{"n":2}""", replayed.dataJson)
            messages.stop()
        }
    }

    @Test
    fun `receives room messages after joining, and none after leaving`() = runBlocking {
        val user = newUser("room")
        val room = "orders:${System.nanoTime()}"
        Tether(testConfig(gateway), tokens = { Gateway.token(user) }).use { tether ->
            val messages = record(tether.messages)
            tether.joinRoom(room)
            tether.connect()
            tether.awaitStatus<ConnectionStatus.Connected>()
            // The join goes out right after connecting; wait until the gateway counts us.
            withRetry { assertEquals(1L, gateway.sendToRoom(room, "eta", buildJsonObject { put("minutes", 5) })) }
            val message = messages.next()
            assertEquals(room, message.room)
            assertEquals("eta", message.type)
            assertEquals(null, message.seq)
            tether.leaveRoom(room)
            withRetry { assertEquals(0L, gateway.sendToRoom(room, "eta", buildJsonObject { put("minutes", 1) })) }
            messages.stop()
        }
    }

    @Test
    fun `send returns an id, the gateway acks it and the backend can read it`() = runBlocking {
        val user = newUser("send")
        Tether(testConfig(gateway), tokens = { Gateway.token(user) }).use { tether ->
            val acks = record(tether.acks)
            tether.connect()
            tether.awaitStatus<ConnectionStatus.Connected>()
            val id = tether.send("chat_message", buildJsonObject { put("text", "hello"); put("n", 7) })
            assertEquals(id, acks.next())
            val stored = gateway.inbound().single { it.getValue("id").jsonPrimitive.content == id }
            assertEquals(user, stored.getValue("userId").jsonPrimitive.content)
            assertEquals("chat_message", stored.getValue("type").jsonPrimitive.content)
            assertEquals(buildJsonObject { put("text", "hello"); put("n", 7) }, stored.getValue("data"))
            val stats = tether.stats()
            assertEquals(1uL, stats.acked)
            assertEquals(0u, stats.queued)
            assertNotNull(stats.connectedForMs)
            acks.stop()
        }
    }

    @Test
    fun `refusals are TetherExceptions with a kind to switch on`() = runBlocking {
        Tether(testConfig(gateway), tokens = { Gateway.token(newUser("refuse")) }).use { tether ->
            val reserved = assertThrows<TetherException> { runBlocking { tether.send("ping", buildJsonObject {}) } }
            assertEquals(ErrorKind.INVALID_MESSAGE, reserved.kind())
            val badJson = assertThrows<TetherException> { runBlocking { tether.sendJson("chat_message", "{not json") } }
            assertEquals(ErrorKind.INVALID_MESSAGE, badJson.kind())
            val badRoom = assertThrows<TetherException> { tether.joinRoom("no spaces allowed") }
            assertEquals(ErrorKind.INVALID_MESSAGE, badRoom.kind())
        }
        val badConfig = assertThrows<TetherException> {
            Tether(testConfig(gateway).copy(url = "https://not-a-websocket"), tokens = { null })
        }
        assertEquals(ErrorKind.INVALID_CONFIG, badConfig.kind())
    }

    @Test
    fun `the status flow follows the network and the app lifecycle`() = runBlocking {
        val user = newUser("status")
        Tether(testConfig(gateway, backgroundGraceMs = 300uL), tokens = { Gateway.token(user) }).use { tether ->
            val statuses = record(tether.status)
            tether.connect()
            statuses.until { it is ConnectionStatus.Connected }

            tether.setNetwork(NetworkState(available = false, kind = NetworkKind.NONE, expensive = false))
            statuses.until { it is ConnectionStatus.WaitingForNetwork }
            tether.setNetwork(NetworkState(available = true, kind = NetworkKind.WIFI, expensive = false))
            statuses.until { it is ConnectionStatus.Connected }

            tether.setAppState(AppState.BACKGROUND)
            statuses.until { it is ConnectionStatus.Suspended }
            tether.setAppState(AppState.FOREGROUND)
            statuses.until { it is ConnectionStatus.Connected }

            tether.disconnect()
            statuses.until { it is ConnectionStatus.Disconnected }
            val milestones = statuses.seen.filter {
                it is ConnectionStatus.Connected || it is ConnectionStatus.WaitingForNetwork ||
                    it is ConnectionStatus.Suspended || it is ConnectionStatus.Disconnected
            }
            assertEquals(
                listOf(
                    ConnectionStatus.Connected, ConnectionStatus.WaitingForNetwork, ConnectionStatus.Connected,
                    ConnectionStatus.Suspended, ConnectionStatus.Connected, ConnectionStatus.Disconnected,
                ),
                milestones,
            )
            assertEquals(2uL, tether.stats().reconnects)
            statuses.stop()
        }
    }

    @Test
    fun `a dead primary address falls back to the next one`() = runBlocking {
        val user = newUser("fallback")
        val config = testConfig(gateway)
        // Port 9 on loopback: nothing listens, the attempt fails at once.
        Tether(config.copy(url = "ws://127.0.0.1:9/ws", fallbackUrls = listOf(config.url)), tokens = { Gateway.token(user) })
            .use { tether ->
                val statuses = record(tether.status)
                tether.connect()
                statuses.until { it is ConnectionStatus.Connected }
                assertTrue(statuses.seen.any { it is ConnectionStatus.Reconnecting }, "${statuses.seen}")
                statuses.stop()
            }
        val refused = assertThrows<TetherException> {
            Tether(config.copy(fallbackUrls = listOf("https://not-a-websocket")), tokens = { null })
        }
        assertEquals(ErrorKind.INVALID_CONFIG, refused.kind())
        assertTrue("fallback_urls[0]" in refused.message(), refused.message())
    }
}

/** Retries [check] for up to 10 s (for state the gateway applies asynchronously). */
fun withRetry(check: () -> Unit) {
    val deadline = System.nanoTime() + 10_000_000_000L
    while (true) {
        try {
            check()
            return
        } catch (e: AssertionError) {
            if (System.nanoTime() > deadline) throw e
            Thread.sleep(50)
        }
    }
}
