//! Tokens and records issued once by `examples/make_fixtures.rs` under the fixed
//! keys at the fixed instant. Regenerate with
//! `cargo run --manifest-path fuzz/Cargo.toml --example make_fixtures`.

/// A session issued for the fuzz targets.
pub struct Issued {
    pub token: &'static str,
    pub header_mode: bool,
    /// Sealed under the previous key of the ring (index 1), so it gets re-sealed.
    pub previous_key: bool,
    pub tag: i64,
    pub store_key_hex: &'static str,
    pub version: u64,
    pub idle_ms: u64,
    pub lifespan_ms: u64,
    pub data_hex: &'static str,
}

pub const ISSUED: &[Issued] = &[
    Issued {
        token: "ARLONT5mfev4No-6FzxKGVnNFmQRosEiekg_do1TJ59_8Desbs1_GxmLeMc39UR1GXe9-O4lLVNptw2CmefStbrJ7kOB3Kv6xs0ablt4zIFcA-AuazVlbjMMRyE77M2QIU8",
        header_mode: false,
        previous_key: false,
        tag: 0,
        store_key_hex: "f147f9ad05c46a6014bbb694373b2b6197bfc38080f2340acbd585e4865d0025",
        version: 1,
        idle_ms: 1700001800000,
        lifespan_ms: 1700086400000,
        data_hex: "0171e507851ab09e714267948c85d94f584e5ba81a5a2c6f34dc91648f2cc53a9b059f057fda",
    },
    Issued {
        token: "ARLONT6adzYGnZZPi5ZG2EB7qSz6HTPzZuNi1Z9z9LbcJENpTL3QjWe-t4zKJGKPkJyUsuj3wKUYb1zaJuA2SszOjlL0dhlfRpNGygDh9xW1ZipPMFFrItG0dGu9dDjfd_4",
        header_mode: false,
        previous_key: false,
        tag: 1,
        store_key_hex: "b5b7076911490c20796c8d5adc245274966f97c524c43a9eedc4613693069d15",
        version: 1,
        idle_ms: 1702592000000,
        lifespan_ms: 1702592000000,
        data_hex: "01d532ea4b1c2da14170efeff732654f111bfdc9111735e9eedb512ebf5b3e92ac725d406c78",
    },
    Issued {
        token: "ATD_5i90OzF_OZO2-ZSKcM27QwfgFTFfGxMGmUEZ8WJvYGmxJRSm4PC37gffjuJqcBbsSENo0pNnpOFiYqR5uPRJa9OQ73mFVZ6zV3YpWGieKhmXq9292t1lon7dTeuQ43g",
        header_mode: false,
        previous_key: true,
        tag: 2,
        store_key_hex: "f338b2810666b8573f375890684d59300b51a3f33b10c9ec456d812b41a3deb7",
        version: 1,
        idle_ms: 1700001800000,
        lifespan_ms: 1700086400000,
        data_hex: "0113e453f059f71b7ee536523408131f1803a8c76426b0f917c2dcaaf6bcb1f774cb81e06039",
    },
    Issued {
        token: "ARLONT5zEp3UDqGP0byhW93bJlA1tuiU022SUgmJ8qFrqpBF3kXRJ5v6h9c97TuCYTFcd3KbC2SI7fvsUW7IIxlw7jLr0S97jtHgNHgb-0rRMT2wVvU_HnXAsgbCjx_UJVA",
        header_mode: true,
        previous_key: false,
        tag: 3,
        store_key_hex: "b6b2e417c389e8397a8a4a673642bcdd2bc253144d18d81ec986a8c9431168d6",
        version: 1,
        idle_ms: 1700001800000,
        lifespan_ms: 1700086400000,
        data_hex: "01e44dec86fa770e4367913ba531d2269115729f1c0f1c07c6b4857e92cacc9a117654b08cc5",
    },
    Issued {
        token: "ATD_5i-qITT1J9y9kPvU4tqycuDFa__jLlPzxk06ZTtPD-4jgruv9Sx3GLOXnRfO3n6ikUrER4jFTSIGLPJQAD2xOXfKepr9Epoy_ZbIrLCEcma6bjDyyjAPUUM3Vu7_aDU",
        header_mode: true,
        previous_key: true,
        tag: 4,
        store_key_hex: "4fb62f09f1b764c4e171a4d1cd7ec7736187a9b92ffe5ee756cc5c8315c5f7c7",
        version: 1,
        idle_ms: 1702592000000,
        lifespan_ms: 1702592000000,
        data_hex: "0197599d88f2e7d8fd968fedbf22d08b1f73b4aa14176727998e023af31af3f539ed620cbafe",
    },
];
