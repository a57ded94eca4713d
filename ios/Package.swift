// swift-tools-version:5.10
// The Tether Swift package: the generated bindings (Sources/Tether/Generated, written by
// build-xcframework.sh) and the Swift wrapper in one module, `Tether`, over the Rust
// static library packaged as TetherFFI.xcframework (also from build-xcframework.sh).
import Foundation
import PackageDescription

// The released XCFramework: set-release.sh writes its download URL and checksum (the
// SHA-256 of the zip, what `swift package compute-checksum` prints) here. Empty: no
// release filled in.
let releaseURL = ""
let releaseChecksum = ""

// Development: the TetherFFI.xcframework that build-xcframework.sh leaves next to this
// file. Used while no release is filled in, or when TETHER_LOCAL_XCFRAMEWORK=1 is set in
// the environment of `swift build` / Xcode.
let useLocalXCFramework = releaseURL.isEmpty
    || ProcessInfo.processInfo.environment["TETHER_LOCAL_XCFRAMEWORK"] == "1"

let ffi: Target = useLocalXCFramework
    ? .binaryTarget(name: "TetherFFI", path: "TetherFFI.xcframework")
    : .binaryTarget(name: "TetherFFI", url: releaseURL, checksum: releaseChecksum)

let package = Package(
    name: "Tether",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "Tether", targets: ["Tether"]),
    ],
    targets: [
        ffi,
        .target(
            name: "Tether",
            dependencies: ["TetherFFI"],
            path: "Sources/Tether"
        ),
    ]
)
