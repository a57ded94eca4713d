// Helpers for the Robolectric tests: a client config for the test gateway, and a recorder
// of a flow's items to wait on (each wait bounded by a deadline).

package dev.tether.android

import dev.tether.Gateway
import dev.tether.sdk.ClientConfig
import java.nio.file.Files
import java.util.concurrent.atomic.AtomicInteger
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.Job
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.launch
import kotlinx.coroutines.withTimeout

private val devices = AtomicInteger()

/** Quick backoff and a short background grace period, a fresh storage directory. */
fun testConfig(gateway: Gateway): ClientConfig {
    val storage = Files.createTempDirectory("tether-android-").also { it.toFile().deleteOnExit() }
    return ClientConfig(
        url = gateway.wsUrl,
        app = Gateway.APP,
        deviceId = "robolectric-${ProcessHandle.current().pid()}-${devices.incrementAndGet()}",
        storageDir = storage.toString(),
        connectTimeoutMs = 5_000uL,
        backoffBaseMs = 100uL,
        backoffCapMs = 1_000uL,
        backgroundGraceMs = 200uL,
    )
}

fun newUser(name: String) = "$name-${System.nanoTime()}"

/** Collects [flow] from now on (subscribed before this returns). */
fun <T> CoroutineScope.record(flow: Flow<T>): Recorder<T> {
    val channel = Channel<T>(Channel.UNLIMITED)
    val job = launch(start = CoroutineStart.UNDISPATCHED) { flow.collect { channel.send(it) } }
    return Recorder(channel, job)
}

class Recorder<T>(private val channel: Channel<T>, private val job: Job) {
    val seen = mutableListOf<T>()

    /** Waits until an item matches, keeping every item seen on the way in [seen]. */
    suspend fun until(timeoutMs: Long = 15_000, match: (T) -> Boolean): T =
        withTimeout(timeoutMs) {
            var item: T
            do {
                item = channel.receive()
                seen.add(item)
            } while (!match(item))
            item
        }

    fun stop() = job.cancel()
}
