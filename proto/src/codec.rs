//! The codec of every brine service: prost messages, with small starting buffers.
//!
//! tonic's default codec gives every stream an 8 KiB buffer each way, allocated when the stream
//! opens. A master holds one stream open per host for the host's whole life, whose messages are
//! a few hundred bytes: at 10,000 hosts the default would hold 160 MiB of buffers. Here they
//! start small and grow for a larger message (a listing of the whole fleet, say).

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Where each stream's buffers start.
const BUFFER_SIZE: usize = 512;
/// tonic's default: how much a stream encodes before it hands a batch to HTTP/2.
const YIELD_THRESHOLD: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

/// Encodes `T` and decodes `U` with prost.
#[derive(Debug, Clone, Copy)]
pub struct CompactCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for CompactCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for CompactCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}
