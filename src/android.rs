//! Android only: the JNI entry point the Android wrapper calls once, before the first
//! connection, to give rustls-platform-verifier the application `Context` (it needs the
//! JVM and the app's class loader to reach Android's trust store). uniffi calls go
//! through JNA, which hands Rust no `JNIEnv`, hence this one plain `external fun`:
//! `dev.tether.android.PlatformTls.nativeInit(context)` in `android/`.
//!
//! Outside Android the module is compiled only for tests, which type-check the glue
//! against the same `jni` version and check the Kotlin declaration matches the symbol.

use jni::errors::ThrowRuntimeExAndDefault;
use jni::objects::{JClass, JObject};
use jni::{Env, EnvUnowned};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once the verifier has its Context: before that, rustls-platform-verifier panics
/// in the middle of a TLS handshake, so the transport refuses to build a platform TLS
/// config instead (a clear `InvalidConfig` from the client's constructor).
static PLATFORM_TLS_READY: AtomicBool = AtomicBool::new(false);

/// Whether `PlatformTls.init(context)` has succeeded in this process.
pub fn platform_tls_ready() -> bool {
    PLATFORM_TLS_READY.load(Ordering::Acquire)
}

/// `PlatformTls.nativeInit(context: Context)`: initialises the platform verifier with the
/// application context. Idempotent (the verifier keeps the first context). A failure is
/// thrown to Kotlin as a `RuntimeException`.
#[cfg(target_os = "android")]
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_tether_android_PlatformTls_nativeInit<'local>(
    env: EnvUnowned<'local>,
    class: JClass<'local>,
    context: JObject<'local>,
) {
    init_with(
        env,
        class,
        context,
        rustls_platform_verifier::android::init_with_env,
    )
}

/// Runs `init` with a usable `Env`; errors and panics become a Java `RuntimeException`
/// (`with_env` catches the panic, so nothing unwinds into the JVM).
pub fn init_with<'local, F>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    context: JObject<'local>,
    init: F,
) where
    F: FnOnce(&mut Env<'local>, JObject<'local>) -> Result<(), jni::errors::Error>,
{
    env.with_env(|env| {
        init(env, context)?;
        PLATFORM_TLS_READY.store(true, Ordering::Release);
        Ok::<(), jni::errors::Error>(())
    })
    .resolve::<ThrowRuntimeExAndDefault>()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signature of `rustls_platform_verifier::android::init_with_env` (0.7.1), which
    /// is only compiled for Android.
    fn same_signature_as_the_verifier(
        _env: &mut Env,
        _context: JObject,
    ) -> Result<(), jni::errors::Error> {
        Ok(())
    }

    /// Never run (it needs a JNIEnv from a JVM): compiling it checks that the Android
    /// entry point's call, `init_with(.., init_with_env)`, type-checks with this `jni`.
    #[allow(dead_code)]
    fn entry_point_shape(env: EnvUnowned<'_>, class: JClass<'_>, context: JObject<'_>) {
        init_with(env, class, context, same_signature_as_the_verifier)
    }

    /// `Java_<package>_<class>_<method>` as the JVM resolves native methods (no
    /// underscores or non-ASCII in these names, so no escaping applies).
    fn jni_symbol(kotlin: &str) -> String {
        let after = |prefix: &str| {
            kotlin
                .lines()
                .find_map(|l| {
                    let l = l.trim();
                    let l = l.strip_prefix("private ").unwrap_or(l);
                    l.strip_prefix(prefix)
                })
                .unwrap_or_else(|| panic!("no `{prefix}` line in PlatformTls.kt"))
                .split(|c: char| !(c.is_alphanumeric() || c == '.'))
                .next()
                .map(str::to_owned)
                .unwrap_or_default()
        };
        let package = after("package ");
        let object = after("object ");
        let method = after("external fun ");
        format!("Java_{}_{object}_{method}", package.replace('.', "_"))
    }

    #[test]
    fn the_kotlin_external_fun_resolves_to_the_exported_symbol() {
        let kotlin = include_str!("../android/src/main/kotlin/dev/tether/android/PlatformTls.kt");
        let symbol = jni_symbol(kotlin);
        assert_eq!(symbol, "Java_dev_tether_android_PlatformTls_nativeInit");
        assert!(kotlin.contains("external fun nativeInit(context: Context)"));
        let this_file = include_str!("android.rs");
        assert!(
            this_file.contains(&format!("pub extern \"system\" fn {symbol}<")),
            "src/android.rs must export {symbol}"
        );
    }
}
