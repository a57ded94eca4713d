// Feeds NWPathMonitor's view of the network into the SDK: satisfied or not, Wi-Fi /
// cellular / wired, expensive (cellular, hotspot) or constrained (Low Data Mode).

import Foundation
import Network

public final class NetworkMonitor: @unchecked Sendable {
    private let monitor = NWPathMonitor()
    private let queue = DispatchQueue(label: "dev.tether.network-monitor")

    /// Starts reporting to `connection` at once (the monitor calls back with the current path).
    public init(connection: TetherConnection) {
        monitor.pathUpdateHandler = { [weak connection] path in
            connection?.setNetwork(NetworkMonitor.state(of: path))
        }
        monitor.start(queue: queue)
    }

    deinit { monitor.cancel() }

    /// Stops reporting.
    public func cancel() { monitor.cancel() }

    static func state(of path: NWPath) -> NetworkState {
        let kind: NetworkKind
        if path.status != .satisfied {
            kind = .none
        } else if path.usesInterfaceType(.wifi) {
            kind = .wifi
        } else if path.usesInterfaceType(.cellular) {
            kind = .cellular
        } else if path.usesInterfaceType(.wiredEthernet) {
            kind = .ethernet
        } else {
            kind = .other
        }
        return NetworkState(
            available: path.status == .satisfied,
            kind: kind,
            expensive: path.isExpensive || path.isConstrained
        )
    }
}
