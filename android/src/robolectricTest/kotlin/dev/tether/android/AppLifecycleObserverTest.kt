// AppLifecycleObserver on Robolectric's activity lifecycle: activities started and stopped
// through ActivityController, the calls counted, and their effect on a real client
// connected to a real gateway (suspended in the background after its grace period,
// connected again in the foreground).

package dev.tether.android

import android.app.Activity
import android.app.Application
import android.content.res.Configuration
import dev.tether.Gateway
import dev.tether.Tether
import dev.tether.sdk.AppState
import dev.tether.sdk.ConnectionStatus
import kotlinx.coroutines.runBlocking
import org.junit.AfterClass
import org.junit.Assert.assertEquals
import org.junit.BeforeClass
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.Robolectric
import org.robolectric.RobolectricTestRunner
import org.robolectric.RuntimeEnvironment
import org.robolectric.annotation.Config

@RunWith(RobolectricTestRunner::class)
@Config(sdk = [34], manifest = Config.NONE)
class AppLifecycleObserverTest {
    companion object {
        private lateinit var gateway: Gateway

        @BeforeClass @JvmStatic
        fun startGateway() {
            gateway = Gateway.start()
        }

        @AfterClass @JvmStatic
        fun stopGateway() = gateway.stop()
    }

    private val application: Application get() = RuntimeEnvironment.getApplication()

    @Test
    fun `the last activity stopping backgrounds the client and the next start brings it back`(): Unit = runBlocking {
        val user = newUser("lifecycle")
        Tether(testConfig(gateway), tokens = { Gateway.token(user) }).use { tether ->
            val calls = mutableListOf<AppState>()
            AppLifecycleObserver(application) { state -> calls.add(state); tether.setAppState(state) }.use {
                val statuses = record(tether.status)
                tether.connect()
                statuses.until { it is ConnectionStatus.Connected }

                val first = Robolectric.buildActivity(Activity::class.java).create().start()
                assertEquals(listOf(AppState.FOREGROUND), calls)
                // A second activity over the first: still one app in the foreground.
                val second = Robolectric.buildActivity(Activity::class.java).create().start()
                first.stop()
                assertEquals(listOf(AppState.FOREGROUND), calls)

                second.stop()
                assertEquals(listOf(AppState.FOREGROUND, AppState.BACKGROUND), calls)
                statuses.until { it is ConnectionStatus.Suspended }

                second.start()
                assertEquals(listOf(AppState.FOREGROUND, AppState.BACKGROUND, AppState.FOREGROUND), calls)
                statuses.until { it is ConnectionStatus.Connected }
                statuses.stop()
                second.stop().destroy()
                first.destroy()
            }
        }
    }

    @Test
    fun `an activity recreated for a configuration change is no trip to the background`() {
        val calls = mutableListOf<AppState>()
        AppLifecycleObserver(application) { calls.add(it) }.use {
            val activity = Robolectric.buildActivity(Activity::class.java).setup()
            assertEquals(listOf(AppState.FOREGROUND), calls)
            val rotated = Configuration(application.resources.configuration).apply {
                orientation = if (orientation == Configuration.ORIENTATION_PORTRAIT) {
                    Configuration.ORIENTATION_LANDSCAPE
                } else {
                    Configuration.ORIENTATION_PORTRAIT
                }
            }
            activity.configurationChange(rotated)
            assertEquals(listOf(AppState.FOREGROUND), calls)
            activity.pause().stop()
            assertEquals(listOf(AppState.FOREGROUND, AppState.BACKGROUND), calls)
        }
    }

    @Test
    fun `close unregisters the callbacks`() {
        val calls = mutableListOf<AppState>()
        AppLifecycleObserver(application) { calls.add(it) }.close()
        Robolectric.buildActivity(Activity::class.java).create().start().stop()
        assertEquals(emptyList<AppState>(), calls)
    }
}
