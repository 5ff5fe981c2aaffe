#!/usr/bin/env bash
# The verify benchmark: `pontoon verify` side by side with its peers, on the same data, in
# one run.
#
#   my-my    MariaDB -> its replica         pontoon verify | pt-table-checksum (percona-toolkit)
#   pg-pg    PostgreSQL -> another instance pontoon verify | the floor: a count-and-hash query
#                                           on both sides at once
#   diff30   pg-pg and my-my with 30 differences injected into a copy of the target:
#            pontoon verify must list every one (exit 3), timed against the equal table
#   my-pg    MariaDB -> PostgreSQL          pontoon verify, timed against my-my
#
# The table is pgbench_accounts-like in both engines: `aid int PRIMARY KEY, bid int,
# abalance int, filler char(84)`, --rows rows, aid = 2, 4, 6, ... (every other key, so that
# diff30's extra rows fall across the whole table). Sources: database verify_src on the
# benchmark servers (bench/copy.sh's). Targets: a MariaDB replica (server_id 2, replicating
# verify_src and pt-table-checksum's `percona` database) and a second PostgreSQL instance,
# both started by this script in $PONTOON_BENCH_WORK/verify-servers with the benchmark
# servers' settings files, and KEPT RUNNING between invocations with their copies (making
# them again takes minutes at 5M rows): `bench/verify.sh --stop` stops and removes them and
# stops the benchmark servers.
#
# Every copy is made once (not timed) and reused while its table comment says it holds this
# generation of --rows rows: the replica's by mariadb-dump + replication, the second
# instance's by pg_dump | psql, diff30's by copying the equal copy and changing 30 rows,
# my-pg's target by `pontoon copy` of the MariaDB source. Each tool is timed --runs times,
# interleaved (run 1 of every tool, then run 2, ...), each run checked (pontoon: exit 0 and
# every row compared with no difference, or exit 3 and exactly the 30 differences in diff30;
# pt-table-checksum: exit 0, every row, no diff; the floor: same count and hash on both
# sides). Wall seconds, max RSS and CPU seconds come from GNU time; the medians and ratios
# are appended to bench/RESULTS.md.
#
# Usage: bench/verify.sh [options]
#   --rows N               rows in the table (default 5000000)
#   --runs N               runs per tool (default 3)
#   --only S[,S...]        my-my, pg-pg, diff30, my-pg (default: all)
#   --chunk-rows N         pontoon `[verify] chunk_rows` (default 10000, pontoon's default)
#   --commit REV           build pontoon from this commit (as bench/copy.sh)
#   --pontoon PATH         use this pontoon binary (default: build the working tree)
#   --no-record            print the results section, do not append it to RESULTS.md
#   --note TEXT            a line of context for the RESULTS.md section
#   --stop                 run nothing: stop and remove the replica and the second
#                          PostgreSQL instance, and stop the benchmark servers
#
# Environment: PONTOON_BENCH_SERVERS (default /tmp/pontoon-bench-servers) and
# PONTOON_BENCH_WORK (default /tmp/pontoon-bench-work) as for bench/copy.sh. Run
# bench/setup.sh first (installs percona-toolkit from Debian's packages).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

# ---------------------------------------------------------------------------- options

rows=5000000
runs=3
only=my-my,pg-pg,diff30,my-pg
chunk_rows=10000
pontoon_bin=""
commit_rev=""
record=true
note=""
stop_only=false
while (($#)); do
  case $1 in
    --rows) rows=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --chunk-rows) chunk_rows=$2; shift 2 ;;
    --pontoon) pontoon_bin=$2; shift 2 ;;
    --commit) commit_rev=$2; shift 2 ;;
    --no-record) record=false; shift ;;
    --note) note=$2; shift 2 ;;
    --stop) stop_only=true; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done
IFS=, read -r -a selected <<<"$only"
for s in "${selected[@]}"; do
  [[ $s =~ ^(my-my|pg-pg|diff30|my-pg)$ ]] || { echo "unknown scenario: $s" >&2; exit 2; }
done
for n in "$rows" "$runs" "$chunk_rows"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "not a positive number: $n" >&2; exit 2; }
done
((rows >= 60)) || { echo "--rows must be at least 60 (diff30 spreads 30 differences over the table)" >&2; exit 2; }
has() { local x=$1; shift; [[ " $* " == *" $x "* ]]; }

# The measured scenarios, in the order they run; diff30 is one for each engine.
scenarios=()
for s in my-my pg-pg diff30 my-pg; do
  has "$s" "${selected[@]}" || continue
  if [[ $s == diff30 ]]; then scenarios+=(diff30-pg diff30-my); else scenarios+=("$s"); fi
done
need_replica=false need_tpg=false
for s in "${scenarios[@]}"; do
  case $s in
    my-my | diff30-my) need_replica=true ;;
    pg-pg | diff30-pg | my-pg) need_tpg=true ;;
  esac
done

servers_dir=${PONTOON_BENCH_SERVERS:-/tmp/pontoon-bench-servers}
work=${PONTOON_BENCH_WORK:-/tmp/pontoon-bench-work}
results_md="$here/RESULTS.md"
mkdir -p "$work/jobs" "$work/logs"

# log, the lock, the build, the servers, the second servers, SQL clients, masking, report helpers
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

# The replica and the second PostgreSQL instance (kept between invocations).
verify_servers=$work/verify-servers
second_servers "$verify_servers"

bench_lock

if $stop_only; then
  log "stopping the replica and the second PostgreSQL instance in $verify_servers"
  PG_BIN_DIR=${PG_BIN_DIR:-$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d | sort -V | tail -n1)}
  stop_target_pg
  stop_replica
  rm -rf "$verify_servers"
  launcher=${CARGO_TARGET_DIR:-$root/target}/release/pontoon-test-servers
  [[ -x $launcher ]] || (cd "$root" && cargo build --release --quiet -p pontoon-testsupport --bin pontoon-test-servers)
  log "stopping the benchmark servers in $servers_dir"
  PONTOON_TEST_DIR=$servers_dir "$launcher" stop 9>&-
  exit 0
fi

[[ -x /usr/bin/time ]] || { echo "GNU time is missing: run bench/setup.sh" >&2; exit 1; }
for tool in mariadb-dump mariadb-install-db mariadbd; do
  command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || { echo "$tool is missing: run bench/setup.sh (scripts/install-deps.sh)" >&2; exit 1; }
done

# ---------------------------------------------------------------------------- build, servers

build_pontoon
start_servers

# ---------------------------------------------------------------------------- names, data

# Bump when the generated data changes: copies of another generation are made again.
GEN=v1
SRC=verify_src          # the source database on both benchmark servers (and the replica's copy)
DST=verify_dst          # the equal copy on the second PostgreSQL instance
DIFF=verify_diff        # the copy with 30 differences (second PostgreSQL instance, replica)
FROM_MY=verify_from_my  # pontoon's copy of the MariaDB source (second PostgreSQL instance)
PT_DB=verify_pt         # on the master only: pt-table-checksum's table of replica DSNs
TABLE=pgbench_accounts
marker="pontoon-bench verify $GEN rows=$rows"
diff_marker="$marker diff30"
setup_log=$work/logs/verify-setup.log

DDL="CREATE TABLE $TABLE (aid int PRIMARY KEY, bid int, abalance int, filler char(84))"
# aid = 2g: every other key, so that diff30 can insert extra rows across the whole table
PG_FILL="INSERT INTO $TABLE SELECT 2 * g, (g - 1) / 100000 + 1, (g::bigint * 7919) % 100000 - 50000, lpad(g::text, 84, '-')
  FROM generate_series(1, $rows) g"
MY_FILL="INSERT INTO $TABLE SELECT 2 * seq, (seq - 1) DIV 100000 + 1, CAST((seq * 7919) % 100000 AS SIGNED) - 50000, LPAD(seq, 84, '-')
  FROM seq_1_to_$rows"

tpg_url() { echo "postgres://$bench_user@127.0.0.1:$TPG_PORT/$1"; }

pg_comment() { "$@" "SELECT obj_description('$TABLE'::regclass, 'pg_class')" 2>/dev/null || true; } # CLIENT DB
my_comment() { # CLIENT DB
  "$1" "SELECT table_comment FROM information_schema.tables WHERE table_schema = '$2' AND table_name = '$TABLE'" 2>/dev/null || true
}
# The table holds this generation (its comment) and every row: a copy interrupted midway is
# made again.
pg_ready() { # CLIENT DB MARKER
  [[ $(pg_comment "$1" "$2") == "$3" && $("$1" "$2" "SELECT count(*) FROM $TABLE" 2>/dev/null) == "$rows" ]]
}
my_ready() { # CLIENT DB MARKER
  [[ $(my_comment "$1" "$2") == "$3" && $("$1" "SELECT COUNT(*) FROM $2.$TABLE" 2>/dev/null) == "$rows" ]]
}
my_sql_at() { my_sql "$1"; } # SQL: my_sql without a database, in the (CLIENT SQL) shape
rep_sql_at() { rep_sql "$1"; }

ensure_pg_source() {
  pg_ready pg_sql "$SRC" "$marker" && return
  log "generating the PostgreSQL source $SRC ($(thousands "$rows") rows)"
  pg_sql postgres "SET client_min_messages = warning" "DROP DATABASE IF EXISTS $SRC WITH (FORCE)" "CREATE DATABASE $SRC OWNER $bench_user"
  pg_sql "$SRC" "$DDL" "ALTER TABLE $TABLE OWNER TO $bench_user" "$PG_FILL" "VACUUM (FREEZE, ANALYZE) $TABLE" \
    "COMMENT ON TABLE $TABLE IS '$marker'" "CHECKPOINT"
}

ensure_my_source() {
  my_ready my_sql_at "$SRC" "$marker" && return
  log "generating the MariaDB source $SRC ($(thousands "$rows") rows; not binlogged: the replica gets it by a dump)"
  my_sql "SET sql_log_bin = 0; DROP DATABASE IF EXISTS $SRC; CREATE DATABASE $SRC CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
  my_sql "SET sql_log_bin = 0; $DDL ENGINE=InnoDB; $MY_FILL; ANALYZE TABLE $TABLE; ALTER TABLE $TABLE COMMENT = '$marker'" "$SRC" >/dev/null
}

# The 30 differences: 30 keys spread evenly over the table, in turn a changed value, a
# deleted row (missing in the target) and an extra row (an odd key, between two source rows).
DIFF_SQL=""
for ((i = 0; i < 30; i++)); do
  g=$((1 + (2 * i + 1) * rows / 60))
  case $((i % 3)) in
    0) DIFF_SQL+="UPDATE $TABLE SET abalance = abalance + 1 WHERE aid = $((2 * g));" ;;
    1) DIFF_SQL+="DELETE FROM $TABLE WHERE aid = $((2 * g));" ;;
    2) DIFF_SQL+="INSERT INTO $TABLE VALUES ($((2 * g + 1)), 1, 0, 'an extra row');" ;;
  esac
done

# The second PostgreSQL instance: the equal copy (pg_dump | psql, in one transaction), the
# copy with 30 differences (CREATE DATABASE ... TEMPLATE of the equal copy, then the changes)
# and pontoon's copy of the MariaDB source.
ensure_tpg_copies() {
  if has pg-pg "${scenarios[@]}" || has diff30-pg "${scenarios[@]}"; then
    if ! pg_ready tpg_sql "$DST" "$marker"; then
      log "copying $SRC to the second PostgreSQL instance ($DST; pg_dump | psql, not timed)"
      tpg_sql postgres "SET client_min_messages = warning" "DROP DATABASE IF EXISTS $DIFF WITH (FORCE)" \
        "DROP DATABASE IF EXISTS $DST WITH (FORCE)" "CREATE DATABASE $DST OWNER $bench_user"
      pg_dump -h "$PG_SOCKET_DIR" -p "$PG_PORT" -U postgres -t "$TABLE" "$SRC" |
        psql -X -q -1 -v ON_ERROR_STOP=1 -h "$tpg_dir/run" -p "$TPG_PORT" -U postgres -d "$DST" >>"$setup_log"
      tpg_sql "$DST" "VACUUM (FREEZE, ANALYZE) $TABLE" "CHECKPOINT"
      pg_ready tpg_sql "$DST" "$marker" || { echo "the copy $DST is not complete" >&2; exit 1; }
    fi
  fi
  if has diff30-pg "${scenarios[@]}" && ! pg_ready tpg_sql "$DIFF" "$diff_marker"; then
    log "making $DIFF on the second PostgreSQL instance: $DST with 30 differences"
    tpg_sql postgres "SET client_min_messages = warning" "DROP DATABASE IF EXISTS $DIFF WITH (FORCE)" \
      "CREATE DATABASE $DIFF TEMPLATE $DST OWNER $bench_user"
    tpg_sql "$DIFF" "BEGIN; $DIFF_SQL COMMIT" "VACUUM (FREEZE, ANALYZE) $TABLE" "COMMENT ON TABLE $TABLE IS '$diff_marker'" "CHECKPOINT"
    pg_ready tpg_sql "$DIFF" "$diff_marker" || { echo "$DIFF does not have $rows rows after the changes" >&2; exit 1; }
  fi
  if has my-pg "${scenarios[@]}" && ! pg_ready tpg_sql "$FROM_MY" "$marker"; then
    log "copying the MariaDB source to the second PostgreSQL instance ($FROM_MY; pontoon copy, not timed)"
    local job=$work/jobs/verify-setup-my-pg.toml
    tpg_sql postgres "SET client_min_messages = warning" "DROP DATABASE IF EXISTS $FROM_MY WITH (FORCE)" "CREATE DATABASE $FROM_MY OWNER $bench_user"
    cat >"$job" <<EOF
# written by bench/verify.sh (the set-up of my-pg, not timed); the password comes from the environment
[source]
url = "$(my_job_url "$SRC")"

[target]
url = "$(tpg_job_url "$FROM_MY")"

[[tables]]
source = "$TABLE"
EOF
    rm -f "${job%.toml}.pontoon.db"{,-wal,-shm,-journal}
    "$pontoon_bin" copy "$job" >>"$setup_log" 2>&1 || { echo "pontoon copy for my-pg failed; see $setup_log" >&2; exit 1; }
    tpg_sql "$FROM_MY" "VACUUM (FREEZE, ANALYZE) $TABLE" "COMMENT ON TABLE $TABLE IS '$marker'" "CHECKPOINT"
    pg_ready tpg_sql "$FROM_MY" "$marker" || { echo "pontoon's copy $FROM_MY is not complete" >&2; exit 1; }
  fi
}

# The replica. pt-table-checksum finds it through a DSN table on the master
# (--recursion-method dsn=...: `processlist` / `hosts` would need the replica's report_host
# and a host name that resolves to it); the table lives in a database the replica does not
# replicate and is written with sql_log_bin = 0. The replica applies only verify_src and
# pt-table-checksum's `percona` database (replicate_wild_do_table), so the other benchmarks'
# writes on the master (copy.sh's targets) do not reach it; pt-table-checksum refuses
# replicas with filters unless --no-check-replication-filters.
# Each invocation points the replica at the master's current binlog position (copy.sh's
# `RESET MASTER` between invocations invalidates the old one; nothing of verify_src changes
# on the master in between but its regeneration, which the comment check catches) and drops
# pt-table-checksum's `percona` database on both sides, for the tool to create it anew
# through the replication.
ensure_replica() {
  if replica_running; then
    log "reusing the MariaDB replica in $rep_dir (port $REP_PORT)"
  else
    log "starting the MariaDB replica in $rep_dir"
    mkdir -p "$verify_servers"
    start_replica "$SRC.%" "percona.%"
  fi
  rep_sql "STOP SLAVE" 2>/dev/null || true
  if ! my_ready rep_sql_at "$SRC" "$marker"; then
    log "copying $SRC to the replica (mariadb-dump --master-data | mariadb, not timed)"
    rep_sql "SET sql_log_bin = 0; DROP DATABASE IF EXISTS $DIFF"
    replica_load "$SRC" "$TABLE" >>"$setup_log" 2>&1
  fi
  local file pos r
  IFS=$'\t' read -r file pos < <(my_sql "SHOW MASTER STATUS" | awk -F'\t' 'NR == 1 { print $1 "\t" $2 }')
  rep_sql "RESET SLAVE ALL; DROP DATABASE IF EXISTS percona;
    CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = $MY_PORT, MASTER_USER = '$bench_user',
    MASTER_PASSWORD = '$bench_password', MASTER_LOG_FILE = '$file', MASTER_LOG_POS = $pos, MASTER_USE_GTID = no"
  my_sql "SET sql_log_bin = 0; DROP DATABASE IF EXISTS percona; CREATE DATABASE IF NOT EXISTS $PT_DB;
    CREATE TABLE IF NOT EXISTS $PT_DB.dsns (id int AUTO_INCREMENT PRIMARY KEY, parent_id int DEFAULT NULL, dsn varchar(255) NOT NULL);
    DELETE FROM $PT_DB.dsns; INSERT INTO $PT_DB.dsns (dsn) VALUES ('h=127.0.0.1,P=$REP_PORT')"
  r=$(rep_sql "START SLAVE; SELECT MASTER_POS_WAIT('$file', $pos, 600)")
  [[ $r =~ ^[0-9]+$ ]] || { echo "the replica did not reach $file:$pos (MASTER_POS_WAIT: $r); $(replica_error)" >&2; exit 1; }
  local io sql
  io=$(replica_status | sed -n 's/^ *Slave_IO_Running: //p')
  sql=$(replica_status | sed -n 's/^ *Slave_SQL_Running: //p')
  [[ $io == Yes && $sql == Yes ]] || { echo "the replica does not replicate: $(replica_error)" >&2; exit 1; }
  if has diff30-my "${scenarios[@]}" && ! my_ready rep_sql_at "$DIFF" "$diff_marker"; then
    log "making $DIFF on the replica: a copy of $SRC with 30 differences (not replicated)"
    rep_sql "SET sql_log_bin = 0; DROP DATABASE IF EXISTS $DIFF; CREATE DATABASE $DIFF CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
      CREATE TABLE $DIFF.$TABLE LIKE $SRC.$TABLE; INSERT INTO $DIFF.$TABLE SELECT * FROM $SRC.$TABLE;"
    rep_sql "SET sql_log_bin = 0; START TRANSACTION; $DIFF_SQL COMMIT; ANALYZE TABLE $TABLE;
      ALTER TABLE $TABLE COMMENT = '$diff_marker'" "$DIFF" >/dev/null
    my_ready rep_sql_at "$DIFF" "$diff_marker" || { echo "$DIFF on the replica does not have $rows rows after the changes" >&2; exit 1; }
  fi
}

# ---------------------------------------------------------------------------- tools

have() { command -v "$1" >/dev/null; }

tools_for() { # SCENARIO: the peer first
  case $1 in
    my-my) echo "pt-table-checksum pontoon" ;;
    pg-pg) echo "floor pontoon" ;;
    *) echo "pontoon" ;;
  esac
}

missing_peer() { # TOOL: empty when it can run
  case $1 in
    pt-table-checksum) have pt-table-checksum || echo "pt-table-checksum is not installed (bench/setup.sh installs percona-toolkit)" ;;
  esac
}

job_file() { echo "$work/jobs/verify-$1.toml"; } # SCENARIO
report_file() { echo "$work/logs/verify-$1-pontoon-$2.report.jsonl"; } # SCENARIO RUN

write_job() { # SCENARIO
  local src dst
  case $1 in
    my-my) src=$(my_job_url "$SRC"); dst=$(my_job_url "$SRC" "$REP_PORT") ;;
    pg-pg) src=$(pg_job_url "$SRC"); dst=$(tpg_job_url "$DST") ;;
    diff30-pg) src=$(pg_job_url "$SRC"); dst=$(tpg_job_url "$DIFF") ;;
    diff30-my) src=$(my_job_url "$SRC"); dst=$(my_job_url "$DIFF" "$REP_PORT") ;;
    my-pg) src=$(my_job_url "$SRC"); dst=$(tpg_job_url "$FROM_MY") ;;
  esac
  cat >"$(job_file "$1")" <<EOF
# written by bench/verify.sh; the password comes from the environment
[source]
url = "$src"

[target]
url = "$dst"

[verify]
chunk_rows = $chunk_rows

[[tables]]
source = "$TABLE"
EOF
}

# The floor's query: the fastest honest whole-table count and hash found here (1M rows:
# hash_record_extended 0.4 s, hashtextextended(t::text) 0.8 s, hashtext(t::text) 0.8 s,
# md5(t::text) 1.7 s; count(*) alone 0.12 s). hash_record_extended hashes every column with
# its type's own 64-bit hash function, without a text conversion; the sum is
# order-independent. With the servers' defaults (max_parallel_workers_per_gather = 2), as
# every query here runs.
FLOOR_SQL="SELECT count(*), sum(hash_record_extended(t, 0)) FROM $TABLE t"

# tool_command SCENARIO TOOL RUN: the measured command (a bash string)
tool_command() {
  local scenario=$1 tool=$2 run=$3
  case $tool in
    pontoon) echo "$pontoon_bin verify $(job_file "$scenario") --json --report $(report_file "$scenario" "$run")" ;;
    pt-table-checksum)
      # The whole run: one table, its default chunking (--chunk-time 0.5 s), the replica from
      # the DSN table; the login from the option file (F=). --no-check-binlog-format: the
      # servers log in ROW format; pt-table-checksum sets STATEMENT for its own session
      # (the replica recomputes each chunk's checksum by executing the statement) and
      # only warns that a replica's own replicas would not. --no-version-check: no call
      # home (no network here).
      echo "pt-table-checksum --no-version-check --recursion-method dsn=h=127.0.0.1,P=$MY_PORT,D=$PT_DB,t=dsns" \
        "--no-check-binlog-format --no-check-replication-filters --databases $SRC --tables $TABLE" \
        "F=$my_cnf,h=127.0.0.1,P=$MY_PORT"
      ;;
    floor)
      # both sides at once, each in its own psql; until both have answered
      echo "psql -X -A -t $(pg_url "$SRC") -c \"$FLOOR_SQL\" >$work/logs/verify-floor-src.out & p=\$!;" \
        "psql -X -A -t $(tpg_url "$DST") -c \"$FLOOR_SQL\" >$work/logs/verify-floor-dst.out; s=\$?; wait \$p && exit \$s"
      ;;
  esac
}

# ---------------------------------------------------------------------------- measuring

# Raw figures, one line per run: scenario tool run seconds max_rss_kb user_s sys_s others
# load1 status detail, where `others` counts compilers/linkers/test runners running when the
# run started, status is `ok` or `failed: why`, and detail what the tool reported (pontoon:
# rows compared, chunks, chunks by checksum, differences by kind).
tsv=$work/verify-runs-$(date +%Y%m%d-%H%M%S).tsv
: >"$tsv"

json_num() { grep -o "\"$1\":[0-9]*" | head -n1 | sed 's/.*://'; } # FIELD < JSON

quiesce() {
  sync
  pg_sql postgres "CHECKPOINT"
  [[ -z $TPG_PORT ]] || tpg_sql postgres "CHECKPOINT"
  sleep 1
}

# check_run SCENARIO TOOL RUN STATUS LOG: prints "why it failed" (empty if it did not) on
# line 1 and the detail on line 2
check_run() {
  local scenario=$1 tool=$2 run=$3 status=$4 logf=$5 why="" detail=""
  case $tool in
    pontoon)
      local j compared differences found chunks by_checksum missing extra changed lines=0 report
      j=$(grep '^{"rows_compared"' "$logf" | tail -n1 || true)
      compared=$(json_num rows_compared <<<"$j")
      differences=$(json_num differences <<<"$j")
      found=$(json_num found <<<"$j")
      chunks=$(json_num chunks <<<"$j")
      by_checksum=$(json_num chunks_by_checksum <<<"$j")
      missing=$(json_num missing <<<"$j")
      extra=$(json_num extra <<<"$j")
      changed=$(json_num changed <<<"$j")
      report=$(report_file "$scenario" "$run")
      [[ ! -f $report ]] || lines=$(wc -l <"$report")
      detail="rows_compared=${compared:-?} chunks=${chunks:-?} by_checksum=${by_checksum:-?} differences=${differences:-?} missing=${missing:-?} extra=${extra:-?} changed=${changed:-?} report_lines=$lines"
      if [[ -z $j ]]; then
        why="exit status $status, no JSON report: $(grep -m1 -iE 'error|panick' "$logf" | mask | cut -c1-200 || true)"
      elif [[ $scenario == diff30-* ]]; then
        if ((status != 3)); then why="exit status $status (3 expected: differences remain)"
        elif [[ $differences != 30 || $found != 30 ]]; then why="reported $differences differences ($found found), 30 injected"
        elif [[ $missing != 10 || $extra != 10 || $changed != 10 ]]; then why="reported $missing missing, $extra extra, $changed changed; 10 of each injected"
        elif ((lines != 30)); then why="the report file lists $lines lines, 30 differences injected"
        fi
      else
        if ((status != 0)); then why="exit status $status: $differences differences reported (the tables are equal)"
        elif [[ $compared != "$rows" ]]; then why="compared ${compared:-no} rows of $rows"
        fi
      fi
      ;;
    pt-table-checksum)
      # TS ERRORS DIFFS ROWS DIFF_ROWS CHUNKS SKIPPED TIME TABLE
      local line errors diffs prows skipped
      line=$(awk -v t="$SRC.$TABLE" '$NF == t' "$logf" | tail -n1)
      read -r _ errors diffs prows _ _ skipped _ _ <<<"$line"
      detail="errors=${errors:-?} diffs=${diffs:-?} rows=${prows:-?} chunks=$(awk '{ print $6 }' <<<"$line") skipped=${skipped:-?}"
      if ((status != 0)); then why="exit status $status: $(grep -v '^ *TS ' "$logf" | grep -m1 -iE 'error|diffs cannot|no slaves|replica|warn' | mask | cut -c1-200 || true)"
      elif [[ -z $line ]]; then why="no result line for $SRC.$TABLE"
      elif [[ $errors != 0 || $diffs != 0 || $skipped != 0 ]]; then why="errors $errors, diffs $diffs, skipped $skipped (the tables are equal)"
      elif [[ $prows != "$rows" ]]; then why="checksummed $prows rows of $rows"
      fi
      ;;
    floor)
      local a b
      a=$(cat "$work/logs/verify-floor-src.out" 2>/dev/null || true)
      b=$(cat "$work/logs/verify-floor-dst.out" 2>/dev/null || true)
      detail="source=$a target=$b"
      if ((status != 0)); then why="exit status $status: $(grep -m1 -iE 'error|fatal' "$logf" | mask | cut -c1-200 || true)"
      elif [[ $a != "$b" ]]; then why="count|hash differ: source $a, target $b"
      elif [[ ${a%%|*} != "$rows" ]]; then why="counted ${a%%|*} rows of $rows"
      fi
      ;;
  esac
  printf '%s\n%s\n' "$why" "$detail"
}

measure() { # SCENARIO TOOL RUN
  local scenario=$1 tool=$2 run=$3 cmd logf timef=$work/logs/time.out
  logf=$work/logs/verify-$scenario-$tool-$run.log
  cmd=$(tool_command "$scenario" "$tool" "$run")
  case $tool in
    pontoon) rm -f "$(dirname "$(job_file "$scenario")")/verify-$scenario.pontoon.db"{,-wal,-shm,-journal} "$(report_file "$scenario" "$run")" ;;
    floor) rm -f "$work/logs/verify-floor-"{src,dst}.out ;;
  esac
  quiesce
  local others load
  others=$(other_load)
  load=$(cut -d' ' -f1 /proc/loadavg)
  log "$scenario: $tool, run $run"
  local status=0
  /usr/bin/time -f '%e %M %U %S' -o "$timef" \
    timeout $((1800 + rows / 500)) bash -o pipefail -c "$cmd" >"$logf" 2>&1 || status=$?
  local secs rss user sys why detail
  read -r secs rss user sys < <(tail -n1 "$timef")
  { read -r why; read -r detail; } < <(check_run "$scenario" "$tool" "$run" "$status" "$logf")
  why=${why//$'\t'/ }
  if [[ -n $why ]]; then
    log "  FAILED: $why; last lines of $logf:"
    tail -n 5 "$logf" | mask | cut -c1-300 >&2
  else
    local rate
    rate=$(awk -v n="$rows" -v s="$secs" 'BEGIN { print (s > 0 ? n / s : 0) }')
    log "  ${secs}s ($(thousands "$rate") rows/s), max RSS $((rss / 1024)) MB, CPU $(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')s; $detail"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$tool" "$run" "$secs" "$rss" "$user" "$sys" \
    "$others" "$load" "${why:+failed: }${why:-ok}" "$detail" | tr -d '\r' >>"$tsv"
}

# ---------------------------------------------------------------------------- run

started=$(date -u '+%Y-%m-%d %H:%M UTC')
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A skipped # tool -> why
for scenario in "${scenarios[@]}"; do
  for tool in $(tools_for "$scenario"); do
    why=$(missing_peer "$tool")
    [[ -z $why ]] || skipped[$tool]=$why
  done
done

: >"$setup_log"
has_my=false has_pg=false
for s in "${scenarios[@]}"; do
  case $s in
    my-*) has_my=true ;;
    pg-pg | diff30-pg) has_pg=true ;;
    diff30-my) has_my=true ;;
  esac
done
! $has_pg || ensure_pg_source
! $has_my || ensure_my_source
if $need_tpg; then
  if target_pg_running; then
    log "reusing the second PostgreSQL instance in $tpg_dir (port $TPG_PORT)"
  else
    log "starting the second PostgreSQL instance in $tpg_dir"
    mkdir -p "$verify_servers"
    start_target_pg
  fi
  ensure_tpg_copies
fi
! $need_replica || ensure_replica
for scenario in "${scenarios[@]}"; do write_job "$scenario"; done

for ((run = 1; run <= runs; run++)); do
  for scenario in "${scenarios[@]}"; do
    for tool in $(tools_for "$scenario"); do
      [[ -z ${skipped[$tool]:-} ]] || continue
      measure "$scenario" "$tool" "$run"
    done
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------- report

ok_lines() { awk -F'\t' '$10 == "ok"' "$tsv"; }
col() { ok_lines | awk -F'\t' -v s="$1" -v t="$2" -v c="$3" '$1 == s && $2 == t { print $c }'; } # SCENARIO TOOL COLUMN
failed_runs() { awk -F'\t' -v s="$1" -v t="$2" '$1 == s && $2 == t && $10 ~ /^failed/ { print $3 "\t" substr($10, 9) }' "$tsv"; }
med_secs() { col "$1" "$2" 4 | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

tool_label() {
  case $1 in
    pontoon) echo "pontoon verify" ;;
    pt-table-checksum) echo "pt-table-checksum" ;;
    floor) echo "floor: count + hash on both sides at once" ;;
  esac
}
scenario_title() {
  case $1 in
    my-my) echo "MariaDB -> its replica (my-my)" ;;
    pg-pg) echo "PostgreSQL -> second instance (pg-pg)" ;;
    diff30-pg) echo "30 differences, PostgreSQL -> second instance (diff30)" ;;
    diff30-my) echo "30 differences, MariaDB -> replica (diff30)" ;;
    my-pg) echo "MariaDB -> PostgreSQL (my-pg)" ;;
  esac
}

# one table row: TOOL label, the scenario's figures
figures_row() { # SCENARIO TOOL [LABEL]
  local s=$1 t=$2 label=${3:-$(tool_label "$2")} secs all rate rss cpu detail
  if [[ -n ${skipped[$t]:-} ]]; then echo "| $label | — | skipped | | | | |"; return; fi
  secs=$(med_secs "$s" "$t")
  if [[ -z $secs ]]; then echo "| $label | — | no valid run (see below) | | | | |"; return; fi
  all=$(ok_lines | awk -F'\t' -v s="$s" -v t="$t" '$1 == s && $2 == t { print $4 ($8 > 0 ? "*" : "") }' | paste -sd' ' -)
  rate=$(awk -v n="$rows" -v s="$secs" 'BEGIN { print (s > 0 ? n / s : 0) }')
  rss=$(col "$s" "$t" 5 | median)
  cpu=$(ok_lines | awk -F'\t' -v s="$s" -v t="$t" '$1 == s && $2 == t { print $6 + $7 }' | median)
  detail=$(col "$s" "$t" 11 | tail -n1 | sed 's/|/\\|/g')
  echo "| $label | $(fmt "$secs" 2) | $all | $(thousands "$rate") | $(fmt "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" 0) | $(fmt "$cpu" 2) | ${detail// /, } |"
}

target_line() { # TEXT MEASURED OP LIMIT [REFERENCE SCENARIO]
  if [[ -n $2 ]]; then echo "- $1: $2 — $(verdict "$2" "$3" "$4")"
  elif [[ -n ${5:-} ]] && ! has "$5" "${scenarios[@]}"; then echo "- $1: not measured (run \`$5\` too: \`--only $5,...\`)"
  else echo "- $1: not measured (no valid run of both)"; fi
}

commands_block() { # SCENARIO
  local s=$1 t
  echo "<details><summary>commands</summary>"
  echo
  echo '```sh'
  for t in $(tools_for "$s"); do
    [[ -n ${skipped[$t]:-} ]] || tool_command "$s" "$t" 1 | mask
  done
  case $s in
    my-my) echo "# $PT_DB.dsns on the master (not replicated) holds the replica's DSN: h=127.0.0.1,P=$REP_PORT" ;;
    diff30-*) echo "# the target is a copy of the equal one with 30 changes, 10 of each: $(cut -d';' -f1-3 <<<"$DIFF_SQL" | sed 's/;/; /g') ..." ;;
  esac
  echo '```'
  echo
  echo '```toml'
  grep -v '^#' "$(job_file "$s")" | mask
  echo '```'
  echo
  echo "</details>"
}

section=$work/verify-section.md
{
  echo
  echo "## $started — verify benchmark, $(thousands "$rows") rows, $runs run(s) each"
  echo
  [[ -n $note ]] && { echo "$note"; echo; }
  echo "- pontoon: $("$pontoon_bin" --version), $built_from; \`[verify] chunk_rows = $chunk_rows\`"
  machine_line
  servers_line
  echo "- second servers, started by the script with the benchmark servers' settings files (another port and paths): a MariaDB replica (\`server_id=2\`, \`log_slave_updates=ON\`, \`replicate_wild_do_table=$SRC.%\` and \`percona.%\`, following the master's binlog) and a second PostgreSQL instance. pontoon reads both servers of each pair; every server shares the same 2 cores."
  if has my-my "${scenarios[@]}" && [[ -z ${skipped[pt-table-checksum]:-} ]]; then
    echo "- peer: $(pt-table-checksum --version 2>&1 | head -n1) (Debian's percona-toolkit)"
  fi
  for tool in "${!skipped[@]}"; do echo "- skipped $tool: ${skipped[$tool]}"; done
  echo "- the table, in every database: \`$DDL\` (MariaDB: InnoDB, utf8mb4_bin), $(thousands "$rows") rows, aid = 2, 4, ... (every other key), filler 84 characters; each copy checked by row count and a comment naming its generation"
  echo "- load average (1/5/15 min) before: $load_before, after: $load_after; runs that started while a compiler, linker or test runner was running (marked *): $(awk -F'\t' '$8 > 0' "$tsv" | wc -l)"
  echo "- seconds = wall clock of the whole command (process start to exit: connecting, planning included) from \`/usr/bin/time -f '%e %M %U %S'\`; rows/s = table rows / median seconds; max RSS and CPU (user + sys) are the command's own (pontoon's, the Perl pt-table-checksum's, the two psql's). **The database servers' CPU is not in these figures**: pt-table-checksum and the floor leave all the work to the servers, pontoon's figures show what it reads and compares itself."
  echo
  for s in "${scenarios[@]}"; do
    echo "### $(scenario_title "$s")"
    echo
    echo "| tool | median s | runs (s) | rows/s | max RSS MB | CPU s | reported (last run) |"
    echo "|---|---:|---|---:|---:|---:|---|"
    p=$(med_secs "$s" pontoon)
    case $s in
      my-my)
        figures_row "$s" pt-table-checksum
        figures_row "$s" pontoon
        echo
        pt=$(med_secs "$s" pt-table-checksum)
        target_line "pontoon >= 2x pt-table-checksum's rows/s" "$([[ -n $p && -n $pt ]] && ratio "$pt" "$p")" ">=" 2
        ;;
      pg-pg)
        figures_row "$s" floor
        figures_row "$s" pontoon
        echo
        fl=$(med_secs "$s" floor)
        target_line "pontoon's seconds <= 1.3x the floor's" "$([[ -n $p && -n $fl ]] && ratio "$p" "$fl")" "<=" 1.3
        ;;
      diff30-pg | diff30-my)
        eq=${s#diff30-}-${s#diff30-}
        has "$eq" "${scenarios[@]}" && figures_row "$eq" pontoon "pontoon verify, equal tables ($eq)"
        figures_row "$s" pontoon "pontoon verify, 30 differences"
        echo
        e=$(med_secs "$eq" pontoon)
        if [[ -n $p ]]; then
          echo "- every difference listed: 30 of 30 in every valid run (\`--json\`: 10 changed, 10 missing, 10 extra; the report file lists 30 lines; exit status 3)"
        fi
        target_line "with 30 differences <= 1.5x the equal-table time" "$([[ -n $p && -n $e ]] && ratio "$p" "$e")" "<=" 1.5 "$eq"
        ;;
      my-pg)
        has my-my "${scenarios[@]}" && figures_row my-my pontoon "pontoon verify, MariaDB -> replica (my-my)"
        figures_row "$s" pontoon "pontoon verify, MariaDB -> PostgreSQL"
        echo
        m=$(med_secs my-my pontoon)
        target_line "cross-engine <= 1.5x the same-engine (my-my) time" "$([[ -n $p && -n $m ]] && ratio "$p" "$m")" "<=" 1.5 my-my
        ;;
    esac
    for t in $(tools_for "$s"); do
      k=$(failed_runs "$s" "$t" | wc -l)
      ((k > 0)) || continue
      echo "- $(tool_label "$t"): $k failed run(s); first: $(failed_runs "$s" "$t" | head -n1 | cut -f2- | mask | sed 's/|/\\|/g')"
    done
    echo
    commands_block "$s"
    echo
  done
} >"$section"

record_section
log "the replica and the second PostgreSQL instance keep running (reused next time): bench/verify.sh --stop stops them and the benchmark servers"
