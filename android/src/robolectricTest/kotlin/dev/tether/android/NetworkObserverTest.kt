// NetworkObserver on Robolectric's ConnectivityManager: the default-network callback it
// registers is driven with Wi-Fi, cellular and lost networks, and every call reaches a
// real client (the generated bindings over libtether.so) connected to a real gateway,
// whose status follows.

package dev.tether.android

import android.content.Context
import android.net.ConnectivityManager
import android.net.NetworkCapabilities
import dev.tether.Gateway
import dev.tether.Tether
import dev.tether.sdk.ConnectionStatus
import dev.tether.sdk.NetworkKind
import dev.tether.sdk.NetworkState
import kotlinx.coroutines.runBlocking
import org.junit.AfterClass
import org.junit.Assert.assertEquals
import org.junit.BeforeClass
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.RobolectricTestRunner
import org.robolectric.RuntimeEnvironment
import org.robolectric.Shadows.shadowOf
import org.robolectric.annotation.Config
import org.robolectric.shadows.ShadowNetwork
import org.robolectric.shadows.ShadowNetworkCapabilities

@RunWith(RobolectricTestRunner::class)
@Config(sdk = [34], manifest = Config.NONE)
class NetworkObserverTest {
    companion object {
        private lateinit var gateway: Gateway

        @BeforeClass @JvmStatic
        fun startGateway() {
            gateway = Gateway.start()
        }

        @AfterClass @JvmStatic
        fun stopGateway() = gateway.stop()
    }

    private val context: Context get() = RuntimeEnvironment.getApplication()
    private val connectivity get() = context.getSystemService(ConnectivityManager::class.java)

    private fun capabilities(transport: Int, internet: Boolean = true, notMetered: Boolean) =
        ShadowNetworkCapabilities.newInstance().also {
            val shadow = shadowOf(it)
            shadow.addTransportType(transport)
            if (internet) shadow.addCapability(NetworkCapabilities.NET_CAPABILITY_INTERNET)
            if (notMetered) shadow.addCapability(NetworkCapabilities.NET_CAPABILITY_NOT_METERED)
        }

    @Test
    fun `default network changes reach the client and its status follows`(): Unit = runBlocking {
        val user = newUser("network")
        Tether(testConfig(gateway), tokens = { Gateway.token(user) }).use { tether ->
            val calls = mutableListOf<NetworkState>()
            NetworkObserver(context) { state -> calls.add(state); tether.setNetwork(state) }.use {
                val callback = shadowOf(connectivity).networkCallbacks.single()
                val network = ShadowNetwork.newInstance(100)
                val statuses = record(tether.status)
                tether.connect()
                statuses.until { it is ConnectionStatus.Connected }

                callback.onLost(network)
                statuses.until { it is ConnectionStatus.WaitingForNetwork }
                callback.onCapabilitiesChanged(network, capabilities(NetworkCapabilities.TRANSPORT_WIFI, notMetered = true))
                statuses.until { it is ConnectionStatus.Connected }
                // A metered cellular network without internet yet: not available.
                callback.onCapabilitiesChanged(
                    network,
                    capabilities(NetworkCapabilities.TRANSPORT_CELLULAR, internet = false, notMetered = false),
                )
                statuses.until { it is ConnectionStatus.WaitingForNetwork }
                callback.onCapabilitiesChanged(network, capabilities(NetworkCapabilities.TRANSPORT_CELLULAR, notMetered = false))
                statuses.until { it is ConnectionStatus.Connected }
                statuses.stop()

                assertEquals(
                    listOf(
                        NetworkState(available = false, kind = NetworkKind.NONE, expensive = false),
                        NetworkState(available = true, kind = NetworkKind.WIFI, expensive = false),
                        NetworkState(available = false, kind = NetworkKind.CELLULAR, expensive = true),
                        NetworkState(available = true, kind = NetworkKind.CELLULAR, expensive = true),
                    ),
                    calls,
                )
            }
        }
    }

    @Test
    fun `close unregisters the callback`() {
        val observer = NetworkObserver(context) { }
        assertEquals(1, shadowOf(connectivity).networkCallbacks.size)
        observer.close()
        assertEquals(0, shadowOf(connectivity).networkCallbacks.size)
    }

    @Test
    fun `ethernet and other transports map to their kinds`() {
        val ethernet = NetworkObserver.stateOf(capabilities(NetworkCapabilities.TRANSPORT_ETHERNET, notMetered = true))
        assertEquals(NetworkState(available = true, kind = NetworkKind.ETHERNET, expensive = false), ethernet)
        val vpn = NetworkObserver.stateOf(capabilities(NetworkCapabilities.TRANSPORT_VPN, notMetered = true))
        assertEquals(NetworkState(available = true, kind = NetworkKind.OTHER, expensive = false), vpn)
    }
}
