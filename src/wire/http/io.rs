//! Rent-style I/O helpers over monoio's owned-buffer traits: append-reads into a `Vec`'s spare capacity and
//! whole-buffer writes (optionally with a progress timeout), generic over plain TCP and TLS streams.

use std::io;

use std::time::Duration;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

/// Reads once into the spare capacity of `buf` (growing it to at least `min_spare` free bytes), appending.
/// Returns the number of bytes read (0 = end of stream) and the buffer.
pub async fn read_more<S: AsyncReadRent>(
    stream: &mut S,
    mut buf: Vec<u8>,
    min_spare: usize,
) -> (io::Result<usize>, Vec<u8>) {
    if buf.capacity() - buf.len() < min_spare {
        buf.reserve(min_spare);
    }
    let len = buf.len();
    let cap = buf.capacity();
    let (res, slice) = stream.read(buf.slice_mut(len..cap)).await;
    (res, slice.into_inner())
}

/// Writes all of `buf`.
pub async fn write_all<S: AsyncWriteRentExt>(
    stream: &mut S,
    buf: Vec<u8>,
) -> (io::Result<()>, Vec<u8>) {
    let (res, buf) = stream.write_all(buf).await;
    (res.map(|_| ()), buf)
}

/// Writes all of `buf`, failing with `TimedOut` as soon as one write makes no progress for `stall` (nginx's
/// `send_timeout`: a slow reader that keeps taking bytes is served, one that stops is cut).
pub async fn write_all_progress<S: AsyncWriteRent>(
    stream: &mut S,
    mut buf: Vec<u8>,
    stall: Duration,
) -> (io::Result<()>, Vec<u8>) {
    let mut pos = 0;
    while pos < buf.len() {
        let write = stream.write(buf.slice(pos..));
        let Ok((res, slice)) = monoio::time::timeout(stall, write).await else {
            return (Err(io::ErrorKind::TimedOut.into()), Vec::new());
        };
        buf = slice.into_inner();
        match res {
            Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
            Ok(n) => pos += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(()), buf)
}
