//! Where SIP messages come from and go to: the transport, the peer (remote/local address,
//! connection) and the bytes to send. Plain data, depending on no other SIP module.

use std::net::SocketAddr;

/// Transport a message arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP (unreliable: we retransmit responses).
    Udp,
    /// TCP (reliable: no retransmissions).
    Tcp,
    /// TLS over TCP (reliable; the only transport on which a `sips:` Request-URI is
    /// accepted, RFC 3261 §26.2.2 / RFC 5630).
    Tls,
}

/// Where a message came from / a response goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Transport.
    pub transport: Transport,
    /// Remote address.
    pub remote: SocketAddr,
    /// Local address the message arrived on.
    pub local: SocketAddr,
    /// TCP/TLS connection id assigned by the shell.
    pub conn: Option<u64>,
}

impl Peer {
    pub(crate) fn reliable(&self) -> bool {
        matches!(self.transport, Transport::Tcp | Transport::Tls)
    }

    /// Whether a request from `self` (TLS identity `identity`) may act in a dialog set up
    /// by `dialog` (TLS identity `dialog_identity`): the same transport, and
    /// - UDP: the same source IP address (the port may differ: SBCs send from several
    ///   signalling sockets of one address);
    /// - TCP: the same connection, or a new connection from the same IP address (the SRC
    ///   reconnected; a TCP source address cannot be taken over without the handshake);
    /// - TLS: the same connection, or another connection authenticated as the same
    ///   client identity.
    pub fn may_act_for(
        &self,
        identity: Option<&str>,
        dialog: &Peer,
        dialog_identity: Option<&str>,
    ) -> bool {
        fn ip(p: &Peer) -> std::net::IpAddr {
            p.remote.ip().to_canonical()
        }
        if self.transport != dialog.transport {
            return false;
        }
        match self.transport {
            Transport::Udp => ip(self) == ip(dialog),
            Transport::Tcp => {
                (self.conn.is_some() && self.conn == dialog.conn) || ip(self) == ip(dialog)
            }
            Transport::Tls => {
                (self.conn.is_some() && self.conn == dialog.conn)
                    || (identity.is_some() && identity == dialog_identity)
            }
        }
    }
}

/// Bytes to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination (same transport/connection the request used).
    pub peer: Peer,
    /// One complete SIP message.
    pub data: Vec<u8>,
}
