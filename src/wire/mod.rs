//! Codecs with no policy: the HTTP/1.1 layer ([`http`]), JSON-RPC inspection and id splicing ([`jsonrpc`]), incremental checks of a reply
//! streamed as it arrives ([`stream_reply`]), RFC 6455
//! WebSocket frames ([`ws_frame`]) and the opening handshake ([`ws_handshake`]). Nothing here knows about providers,
//! routing or workers; every parser has a size and a depth bound.

pub mod http;
pub mod jsonrpc;
pub mod stream_reply;
pub mod ws_frame;
pub mod ws_handshake;
