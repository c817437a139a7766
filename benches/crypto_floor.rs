//! The crypto floor on its own (`benches/common/floor.rs` says what it computes);
//! `cargo bench --bench layer` measures it again beside the layer, for ratios.
//!
//! The `pieces` group times what two proposed format changes would trade: an
//! HMAC-SHA256 of 32 bytes under a prepared key (what deriving the data key, or
//! the store key, costs), the AES-256-GCM set-up of a data key (which stays either
//! way), and one AES-256 block under a prepared key (a store key as a
//! pseudorandom permutation of the session id).
//!
//! ```text
//! cargo bench --bench crypto_floor
//! ```

use std::hint::black_box;

use aes_gcm::aead::consts::U12;
use aes_gcm::aes::Aes256Enc;
use aes_gcm::aes::cipher::{BlockEncrypt, generic_array::GenericArray};
use aes_gcm::{AesGcm, KeyInit};
use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use sha2::Sha256;

#[path = "common/floor.rs"]
mod floor;

fn bench(c: &mut Criterion) {
    let floor = floor::Floor::new();
    let mut group = c.benchmark_group("crypto_floor");
    group.bench_function("read", |b| b.iter(|| floor.request(black_box(false))));
    group.bench_function("read_write", |b| b.iter(|| floor.request(black_box(true))));
    group.finish();

    let hmac = <Hmac<Sha256> as Mac>::new_from_slice(&[2; 32]).unwrap();
    let aes = Aes256Enc::new_from_slice(&[3; 32]).unwrap();
    let mut group = c.benchmark_group("pieces");
    group.bench_function("hmac_sha256_32_bytes", |b| {
        b.iter(|| {
            hmac.clone()
                .chain_update(black_box([7u8; 32]))
                .finalize()
                .into_bytes()
        })
    });
    group.bench_function("aes_gcm_key_setup", |b| {
        b.iter(|| AesGcm::<Aes256Enc, U12>::new(black_box(&[5u8; 32]).into()))
    });
    group.bench_function("aes_block", |b| {
        b.iter(|| {
            let mut block = GenericArray::from(black_box([7u8; 16]));
            aes.encrypt_block(&mut block);
            block
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
