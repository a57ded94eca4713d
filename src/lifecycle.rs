//! What the host tells the SDK about the phone: network reachability (from
//! ConnectivityManager / NWPathMonitor) and app state (foreground / background). The
//! state machine turns these into "wait for the network", "disconnect after the grace
//! period" and "connect now, no backoff".

/// The kind of network the phone is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum NetworkKind {
    /// Wi-Fi.
    Wifi,
    /// Mobile data.
    Cellular,
    /// Wired.
    Ethernet,
    /// Anything else (VPN, Bluetooth, unknown).
    Other,
    /// No network.
    None,
}

/// Network reachability as the OS reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Record)]
pub struct NetworkState {
    /// Whether any network path is usable.
    pub available: bool,
    /// Which kind.
    pub kind: NetworkKind,
    /// Metered or constrained (cellular, hotspot); informational for now.
    pub expensive: bool,
}

impl NetworkState {
    /// A usable network of this kind.
    pub fn up(kind: NetworkKind) -> Self {
        NetworkState {
            available: true,
            kind,
            expensive: matches!(kind, NetworkKind::Cellular),
        }
    }

    /// No network.
    pub fn down() -> Self {
        NetworkState {
            available: false,
            kind: NetworkKind::None,
            expensive: false,
        }
    }
}

/// Whether the app is in front of the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum AppState {
    /// Visible: stay connected.
    Foreground,
    /// Not visible: disconnect after the grace period to save battery.
    Background,
}
