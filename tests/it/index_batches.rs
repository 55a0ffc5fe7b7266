//! One group commit holds stores that depend on each other: a replacement
//! that empties a series before another store into that series, the same
//! SOP Instance UID twice, a series filed under another study. Each must
//! come out as if it had been recorded alone, on both index backends.

use crate::common;

use common::{ct_store_request as store, Archive, Backend};
use tessera::config::DuplicatePolicy;
use tessera::index::{Durability, Index, Recorded, StoreRequest};

const STUDY: &str = "2.25.7100";
const OTHER_STUDY: &str = "2.25.7200";
const S1: &str = "2.25.7100.1";
const S2: &str = "2.25.7100.2";

async fn record(index: &Index, batch: &[StoreRequest]) -> Vec<Recorded> {
    index
        .record_batch(batch, DuplicatePolicy::Replace, Durability::Journaled)
        .await
        .expect("the batch is recorded as a whole")
}

async fn dependent_stores_in_one_batch(backend: Backend) {
    let archive = Archive::start(backend).await;
    let index = archive.index().await;
    let before = [
        store("P1", STUDY, S1, "2.25.7100.1.1", 1),
        store("P1", STUDY, S2, "2.25.7100.2.1", 2),
    ];
    assert_eq!(
        record(&index, &before).await,
        [Recorded::Inserted, Recorded::Inserted]
    );

    // Both series are stored when the batch begins.
    let batch = [
        store("P1", STUDY, S1, "2.25.7100.1.2", 3),
        // New bytes for S2's only instance, now in S1: S2 is dropped.
        store("P1", STUDY, S1, "2.25.7100.2.1", 12),
        // Into S2 again, which must be created anew.
        store("P1", STUDY, S2, "2.25.7100.2.2", 4),
        store("P1", STUDY, S1, "2.25.7100.1.2", 3),
        store("P1", OTHER_STUDY, S1, "2.25.7100.1.3", 5),
    ];
    assert_eq!(
        record(&index, &batch).await,
        [
            Recorded::Inserted,
            Recorded::Replaced,
            Recorded::Inserted,
            Recorded::Identical,
            Recorded::SeriesInOtherStudy(STUDY.into()),
        ]
    );

    // The same new UID twice, with nothing before it in the batch.
    let twice = [
        store("P1", STUDY, S1, "2.25.7100.1.4", 6),
        store("P1", STUDY, S1, "2.25.7100.1.4", 6),
    ];
    assert_eq!(
        record(&index, &twice).await,
        [Recorded::Inserted, Recorded::Identical]
    );

    let summary = index
        .study_summary(STUDY)
        .await
        .expect("read")
        .expect("study");
    // S1: .1.1, .1.2, .2.1 (moved), .1.4; S2: .2.2.
    assert_eq!((summary.num_series, summary.num_instances), (2, 5));
    let stats = index.stats().await.expect("stats");
    assert_eq!((stats.series, stats.instances), (2, 5));
    let moved = index
        .instance("2.25.7100.2.1")
        .await
        .expect("read")
        .expect("instance");
    assert_eq!(moved.series_instance_uid, S1);
    index.close().await;
}

/// A batch prepared while the journal syncs and then given up (the sync
/// failed) leaves nothing behind, and the writer takes the next batch.
async fn a_batch_given_up_is_rolled_back(backend: Backend) {
    let archive = Archive::start(backend).await;
    let index = archive.index().await;
    let first = [store("P2", STUDY, S1, "2.25.7100.1.1", 1)];
    let prepared = index
        .prepare_journaled(&first, DuplicatePolicy::Replace)
        .await
        .expect("prepared");
    drop(prepared);
    let stats = index.stats().await.expect("stats");
    assert_eq!((stats.patients, stats.instances), (0, 0));
    let next = [
        store("P2", STUDY, S1, "2.25.7100.1.1", 1),
        store("P2", STUDY, S1, "2.25.7100.1.2", 2),
    ];
    assert_eq!(
        record(&index, &next).await,
        [Recorded::Inserted, Recorded::Inserted]
    );
    assert_eq!(index.stats().await.expect("stats").instances, 2);
    index.close().await;
}

on_both_backends!(
    dependent_stores_in_one_batch,
    a_batch_given_up_is_rolled_back
);
