//! The crypto floor on its own (`benches/common/floor.rs` says what it computes);
//! `cargo bench --bench layer` measures it again beside the layer, for ratios.
//!
//! ```text
//! cargo bench --bench crypto_floor
//! ```

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

#[path = "common/floor.rs"]
mod floor;

fn bench(c: &mut Criterion) {
    let floor = floor::Floor::new();
    let mut group = c.benchmark_group("crypto_floor");
    group.bench_function("read", |b| b.iter(|| floor.request(black_box(false))));
    group.bench_function("read_write", |b| b.iter(|| floor.request(black_box(true))));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
