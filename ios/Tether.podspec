# CocoaPods spec of the Tether Swift package: the same sources and XCFramework as
# Package.swift. Paths are relative to this directory, which a release publishes as the
# root of the Swift repository (README.md, "Release"). set-release.sh fills in the
# version and the released XCFramework's URL and SHA-256.
#
# Local development: `pod 'Tether', :path => '../tether/ios'` after build-xcframework.sh
# (the XCFramework next to this file; prepare_command does not run for local pods).
Pod::Spec.new do |s|
  s.name = 'Tether'
  s.version = '0.1.0'
  s.summary = 'Tether: a real-time connection for iOS apps that survives what a phone does to it'
  s.homepage = 'https://example.invalid/tether'
  s.license = { :type => 'Apache-2.0' }
  s.authors = 'Tether maintainers'
  s.source = { :git => 'https://example.invalid/tether-swift.git', :tag => s.version.to_s }

  s.ios.deployment_target = '15.0'
  s.swift_versions = ['5.10']
  s.source_files = 'Sources/Tether/**/*.swift'
  s.vendored_frameworks = 'TetherFFI.xcframework'
  s.frameworks = 'Network', 'UIKit'

  # The released XCFramework (the zip Package.swift's binaryTarget names), downloaded and
  # checked against its SHA-256 when CocoaPods fetches the pod.
  xcframework_url = ''
  xcframework_sha256 = ''
  unless xcframework_url.empty?
    s.prepare_command = <<~SH
      set -eu
      curl -fsSL -o TetherFFI.xcframework.zip '#{xcframework_url}'
      echo '#{xcframework_sha256}  TetherFFI.xcframework.zip' | shasum -a 256 -c -
      rm -rf TetherFFI.xcframework
      unzip -q TetherFFI.xcframework.zip
      rm TetherFFI.xcframework.zip
    SH
  end
end
