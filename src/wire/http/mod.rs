//! The project's own HTTP/1.1 layer on `httparse`: request heads ([`request`]), chunked bodies ([`chunked`]),
//! response writing ([`response`]), upstream response heads ([`client`]) and rent-style socket helpers ([`io`]).

pub mod chunked;
pub mod client;
pub mod io;
pub mod request;
pub mod response;
