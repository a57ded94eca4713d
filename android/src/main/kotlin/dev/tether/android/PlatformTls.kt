// Hands the application Context to rustls-platform-verifier (in the Rust library) so TLS
// uses Android's trust store, user-installed CAs included. The SDK's generated bindings
// go through JNA, which passes Rust no JNIEnv; this one JNI call does
// (src/android.rs, Java_dev_tether_android_PlatformTls_nativeInit).

package dev.tether.android

import android.content.Context

object PlatformTls {
    @Volatile private var done = false

    /** Once per process, before the first connection; later calls do nothing. */
    @Synchronized
    fun init(context: Context) {
        if (done) return
        // JNA loads the same libtether.so for the bindings; loadLibrary makes its JNI
        // symbols visible to this class loader.
        System.loadLibrary("tether")
        nativeInit(context.applicationContext)
        done = true
    }

    /** Throws RuntimeException when the verifier cannot be set up. */
    @JvmStatic
    private external fun nativeInit(context: Context)
}
