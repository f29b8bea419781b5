//! The merge as a property: random sequences of inserts, updates and deletes over a few keys,
//! with duplicate deliveries, re-sends of older versions and replayed loads, cut into random
//! loads, leave the destination equal to the model after every load. The model keeps, for each
//! key, the change with the highest version, a delete winning a tie: in hard-delete mode a
//! deleted key is absent, in soft-delete mode it is a row marked deleted at the delete's version.
//!
//! One destination serves every case, each case in a table of its own. The number of cases is
//! `PROPTEST_CASES`, else the destination's [`DestinationUnderTest::PROPERTY_CASES`].

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use super::{DestinationUnderTest, Target, batch};
use crate::support::DeleteMode;

/// One change a source sends: a key, its version (epoch milliseconds) and whether it is a
/// delete. A live row's name follows from key and version, so two deliveries of one version
/// always agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Change {
    key: i64,
    version: i64,
    deleted: bool,
}

impl Change {
    fn name(&self) -> String {
        format!("k{}v{}", self.key, self.version)
    }
}

/// One case: the mode, the changes in delivery order, how they are cut into loads, and after
/// which loads the previous load is delivered again under its own id.
#[derive(Debug, Clone)]
struct Case {
    deletes: DeleteMode,
    changes: Vec<Change>,
    load_sizes: Vec<usize>,
    replays: Vec<bool>,
}

fn change() -> impl Strategy<Value = Change> {
    (0i64..4, 1i64..=6, prop::bool::weighted(0.35)).prop_map(|(key, version, deleted)| Change {
        key,
        version: version * 100,
        deleted,
    })
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![Just(DeleteMode::Hard), Just(DeleteMode::Soft)],
        prop::collection::vec(change(), 1..16),
        // Duplicate deliveries: (which earlier change, where to send it again), as fractions.
        prop::collection::vec((0.0f64..1.0, 0.0f64..1.0), 0..5),
        prop::collection::vec(1usize..=5, 1..8),
        prop::collection::vec(prop::bool::weighted(0.2), 8),
    )
        .prop_map(|(deletes, mut changes, duplicates, load_sizes, replays)| {
            for (which, at) in duplicates {
                let which = ((which * changes.len() as f64) as usize).min(changes.len() - 1);
                let at = ((at * changes.len() as f64) as usize).clamp(which + 1, changes.len());
                changes.insert(at, changes[which]);
            }
            Case {
                deletes,
                changes,
                load_sizes,
                replays,
            }
        })
}

impl Case {
    /// The changes cut into loads of the case's sizes (the last size repeating), none empty.
    fn loads(&self) -> Vec<&[Change]> {
        let mut loads = Vec::new();
        let mut rest = self.changes.as_slice();
        let mut sizes = self.load_sizes.iter().chain(std::iter::repeat(
            self.load_sizes.last().expect("at least one size"),
        ));
        while !rest.is_empty() {
            let size = (*sizes.next().expect("sizes repeat")).min(rest.len());
            let (load, after) = rest.split_at(size);
            loads.push(load);
            rest = after;
        }
        loads
    }
}

/// What the table must hold after `applied`, in the form [`compare`] reads it back: for each
/// key the change of the highest version, a delete winning a tie.
fn model(deletes: DeleteMode, applied: &[Change]) -> Vec<String> {
    let mut last: BTreeMap<i64, Change> = BTreeMap::new();
    for change in applied {
        let newer = match last.get(&change.key) {
            None => true,
            Some(kept) => {
                change.version > kept.version
                    || (change.version == kept.version && change.deleted && !kept.deleted)
            }
        };
        if newer {
            last.insert(change.key, *change);
        }
    }
    let mut rows: Vec<String> = last
        .values()
        .filter_map(|c| match (deletes, c.deleted) {
            (DeleteMode::Hard, true) => None,
            (DeleteMode::Hard, false) => Some(format!("{}|{}|{}", c.key, c.name(), c.version)),
            (DeleteMode::Soft, true) => Some(format!("{}|*|{}|t", c.key, c.version)),
            (DeleteMode::Soft, false) => Some(format!("{}|{}|{}|f", c.key, c.name(), c.version)),
        })
        .collect();
    rows.sort();
    rows
}

/// The table's rows as [`model`] writes them: a soft-deleted row's data columns are whatever
/// it held before the delete (or NULL), so they are left out.
async fn compare<D: DestinationUnderTest>(
    t: &Target<D>,
    table: &str,
    deletes: DeleteMode,
) -> Vec<String> {
    let soft = deletes == DeleteMode::Soft;
    let mut rows: Vec<String> = t
        .rows_in(table, &["id", "name"], soft)
        .await
        .into_iter()
        .map(|row| {
            let cells: Vec<&str> = row.split('|').collect();
            match cells.as_slice() {
                [id, _, version, "t"] => format!("{id}|*|{version}|t"),
                _ => row,
            }
        })
        .collect();
    rows.sort();
    rows
}

/// The changes of one load as the batch the source would stage.
fn load_batch(changes: &[Change]) -> arrow::array::RecordBatch {
    let names: Vec<String> = changes.iter().map(Change::name).collect();
    let rows: Vec<(i64, &str, i64, bool)> = changes
        .iter()
        .zip(&names)
        .map(|(c, name)| (c.key, name.as_str(), c.version, c.deleted))
        .collect();
    batch(&rows, None)
}

async fn run_case<D: DestinationUnderTest>(
    t: &Target<D>,
    number: u32,
    case: &Case,
) -> Result<(), TestCaseError> {
    let table = format!("model_{number}");
    let mut applied: Vec<Change> = Vec::new();
    let mut previous: Option<(String, &[Change])> = None;
    for (index, load) in case.loads().into_iter().enumerate() {
        let load_id = format!("{table}-l{index}");
        let outcome = t
            .merge_in(&table, &load_id, case.deletes, load_batch(load))
            .await
            .map_err(|err| TestCaseError::fail(format!("{load_id}: {}", err.report())))?;
        prop_assert!(!outcome.skipped, "{load_id} was skipped");
        applied.extend_from_slice(load);
        prop_assert_eq!(
            compare(t, &table, case.deletes).await,
            model(case.deletes, &applied),
            "after {}",
            load_id
        );

        // The previous load delivered again under its own id: skipped, nothing changes.
        if let Some((replay_id, replay)) = previous.take().filter(|_| case.replays[index % 8]) {
            let again = t
                .merge_in(&table, &replay_id, case.deletes, load_batch(replay))
                .await
                .map_err(|err| TestCaseError::fail(format!("{replay_id}: {}", err.report())))?;
            prop_assert!(again.skipped, "the replay of {} was applied", replay_id);
            prop_assert_eq!(
                compare(t, &table, case.deletes).await,
                model(case.deletes, &applied),
                "after replaying {}",
                replay_id
            );
        }
        previous = Some((load_id, load));
    }
    Ok(())
}

/// Runs the property against one destination (see the module docs).
pub(super) async fn merge_equals_the_model_in_any_load_split<D: DestinationUnderTest>() {
    let t = Target::<D>::start().await;
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(D::PROPERTY_CASES);
    let mut runner = TestRunner::new(Config {
        cases,
        // Every shrinking step is a case against the destination.
        max_shrink_iters: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    let number = std::sync::atomic::AtomicU32::new(0);
    let result = runner.run(&case(), |case| {
        let number = number.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::task::block_in_place(|| handle.block_on(run_case(&t, number, &case)))
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, case)) => {
            panic!("{reason}\nminimal failing case: {case:#?}")
        }
        Err(TestError::Abort(reason)) => panic!("aborted: {reason}"),
    }
}

#[test]
fn the_model_keeps_the_newest_change_and_a_delete_wins_a_tie() {
    let change = |key, version, deleted| Change {
        key,
        version,
        deleted,
    };
    let applied = [
        change(1, 200, false),
        change(1, 100, true),
        change(2, 100, false),
        change(2, 100, true),
        change(2, 100, false),
        change(3, 300, true),
        change(3, 200, false),
    ];
    assert_eq!(model(DeleteMode::Hard, &applied), ["1|k1v200|200"]);
    assert_eq!(
        model(DeleteMode::Soft, &applied),
        ["1|k1v200|200|f", "2|*|100|t", "3|*|300|t"]
    );
}
