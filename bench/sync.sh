#!/usr/bin/env bash
# The sync benchmark (issue 3): pontoon's change sync side by side with the engines' own
# replication, on the same data, in one run.
#
#   pg-pg   PostgreSQL -> PostgreSQL   pontoon run (native: wal2json slot; triggers) |
#                                      PostgreSQL logical replication (publication + subscription)
#   my-my   MariaDB -> MariaDB         pontoon run (native: row binlog; triggers) |
#                                      MariaDB replication (a replica, binlog file + position)
#
# The sources are on the benchmark servers (bench/copy.sh's). The targets are on servers this
# script starts with the harness's settings and removes at exit: a second PostgreSQL instance
# (pontoon's target databases and the subscriber database) and a MariaDB replica (server_id 2,
# log_slave_updates; pontoon's target databases and the replicated database). So a source's
# WAL / binlog holds the source's changes only, and pontoon and the native replication write
# into the same server.
#
# 1. Drain rate (--changes N). A pgbench_accounts-like table (MariaDB: sysbench's sbtest1) of
#    --rows rows and a heartbeat table are copied and synced by `pontoon run --drain`, and the
#    table by the native replication; both are then stopped. N row changes are queued on the
#    source: UPDATEs of --change-batch rows each by key range, each its own transaction. Each
#    side is then timed alone until it has caught up: pontoon = `pontoon run JOB --drain` from
#    start to exit; PostgreSQL = from `ALTER SUBSCRIPTION ... ENABLE` until the last queued
#    transaction is visible on the subscriber; MariaDB = from `START SLAVE` until
#    MASTER_POS_WAIT reaches the master's binlog position taken after the changes. Which side
#    goes first alternates between runs. rate = changes / seconds. Then the source, pontoon's
#    target and the native target must have the same row count and row hash.
#    The trigger capture (--capture triggers) is measured after all the native phase's runs,
#    once the native replication and pontoon's native capture are removed: the source never
#    carries pontoon's triggers while something else is measured.
# 2. Steady state (--rates, --seconds). pontoon run (already copied, syncing) while pgbench -R
#    (one single-row UPDATE, INSERT or DELETE per transaction) or sysbench oltp_write_only
#    --rate (4 writes per transaction; --rate = writes/s / 4) writes to the source; a
#    heartbeat row is updated every 100 ms on the source with the time in microseconds, and
#    read on the target every 100 ms: lag = now - ts. p50/p99/max lag per rate, and the
#    highest rate with p99 < 1 s.
#
# Usage: bench/sync.sh [options]
#   --changes N            row changes queued for the drain (default 1000000)
#   --rows N               rows in the table (default 1000000)
#   --change-batch N       rows per queued UPDATE transaction (default 10000)
#   --rates R[,R...]       steady-state write rates in writes/s (default 500,1000,2000,3000)
#   --seconds S            seconds of load per rate (default 30)
#   --runs N               runs (default 3); RESULTS.md quotes medians
#   --only S[,S...]        pg-pg, my-my (default: both)
#   --capture C[,C...]     pontoon's capture modes: native, triggers (default native);
#                          each is recorded separately
#   --measure M[,M...]     drain, steady (default: both)
#   --batch-events N       pontoon `[sync] batch_events` (default 50000, pontoon's default)
#   --workers N            pontoon `[copy] workers` for the initial copy (default 4; not timed)
#   --commit REV           build pontoon from this commit (as bench/copy.sh)
#   --pontoon PATH         use this pontoon binary (default: build the working tree)
#   --no-record            print the results section, do not append it to RESULTS.md
#   --note TEXT            a line of context for the RESULTS.md section
#
# Environment: PONTOON_BENCH_SERVERS (default /tmp/pontoon-bench-servers) and
# PONTOON_BENCH_WORK (default /tmp/pontoon-bench-work) as for bench/copy.sh; the target
# servers live in $PONTOON_BENCH_WORK/sync-servers while the script runs.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

# ---------------------------------------------------------------------------- options

changes=1000000
rows=1000000
change_batch=10000
rates_arg=500,1000,2000,3000
seconds=30
runs=3
only=pg-pg,my-my
captures_arg=native
measure_arg=drain,steady
batch_events=50000
workers=4
pontoon_bin=""
commit_rev=""
record=true
note=""
while (($#)); do
  case $1 in
    --changes) changes=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --change-batch) change_batch=$2; shift 2 ;;
    --rates) rates_arg=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --capture) captures_arg=$2; shift 2 ;;
    --measure) measure_arg=$2; shift 2 ;;
    --batch-events) batch_events=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --pontoon) pontoon_bin=$2; shift 2 ;;
    --commit) commit_rev=$2; shift 2 ;;
    --no-record) record=false; shift ;;
    --note) note=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done
IFS=, read -r -a scenarios <<<"$only"
IFS=, read -r -a captures <<<"$captures_arg"
IFS=, read -r -a measures <<<"$measure_arg"
IFS=, read -r -a rates <<<"$rates_arg"
for s in "${scenarios[@]}"; do
  [[ $s =~ ^(pg-pg|my-my)$ ]] || { echo "unknown scenario: $s" >&2; exit 2; }
done
for c in "${captures[@]}"; do
  [[ $c =~ ^(native|triggers)$ ]] || { echo "unknown capture mode: $c" >&2; exit 2; }
done
for m in "${measures[@]}"; do
  [[ $m =~ ^(drain|steady)$ ]] || { echo "unknown measurement: $m" >&2; exit 2; }
done
for n in "$changes" "$rows" "$change_batch" "$seconds" "$runs" "$batch_events" "$workers" "${rates[@]}"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "not a positive number: $n" >&2; exit 2; }
done
# ascending rates: "the highest rate with p99 < 1 s" reads them in order
mapfile -t rates < <(printf '%s\n' "${rates[@]}" | sort -n -u)
has() { local x=$1; shift; [[ " $* " == *" $x "* ]]; }
measuring_drain=false measuring_steady=false
has drain "${measures[@]}" && measuring_drain=true
has steady "${measures[@]}" && measuring_steady=true

servers_dir=${PONTOON_BENCH_SERVERS:-/tmp/pontoon-bench-servers}
work=${PONTOON_BENCH_WORK:-/tmp/pontoon-bench-work}
results_md="$here/RESULTS.md"
mkdir -p "$work/jobs" "$work/logs"

[[ -x /usr/bin/time ]] || { echo "GNU time is missing: run bench/setup.sh" >&2; exit 1; }
for tool in pgbench sysbench mariadb-dump mariadb-install-db mariadbd; do
  command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || { echo "$tool is missing: run bench/setup.sh (scripts/install-deps.sh)" >&2; exit 1; }
done

# log, the lock, the build, the servers, SQL clients, masking, report helpers
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

bench_lock

# ---------------------------------------------------------------------------- build, servers

build_pontoon
start_servers

# The script's stdout and stderr, for the exit trap: a trap runs inside whatever function was
# running, with that function's redirections (into a tool's log, say).
exec 7>&1 8>&2

now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }

# Our processes still running, which the exit trap stops: bg_pids (shell functions and
# clients, SIGTERM) and bg_groups (tools started by setsid in a process group of their own,
# SIGTERM to the group: /usr/bin/time or timeout and the pontoon under it, say).
declare -a bg_pids=() bg_groups=()
forget_pid() {
  local p keep=() keep_groups=()
  for p in "${bg_pids[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  for p in "${bg_groups[@]}"; do [[ $p == "$1" ]] || keep_groups+=("$p"); done
  bg_pids=("${keep[@]}") bg_groups=("${keep_groups[@]}")
}
# bg_wait [--group] CMD...: run CMD and wait for it, in the background: bash runs a trap only
# between foreground commands, so a long one would keep Ctrl-C / SIGTERM from the cleanup.
# --group: in a process group of its own (CMD is a program, not a shell function).
bg_wait() {
  local pid rc=0
  if [[ $1 == --group ]]; then
    shift
    setsid "$@" <&0 &
    pid=$!
    bg_groups+=("$pid")
  else
    "$@" <&0 &
    pid=$!
    bg_pids+=("$pid")
  fi
  wait "$pid" || rc=$?
  forget_pid "$pid"
  return "$rc"
}
secs_since() { awk -v a="$1" -v b="$(now_us)" 'BEGIN { printf "%.3f", (b - a) / 1e6 }'; } # START_US

# The target servers (bench/lib.sh's second servers): a second PostgreSQL instance and a
# MariaDB replica, set up like the harness's servers (their settings files are copied from
# the benchmark servers, with another port, paths and, for the replica, server_id 2 and the
# replication settings); removed at exit.
sync_servers=$work/sync-servers
second_servers "$sync_servers"
# ---------------------------------------------------------------------------- names, tables

PG_SRC=sync_src      # source database on the benchmark PostgreSQL
MY_SRC=sync_src_my   # source database on the benchmark MariaDB (and the replica's copy of it)
PG_NATIVE=sync_native # the subscriber database on the target PostgreSQL
PUB=bench_pub SUB=bench_sub # the publication, and the subscription and its slot
dst_db() { echo "sync_dst_$1"; } # CAPTURE: pontoon's target database on the target server

table_of() { case $1 in pg-pg) echo pgbench_accounts ;; my-my) echo sbtest1 ;; esac; }
key_of() { case $1 in pg-pg) echo aid ;; my-my) echo id ;; esac; }
cols_of() { case $1 in pg-pg) echo aid bid abalance filler ;; my-my) echo id k c pad ;; esac; }

ddl_of() { # SCENARIO TABLE
  case "$1/$2" in
    pg-pg/pgbench_accounts) echo "CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84))" ;;
    pg-pg/heartbeat) echo "CREATE TABLE heartbeat (id int PRIMARY KEY, ts bigint NOT NULL)" ;;
    my-my/sbtest1) echo "CREATE TABLE sbtest1 (id int NOT NULL AUTO_INCREMENT, k int NOT NULL DEFAULT 0,
      c char(120) NOT NULL DEFAULT '', pad char(60) NOT NULL DEFAULT '', PRIMARY KEY (id), KEY k_1 (k)) ENGINE=InnoDB" ;;
    my-my/heartbeat) echo "CREATE TABLE heartbeat (id int PRIMARY KEY, ts bigint NOT NULL) ENGINE=InnoDB" ;;
  esac
}

src_sql() { # SCENARIO SQL
  case $1 in
    pg-pg) pg_sql "$PG_SRC" "$2" ;;
    my-my) my_sql "$2" "$MY_SRC" ;;
  esac
}
dst_sql() { # SCENARIO DB SQL: on the target server
  case $1 in
    pg-pg) tpg_sql "$2" "$3" ;;
    my-my) rep_sql "$3" "$2" ;;
  esac
}

# The source, generated at the start of every invocation (the benchmark changes it).
# pgbench_accounts as bench/copy.sh's narrow table; sbtest1 as sysbench prepares it (k
# spread over the table, c 119 and pad 59 characters).
gen_source() { # SCENARIO
  log "$1: generating the source ($(thousands "$rows") rows)"
  case $1 in
    pg-pg)
      # a slot left by an interrupted run keeps the database from being dropped
      pg_sql postgres "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots WHERE database = '$PG_SRC' AND NOT active" >/dev/null
      pg_sql postgres "SET client_min_messages = warning" "DROP DATABASE IF EXISTS $PG_SRC WITH (FORCE)" "CREATE DATABASE $PG_SRC OWNER $bench_user"
      pg_sql "$PG_SRC" "$(ddl_of pg-pg pgbench_accounts)" "$(ddl_of pg-pg heartbeat)" \
        "ALTER TABLE pgbench_accounts OWNER TO $bench_user" "ALTER TABLE heartbeat OWNER TO $bench_user" \
        "INSERT INTO pgbench_accounts SELECT g, (g - 1) / 100000 + 1, 0, lpad(g::text, 84, '-') FROM generate_series(1, $rows) g" \
        "INSERT INTO heartbeat VALUES (1, 0)" "VACUUM (FREEZE, ANALYZE) pgbench_accounts" "CHECKPOINT"
      ;;
    my-my)
      my_sql "DROP DATABASE IF EXISTS $MY_SRC; CREATE DATABASE $MY_SRC CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
      my_sql "SET sql_log_bin = 0; $(ddl_of my-my sbtest1); $(ddl_of my-my heartbeat);
        INSERT INTO sbtest1 (id, k, c, pad) SELECT seq, (seq * 7919) % $rows + 1,
          LEFT(CONCAT(MD5(seq), '-', MD5(seq + 1), '-', MD5(seq + 2), '-', MD5(seq + 3)), 119),
          LEFT(CONCAT(MD5(-seq), '-', MD5(seq * 3)), 59) FROM seq_1_to_$rows;
        INSERT INTO heartbeat VALUES (1, 0); ANALYZE TABLE sbtest1" "$MY_SRC" >/dev/null
      ;;
  esac
}

# Count and order-independent hash of every row, computed by the database (as
# crates/cli/tests/sync.rs's fingerprint): text right-trimmed, NULL as \N.
fingerprint() { # SCENARIO DB TABLE COLS...: DB "src" is the source, else a target database
  local scenario=$1 db=$2 table=$3 row sql
  shift 3
  case $scenario in
    pg-pg)
      row=$(printf "coalesce(rtrim(%s::text), '\\\\N'), " "$@")
      sql="SELECT count(*) || ' ' || coalesce(sum(('x' || lpad(substr(md5(concat_ws('|', ${row%, })), 1, 12), 16, '0'))::bit(64)::bigint), 0) FROM $table"
      ;;
    my-my)
      row=$(printf "COALESCE(RTRIM(%s), '\\\\\\\\N'), " "$@")
      sql="SELECT CONCAT(COUNT(*), ' ', COALESCE(SUM(CAST(CONV(SUBSTR(MD5(CONCAT_WS('|', ${row%, })), 1, 12), 16, 10) AS UNSIGNED)), 0)) FROM $table"
      ;;
  esac
  if [[ $db == src ]]; then src_sql "$scenario" "$sql"; else dst_sql "$scenario" "$db" "$sql"; fi
}

# ---------------------------------------------------------------------------- pontoon

job_file() { echo "$work/jobs/sync-$1-$2.toml"; } # SCENARIO CAPTURE

write_job() { # SCENARIO CAPTURE
  local scenario=$1 capture=$2 src dst
  case $scenario in
    pg-pg) src=$(pg_job_url "$PG_SRC"); dst=$(tpg_job_url "$(dst_db "$capture")") ;;
    my-my) src=$(my_job_url "$MY_SRC"); dst=$(my_job_url "$(dst_db "$capture")" "$REP_PORT") ;;
  esac
  cat >"$(job_file "$scenario" "$capture")" <<EOF
# written by bench/sync.sh; the password comes from the environment
[source]
url = "$src"

[target]
url = "$dst"

[copy]
workers = $workers

[sync]
capture = "$capture"
name = "bench_${scenario//-/_}_$capture"
batch_events = $batch_events

[[tables]]
source = "$(table_of "$scenario")"

[[tables]]
source = "heartbeat"
EOF
}

state_of() { local j; j=$(job_file "$1" "$2"); echo "${j%.toml}.pontoon.db"; } # SCENARIO CAPTURE

# A fresh pontoon job: whatever an earlier job of that name installed is removed, the target
# database is recreated with the source's tables (their exact definitions, secondary index
# included, as the native replication's target has them), and `pontoon run --drain` copies,
# starts capture and catches up (not timed).
pontoon_fresh() { # SCENARIO CAPTURE
  local scenario=$1 capture=$2 job db t
  job=$(job_file "$scenario" "$capture")
  db=$(dst_db "$capture")
  write_job "$scenario" "$capture"
  "$pontoon_bin" cleanup "$job" >>"$work/logs/sync-$scenario-$capture-setup.log" 2>&1 || true
  rm -f "$(state_of "$scenario" "$capture")"{,-wal,-shm,-journal}
  case $scenario in
    pg-pg)
      tpg_sql postgres "SET client_min_messages = warning" "DROP DATABASE IF EXISTS $db WITH (FORCE)" "CREATE DATABASE $db OWNER $bench_user"
      for t in pgbench_accounts heartbeat; do tpg_sql "$db" "$(ddl_of pg-pg $t)" "ALTER TABLE $t OWNER TO $bench_user"; done
      ;;
    my-my)
      rep_sql "DROP DATABASE IF EXISTS $db; CREATE DATABASE $db CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
      rep_sql "$(ddl_of my-my sbtest1); $(ddl_of my-my heartbeat)" "$db"
      ;;
  esac
  pontoon_catch_up "$scenario" "$capture" "initial copy and sync"
}

pontoon_catch_up() { # SCENARIO CAPTURE WHAT: `pontoon run --drain`, not timed
  local job logf started
  job=$(job_file "$1" "$2")
  logf=$work/logs/sync-$1-$2-setup.log
  log "  pontoon ($2 capture): $3 (pontoon run --drain, not timed)"
  started=$(now_us)
  if ! bg_wait --group "$pontoon_bin" run "$job" --drain >>"$logf" 2>&1; then
    log "  FAILED: pontoon run --drain; last lines of $logf:"
    tail -n 15 "$logf" | mask >&2
    return 1
  fi
  log "  done in $(secs_since "$started")s"
}

# ---------------------------------------------------------------------------- native replication

# PostgreSQL: a publication of the table on the source, a pgoutput slot created by hand, a
# subscription in the target instance's subscriber database (copy_data = true). MariaDB:
# the table dumped with its binlog position (mariadb-dump --single-transaction
# --master-data=2) into the replica, then CHANGE MASTER TO that position.
sub_conninfo() { echo "host=127.0.0.1 port=$PG_PORT user=$bench_user password=$bench_password dbname=$PG_SRC"; }

# The subscriber waits for the last queued transaction: a procedure that polls the row every
# 10 ms, each poll in a transaction of its own (no snapshot is held while the apply works).
PG_WAIT_PROC="CREATE PROCEDURE bench_wait_for(k int, v int, secs float8) LANGUAGE plpgsql AS \$\$
DECLARE deadline timestamptz := clock_timestamp() + secs * interval '1 second';
BEGIN
  LOOP
    EXIT WHEN (SELECT abalance FROM pgbench_accounts WHERE aid = k) = v;
    IF clock_timestamp() > deadline THEN
      RAISE EXCEPTION 'the subscriber did not reach aid % = % within % s', k, v, secs;
    END IF;
    COMMIT;
    PERFORM pg_sleep(0.01);
  END LOOP;
END \$\$"

native_init() { # SCENARIO
  local scenario=$1
  log "$scenario: setting up the native replication"
  case $scenario in
    pg-pg)
      pg_sql "$PG_SRC" "CREATE PUBLICATION $PUB FOR TABLE pgbench_accounts" \
        "SELECT 1 FROM pg_create_logical_replication_slot('$SUB', 'pgoutput')" >/dev/null
      tpg_sql postgres "SET client_min_messages = warning" "DROP DATABASE IF EXISTS $PG_NATIVE WITH (FORCE)" "CREATE DATABASE $PG_NATIVE OWNER $bench_user"
      tpg_sql "$PG_NATIVE" "$(ddl_of pg-pg pgbench_accounts)" "$PG_WAIT_PROC" \
        "CREATE SUBSCRIPTION $SUB CONNECTION '$(sub_conninfo)' PUBLICATION $PUB WITH (create_slot = false, slot_name = '$SUB', copy_data = true)"
      ;;
    my-my)
      replica_load "$MY_SRC" sbtest1
      ;;
  esac
  native_catch_up "$scenario"
}

master_pos() { my_sql "SHOW MASTER STATUS" | awk -F'\t' 'NR == 1 { print $1 "\t" $2 }'; }

# Let the native replication catch up with the source (not timed), then pause it.
native_catch_up() { # SCENARIO
  local scenario=$1 started
  started=$(now_us)
  log "  native replication: catching up (not timed)"
  case $scenario in
    pg-pg)
      tpg_sql "$PG_NATIVE" "ALTER SUBSCRIPTION $SUB ENABLE"
      wait_until 3600 "the subscription's initial table sync" \
        "[[ \$(tpg_sql $PG_NATIVE \"SELECT count(*) FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = '$SUB' AND r.srsubstate <> 'r'\") == 0 ]]"
      local lsn
      lsn=$(pg_sql "$PG_SRC" "SELECT pg_current_wal_lsn()")
      wait_until 3600 "the subscription's slot to confirm $lsn" \
        "[[ \$(pg_sql $PG_SRC \"SELECT confirmed_flush_lsn >= '$lsn' FROM pg_replication_slots WHERE slot_name = '$SUB'\") == t ]]"
      ;;
    my-my)
      local file pos r
      IFS=$'\t' read -r file pos < <(master_pos)
      r=$(rep_sql "START SLAVE; SELECT MASTER_POS_WAIT('$file', $pos, 3600)")
      [[ $r =~ ^[0-9]+$ ]] || { echo "the replica did not reach $file:$pos (MASTER_POS_WAIT: $r); $(replica_error)" >&2; return 1; }
      ;;
  esac
  native_pause "$scenario"
  log "  done in $(secs_since "$started")s"
}

# Stop applying: DISABLE the subscription and wait until its slot is released; STOP SLAVE
# (both threads: nothing is fetched while the changes are queued).
native_pause() { # SCENARIO
  case $1 in
    pg-pg)
      tpg_sql "$PG_NATIVE" "ALTER SUBSCRIPTION $SUB DISABLE"
      wait_until 60 "the subscription's slot to be released" \
        "[[ \$(pg_sql $PG_SRC \"SELECT active FROM pg_replication_slots WHERE slot_name = '$SUB'\") == f ]]"
      ;;
    my-my) rep_sql "STOP SLAVE" ;;
  esac
}

wait_until() { # SECONDS WHAT CONDITION (a bash string)
  local deadline=$((SECONDS + $1))
  until eval "$3"; do
    ((SECONDS < deadline)) || { echo "timed out after $1 s waiting for $2" >&2; return 1; }
    sleep 0.2
  done
}

# ---------------------------------------------------------------------------- the drain

declare -A cursor # SCENARIO -> the next key to change (ranges go on where the last run ended)

# queue_changes SCENARIO: $changes row changes on the source, by key range, each range its
# own transaction; sets queued (rows actually changed: keys the steady-state load deleted
# are missing), check_key/check_val (the last changed row, as the source has it) and
# master_file/master_pos (MariaDB: the binlog position after the changes).
queue_changes() {
  local scenario=$1 table key sql_file=$work/sync-queue.sql left a b n started
  table=$(table_of "$scenario")
  key=$(key_of "$scenario")
  a=${cursor[$scenario]:-1}
  left=$changes
  : >"$sql_file"
  while ((left > 0)); do
    n=$((left < change_batch ? left : change_batch))
    b=$((a + n - 1))
    ((b <= rows)) || b=$rows
    case $scenario in
      pg-pg) echo "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN $a AND $b;" ;;
      my-my) echo "UPDATE sbtest1 SET k = k + 1 WHERE id BETWEEN $a AND $b; SELECT ROW_COUNT();" ;;
    esac >>"$sql_file"
    left=$((left - (b - a + 1)))
    last_a=$a last_b=$b
    a=$((b + 1))
    ((a <= rows)) || a=1
  done
  cursor[$scenario]=$a
  log "  queueing $(thousands "$changes") row changes on the source: $(wc -l <"$sql_file") UPDATE transactions of up to $(thousands "$change_batch") rows"
  started=$(now_us)
  local out=$work/logs/sync-$scenario-queue.out
  case $scenario in
    pg-pg)
      bg_wait --group psql -X -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$PG_PORT" -U postgres -d "$PG_SRC" -f "$sql_file" >"$out"
      queued=$(awk '$1 == "UPDATE" { s += $2 } END { print s + 0 }' "$out")
      ;;
    my-my)
      bg_wait --group mariadb --no-defaults -N -B -u root --socket="$MY_SOCKET" "$MY_SRC" <"$sql_file" >"$out"
      queued=$(awk '{ s += $1 } END { print s + 0 }' "$out")
      IFS=$'\t' read -r master_file master_pos < <(master_pos)
      ;;
  esac
  read -r check_key check_val < <(src_sql "$scenario" "SELECT $key, $( [[ $scenario == pg-pg ]] && echo abalance || echo k) FROM $table
    WHERE $key BETWEEN $last_a AND $last_b ORDER BY $key DESC LIMIT 1" | tr '\t|' '  ')
  log "  queued $(thousands "$queued") row changes in $(secs_since "$started")s"
}

# Before each timed drain: the dirty pages written, as bench/copy.sh does.
quiesce() {
  sync
  pg_sql postgres "CHECKPOINT"
  [[ -z $TPG_PORT ]] || tpg_sql postgres "CHECKPOINT"
  sleep 1
}

# Raw figures, one line per measurement:
#   drain  SCENARIO TOOL RUN SECONDS CHANGES RSS_KB CPU_S OTHERS LOAD1 STATUS
#   steady SCENARIO CAPTURE RATE RUN ACHIEVED P50_US P99_US MAX_US SAMPLES SETTLE_S OTHERS LOAD1 STATUS
# where TOOL is pontoon-native, pontoon-triggers or native, OTHERS counts compilers, linkers
# and test runners running when the measurement started, and STATUS is ok or `failed: why`.
tsv=$work/sync-runs-$(date +%Y%m%d-%H%M%S).tsv
: >"$tsv"
record_line() { local IFS=$'\t'; echo "$*" | tr -d '\r' >>"$tsv"; }

drain_timeout() { echo $((1800 + changes / 500)); }

drain_pontoon() { # SCENARIO CAPTURE RUN
  local scenario=$1 capture=$2 run=$3 job logf timef others load status=0 why=""
  job=$(job_file "$scenario" "$capture")
  logf=$work/logs/sync-$scenario-drain-pontoon-$capture-$run.log
  timef=$work/logs/time.out
  quiesce
  others=$(other_load)
  load=$(cut -d' ' -f1 /proc/loadavg)
  log "$scenario: pontoon ($capture capture) drain, run $run"
  bg_wait --group /usr/bin/time -f '%e %M %U %S' -o "$timef" \
    timeout "$(drain_timeout)" "$pontoon_bin" run "$job" --drain --json >"$logf" 2>&1 || status=$?
  local secs rss user sys events
  read -r secs rss user sys < <(tail -n1 "$timef")
  events=$(grep -o '"sync":{"events":[0-9]*' "$logf" | tail -n1 | sed 's/.*://' || true)
  if ((status != 0)); then
    why="exit status $status: $(grep -m1 -iE 'error|fatal|panick' "$logf" | mask | cut -c1-200 || true)"
    log "  FAILED: $why"
    tail -n 10 "$logf" | mask >&2
  else
    log "  ${secs}s: $(thousands "$(awk -v n="$queued" -v s="$secs" 'BEGIN { print n / s }')") changes/s; ${events:-?} events applied; max RSS $((rss / 1024)) MB, CPU $(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')s"
  fi
  record_line drain "$scenario" "pontoon-$capture" "$run" "$secs" "$queued" "$rss" \
    "$(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')" "$others" "$load" "${why:+failed: }${why:-ok}"
}

# pontoon's fixed cost: `pontoon run --drain` with nothing to apply (start-up, planning,
# connecting, one empty read), timed just before the changes are queued; part of every
# timed pontoon drain.
idle_drain() { # SCENARIO CAPTURE RUN
  local job logf started secs
  job=$(job_file "$1" "$2")
  logf=$work/logs/sync-$1-idle-pontoon-$2-$3.log
  quiesce
  started=$(now_us)
  if bg_wait --group "$pontoon_bin" run "$job" --drain -v >"$logf" 2>&1; then
    secs=$(secs_since "$started")
    log "  pontoon ($2 capture) with nothing to apply: ${secs}s from start to exit"
    record_line idle "$1" "pontoon-$2" "$3" "$secs" "" "" "" "" "" ok
  else
    log "  pontoon run --drain with nothing to apply FAILED (see $logf)"
    return 1
  fi
}

drain_native() { # SCENARIO RUN
  local scenario=$1 run=$2 others load started secs why="" r outf=$work/logs/sync-$1-drain-native-$2.log
  quiesce
  others=$(other_load)
  load=$(cut -d' ' -f1 /proc/loadavg)
  case $scenario in
    pg-pg)
      log "$scenario: PostgreSQL logical replication drain, run $run (until aid $check_key = $check_val on the subscriber)"
      started=$(now_us)
      if ! bg_wait tpg_sql "$PG_NATIVE" "ALTER SUBSCRIPTION $SUB ENABLE" \
        "CALL bench_wait_for($check_key, $check_val, $(drain_timeout))" >"$outf" 2>&1; then
        why="$(head -n1 "$outf" | cut -c1-200)"
      fi
      ;;
    my-my)
      log "$scenario: MariaDB replication drain, run $run (until MASTER_POS_WAIT('$master_file', $master_pos))"
      started=$(now_us)
      bg_wait rep_sql "START SLAVE; SELECT MASTER_POS_WAIT('$master_file', $master_pos, $(drain_timeout))" >"$outf" 2>&1 || true
      r=$(cat "$outf")
      [[ $r =~ ^[0-9]+$ ]] || why="MASTER_POS_WAIT returned ${r:-nothing}; $(replica_error)"
      ;;
  esac
  secs=$(secs_since "$started")
  if [[ -n $why ]]; then log "  FAILED: $why"; else log "  ${secs}s: $(thousands "$(awk -v n="$queued" -v s="$secs" 'BEGIN { print n / s }')") changes/s"; fi
  record_line drain "$scenario" native "$run" "$secs" "$queued" "" "" "$others" "$load" "${why:+failed: }${why:-ok}"
}

# After the drains: the table (count + hash) must be the same on the source and on every
# target that drained; a difference fails the run's drain lines.
check_drained() { # SCENARIO RUN DB...
  local scenario=$1 run=$2 want got db table bad=""
  shift 2
  table=$(table_of "$scenario")
  # shellcheck disable=SC2046
  want=$(fingerprint "$scenario" src "$table" $(cols_of "$scenario"))
  for db in "$@"; do
    # shellcheck disable=SC2046
    got=$(fingerprint "$scenario" "$db" "$table" $(cols_of "$scenario"))
    if [[ $got != "$want" ]]; then
      log "  DIFFERENT: $db has (count hash) $got, the source $want"
      bad+=" $db"
    fi
  done
  if [[ -n $bad ]]; then
    # mark this run's drain lines of those targets as failed
    local tools="" d
    for d in $bad; do
      case $d in
        "$PG_NATIVE" | "$MY_SRC") tools+=" native" ;;
        *) tools+=" pontoon-${d#sync_dst_}" ;;
      esac
    done
    awk -F'\t' -v OFS='\t' -v s="$scenario" -v r="$run" -v t=" $tools " \
      '$1 == "drain" && $2 == s && $4 == r && index(t, " " $3 " ") && $11 == "ok" { $11 = "failed: the target differs from the source after the drain" } { print }' \
      "$tsv" >"$tsv.tmp" && mv "$tsv.tmp" "$tsv"
  else
    log "  source and targets equal: $want (count hash)"
  fi
}

# ---------------------------------------------------------------------------- steady state

# pgbench's script: one single-row write per transaction, 70% UPDATE, 15% INSERT (an upsert
# of an existing or deleted key), 15% DELETE.
pgbench_script=$work/sync-steady.pgbench
cat >"$pgbench_script" <<'EOF'
\set aid random(1, :rows)
\set delta random(-5000, 5000)
\set op random(1, 100)
\if :op <= 70
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
\elif :op <= 85
INSERT INTO pgbench_accounts (aid, bid, abalance, filler) VALUES (:aid, 1, :delta, 'steady') ON CONFLICT (aid) DO UPDATE SET abalance = EXCLUDED.abalance, filler = EXCLUDED.filler;
\else
DELETE FROM pgbench_accounts WHERE aid = :aid;
\endif
EOF

load_command() { # SCENARIO RATE (writes/s, or - for a placeholder)
  case $1 in
    pg-pg) echo "pgbench -n -h 127.0.0.1 -p $PG_PORT -U $bench_user -c 4 -j 2 -R ${2/#-/<rate>} -T $seconds -D rows=$rows -f $pgbench_script $PG_SRC" ;;
    my-my)
      local tps="<rate/4>"
      if [[ $2 != - ]]; then
        tps=$((($2 + 2) / 4))
        ((tps > 0)) || tps=1
      fi
      echo "sysbench oltp_write_only --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port=$MY_PORT" \
        "--mysql-user=$bench_user --mysql-password=$bench_password --mysql-db=$MY_SRC --tables=1 --table-size=$rows" \
        "--threads=4 --rate=$tps --time=$seconds --mysql-ignore-errors=1062,1213,1205 run"
      ;;
  esac
}

# writes/s the load tool reports having done
achieved_rate() { # SCENARIO LOGFILE
  case $1 in
    pg-pg) sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$2" | tail -n1 ;;
    my-my) awk '/^ *write:/ { w = $2 } /total time:/ { t = $3 + 0 } END { if (t > 0) printf "%.1f", w / t }' "$2" ;;
  esac
}

HB_WRITE_PG="UPDATE heartbeat SET ts = (extract(epoch FROM clock_timestamp()) * 1000000)::bigint WHERE id = 1;"
HB_WRITE_MY="UPDATE heartbeat SET ts = CAST(UNIX_TIMESTAMP(SYSDATE(6)) * 1000000 AS SIGNED) WHERE id = 1;"
HB_LAG_PG="SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint - ts FROM heartbeat WHERE id = 1;"
HB_LAG_MY="SELECT CAST(UNIX_TIMESTAMP(SYSDATE(6)) * 1000000 AS SIGNED) - ts FROM heartbeat WHERE id = 1;"

# One client session fed one statement every 100 ms (no process per statement).
src_session() { # SCENARIO
  case $1 in
    pg-pg) psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$PG_PORT" -U postgres -d "$PG_SRC" ;;
    my-my) mariadb --no-defaults -N -B -u root --socket="$MY_SOCKET" "$MY_SRC" ;;
  esac
}
dst_session() { # SCENARIO DB
  case $1 in
    pg-pg) psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$tpg_dir/run" -p "$TPG_PORT" -U postgres -d "$2" ;;
    my-my) mariadb --no-defaults -N -B -u root --socket="$REP_SOCKET" "$2" ;;
  esac
}

heartbeat_writer() { # SCENARIO STOPFILE: until STOPFILE exists
  local sql=$HB_WRITE_PG
  [[ $1 == my-my ]] && sql=$HB_WRITE_MY
  while [[ ! -e $2 ]]; do
    echo "$sql"
    sleep 0.1
  done | src_session "$1"
}

lag_sampler() { # SCENARIO DB SECONDS: one lag (µs) per line, every 100 ms
  local sql=$HB_LAG_PG end
  [[ $1 == my-my ]] && sql=$HB_LAG_MY
  end=$(($(now_us) + $3 * 1000000))
  while (($(now_us) < end)); do
    echo "$sql"
    sleep 0.1
  done | dst_session "$1" "$2"
}

current_lag_us() { # SCENARIO DB (a huge lag when the target cannot be read)
  local sql=$HB_LAG_PG lag
  [[ $1 == my-my ]] && sql=$HB_LAG_MY
  lag=$(dst_sql "$1" "$2" "$sql" 2>/dev/null) || true
  [[ $lag =~ ^-?[0-9]+$ ]] && echo "$lag" || echo 999999999999
}

lag_stats() { # FILE -> "P50 P99 MAX N" in µs (nearest rank)
  grep -E '^-?[0-9]+$' "$1" | sort -n | awk '{ v[NR] = $1 }
    END {
      if (NR == 0) { print "- - - 0"; exit }
      i50 = int(NR * 0.50); if (i50 < NR * 0.50) i50++; if (i50 < 1) i50 = 1
      i99 = int(NR * 0.99); if (i99 < NR * 0.99) i99++; if (i99 < 1) i99 = 1
      print v[i50], v[i99], v[NR], NR
    }'
}

pontoon_pid="" hb_stop=""

steady_state() { # SCENARIO CAPTURE RUN
  local scenario=$1 capture=$2 run=$3 job db logf rate
  job=$(job_file "$scenario" "$capture")
  db=$(dst_db "$capture")
  logf=$work/logs/sync-$scenario-steady-$capture-$run-pontoon.log
  log "$scenario: steady state, pontoon ($capture capture), run $run: rates ${rates[*]} writes/s, ${seconds}s each"
  setsid "$pontoon_bin" run "$job" >"$logf" 2>&1 &
  pontoon_pid=$!
  bg_groups+=("$pontoon_pid")
  hb_stop=$work/sync-heartbeat.stop
  rm -f "$hb_stop"
  heartbeat_writer "$scenario" "$hb_stop" >"$work/logs/sync-heartbeat.log" 2>&1 &
  local hb_pid=$!
  bg_pids+=("$hb_pid")
  local failed=""
  if ! wait_until 120 "the heartbeat to reach the target" \
    "kill -0 $pontoon_pid 2>/dev/null && (( \$(current_lag_us $scenario $db) < 1000000 ))"; then
    failed="pontoon did not sync the heartbeat within 120 s"
  fi
  for rate in "${rates[@]}"; do
    local samples=$work/logs/sync-$scenario-steady-$capture-$run-$rate.lag
    local loadlog=$work/logs/sync-$scenario-steady-$capture-$run-$rate-load.log
    local others load why="" achieved="" stats settle="" started
    if [[ -n $failed ]]; then
      record_line steady "$scenario" "$capture" "$rate" "$run" "" "" "" "" 0 "" 0 0 "failed: $failed"
      continue
    fi
    others=$(other_load)
    load=$(cut -d' ' -f1 /proc/loadavg)
    log "  $rate writes/s for ${seconds}s"
    lag_sampler "$scenario" "$db" "$seconds" >"$samples" 2>"$samples.err" &
    local sampler_pid=$!
    bg_pids+=("$sampler_pid")
    local status=0
    # shellcheck disable=SC2046
    bg_wait --group $(load_command "$scenario" "$rate") >"$loadlog" 2>&1 || status=$?
    wait "$sampler_pid" || true
    forget_pid "$sampler_pid"
    achieved=$(achieved_rate "$scenario" "$loadlog")
    read -r p50 p99 max n < <(lag_stats "$samples")
    if ((status != 0)); then
      why="the load tool exited with status $status: $(grep -m1 -iE 'error|fatal|abort' "$loadlog" | mask | cut -c1-160 || true)"
    elif ! kill -0 "$pontoon_pid" 2>/dev/null; then
      why="pontoon run exited during the load (see $logf)"
      failed=$why
    elif ((n == 0)); then
      why="no lag samples (see $samples.err)"
    fi
    # settle: how long pontoon takes to catch up once the load stops (lag < 0.5 s)
    started=$(now_us)
    if [[ -z $failed ]]; then
      if wait_until $((60 + 20 * seconds)) "pontoon to catch up after the load" \
        "kill -0 $pontoon_pid 2>/dev/null && (( \$(current_lag_us $scenario $db) < 500000 ))"; then
        settle=$(secs_since "$started")
      else
        why=${why:-"pontoon did not catch up within $((60 + 20 * seconds)) s of the load's end"}
        failed=$why
      fi
    fi
    if [[ -n $why ]]; then
      log "  FAILED: $why"
    else
      log "  achieved $achieved writes/s; lag p50 $(fmt "$(awk -v v="$p50" 'BEGIN { print v / 1000 }')" 0) ms, p99 $(fmt "$(awk -v v="$p99" 'BEGIN { print v / 1000 }')" 0) ms, max $(fmt "$(awk -v v="$max" 'BEGIN { print v / 1000 }')" 0) ms ($n samples); caught up ${settle}s after the load"
    fi
    record_line steady "$scenario" "$capture" "$rate" "$run" "$achieved" "$p50" "$p99" "$max" "$n" "$settle" "$others" "$load" "${why:+failed: }${why:-ok}"
  done
  touch "$hb_stop"
  wait "$hb_pid" || true
  forget_pid "$hb_pid"
  # SIGTERM: pontoon finishes the batch in hand and exits 0
  kill -TERM -- "-$pontoon_pid" 2>/dev/null || true
  local rc=0
  wait "$pontoon_pid" || rc=$?
  forget_pid "$pontoon_pid"
  pontoon_pid=""
  ((rc == 0)) || log "  pontoon run exited with status $rc on SIGTERM (see $logf)"
  # correctness: drained, both tables equal on both sides
  pontoon_catch_up "$scenario" "$capture" "draining after the steady state"
  local t want got
  for t in "$(table_of "$scenario")" heartbeat; do
    local cols
    if [[ $t == heartbeat ]]; then cols="id ts"; else cols=$(cols_of "$scenario"); fi
    # shellcheck disable=SC2086
    want=$(fingerprint "$scenario" src "$t" $cols)
    # shellcheck disable=SC2086
    got=$(fingerprint "$scenario" "$db" "$t" $cols)
    if [[ $got != "$want" ]]; then
      log "  DIFFERENT after the steady state: $t has (count hash) $got on the target, $want on the source"
      awk -F'\t' -v OFS='\t' -v s="$scenario" -v c="$capture" -v r="$run" \
        '$1 == "steady" && $2 == s && $3 == c && $5 == r && $14 == "ok" { $14 = "failed: the target differs from the source after the steady state" } { print }' \
        "$tsv" >"$tsv.tmp" && mv "$tsv.tmp" "$tsv"
    fi
  done
  log "  source and target equal after the steady state"
}

# After the native phase: pontoon's native capture removed (slot, event triggers), the
# subscription dropped with its slot and the publication / the replica reset.
native_teardown() { # SCENARIO
  local scenario=$1
  log "$scenario: removing the native phase's slots, subscription, replication"
  if has native "${captures[@]}"; then
    "$pontoon_bin" cleanup "$(job_file "$scenario" native)" >>"$work/logs/sync-$scenario-native-setup.log" 2>&1
  fi
  has "$scenario" "${native_ready[@]}" || return 0
  case $scenario in
    pg-pg)
      tpg_sql "$PG_NATIVE" "ALTER SUBSCRIPTION $SUB DISABLE" "ALTER SUBSCRIPTION $SUB SET (slot_name = NONE)" "DROP SUBSCRIPTION $SUB"
      wait_until 60 "the subscription's slot to be released" \
        "[[ \$(pg_sql $PG_SRC \"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$SUB' AND active\") == 0 ]]"
      pg_sql "$PG_SRC" "SELECT count(pg_drop_replication_slot('$SUB'))" "DROP PUBLICATION $PUB" >/dev/null
      ;;
    my-my) rep_sql "STOP SLAVE; RESET SLAVE ALL" ;;
  esac
  local keep=() x
  for x in "${native_ready[@]}"; do [[ $x == "$scenario" ]] || keep+=("$x"); done
  native_ready=("${keep[@]}")
}

# ---------------------------------------------------------------------------- cleanup

native_ready=() # scenarios whose native replication is set up

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  exec 1>&7 2>&8
  [[ -z $hb_stop ]] || touch "$hb_stop"
  local p
  for p in "${bg_pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${bg_groups[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done
  for p in "${bg_pids[@]}" "${bg_groups[@]}"; do wait "$p" 2>/dev/null; done
  log "cleaning up: pontoon's slots and triggers, the subscription, the target servers"
  local scenario capture job
  for scenario in "${scenarios[@]}"; do
    for capture in "${captures[@]}"; do
      job=$(job_file "$scenario" "$capture")
      [[ -f $job ]] || continue
      "$pontoon_bin" cleanup "$job" 2>&1 | sed 's/^/  /' | mask >&2
    done
  done
  if [[ -n $TPG_PORT ]] && has pg-pg "${native_ready[@]}"; then
    # the subscription is detached from its slot, dropped, and the slot dropped on the source
    tpg_sql "$PG_NATIVE" "ALTER SUBSCRIPTION $SUB DISABLE" "ALTER SUBSCRIPTION $SUB SET (slot_name = NONE)" \
      "DROP SUBSCRIPTION $SUB" >/dev/null 2>&1
  fi
  stop_target_pg
  stop_replica
  if [[ -n ${PG_PORT:-} ]]; then
    for _ in {1..50}; do
      [[ $(pg_sql postgres "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$SUB' AND active") == 0 ]] && break
      sleep 0.2
    done
    pg_sql postgres "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots WHERE slot_name = '$SUB'" >/dev/null
    pg_sql "$PG_SRC" "DROP PUBLICATION IF EXISTS $PUB" >/dev/null 2>&1
  fi
  rm -rf "$sync_servers"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------- run

started_at=$(date -u '+%Y-%m-%d %H:%M UTC')
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p "$sync_servers"
if has pg-pg "${scenarios[@]}"; then
  log "starting the target PostgreSQL instance in $tpg_dir"
  start_target_pg
fi
if has my-my "${scenarios[@]}"; then
  log "starting the MariaDB replica in $rep_dir"
  start_replica "$MY_SRC.sbtest1"
fi

# Per scenario: every run of the native phase (pontoon with native capture, the native
# replication), then the native objects are removed, then every run of the trigger phase: a
# source never has pontoon's triggers and log table while the native replication or the
# native capture are measured (nor replicates them).
for scenario in "${scenarios[@]}"; do
  gen_source "$scenario"
  if has native "${captures[@]}" || $measuring_drain; then
    for ((run = 1; run <= runs; run++)); do
      log "$scenario: native phase, run $run of $runs"
      if has native "${captures[@]}"; then
        if ((run == 1)); then pontoon_fresh "$scenario" native; else pontoon_catch_up "$scenario" native "catching up"; fi
      fi
      if $measuring_drain; then
        if ! has "$scenario" "${native_ready[@]}"; then
          native_init "$scenario"
          native_ready+=("$scenario")
        else
          native_catch_up "$scenario"
        fi
        if [[ $scenario == pg-pg ]]; then
          log "  VACUUM of the table on the source and the targets"
          pg_sql "$PG_SRC" "VACUUM pgbench_accounts"
          tpg_sql "$PG_NATIVE" "VACUUM pgbench_accounts"
          ! has native "${captures[@]}" || tpg_sql "$(dst_db native)" "VACUUM pgbench_accounts"
        fi
        ! has native "${captures[@]}" || idle_drain "$scenario" native "$run"
        queue_changes "$scenario"
        drained=("$([[ $scenario == pg-pg ]] && echo "$PG_NATIVE" || echo "$MY_SRC")")
        # which side goes first alternates between runs (page cache, server state)
        if has native "${captures[@]}" && ((run % 2 == 1)); then
          drain_pontoon "$scenario" native "$run"
          drain_native "$scenario" "$run"
        else
          drain_native "$scenario" "$run"
          ! has native "${captures[@]}" || drain_pontoon "$scenario" native "$run"
        fi
        ! has native "${captures[@]}" || drained+=("$(dst_db native)")
        check_drained "$scenario" "$run" "${drained[@]}"
        native_pause "$scenario"
      fi
      if $measuring_steady && has native "${captures[@]}"; then
        steady_state "$scenario" native "$run"
      fi
    done
    native_teardown "$scenario"
  fi
  if has triggers "${captures[@]}"; then
    for ((run = 1; run <= runs; run++)); do
      log "$scenario: trigger phase, run $run of $runs"
      if ((run == 1)); then pontoon_fresh "$scenario" triggers; else pontoon_catch_up "$scenario" triggers "catching up"; fi
      if $measuring_drain; then
        [[ $scenario != pg-pg ]] || pg_sql "$PG_SRC" "VACUUM pgbench_accounts"
        idle_drain "$scenario" triggers "$run"
        queue_changes "$scenario"
        drain_pontoon "$scenario" triggers "$run"
        check_drained "$scenario" "$run" "$(dst_db triggers)"
      fi
      if $measuring_steady; then
        steady_state "$scenario" triggers "$run"
      fi
    done
    log "$scenario: removing pontoon's triggers and log table (pontoon cleanup)"
    "$pontoon_bin" cleanup "$(job_file "$scenario" triggers)" >>"$work/logs/sync-$scenario-triggers-setup.log" 2>&1
  fi
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------- report

scenario_title() {
  case $1 in
    pg-pg) echo "PostgreSQL -> PostgreSQL" ;;
    my-my) echo "MariaDB -> MariaDB" ;;
  esac
}
tool_label() { # SCENARIO TOOL
  case "$1/$2" in
    */pontoon-native) echo "pontoon (native capture)" ;;
    */pontoon-triggers) echo "pontoon (trigger capture)" ;;
    pg-pg/native) echo "PostgreSQL logical replication" ;;
    my-my/native) echo "MariaDB replication" ;;
  esac
}
ok_lines() { awk -F'\t' '$NF == "ok"' "$tsv"; }
drain_col() { ok_lines | awk -F'\t' -v s="$1" -v t="$2" -v c="$3" '$1 == "drain" && $2 == s && $3 == t { print $c }'; }
drain_failed() { awk -F'\t' -v s="$1" -v t="$2" '$1 == "drain" && $2 == s && $3 == t && $NF ~ /^failed/ { print $4 "\t" substr($NF, 9) }' "$tsv"; }
steady_col() { ok_lines | awk -F'\t' -v s="$1" -v c="$2" -v r="$3" -v k="$4" '$1 == "steady" && $2 == s && $3 == c && $4 == r { print $k }'; }
steady_failed() { awk -F'\t' -v s="$1" -v c="$2" -v r="$3" '$1 == "steady" && $2 == s && $3 == c && $4 == r && $NF ~ /^failed/ { print $5 "\t" substr($NF, 9) }' "$tsv"; }
ms() { awk -v v="$1" 'BEGIN { printf "%.0f", v / 1000 }'; }

declare -A rate_of # "SCENARIO TOOL" -> median changes/s
drain_tools() { # SCENARIO
  local c
  for c in "${captures[@]}"; do echo "pontoon-$c"; done
  echo native
}

section=$work/sync-section.md
{
  echo
  title="## $started_at — sync benchmark"
  $measuring_drain && title+=", drain of $(thousands "$changes") changes"
  $measuring_steady && title+=", steady state at $(printf '%s\n' "${rates[@]}" | paste -sd/ -) writes/s for ${seconds} s each"
  echo "$title; $(thousands "$rows") rows; $runs run(s)"
  echo
  [[ -n $note ]] && { echo "$note"; echo; }
  echo "- pontoon: $("$pontoon_bin" --version), $built_from; \`[sync] batch_events = $batch_events\`, capture: ${captures[*]}"
  machine_line
  echo "- sources: $("$PG_BIN_DIR/postgres" --version | sed 's/postgres (PostgreSQL) /PostgreSQL /') and MariaDB $(my_sql 'SELECT VERSION()') on the benchmark servers, harness settings (PostgreSQL \`fsync=off\`, \`full_page_writes=off\`, \`shared_buffers=128MB\`, \`wal_level=logical\`; MariaDB \`innodb_flush_log_at_trx_commit=2\`, \`sync_binlog=0\`, binlog ON in ROW format with FULL images, \`innodb_buffer_pool_size=256M\`). Targets on servers started for the run with the same settings files: a second PostgreSQL instance (pontoon's target database and the subscriber database), a MariaDB replica (\`server_id=2\`, \`log_slave_updates=ON\`, serial apply, only the table replicated; pontoon's target database and the replicated database). All on loopback, on the same cores."
  echo "- load average (1/5/15 min) before: $load_before, after: $load_after; measurements that started while a compiler, linker or test runner was running (marked *): $(awk -F'\t' '($1 == "drain" && $9 > 0) || ($1 == "steady" && $12 > 0)' "$tsv" | wc -l)"
  if $measuring_drain; then
    echo "- drain: the table copied and synced by \`pontoon run --drain\` and by the native replication, both stopped; $(thousands "$changes") row changes queued on the source as UPDATEs of $(thousands "$change_batch") consecutive keys each, each its own transaction (PostgreSQL \`UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN a AND b\`, MariaDB \`UPDATE sbtest1 SET k = k + 1 WHERE id BETWEEN a AND b\`; the ranges go on where the previous run's ended and wrap around); changes = rows the UPDATEs changed. Then each side alone until caught up: pontoon = wall seconds of \`pontoon run JOB --drain\` (process start to exit, from \`/usr/bin/time\`); PostgreSQL logical replication = from \`ALTER SUBSCRIPTION ... ENABLE\` until the last queued transaction's last row shows its new value on the subscriber (polled every 10 ms by a procedure there); MariaDB replication = from \`START SLAVE\` until \`MASTER_POS_WAIT\` returns for the master's binlog position taken after the changes. Odd runs time pontoon first, even runs the native replication first. After the drains, row count + hash of the table are equal on the source and on every target, or the run fails."
  fi
  if $measuring_steady; then
    echo "- steady state: pontoon run (copied, syncing) while the load writes to the source for $seconds s per rate: PostgreSQL \`pgbench -R rate\` with a script of one single-row write per transaction (70% UPDATE, 15% INSERT ... ON CONFLICT DO UPDATE, 15% DELETE of a random key), 4 clients; MariaDB \`sysbench oltp_write_only --rate=rate/4\` (4 writes per transaction: 2 UPDATEs, a DELETE and an INSERT), 4 threads; achieved = writes/s the tool reports. A heartbeat row is updated every 100 ms on the source with the time in µs (one client session) and read on the target every 100 ms: lag = the target server's time - ts (includes up to 100 ms of heartbeat period). Caught up = seconds after the load's end until the lag is under 0.5 s. After the last rate pontoon is stopped with SIGTERM, drained, and both tables must be equal on both sides."
  fi
  echo
  for scenario in "${scenarios[@]}"; do
    if $measuring_drain; then
      echo "### Drain rate, $(scenario_title "$scenario"), $(thousands "$changes") changes"
      echo
      echo "| tool | median s | runs (s) | changes/s | rate ÷ the native replication's | pontoon max RSS MB | pontoon CPU s |"
      echo "|---|---:|---|---:|---:|---:|---:|"
      for tool in $(drain_tools "$scenario"); do
        secs=$(drain_col "$scenario" "$tool" 5 | median)
        [[ -z $secs ]] || rate_of[$scenario $tool]=$(awk -v n="$(drain_col "$scenario" "$tool" 6 | median)" -v s="$secs" 'BEGIN { print (s > 0 ? n / s : 0) }')
      done
      nat=${rate_of[$scenario native]:-}
      for tool in $(drain_tools "$scenario"); do
        secs=$(drain_col "$scenario" "$tool" 5 | median)
        if [[ -z $secs ]]; then
          echo "| $(tool_label "$scenario" "$tool") | — | no valid run (see below) | | | | |"
          continue
        fi
        all=$(ok_lines | awk -F'\t' -v s="$scenario" -v t="$tool" '$1 == "drain" && $2 == s && $3 == t { print $5 ($9 > 0 ? "*" : "") }' | paste -sd' ' -)
        ratio="—" rss="" cpu=""
        if [[ $tool != native && -n $nat ]]; then
          ratio="$(awk -v a="${rate_of[$scenario $tool]}" -v b="$nat" 'BEGIN { printf "%.2f", a / b }')x"
        fi
        if [[ $tool != native ]]; then
          rss=$(fmt "$(drain_col "$scenario" "$tool" 7 | median | awk '{ print $1 / 1024 }')" 0)
          cpu=$(fmt "$(drain_col "$scenario" "$tool" 8 | median)" 2)
        fi
        echo "| $(tool_label "$scenario" "$tool") | $(fmt "$secs" 2) | $all | $(thousands "${rate_of[$scenario $tool]}") | $ratio | $rss | $cpu |"
      done
      echo
      for c in "${captures[@]}"; do
        p=${rate_of[$scenario pontoon-$c]:-}
        if [[ -n $p && -n $nat ]]; then
          r=$(awk -v a="$p" -v b="$nat" 'BEGIN { printf "%.2f", a / b }')
          echo "- pontoon ($c capture) >= 1.0x $(tool_label "$scenario" native)'s rate: ${r}x — $(verdict "$r" ">=" 1.0)"
        else
          echo "- pontoon ($c capture) >= 1.0x $(tool_label "$scenario" native)'s rate: no valid run of both"
        fi
      done
      for c in "${captures[@]}"; do
        idle=$(awk -F'\t' -v s="$scenario" -v t="pontoon-$c" '$1 == "idle" && $2 == s && $3 == t { print $5 }' "$tsv" | median)
        [[ -z $idle ]] || echo "- pontoon ($c capture) with nothing to apply (\`pontoon run --drain\` start to exit: start-up, planning, connecting, one empty read): $(fmt "$idle" 2) s (median), included in its seconds above"
      done
      for tool in $(drain_tools "$scenario"); do
        k=$(drain_failed "$scenario" "$tool" | wc -l)
        ((k > 0)) || continue
        echo "- $(tool_label "$scenario" "$tool"): $k failed run(s); first: $(drain_failed "$scenario" "$tool" | head -n1 | cut -f2- | mask | sed 's/|/\\|/g')"
      done
      echo
    fi
    if $measuring_steady; then
      echo "### Steady state, $(scenario_title "$scenario") ($([[ $scenario == pg-pg ]] && echo pgbench || echo "sysbench oltp_write_only"))"
      echo
      echo "| capture | writes/s asked | achieved (median) | lag p50 ms | lag p99 ms | lag max ms | p99 of each run (ms) | caught up after s |"
      echo "|---|---:|---:|---:|---:|---:|---|---:|"
      declare -A best=()
      for c in "${captures[@]}"; do
        for rate in "${rates[@]}"; do
          p99=$(steady_col "$scenario" "$c" "$rate" 8 | median)
          k=$(steady_failed "$scenario" "$c" "$rate" | wc -l)
          if [[ -z $p99 ]]; then
            echo "| $c | $(thousands "$rate") | — | — | — | — | no valid run$( ((k == 0)) || echo "; $k failed: $(steady_failed "$scenario" "$c" "$rate" | head -n1 | cut -f2- | mask | sed 's/|/\\|/g')") | |"
            continue
          fi
          achieved=$(steady_col "$scenario" "$c" "$rate" 6 | median)
          p50=$(steady_col "$scenario" "$c" "$rate" 7 | median)
          max=$(steady_col "$scenario" "$c" "$rate" 9 | sort -n | tail -n1)
          settle=$(steady_col "$scenario" "$c" "$rate" 11 | median)
          all=$(ok_lines | awk -F'\t' -v s="$scenario" -v c="$c" -v r="$rate" '$1 == "steady" && $2 == s && $3 == c && $4 == r { printf "%.0f%s\n", $8 / 1000, ($12 > 0 ? "*" : "") }' | paste -sd' ' -)
          ((k == 0)) || all+=" ($k failed)"
          echo "| $c | $(thousands "$rate") | $(thousands "$achieved") | $(ms "$p50") | $(ms "$p99") | $(ms "$max") | $all | $(fmt "$settle" 1) |"
          # counts when the p99 is under a second and the load reached 95% of the rate asked
          if awk -v p="$p99" -v a="$achieved" -v r="$rate" 'BEGIN { exit !(p < 1000000 && a >= 0.95 * r) }'; then best[$c]=$rate; fi
        done
      done
      echo
      for c in "${captures[@]}"; do
        target="2,000 writes/s with p99 lag < 1 s"
        if [[ -n ${best[$c]:-} ]]; then
          line="- pontoon ($c capture): highest rate with p99 lag < 1 s (and >= 95% of it achieved): $(thousands "${best[$c]}") writes/s (of the rates tried)"
          if ((best[$c] >= 2000)); then line+="; $target — met"
          elif ((${rates[-1]} < 2000)); then line+="; $target — not measured (no rate >= 2,000 tried)"
          else line+="; $target — **NOT met**"; fi
        else
          line="- pontoon ($c capture): no rate tried had p99 lag < 1 s with >= 95% of it achieved"
          if ((${rates[-1]} < 2000)); then line+="; $target — not measured (no rate >= 2,000 tried)"; else line+="; $target — **NOT met**"; fi
        fi
        echo "$line"
      done
      unset best
      echo
    fi
    echo "<details><summary>commands</summary>"
    echo
    echo '```sh'
    if $measuring_drain; then
      echo "# queueing (one transaction per statement, $(thousands $(((changes + change_batch - 1) / change_batch))) statements per run), e.g."
      case $scenario in
        pg-pg) echo "psql -d $PG_SRC -f queue.sql   # UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN 1 AND $change_batch; ..." ;;
        my-my) echo "mariadb $MY_SRC < queue.sql    # UPDATE sbtest1 SET k = k + 1 WHERE id BETWEEN 1 AND $change_batch; SELECT ROW_COUNT(); ..." ;;
      esac
      for c in "${captures[@]}"; do echo "$pontoon_bin run $(job_file "$scenario" "$c") --drain --json"; done
      case $scenario in
        pg-pg)
          echo "# source ($PG_SRC): CREATE PUBLICATION $PUB FOR TABLE pgbench_accounts; SELECT pg_create_logical_replication_slot('$SUB', 'pgoutput');"
          echo "# subscriber ($PG_NATIVE, target instance): $(ddl_of pg-pg pgbench_accounts);"
          echo "#   CREATE SUBSCRIPTION $SUB CONNECTION '$(sub_conninfo)' PUBLICATION $PUB WITH (create_slot = false, slot_name = '$SUB', copy_data = true);" | mask
          echo "#   paused with ALTER SUBSCRIPTION $SUB DISABLE (until the slot is inactive); timed: ALTER SUBSCRIPTION $SUB ENABLE; CALL bench_wait_for(last_key, its_new_value, timeout);"
          ;;
        my-my)
          echo "# replica ($MY_SRC): mariadb-dump --single-transaction --master-data=2 $MY_SRC sbtest1 | mariadb $MY_SRC"
          echo "#   CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = $MY_PORT, MASTER_USER = '$bench_user', MASTER_PASSWORD = '$bench_password', MASTER_LOG_FILE = <dump's>, MASTER_LOG_POS = <dump's>, MASTER_USE_GTID = no;" | mask
          echo "#   replica: the benchmark MariaDB's option file with its own port and paths, and server_id=2 log_slave_updates=ON skip_slave_start relay_log=... replicate_wild_do_table=$MY_SRC.sbtest1"
          echo "#   paused with STOP SLAVE; timed: START SLAVE; SELECT MASTER_POS_WAIT(<master's file and position after the changes>, timeout);"
          ;;
      esac
    fi
    if $measuring_steady; then
      for c in "${captures[@]}"; do echo "$pontoon_bin run $(job_file "$scenario" "$c")   # SIGTERM after the last rate"; done
      load_command "$scenario" - | mask
      [[ $scenario == my-my ]] || sed 's/^/#   /' "$pgbench_script"
      case $scenario in
        pg-pg) echo "# heartbeat, source, every 100 ms: $HB_WRITE_PG"; echo "# lag, target, every 100 ms: $HB_LAG_PG" ;;
        my-my) echo "# heartbeat, source, every 100 ms: $HB_WRITE_MY"; echo "# lag, target, every 100 ms: $HB_LAG_MY" ;;
      esac
    fi
    echo '```'
    for c in "${captures[@]}"; do
      job=$(job_file "$scenario" "$c")
      [[ -f $job ]] || continue
      echo
      echo '```toml'
      grep -v '^#' "$job" | mask
      echo '```'
    done
    echo
    echo "</details>"
    echo
  done
} >"$section"

record_section
