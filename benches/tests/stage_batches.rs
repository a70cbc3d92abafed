//! The criterion pipeline cases report `STAGE_BATCH` packets per iteration: every iteration
//! must really forward that many, however many iterations criterion runs.

use vrouter_benches::stage::{StageRig, STAGE_BATCH, STAGE_CASES};

#[test]
fn every_bench_case_forwards_a_full_batch_on_every_iteration() {
    for case in STAGE_CASES {
        let mut rig = StageRig::new(case);
        // Many times the pool's two batches: a rig that kept its buffers would run dry.
        for i in 0..64 {
            assert_eq!(
                rig.fill(),
                STAGE_BATCH,
                "{}: iteration {i} received a short batch",
                case.name()
            );
            rig.run();
            assert_eq!(
                rig.forwarded(),
                STAGE_BATCH,
                "{}: iteration {i} forwarded fewer packets than the bench reports",
                case.name()
            );
        }
    }
}
