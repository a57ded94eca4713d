// The Tether Android library, built on its own (./gradlew assembleRelease) or included in
// an app's build (includeBuild("path/to/tether/android")). Not buildable on the CI machine
// (no Android SDK, no Gradle): see README.md.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositories {
        google()
        mavenCentral()
        // rustls-platform-verifier's Kotlin component (an AAR) is published only here; its
        // version is taken from Cargo.lock in build.gradle.kts.
        maven { url = uri("https://github.com/rustls/rustls-platform-verifier/raw/maven-archive/android-release-support/maven/") }
    }
}

rootProject.name = "tether-android"
