//! Criterion benches per pipeline stage and per building block. `cargo bench -p vrouter-benches`.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::time::{Duration, Instant};
use vrouter_benches::stage::{StageRig, STAGE_BATCH, STAGE_CASES};
use vrouter_benches::{setup, Case};
use vrouter_dataplane::pipeline::nat;
use vrouter_dataplane::wire::checksum;

/// Every iteration measures one pipeline run over a full batch: the previous batch's buffers
/// go back to the pool and a new batch is received outside the timed part, and the batch
/// length and the packets forwarded are asserted on every iteration, so a case can never report
/// packets it did not process (see `tests/stage_batches.rs`).
fn pipeline_cases(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline-batch-256");
    g.throughput(Throughput::Elements(STAGE_BATCH as u64));
    for case in STAGE_CASES {
        let mut rig = StageRig::new(case);
        g.bench_function(case.name(), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let n = rig.fill();
                    assert_eq!(n, STAGE_BATCH, "{}: short batch", case.name());
                    let t0 = Instant::now();
                    rig.run();
                    spent += t0.elapsed();
                    assert_eq!(
                        rig.forwarded(),
                        STAGE_BATCH,
                        "{}: packets not forwarded",
                        case.name()
                    );
                }
                spent
            })
        });
    }
    g.finish();
}

fn fib_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("fib-lookup");
    for routes in [1usize, 1_000_000] {
        let (w, _r, gen, _) = setup(Case::EncapMplsoudp, routes, 64);
        let mut i = 0usize;
        let dsts: Vec<u32> = gen
            .destinations()
            .iter()
            .copied()
            .cycle()
            .take(4096)
            .collect();
        g.bench_function(format!("routes-{routes}"), |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                w.read(|t| black_box(t.lookup(1, dsts[i]))).flatten()
            })
        });
    }
    g.finish();
}

fn building_blocks(c: &mut Criterion) {
    let hdr = [
        0x45u8, 0, 0, 0x73, 0, 0, 0x40, 0, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0, 1, 0xc0, 0xa8, 0,
        0xc7,
    ];
    c.bench_function("checksum-full-20B", |b| {
        b.iter(|| checksum::checksum(black_box(&hdr)))
    });
    c.bench_function("checksum-update32", |b| {
        b.iter(|| {
            checksum::update32(
                black_box(0xb861),
                black_box(0xc0a8_0001),
                black_box(0x0a00_0001),
            )
        })
    });
    let pkt = {
        let mut v = Vec::new();
        let _ = etherparse::PacketBuilder::ipv4([10, 1, 1, 3], [203, 0, 113, 9], 64)
            .udp(4000, 53)
            .write(&mut v, b"query");
        v
    };
    c.bench_function("nat-rewrite-udp", |b| {
        b.iter_batched_ref(
            || pkt.clone(),
            |p| nat::rewrite(p, nat::Side::Src, 0xc633_6405),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, pipeline_cases, fib_lookup, building_blocks);
criterion_main!(benches);
