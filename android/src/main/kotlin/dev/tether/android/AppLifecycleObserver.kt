// Feeds the whole app's foreground/background state into the SDK, which disconnects after
// its grace period in the background and reconnects at once in the foreground. The app is
// in the foreground while at least one of its activities is started (visible), and goes to
// the background when the last one stops: Application.ActivityLifecycleCallbacks, counted
// here (the platform API, no androidx dependency). An activity recreated for a
// configuration change (rotation) stops and starts again without a trip to the background.

package dev.tether.android

import android.app.Activity
import android.app.Application
import android.os.Bundle
import dev.tether.Tether
import dev.tether.sdk.AppState

/**
 * Register before the app's first activity starts (Application.onCreate, or an activity's
 * onCreate): activities started earlier are not seen, and the SDK's own state (foreground)
 * stands until the next activity start or stop. Callbacks arrive on the main thread.
 */
class AppLifecycleObserver(
    private val application: Application,
    private val setAppState: (AppState) -> Unit,
) : Application.ActivityLifecycleCallbacks, AutoCloseable {
    constructor(application: Application, tether: Tether) : this(application, tether::setAppState)

    private var started = 0
    private var changingConfigurations = false

    init {
        application.registerActivityLifecycleCallbacks(this)
    }

    override fun onActivityStarted(activity: Activity) {
        started += 1
        if (started == 1 && !changingConfigurations) setAppState(AppState.FOREGROUND)
        changingConfigurations = false
    }

    override fun onActivityStopped(activity: Activity) {
        // A stop without a start seen (an activity started before registration) counts
        // as the last one.
        started = (started - 1).coerceAtLeast(0)
        changingConfigurations = activity.isChangingConfigurations
        if (started == 0 && !changingConfigurations) setAppState(AppState.BACKGROUND)
    }

    override fun onActivityCreated(activity: Activity, savedInstanceState: Bundle?) = Unit

    override fun onActivityResumed(activity: Activity) = Unit

    override fun onActivityPaused(activity: Activity) = Unit

    override fun onActivitySaveInstanceState(activity: Activity, outState: Bundle) = Unit

    override fun onActivityDestroyed(activity: Activity) = Unit

    override fun close() = application.unregisterActivityLifecycleCallbacks(this)
}
