//! The harness against the real servers: shared ones (reused across nextest processes) and
//! private ones (killed and restarted).

use std::process::Command;

use pontoon_testsupport::{MariaDbServer, PgServer, TestDb, mysql_db, mysql_server, pg_db, pg_server, temp_dir};

/// Run the server's CLI client over TCP as `pontoon` with a password, as the tool will.
fn tcp_client(db: &TestDb, sql: &str) -> String {
    let server = db.server();
    let mut cmd = Command::new(&server.client);
    match db.engine() {
        pontoon_testsupport::Engine::Postgres => {
            cmd.args(["-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-d", &db.url, "-c", sql]);
        }
        pontoon_testsupport::Engine::MariaDb => {
            cmd.args(["--no-defaults", "-N", "-B", "-h", "127.0.0.1", "-u"])
                .arg(pontoon_testsupport::USER)
                .arg(format!("-p{}", pontoon_testsupport::PASSWORD))
                .args(["-P", &server.port.to_string(), &db.name, "-e", sql]);
        }
    }
    let out = cmd.output().expect("run the client");
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn pg_databases_are_separate_and_writable() {
    let a = pg_db();
    let b = pg_db();
    assert_ne!(a.name, b.name);
    let prefix = format!("postgres://pontoon:pontoon@127.0.0.1:{}/", pg_server().port);
    assert_eq!(a.url, format!("{prefix}{}", a.name));

    for db in [&a, &b] {
        db.sql("CREATE TABLE t (id bigint PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one');");
    }
    a.sql("INSERT INTO t VALUES (2, 'two')");
    assert_eq!(a.sql("SELECT count(*) FROM t"), "2");
    assert_eq!(b.sql("SELECT id, v FROM t ORDER BY id"), "1|one");
    assert!(a.try_sql("SELECT * FROM missing").is_err());

    // The URL works over TCP with the password (scram-sha-256).
    assert_eq!(tcp_client(&a, "SELECT current_user"), "pontoon");
}

#[test]
fn pg_is_ready_for_logical_decoding_with_wal2json() {
    let db = pg_db();
    assert_eq!(db.sql("SHOW wal_level"), "logical");
    db.sql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    // Slots are server-wide: name it after the database so concurrent tests cannot collide.
    let slot = format!("s_{}", db.name);
    db.sql(&format!("SELECT 1 FROM pg_create_logical_replication_slot('{slot}', 'wal2json')"));
    db.sql("INSERT INTO t VALUES (1, 'x')");
    let changes =
        db.sql(&format!("SELECT data FROM pg_logical_slot_get_changes('{slot}', NULL, NULL, 'format-version', '2')"));
    assert!(changes.contains(r#""action":"I""#) && changes.contains(r#""table":"t""#), "{changes}");
    db.sql(&format!("SELECT pg_drop_replication_slot('{slot}')"));

    // Replication connections are allowed over TCP too (pg_hba `host replication`).
    let mut url = db.url.clone();
    url.push_str("?replication=database");
    let out = Command::new(&db.server().client)
        .args(["-X", "-qAt", "-d", &url, "-c", "IDENTIFY_SYSTEM"])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn mariadb_logs_full_rows_and_allows_local_infile() {
    let db = mysql_db();
    assert!(db.url.starts_with(&format!("mysql://pontoon:pontoon@127.0.0.1:{}/t_", mysql_server().port)));
    assert_eq!(db.sql("SELECT @@binlog_format, @@binlog_row_image, @@local_infile, @@log_bin"), "ROW\tFULL\t1\t1");
    assert_eq!(tcp_client(&db, "SELECT current_user(), database()"), format!("pontoon@127.0.0.1\t{}", db.name));
}

#[test]
fn mariadb_round_trips_4_byte_utf8() {
    let db = mysql_db();
    db.sql("CREATE TABLE t (id int PRIMARY KEY, v varchar(10)); INSERT INTO t VALUES (1, 'a🦀b');");
    assert_eq!(db.sql("SELECT v, hex(v) FROM t"), "a🦀b\t61F09FA68062");
    assert_eq!(
        db.sql(
            "SELECT default_character_set_name, default_collation_name \
             FROM information_schema.schemata WHERE schema_name = database()"
        ),
        "utf8mb4\tutf8mb4_bin"
    );
}

#[test]
fn private_pg_survives_kill_and_restart() {
    let server = PgServer::start_private();
    assert_ne!(server.port(), pg_server().port);
    let db = server.create_db();
    db.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1000);");
    let port = server.port();

    server.kill();
    assert!(!server.is_running());
    assert!(db.try_sql("SELECT 1").is_err());
    server.start();
    assert_eq!(server.port(), port);
    assert_eq!(db.sql("SELECT count(*) FROM t"), "1000");

    server.stop();
    assert!(!server.is_running());
    server.start();
    assert_eq!(tcp_client(&db, "SELECT count(*) FROM t"), "1000");

    let dir = server.info().dir.clone();
    drop(server);
    assert!(!dir.exists());
}

#[test]
fn private_mariadb_survives_kill_and_restart() {
    let server = MariaDbServer::start_private();
    let db = server.create_db();
    db.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT seq FROM seq_1_to_1000;");

    server.kill();
    assert!(!server.is_running());
    assert!(db.try_sql("SELECT 1").is_err());
    server.start();
    assert_eq!(db.sql("SELECT count(*) FROM t"), "1000");

    server.stop();
    server.start();
    assert_eq!(tcp_client(&db, "SELECT count(*) FROM t"), "1000");

    let dir = server.info().dir.clone();
    drop(server);
    assert!(!dir.exists());
}

#[test]
fn temp_dir_is_removed_on_drop() {
    let dir = temp_dir("pontoon-harness");
    std::fs::write(dir.join("f"), "x").unwrap();
    let path = dir.path().to_owned();
    assert!(path.is_dir());
    drop(dir);
    assert!(!path.exists());
}

#[test]
fn a_failed_tests_database_is_kept_but_its_slots_are_dropped() {
    let db = pg_db();
    let name = db.name.clone();
    let slot = format!("s_{name}");
    db.sql(&format!("SELECT 1 FROM pg_create_logical_replication_slot('{slot}', 'wal2json')"));
    let admin = pg_db();
    // the handle dropped while its thread panics, as when a test fails
    let failed = std::thread::spawn(move || {
        let _db = db;
        panic!("a failing test");
    });
    assert!(failed.join().is_err());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while admin.sql(&format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'")) != "0" {
        assert!(std::time::Instant::now() < deadline, "the failed test's slot is still there");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        admin.sql(&format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'")),
        "1",
        "the failed test's database is kept"
    );
    admin.sql(&format!("DROP DATABASE {name} WITH (FORCE)"));
}
