// Feeds the app's foreground/background state into the SDK, which disconnects after its
// grace period in the background and reconnects at once in the foreground. UIKit posts
// these notifications for both scene-based and older app-delegate apps.

#if canImport(UIKit)
import UIKit

public final class AppLifecycle: @unchecked Sendable {
    private var observers: [NSObjectProtocol] = []

    /// Starts reporting to `connection`. Create it on the main thread.
    @MainActor
    public init(connection: TetherConnection) {
        let center = NotificationCenter.default
        observers.append(center.addObserver(
            forName: UIApplication.didEnterBackgroundNotification, object: nil, queue: .main
        ) { [weak connection] _ in
            connection?.setAppState(.background)
        })
        observers.append(center.addObserver(
            forName: UIApplication.willEnterForegroundNotification, object: nil, queue: .main
        ) { [weak connection] _ in
            connection?.setAppState(.foreground)
        })
        connection.setAppState(UIApplication.shared.applicationState == .background ? .background : .foreground)
    }

    deinit {
        for observer in observers {
            NotificationCenter.default.removeObserver(observer)
        }
    }
}
#endif
