// swift-tools-version:5.10
// The Tether Swift package: the generated bindings (Sources/Tether/Generated, written by
// build-xcframework.sh) and the Swift wrapper in one module, `Tether`, over the Rust
// static library packaged as TetherFFI.xcframework (also from build-xcframework.sh).
import PackageDescription

let package = Package(
    name: "Tether",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "Tether", targets: ["Tether"]),
    ],
    targets: [
        .binaryTarget(name: "TetherFFI", path: "TetherFFI.xcframework"),
        .target(
            name: "Tether",
            dependencies: ["TetherFFI"],
            path: "Sources/Tether"
        ),
    ]
)
