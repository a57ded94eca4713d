// Helpers shared by the JVM tests: a base class holding one test gateway per test class,
// a client config pointing at it, a fresh storage directory per client, and collectors that record what the flows emit.

package dev.tether

import dev.tether.sdk.ClientConfig
import dev.tether.sdk.ConnectionStatus
import java.nio.file.Files
import java.nio.file.Path
import java.util.concurrent.atomic.AtomicInteger
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.Job
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.launch
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.TestInstance

private val devices = AtomicInteger()

/** A test class whose tests share one gateway, started before the first of them. */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
abstract class GatewayTest {
    protected lateinit var gateway: Gateway

    /** The gateway's settings (environment variables); none by default. */
    protected open val gatewaySettings: Map<String, String> = emptyMap()

    @BeforeAll
    fun startGateway() {
        gateway = Gateway.start(settings = gatewaySettings)
    }

    @AfterAll
    fun stopGateway() = gateway.stop()
}

/** A new storage directory, deleted when the JVM exits. */
fun storageDir(): Path = Files.createTempDirectory("tether-jvm-").also { it.toFile().deleteOnExit() }

/** A config with quick backoff for the tests; a new device id unless given. */
fun testConfig(
    gateway: Gateway,
    storage: Path = storageDir(),
    device: String = "jvm-${ProcessHandle.current().pid()}-${devices.incrementAndGet()}",
    backgroundGraceMs: ULong = 30_000uL,
): ClientConfig =
    ClientConfig(
        url = gateway.wsUrl,
        app = Gateway.APP,
        deviceId = device,
        storageDir = storage.toString(),
        connectTimeoutMs = 5_000uL,
        backoffBaseMs = 100uL,
        backoffCapMs = 1_000uL,
        backgroundGraceMs = backgroundGraceMs,
    )

/** A user id no other test uses. */
fun newUser(name: String) = "$name-${System.nanoTime()}"

/**
 * Collects [flow] into a channel from now on. Subscribes before returning (undispatched
 * start), so nothing emitted after this call is missed.
 */
fun <T> CoroutineScope.record(flow: Flow<T>): Recorder<T> {
    val channel = Channel<T>(Channel.UNLIMITED)
    val job = launch(start = CoroutineStart.UNDISPATCHED) { flow.collect { channel.send(it) } }
    return Recorder(channel, job)
}

class Recorder<T>(private val channel: Channel<T>, val job: Job) {
    /** Everything seen so far, in order (consumed as it is read). */
    val seen = mutableListOf<T>()

    /** Waits for the next item. */
    suspend fun next(timeoutMs: Long = 15_000): T = withTimeout(timeoutMs) { channel.receive() }.also { seen.add(it) }

    /** Waits until an item matches, keeping the ones before it in [seen]. */
    suspend fun until(timeoutMs: Long = 15_000, match: (T) -> Boolean): T =
        withTimeout(timeoutMs) {
            var item: T
            do {
                item = channel.receive()
                seen.add(item)
            } while (!match(item))
            item
        }

    /** What arrived and was not read yet, without waiting (moved to [seen]). */
    fun drain(): List<T> {
        val items = mutableListOf<T>()
        while (true) {
            val result = channel.tryReceive()
            if (!result.isSuccess) break
            items.add(result.getOrThrow())
        }
        seen.addAll(items)
        return items
    }

    fun stop() = job.cancel()
}

/** Waits until the status is [T]. */
suspend inline fun <reified T : ConnectionStatus> Tether.awaitStatus(timeoutMs: Long = 15_000): T =
    withTimeout(timeoutMs) { status.first { it is T } as T }
