// Android library: the Kotlin wrapper (src/common, shared with the JVM tests in
// bindings/kotlin; src/main, the Android-only part), the uniffi-generated Kotlin and the
// Rust library for each ABI. Both generated inputs come from build-rust.sh, which the
// preBuild task runs.

plugins {
    id("com.android.library") version "8.13.0"
    id("org.jetbrains.kotlin.android") version "2.4.21"
    `maven-publish`
}

// The AAR's coordinates: dev.tether:tether-android:<version>. `gradle publishToMavenLocal`
// puts it in ~/.m2; `gradle publish -Ptether.publishUrl=<repository URL>` uploads it
// (credentials from tether.publishUser / tether.publishPassword, if the repository
// needs them). The version is the SDK crate's (../Cargo.toml) unless -Ptether.version
// says otherwise.
group = "dev.tether"
version = providers.gradleProperty("tether.version").getOrElse(
    file("../Cargo.toml").readLines()
        .dropWhile { it.trim() != "[package]" }
        .first { it.trimStart().startsWith("version = ") }
        .substringAfter('"').substringBefore('"'),
)

android {
    namespace = "dev.tether.android"
    compileSdk = 36

    defaultConfig {
        minSdk = 24 // rustls-platform-verifier's revocation checks need 24
        consumerProguardFiles("consumer-rules.pro")
    }

    sourceSets["main"].apply {
        java.srcDirs("src/main/kotlin", "src/common/kotlin", "build/generated/uniffi")
        jniLibs.srcDirs("build/rustJniLibs")
    }

    publishing {
        singleVariant("release") {
            withSourcesJar()
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

kotlin {
    jvmToolchain(17)
}

// The AAR of rustls-platform-verifier must be the version of the crate in Cargo.lock
// (rustls-platform-verifier-android), as its README prescribes.
abstract class RustlsVersion : ValueSource<String, RustlsVersion.Params> {
    interface Params : ValueSourceParameters {
        val lockFile: RegularFileProperty
    }

    override fun obtain(): String {
        val lines = parameters.lockFile.get().asFile.readLines()
        val at = lines.indexOfFirst { it.trim() == "name = \"rustls-platform-verifier-android\"" }
        check(at >= 0) { "rustls-platform-verifier-android is not in Cargo.lock" }
        return lines.drop(at + 1).first { it.trimStart().startsWith("version = ") }
            .substringAfter('"').substringBefore('"')
    }
}

val rustlsPlatformVerifierVersion = providers.of(RustlsVersion::class.java) {
    parameters.lockFile.set(layout.projectDirectory.file("../Cargo.lock"))
}

configurations.configureEach {
    resolutionStrategy.eachDependency {
        if (requested.group == "rustls" && requested.name == "rustls-platform-verifier") {
            useVersion(rustlsPlatformVerifierVersion.get())
            because("the Kotlin component must match the rustls-platform-verifier crate")
        }
    }
}

dependencies {
    implementation("net.java.dev.jna:jna:5.19.1@aar")
    // `api`: the public surface exposes Flow and JsonElement.
    api("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.11.0")
    api("org.jetbrains.kotlinx:kotlinx-serialization-json:1.12.0")
    implementation("rustls:rustls-platform-verifier")
}

// Cross-compiles the Rust library (cargo-ndk) and generates the Kotlin bindings before
// every build; cargo makes it a no-op when nothing changed. The Rust library is built
// optimised for every variant (a debug build is several times larger and slower, and
// would ship in a release AAR); `-Ptether.rustProfile=debug` builds it unoptimised for
// work on the SDK itself.
val rustProfile = providers.gradleProperty("tether.rustProfile").orElse("release")
val buildRust by tasks.registering(Exec::class) {
    workingDir = projectDir
    val profile = rustProfile.get()
    require(profile == "release" || profile == "debug") {
        "tether.rustProfile must be release or debug, not '$profile'"
    }
    commandLine(if (profile == "release") listOf("./build-rust.sh", "--release") else listOf("./build-rust.sh"))
}
tasks.named("preBuild") { dependsOn(buildRust) }

publishing {
    publications {
        register<MavenPublication>("release") {
            artifactId = "tether-android"
            afterEvaluate { from(components["release"]) }
            // rustls-platform-verifier is declared without a version (the resolution rule
            // above sets it from Cargo.lock): publish the resolved versions, or the POM
            // would name it with none and no app could resolve it.
            versionMapping {
                allVariants { fromResolutionResult() }
            }
            pom {
                name.set("Tether for Android")
                description.set("Real-time connection SDK: the Rust core, its Kotlin bindings, Flow wrapper and observers")
                licenses {
                    license { name.set("Apache-2.0") }
                }
            }
        }
    }
    repositories {
        val publishUrl = providers.gradleProperty("tether.publishUrl")
        if (publishUrl.isPresent) {
            maven {
                name = "release"
                url = uri(publishUrl.get())
                val user = providers.gradleProperty("tether.publishUser")
                if (user.isPresent) {
                    credentials {
                        username = user.get()
                        password = providers.gradleProperty("tether.publishPassword").orNull
                    }
                }
            }
        }
    }
}
