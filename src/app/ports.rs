//! RTP port pool: even ports of the configured range (odd ones are left for RTCP).
//!
//! Ports are handed out round-robin so a port just released is not reused at once (late
//! packets of the previous call would land in the next one).

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use crate::config::PortRange;

/// Why no socket could be had.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// Every port is in use (by us or by another program).
    #[error("no free RTP port in {first}-{last}")]
    Exhausted {
        /// Range start.
        first: u16,
        /// Range end.
        last: u16,
    },
    /// The process is out of file descriptors (EMFILE/ENFILE): no port would do.
    #[error("too many open files")]
    Descriptors,
}

/// Whether an I/O error means "out of file descriptors" (process or system table).
pub fn is_fd_exhaustion(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE))
}

/// `EMFILE` / `ENFILE` on Linux (asm-generic/errno-base.h).
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

struct Inner {
    in_use: Vec<bool>,
    cursor: usize,
}

/// The pool. Cheap to share behind an `Arc`.
pub struct PortPool {
    bind: IpAddr,
    range: PortRange,
    inner: Mutex<Inner>,
}

/// A bound RTP socket; its port returns to the pool on drop.
pub struct RtpSocket {
    /// The socket.
    pub socket: tokio::net::UdpSocket,
    /// Its port.
    pub port: u16,
    pool: std::sync::Weak<PortPool>,
}

impl Drop for RtpSocket {
    fn drop(&mut self) {
        if let Some(p) = self.pool.upgrade() {
            p.release(self.port);
        }
    }
}

impl PortPool {
    /// A pool over the even ports of `range`.
    pub fn new(bind: IpAddr, range: PortRange) -> Self {
        let first = range.first + (range.first % 2);
        let n = if first > range.last {
            0
        } else {
            (usize::from(range.last - first) / 2) + 1
        };
        PortPool {
            bind,
            range: PortRange {
                first,
                last: range.last,
            },
            inner: Mutex::new(Inner {
                in_use: vec![false; n],
                cursor: 0,
            }),
        }
    }

    /// Ports not handed out.
    pub fn free(&self) -> usize {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.in_use.iter().filter(|u| !**u).count()
    }

    fn release(&self, port: u16) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let idx = usize::from(port.saturating_sub(self.range.first)) / 2;
        if let Some(slot) = g.in_use.get_mut(idx) {
            *slot = false;
        }
    }

    /// Bind one socket on a free even port; ports another program holds are skipped.
    pub fn bind(self: &std::sync::Arc<Self>) -> Result<RtpSocket, PortError> {
        let n = {
            let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            g.in_use.len()
        };
        for _ in 0..n {
            let port = {
                let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                let mut found = None;
                for _ in 0..n {
                    let i = g.cursor;
                    g.cursor = (g.cursor + 1) % n;
                    if let Some(false) = g.in_use.get(i) {
                        g.in_use[i] = true; // i < n checked by get() above
                        found = Some(self.range.first + (i as u16) * 2);
                        break;
                    }
                }
                match found {
                    Some(p) => p,
                    None => break,
                }
            };
            match std::net::UdpSocket::bind(SocketAddr::new(self.bind, port))
                .and_then(|s| {
                    s.set_nonblocking(true)?;
                    Ok(s)
                })
                .and_then(tokio::net::UdpSocket::from_std)
            {
                Ok(socket) => {
                    return Ok(RtpSocket {
                        socket,
                        port,
                        pool: std::sync::Arc::downgrade(self),
                    })
                }
                Err(e) if is_fd_exhaustion(&e) => {
                    self.release(port);
                    return Err(PortError::Descriptors);
                }
                Err(e) => {
                    tracing::debug!(port, error = %e, "RTP port busy, trying the next");
                    // Leave it marked in use for this round; release so a later round retries.
                    self.release(port);
                }
            }
        }
        Err(PortError::Exhausted {
            first: self.range.first,
            last: self.range.last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    #[tokio::test]
    async fn hands_out_even_ports_and_takes_them_back() {
        let pool = Arc::new(PortPool::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            PortRange {
                first: 41001,
                last: 41006,
            },
        ));
        assert_eq!(pool.free(), 3);
        let a = pool.bind().unwrap();
        let b = pool.bind().unwrap();
        let c = pool.bind().unwrap();
        let mut ports = vec![a.port, b.port, c.port];
        ports.sort();
        assert_eq!(ports, vec![41002, 41004, 41006]);
        assert!(matches!(pool.bind(), Err(PortError::Exhausted { .. })));
        drop(b);
        assert_eq!(pool.free(), 1);
        let d = pool.bind().unwrap();
        assert_eq!(d.port % 2, 0);
    }

    #[tokio::test]
    async fn skips_ports_held_by_others() {
        let holder = std::net::UdpSocket::bind("127.0.0.1:41102").unwrap();
        let pool = Arc::new(PortPool::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            PortRange {
                first: 41102,
                last: 41104,
            },
        ));
        let a = pool.bind().unwrap();
        assert_eq!(a.port, 41104);
        assert!(pool.bind().is_err());
        drop(holder);
    }
}
