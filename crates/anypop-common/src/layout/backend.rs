//! Backend maps: the backend node's settings and the reply-flow key `dsr` uses to give a reply
//! the VIP its player addressed.

/// `B_SETTINGS[0]`: what the backend programs need to know about their node.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendSettings {
    /// This backend's address (the IPIP outer destination), network byte order.
    pub address: u32,
    /// [`BACKEND_NATIVE`] or [`BACKEND_TUNNEL`].
    pub mode: u32,
}

/// Backend mode: our XDP program decapsulates.
pub const BACKEND_NATIVE: u32 = 0;
/// Backend mode: a kernel IPIP tunnel decapsulates and the game servers answer into it; `dsr`
/// catches the encapsulated replies.
pub const BACKEND_TUNNEL: u32 = 1;

/// Key of `B_FLOWS` (LRU): a player's flow to a service, as seen on the way in, so the reply
/// can be given the VIP the player addressed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReplyKey {
    /// Player address, network byte order.
    pub player: u32,
    /// Player's port (host order).
    pub player_port: u16,
    /// Service port (host order).
    pub service_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
