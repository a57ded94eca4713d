// roomPresence through the Kotlin wrapper against a real gateway: typed failures when it
// cannot ask (not connected, a bad room name), the gateway's refusal of a room the client
// is not in, and two clients in a room seeing each other.

package dev.tether

import dev.tether.sdk.ConnectionStatus
import dev.tether.sdk.ErrorKind
import dev.tether.sdk.PresenceMember
import dev.tether.sdk.TetherException
import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

class RoomPresenceTest : GatewayTest() {
    @Test
    fun `roomPresence fails at once with a kind when it cannot ask`() = runBlocking {
        Tether(testConfig(gateway), tokens = { Gateway.token(newUser("presence-offline")) }).use { tether ->
            val offline = assertThrows<TetherException> { runBlocking { tether.roomPresence("lobby") } }
            assertEquals(ErrorKind.NETWORK, offline.kind())
            assertTrue(offline.message().contains("not connected"), offline.message())
            val badRoom = assertThrows<TetherException> { runBlocking { tether.roomPresence("no spaces allowed") } }
            assertEquals(ErrorKind.INVALID_MESSAGE, badRoom.kind())
        }
    }

    @Test
    fun `two clients in a room see each other, and a room not joined is refused`() = runBlocking {
        val room = "presence:${System.nanoTime()}"
        val alice = newUser("alice")
        val bob = newUser("bob")
        Tether(testConfig(gateway), tokens = { Gateway.token(alice) }).use { a ->
            Tether(testConfig(gateway), tokens = { Gateway.token(bob) }).use { b ->
                for (tether in listOf(a, b)) {
                    tether.joinRoom(room)
                    tether.connect()
                    tether.awaitStatus<ConnectionStatus.Connected>()
                }
                // The joins go out right after connecting: ask until the gateway counts both.
                val presence = withTimeout(10_000) {
                    var answer = a.roomPresence(room)
                    while (answer.users < 2uL) {
                        delay(50)
                        answer = a.roomPresence(room)
                    }
                    answer
                }
                assertEquals(room, presence.room)
                assertEquals(2uL, presence.users)
                assertEquals(2uL, presence.connections)
                assertFalse(presence.truncated)
                // Each member names its one connection (the id the join and leave events carry).
                assertTrue(presence.members.all { it.connectionIds.size == 1 }, "${presence.members}")
                assertEquals(
                    listOf(alice, bob).sorted().map { PresenceMember(userId = it, userType = "customer", connections = 1u, connectionIds = emptyList()) },
                    presence.members.map { it.copy(connectionIds = emptyList()) },
                )
                val refused = assertThrows<TetherException> { runBlocking { b.roomPresence("elsewhere") } }
                assertEquals(ErrorKind.AUTH, refused.kind())
                assertTrue(refused.message().contains("join the room first"), refused.message())
            }
        }
    }
}
