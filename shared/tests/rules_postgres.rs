//! The alert-rule contract against the real PostgreSQL (`DATABASE_URL`;
//! each test gets its own database from `#[sqlx::test]`).

use std::sync::Arc;

use sqlx::PgPool;
use tributary_shared::rules::PgRules;
use tributary_testkit::rules as contract;

#[sqlx::test(migrations = "./migrations")]
async fn rules_are_written_read_and_deleted(pool: PgPool) {
    contract::rules_are_written_read_and_deleted(&PgRules::new(pool)).await;
}

#[sqlx::test(migrations = "./migrations")]
async fn the_number_of_rules_is_bounded(pool: PgPool) {
    contract::the_number_of_rules_is_bounded(&PgRules::new(pool)).await;
}

#[sqlx::test(migrations = "./migrations")]
async fn the_relay_publishes_every_change(pool: PgPool) {
    contract::the_relay_publishes_every_change(Arc::new(PgRules::new(pool))).await;
}

/// Two operators creating the last free rule at once: the table lock makes
/// one of them wait, so exactly one gets it and the limit holds.
#[sqlx::test(migrations = "./migrations")]
async fn concurrent_writers_keep_the_limit(pool: PgPool) {
    use tributary_shared::rules::{MAX_RULES, RuleError, RuleStore};
    let store = Arc::new(PgRules::new(pool));
    for i in 0..MAX_RULES - 1 {
        store
            .put(&format!("r-{i:04}"), &contract::spec("t", 1.0, "g"), chrono::Utc::now())
            .await
            .expect("within the limit");
    }
    let racers: Vec<_> = (0..4)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .put(&format!("last-{i}"), &contract::spec("t", 1.0, "g"), chrono::Utc::now())
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for r in racers {
        match r.await.expect("task") {
            Ok(_) => won += 1,
            Err(RuleError::TooMany) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(store.list().await.expect("list").len(), MAX_RULES);
}
