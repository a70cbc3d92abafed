//! One pipeline run over one full batch, as the criterion benches measure it.
//!
//! The criterion cases used to take each batch from a pool that was never refilled, so after a
//! few iterations every batch was empty and the pipeline ran on nothing (13 ns per "batch of
//! 256"). A [`StageRig`] gives the previous batch's buffers back before it receives the next
//! one, and [`StageRig::run`] returns how many packets the pipeline actually forwarded, so the
//! bench can assert that every measured run processed the packets it reports.

use crate::{setup, Case, GenPort};
use vrouter_dataplane::batch::{Batch, Next};
use vrouter_dataplane::buf::BufPool;
use vrouter_dataplane::pipeline::Pipeline;
use vrouter_dataplane::port::Port;
use vrouter_dataplane::stats::StatsRegistry;
use vrouter_dataplane::tables::{Limits, TablesReader, TablesWriter};

/// Packets per measured run: what the criterion cases declare as their throughput.
pub const STAGE_BATCH: usize = vrouter_dataplane::BATCH_SIZE;

/// The cases `cargo bench -p vrouter-benches` measures per pipeline batch.
pub const STAGE_CASES: [Case; 6] = [
    Case::L3Local,
    Case::EncapMplsoudp,
    Case::EncapMplsogre,
    Case::DecapMplsoudp,
    Case::FipDnat,
    Case::FipSnat,
];

/// Tables, generator, pipeline and buffers of one stage case.
#[derive(Debug)]
pub struct StageRig {
    _writer: TablesWriter,
    reader: TablesReader,
    gen: GenPort,
    vif: u16,
    pipeline: Pipeline,
    pool: BufPool,
    batch: Batch,
    _stats: StatsRegistry,
}

impl StageRig {
    /// A rig for `case` with 64-byte frames; the pool holds two batches' worth of buffers, so
    /// a rig that did not give buffers back would run dry on its third batch.
    pub fn new(case: Case) -> Self {
        let (writer, reader, gen, vif) = setup(case, 1, 64);
        let stats = StatsRegistry::new(
            usize::from(Limits::default().vifs),
            Limits::default().vrfs as usize,
        );
        let pipeline = Pipeline::new(stats.register());
        Self {
            _writer: writer,
            reader,
            gen,
            vif,
            pipeline,
            pool: BufPool::new(2 * STAGE_BATCH),
            batch: Batch::new(),
            _stats: stats,
        }
    }

    /// Gives the last batch's buffers back to the pool and receives a new batch; returns its
    /// length (not measured: this is the NIC's part).
    pub fn fill(&mut self) -> usize {
        for p in self.batch.drain() {
            self.pool.free(p.buf);
        }
        self.gen.rx_burst(&mut self.pool, &mut self.batch, self.vif);
        self.batch.len()
    }

    /// Runs the pipeline over the batch: the measured part.
    #[inline]
    pub fn run(&mut self) {
        if let Some(t) = self.reader.enter() {
            self.pipeline.run(&t, &mut self.batch);
        }
    }

    /// Packets of the batch the last [`StageRig::run`] left ready to transmit.
    pub fn forwarded(&self) -> usize {
        self.batch
            .pkts()
            .iter()
            .filter(|p| p.meta.next == Next::Tx)
            .count()
    }
}
