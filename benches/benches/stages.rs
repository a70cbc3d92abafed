//! Criterion benches per pipeline stage and per building block. `cargo bench -p vrouter-benches`.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use vrouter_benches::{setup, Case};
use vrouter_dataplane::batch::Batch;
use vrouter_dataplane::buf::BufPool;
use vrouter_dataplane::pipeline::{nat, Pipeline};
use vrouter_dataplane::port::Port;
use vrouter_dataplane::stats::StatsRegistry;
use vrouter_dataplane::tables::Limits;
use vrouter_dataplane::wire::checksum;

fn pipeline_cases(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline-batch-256");
    g.throughput(Throughput::Elements(256));
    for case in [
        Case::L3Local,
        Case::EncapMplsoudp,
        Case::EncapMplsogre,
        Case::DecapMplsoudp,
        Case::FipDnat,
        Case::FipSnat,
    ] {
        let (_w, reader, mut gen, vif) = setup(case, 1, 64);
        let stats = StatsRegistry::new(
            usize::from(Limits::default().vifs),
            Limits::default().vrfs as usize,
        );
        let pipeline = Pipeline::new(stats.register());
        let mut pool = BufPool::new(1024);
        g.bench_function(case.name(), |b| {
            b.iter_batched_ref(
                || {
                    let mut batch = Batch::new();
                    gen.rx_burst(&mut pool, &mut batch, vif);
                    batch
                },
                |batch| {
                    if let Some(t) = reader.enter() {
                        pipeline.run(&t, batch);
                    }
                },
                BatchSize::SmallInput,
            );
            // Buffers left in batches are dropped by criterion; the pool only needs to outlive
            // the measurement.
        });
        let _ = &mut pool;
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
