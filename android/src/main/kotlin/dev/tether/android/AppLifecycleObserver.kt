// Feeds the whole app's foreground/background state (ProcessLifecycleOwner: started =
// some activity visible) into the SDK, which disconnects after its grace period in the
// background and reconnects at once in the foreground.

package dev.tether.android

import androidx.lifecycle.DefaultLifecycleObserver
import androidx.lifecycle.LifecycleOwner
import androidx.lifecycle.ProcessLifecycleOwner
import dev.tether.Tether
import dev.tether.sdk.AppState

class AppLifecycleObserver(private val tether: Tether) : DefaultLifecycleObserver, AutoCloseable {
    private val lifecycle = ProcessLifecycleOwner.get().lifecycle

    init {
        // addObserver must run on the main thread; it replays the current state at once.
        lifecycle.addObserver(this)
    }

    override fun onStart(owner: LifecycleOwner) = tether.setAppState(AppState.FOREGROUND)

    override fun onStop(owner: LifecycleOwner) = tether.setAppState(AppState.BACKGROUND)

    override fun close() = lifecycle.removeObserver(this)
}
