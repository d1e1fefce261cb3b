//! One connection to a provider, plain TCP or TLS (rustls with webpki roots via monoio-rustls), with owned-buffer
//! reads and writes and a cheap non-blocking check that a pooled connection was not closed by the provider.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use monoio::net::TcpStream;
use monoio_rustls::{ClientTlsStream, TlsConnector};
use rustls::pki_types::ServerName;

use crate::wire::http::io::{read_more, write_all};

/// A connected stream to a provider.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<ClientTlsStream<TcpStream>>),
}

impl Stream {
    pub async fn read_more(
        &mut self,
        buf: Vec<u8>,
        min_spare: usize,
    ) -> (io::Result<usize>, Vec<u8>) {
        match self {
            Stream::Plain(s) => read_more(s, buf, min_spare).await,
            Stream::Tls(s) => read_more(s.as_mut(), buf, min_spare).await,
        }
    }

    pub async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        match self {
            Stream::Plain(s) => write_all(s, buf).await,
            Stream::Tls(s) => write_all(s.as_mut(), buf).await,
        }
    }
}

/// A stream plus what the pool needs to know about it.
pub struct Conn {
    pub stream: Stream,
    fd: RawFd,
}

impl Conn {
    /// Connects to the first reachable address, with TLS when `tls_name` is given.
    pub async fn connect(
        addrs: &[std::net::SocketAddr],
        tls: Option<(&TlsConnector, &str)>,
    ) -> io::Result<Conn> {
        let mut last_err = io::Error::other("no address to connect to");
        for addr in addrs {
            match TcpStream::connect_addr(*addr).await {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    let fd = tcp.as_raw_fd();
                    let stream = match tls {
                        None => Stream::Plain(tcp),
                        Some((connector, name)) => {
                            let server_name =
                                ServerName::try_from(name.to_string()).map_err(|e| {
                                    io::Error::other(format!("invalid TLS server name: {e}"))
                                })?;
                            let tls = connector.connect(server_name, tcp).await.map_err(|e| {
                                io::Error::other(format!("TLS handshake failed: {e}"))
                            })?;
                            Stream::Tls(Box::new(tls))
                        }
                    };
                    return Ok(Conn { stream, fd });
                }
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    /// The stream, for protocols that take the connection over (WebSocket).
    pub fn into_stream(self) -> Stream {
        self.stream
    }

    /// True when the provider has closed (or reset, or sent unsolicited data on) this idle connection.
    pub fn is_stale(&self) -> bool {
        let mut byte = 0u8;
        // SAFETY: `fd` is owned by `self.stream` and open; the buffer is one valid byte.
        let n = unsafe {
            libc::recv(
                self.fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            !matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            )
        } else {
            // 0 = orderly close; > 0 = bytes nobody asked for (a TLS close_notify or garbage): not reusable.
            true
        }
    }
}

/// The TLS client configuration for providers: webpki roots, plus `extra_ca` certificates when configured.
pub fn tls_connector(extra_ca: Option<&Path>) -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_ca {
        for cert in crate::config::tls::load_pem_certificates(path)? {
            roots
                .add(cert)
                .map_err(|e| format!("unusable certificate in {}: {e}", path.display()))?;
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}
