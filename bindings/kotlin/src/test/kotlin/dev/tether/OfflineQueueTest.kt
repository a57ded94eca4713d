// The outbound queue through the Kotlin API: messages sent while the gateway is down are
// kept on disk and flushed, in order, once the client reconnects; messages queued by a
// client that never connected survive a restart of the app (a new client on the same
// storage directory); a newer message with the same replace key, a time to live and
// cancel keep stale messages from being sent.

package dev.tether

import dev.tether.sdk.ConnectionStatus
import kotlinx.coroutines.runBlocking
import kotlinx.serialization.json.JsonPrimitive
import kotlinx.serialization.json.buildJsonObject
import kotlinx.serialization.json.jsonPrimitive
import kotlinx.serialization.json.put
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import kotlin.time.Duration.Companion.milliseconds

class OfflineQueueTest {
    @Test
    fun `messages sent while the gateway is down are flushed in order after reconnecting`() = runBlocking {
        var gateway = Gateway.start()
        val port = gateway.port
        val user = newUser("offline")
        try {
            Tether(testConfig(gateway), tokens = { Gateway.token(user) }).use { tether ->
                val acks = record(tether.acks)
                tether.connect()
                tether.awaitStatus<ConnectionStatus.Connected>()

                gateway.stop()
                tether.awaitStatus<ConnectionStatus.Reconnecting>()
                val ids = (1..3).map { n -> tether.send("offline_note", buildJsonObject { put("n", n) }) }
                val queued = tether.stats()
                assertEquals(3u, queued.queued)
                assertTrue(queued.queuedBytes > 0uL)

                gateway = Gateway.start(port)
                tether.awaitStatus<ConnectionStatus.Connected>(timeoutMs = 20_000)
                assertEquals(ids.toSet(), (1..3).map { acks.next() }.toSet())
                assertEquals(ids, gateway.inbound().map { it.getValue("id").jsonPrimitive.content })
                assertEquals(0u, tether.stats().queued)
                assertEquals(1uL, tether.stats().reconnects)
                acks.stop()
            }
        } finally {
            gateway.stop()
        }
    }

    @Test
    fun `messages queued before the first connection survive a restart of the client`() = runBlocking {
        Gateway.start().use { gateway ->
            val user = newUser("restart")
            val storage = storageDir()
            val device = "jvm-restart-${System.nanoTime()}"
            val ids = Tether(testConfig(gateway, storage, device), tokens = { Gateway.token(user) }).use { first ->
                // Never connected: the messages only exist on disk.
                (1..2).map { n -> first.send("queued_before_connect", buildJsonObject { put("n", n) }) }
            }
            Tether(testConfig(gateway, storage, device), tokens = { Gateway.token(user) }).use { second ->
                // The engine publishes its first snapshot a moment after the constructor.
                withRetry { assertEquals(2u, second.stats().queued) }
                val acks = record(second.acks)
                second.connect()
                assertEquals(ids.toSet(), setOf(acks.next(), acks.next()))
                assertEquals(ids, gateway.inbound().map { it.getValue("id").jsonPrimitive.content })
                acks.stop()
            }
        }
    }

    @Test
    fun `only the newest location, and nothing stale or cancelled, is sent`() = runBlocking {
        Gateway.start().use { gateway ->
            val user = newUser("latest")
            Tether(testConfig(gateway), tokens = { Gateway.token(user) }).use { tether ->
                val expired = record(tether.expired)
                val replaced = record(tether.replaced)
                val acks = record(tether.acks)
                val first = tether.send("location", buildJsonObject { put("lat", 1) }, replaceKey = "where")
                val typing = tether.send("typing", JsonPrimitive(true), ttl = 50.milliseconds)
                val note = tether.sendJson("note", "\"never mind\"")
                val newest = tether.send("location", buildJsonObject { put("lat", 2) }, replaceKey = "where")
                assertEquals(Replaced(first, newest), replaced.next())
                assertTrue(tether.cancel(note))
                assertEquals(false, tether.cancel(note))
                // The typing flag is reported within about a second of its 50 ms.
                assertEquals(typing, expired.next(timeoutMs = 5_000))
                val stats = tether.stats()
                assertEquals(1uL, stats.replaced)
                assertEquals(1uL, stats.expired)
                assertEquals(1u, stats.queued)
                assertThrows<IllegalArgumentException> {
                    runBlocking { tether.send("typing", JsonPrimitive(true), ttl = 0.milliseconds) }
                }

                tether.connect()
                assertEquals(newest, acks.next())
                assertEquals(listOf(newest), gateway.inbound().map { it.getValue("id").jsonPrimitive.content })
                expired.stop()
                replaced.stop()
                acks.stop()
            }
        }
    }
}
