//! Native change capture against a real PostgreSQL server (pontoon-testsupport),
//! decoding through pgoutput and the job's publication: the same tests as
//! `wal2json.rs`.

const PLUGIN: Plugin = Plugin::PgOutput;

include!("native/cases.rs");

#[tokio::test]
async fn a_slot_whose_publication_was_dropped_is_refused() {
    let db = pg_db();
    let _slot = SlotGuard(&db);
    setup_orders_and_lines(&db);
    let t = tables(&db, &["orders"]).await;
    let mut cap = capture(&db);
    cap.start(&t).await.unwrap();
    assert_eq!(cap.plugin(), Some(Plugin::PgOutput));
    assert_eq!(
        db.sql("SELECT attnames::text FROM pg_publication_tables WHERE tablename = 'orders'"),
        "{id}",
        "only the key is published"
    );
    db.sql(&format!("DROP PUBLICATION pontoon_{}", job_of(&db)));

    let mut again = capture(&db);
    let err = again.preflight(&t, 1).await.expect_err("refused");
    let message = err.to_string();
    assert!(message.contains(&format!("publication pontoon_{}", job_of(&db))), "{message}");
    assert!(message.contains("pontoon cleanup"), "{message}");
    let err = again.start(&t).await.expect_err("refused");
    assert!(err.to_string().contains("is gone"), "{err}");
    let removed = again.cleanup().await.unwrap();
    assert!(removed.contains(&format!("replication slot {}", slot_of(&db))), "{removed:?}");
}
