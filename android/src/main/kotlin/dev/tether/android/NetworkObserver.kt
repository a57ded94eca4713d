// Feeds ConnectivityManager's view of the default network into the SDK: available or
// not, Wi-Fi / cellular / ethernet, metered or not.

package dev.tether.android

import android.content.Context
import android.net.ConnectivityManager
import android.net.Network
import android.net.NetworkCapabilities
import dev.tether.Tether
import dev.tether.sdk.NetworkKind
import dev.tether.sdk.NetworkState

class NetworkObserver(
    context: Context,
    private val setNetwork: (NetworkState) -> Unit,
) : AutoCloseable {
    constructor(context: Context, tether: Tether) : this(context, tether::setNetwork)

    private val connectivity = context.getSystemService(ConnectivityManager::class.java)

    private val callback = object : ConnectivityManager.NetworkCallback() {
        override fun onCapabilitiesChanged(network: Network, capabilities: NetworkCapabilities) {
            setNetwork(stateOf(capabilities))
        }

        override fun onLost(network: Network) {
            setNetwork(NetworkState(available = false, kind = NetworkKind.NONE, expensive = false))
        }
    }

    init {
        // Called at once with the current default network (if any), then on every change.
        connectivity.registerDefaultNetworkCallback(callback)
    }

    override fun close() = connectivity.unregisterNetworkCallback(callback)

    companion object {
        fun stateOf(capabilities: NetworkCapabilities): NetworkState {
            val kind = when {
                capabilities.hasTransport(NetworkCapabilities.TRANSPORT_WIFI) -> NetworkKind.WIFI
                capabilities.hasTransport(NetworkCapabilities.TRANSPORT_CELLULAR) -> NetworkKind.CELLULAR
                capabilities.hasTransport(NetworkCapabilities.TRANSPORT_ETHERNET) -> NetworkKind.ETHERNET
                else -> NetworkKind.OTHER
            }
            return NetworkState(
                available = capabilities.hasCapability(NetworkCapabilities.NET_CAPABILITY_INTERNET),
                kind = kind,
                expensive = !capabilities.hasCapability(NetworkCapabilities.NET_CAPABILITY_NOT_METERED),
            )
        }
    }
}
