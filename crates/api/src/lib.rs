//! etcd v3 gRPC API: protobuf messages, tonic server traits and tonic clients, byte-for-byte wire-compatible with etcd.
//!
//! The protos in `proto/` keep etcd's package, service, message and field
//! names and numbers, so gRPC paths such as `/etcdserverpb.KV/Range` and every
//! encoded message are those etcd and its clients use. Field names that etcd
//! spells in camel case become snake case in Rust (`peerURLs` is `peer_ur_ls`,
//! `TTL` is `ttl`, `ID` is `id`).

/// Key-value pairs and watch events (`mvccpb`).
#[allow(clippy::all)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// Users, roles and permissions (`authpb`).
#[allow(clippy::all)]
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// KV, Watch, Lease, Cluster, Maintenance and Auth services (`etcdserverpb`).
#[allow(clippy::all)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// The Lock service (`v3lockpb`).
#[allow(clippy::all)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// The Election service (`v3electionpb`).
#[allow(clippy::all)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// oxcd's own Import service (not etcd's): the target side of `oxctl migrate`'s live
/// migration from etcd, keeping every revision (`oxcdimportpb`).
#[allow(clippy::all)]
pub mod oxcdimportpb {
    tonic::include_proto!("oxcdimportpb");
}

/// Every message and service above as an encoded `google.protobuf.FileDescriptorSet`, for
/// code that works on messages by name (proto3's JSON mapping in the server's gateway).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/etcd_descriptors.bin"));

/// The codec every generated server and client uses: prost's, with a smaller first buffer.
///
/// tonic allocates `buffer_size` bytes per call for the encoded response (and per request
/// for its decoding), 8 KiB by default. Nearly every response on the hot path is far
/// smaller (a `PutResponse` is about 30 bytes), and an 8 KiB block per call sent the
/// allocator to its slow path on every few responses under a put load: responses start
/// at 1 KiB. Requests start at 4 KiB: a put of a 1 KiB value is a little over 1 KiB, and
/// growing a 1 KiB buffer for it (a reallocation and a copy per request) was 1.4 % of a
/// member's CPU under such a load. A larger message grows the buffer once: the decoder
/// reserves a message's whole length when it reads its header, and prost's encoder asks
/// for the encoded length before writing.
pub mod codec {
    use tonic::codec::{BufferSettings, Codec};
    use tonic_prost::{ProstDecoder, ProstEncoder};

    /// First size of a call's encode buffer (tonic's default: 8 KiB).
    pub const CALL_BUFFER_BYTES: usize = 1024;
    /// First size of a call's decode buffer.
    pub const DECODE_BUFFER_BYTES: usize = 4 * 1024;
    /// tonic's default: how much a stream batches before it yields (32 KiB).
    pub const STREAM_YIELD_BYTES: usize = 32 * 1024;

    fn settings(buffer: usize) -> BufferSettings {
        BufferSettings::new(buffer, STREAM_YIELD_BYTES)
    }

    /// [`tonic_prost::ProstCodec`] with [`CALL_BUFFER_BYTES`] and [`DECODE_BUFFER_BYTES`].
    #[derive(Debug, Clone)]
    pub struct EtcdCodec<T, U>(std::marker::PhantomData<(T, U)>);

    impl<T, U> Default for EtcdCodec<T, U> {
        fn default() -> Self {
            Self(std::marker::PhantomData)
        }
    }

    impl<T, U> Codec for EtcdCodec<T, U>
    where
        T: prost::Message + Send + 'static,
        U: prost::Message + Default + Send + 'static,
    {
        type Encode = T;
        type Decode = U;
        type Encoder = ProstEncoder<T>;
        type Decoder = ProstDecoder<U>;

        fn encoder(&mut self) -> Self::Encoder {
            ProstEncoder::new(settings(CALL_BUFFER_BYTES))
        }

        fn decoder(&mut self) -> Self::Decoder {
            ProstDecoder::new(settings(DECODE_BUFFER_BYTES))
        }
    }
}
