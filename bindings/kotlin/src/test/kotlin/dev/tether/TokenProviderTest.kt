// The token provider as a Kotlin suspend lambda: asked before connecting (and awaited when
// it suspends), asked again when the gateway refuses a token, retried when it throws,
// cancelled when the client closes, and a signed-out user (null) stops the client in
// Failed without a retry loop.

package dev.tether

import dev.tether.sdk.ConnectionStatus
import java.util.concurrent.atomic.AtomicInteger
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.awaitCancellation
import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withContext
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test

class TokenProviderTest : GatewayTest() {
    @Test
    fun `the provider is asked for a token before connecting, from a background thread`() = runBlocking {
        val user = newUser("tokens")
        val calls = AtomicInteger()
        val threads = mutableListOf<String>()
        val caller = Thread.currentThread().name
        Tether(testConfig(gateway), tokens = {
            calls.incrementAndGet()
            synchronized(threads) { threads.add(Thread.currentThread().name) }
            Gateway.token(user)
        }).use { tether ->
            assertEquals(0, calls.get(), "no token before connect()")
            tether.connect()
            tether.awaitStatus<ConnectionStatus.Connected>()
            assertEquals(1, calls.get())
            assertTrue(synchronized(threads) { threads.none { it == caller } }, "$threads")
        }
    }

    @Test
    fun `a signed-out user (null token) fails without retrying, until connect is called again`() = runBlocking {
        val user = newUser("signed-out")
        val calls = AtomicInteger()
        val signedIn = java.util.concurrent.atomic.AtomicBoolean(false)
        Tether(testConfig(gateway), tokens = {
            calls.incrementAndGet()
            if (signedIn.get()) Gateway.token(user) else null
        }).use { tether ->
            tether.connect()
            tether.awaitStatus<ConnectionStatus.Failed>()
            delay(1_500) // well past several backoff periods (base 100 ms, cap 1 s)
            assertEquals(1, calls.get(), "no retry loop while signed out")
            assertTrue(tether.status.value is ConnectionStatus.Failed)

            signedIn.set(true)
            tether.connect()
            tether.awaitStatus<ConnectionStatus.Connected>()
            assertEquals(2, calls.get())
        }
    }

    @Test
    fun `a token the gateway refuses (401) is replaced by a fresh one at once`() = runBlocking {
        val user = newUser("refused")
        val calls = AtomicInteger()
        Tether(testConfig(gateway), tokens = {
            // The first token is signed with the wrong secret: the gateway answers 401.
            if (calls.incrementAndGet() == 1) Gateway.token(user, secret = "not-the-gateway-secret-0123456789abcdef")
            else Gateway.token(user)
        }).use { tether ->
            val errors = record(tether.errors)
            tether.connect()
            tether.awaitStatus<ConnectionStatus.Connected>()
            assertEquals(2, calls.get())
            assertEquals(dev.tether.sdk.ErrorKind.AUTH, errors.next().kind())
            errors.stop()
        }
    }

    @Test
    fun `a suspending provider is awaited, like a refresh through a suspend API`() = runBlocking {
        val user = newUser("suspends")
        val calls = AtomicInteger()
        Tether(testConfig(gateway), tokens = {
            calls.incrementAndGet()
            refreshOverNetwork(user)
        }).use { tether ->
            tether.connect()
            tether.awaitStatus<ConnectionStatus.Connected>()
            assertEquals(1, calls.get())
        }
    }

    /** Stands in for an app's suspend token refresh: a network round trip on IO. */
    private suspend fun refreshOverNetwork(user: String): String = withContext(Dispatchers.IO) {
        delay(300)
        Gateway.token(user)
    }

    @Test
    fun `a provider that throws is reported with its message and retried with backoff`() = runBlocking {
        val user = newUser("throws")
        val calls = AtomicInteger()
        Tether(testConfig(gateway), tokens = {
            if (calls.incrementAndGet() <= 2) throw IllegalStateException("token service unavailable")
            Gateway.token(user)
        }).use { tether ->
            val statuses = record(tether.status)
            val errors = record(tether.errors)
            tether.connect()
            statuses.until { it is ConnectionStatus.Connected }
            assertEquals(3, calls.get())
            assertTrue(statuses.seen.any { it is ConnectionStatus.Reconnecting }, "${statuses.seen}")
            val error = errors.next()
            assertEquals(dev.tether.sdk.ErrorKind.AUTH, error.kind())
            assertEquals("token provider failed: token service unavailable", error.message())
            statuses.stop()
            errors.stop()
        }
    }

    @Test
    fun `an Error or the lambda's own timeout is reported like any failure, at once`() = runBlocking {
        val user = newUser("errors")
        val calls = AtomicInteger()
        Tether(testConfig(gateway), tokens = {
            when (calls.incrementAndGet()) {
                1 -> throw NotImplementedError("no token service yet")
                2 -> withTimeout(10) { delay(1_000); "never" }
                else -> Gateway.token(user)
            }
        }).use { tether ->
            val errors = record(tether.errors)
            val started = System.nanoTime()
            tether.connect()
            tether.awaitStatus<ConnectionStatus.Connected>()
            assertTrue(System.nanoTime() - started < 10_000_000_000L, "well before the 30 s limit")
            assertEquals(3, calls.get())
            assertEquals("token provider failed: no token service yet", errors.next().message())
            assertTrue(errors.next().message().startsWith("token provider failed: Timed out"))
            errors.stop()
        }
    }

    @Test
    fun `closing the client cancels a provider that is still suspended`() = runBlocking {
        val started = CompletableDeferred<Unit>()
        val cancelled = CompletableDeferred<Throwable?>()
        Tether(testConfig(gateway), tokens = {
            started.complete(Unit)
            try {
                awaitCancellation()
            } catch (e: CancellationException) {
                cancelled.complete(e)
                throw e
            }
        }).use { tether ->
            tether.connect()
            withTimeout(10_000) { started.await() }
        }
        withTimeout(10_000) { cancelled.await() }
        Unit
    }
}
