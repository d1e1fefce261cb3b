//! Rent-style I/O helpers over monoio's owned-buffer traits: append-reads into a `Vec`'s spare capacity and
//! whole-buffer writes, generic over plain TCP and TLS streams.

use std::io;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};

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
