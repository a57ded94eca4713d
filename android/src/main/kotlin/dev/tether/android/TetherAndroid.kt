// The one call an Android app makes: TLS set up with the system trust store, a Tether
// client whose storage lives in the app's files, and the network and lifecycle observers
// attached. Call from the main thread, before the first activity starts
// (Application.onCreate, or an activity's onCreate): see AppLifecycleObserver.

package dev.tether.android

import android.app.Application
import android.content.Context
import dev.tether.Tether
import dev.tether.sdk.ClientConfig
import java.io.File

class TetherAndroid private constructor(
    /** The client: collect `status` and `messages`, call `connect()`, `send(...)`. */
    val tether: Tether,
    private val network: NetworkObserver,
    private val lifecycle: AppLifecycleObserver,
) : AutoCloseable {
    /** Detaches the observers and shuts the client down (blocks until its storage is released). */
    override fun close() {
        lifecycle.close()
        network.close()
        tether.close()
    }

    companion object {
        /**
         * @param url `wss://host/ws`
         * @param deviceId stable per install (store it, e.g. a UUID in SharedPreferences)
         * @param tokens called on an SDK background thread; may suspend or block for a refresh; null = signed out
         * @param configure adjusts the config (timeouts, queue limits) before the client starts
         */
        fun create(
            context: Context,
            url: String,
            app: String,
            deviceId: String,
            tokens: suspend () -> String?,
            configure: (ClientConfig) -> ClientConfig = { it },
        ): TetherAndroid {
            PlatformTls.init(context)
            val storage = File(context.noBackupFilesDir, "tether").apply { mkdirs() }
            val config = configure(ClientConfig(url = url, app = app, deviceId = deviceId, storageDir = storage.path))
            val tether = Tether(config, tokens)
            val application = context.applicationContext as Application
            return TetherAndroid(tether, NetworkObserver(context, tether), AppLifecycleObserver(application, tether))
        }
    }
}
