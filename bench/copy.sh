#!/usr/bin/env bash
# The copy benchmark: pontoon and the peer tools side by side, on the same data, in one run.
#
#   pg-pg    PostgreSQL -> PostgreSQL   pontoon | pgcopydb copy table-data | pg_dump | psql |
#                                       ceiling: psql \copy (binary) | psql \copy (binary)
#   my-pg    MariaDB -> PostgreSQL      pontoon | pgloader
#   my-my    MariaDB -> MariaDB         pontoon | mydumper + myloader
#   lite-pg  SQLite -> PostgreSQL       pontoon | pgloader
#
# for a narrow table (pgbench_accounts-like) and a wide one (numeric, timestamptz, text,
# json, uuid, bytes). Every tool copies the same source table into a fresh, empty target
# database, `--runs` times, interleaved (run 1 of every tool, then run 2, ...); after each
# run the target's row count must equal the source's. Wall seconds, max RSS and CPU
# seconds come from GNU time. The medians and ratios are appended to bench/RESULTS.md.
#
# Usage: bench/copy.sh [options]
#   --rows N[,N...]        source rows (default 100000); e.g. --rows 1000000,5000000
#   --runs N               runs per tool (default 3)
#   --only S[,S...]        scenarios: pg-pg, my-pg, my-my, lite-pg (default: all)
#   --shape S[,S...]       narrow, wide (default: both)
#   --workers N            pontoon `[copy] workers` (default 4)
#   --chunk-rows N         pontoon `[copy] chunk_rows` (default 20000)
#   --commit REV           build pontoon from this commit (`git archive` into the work
#                          directory, its own target dir): results tied to a commit, not
#                          to a working tree others are editing
#   --pontoon PATH         use this pontoon binary (default: build the working tree)
#   --no-record            print the results section, do not append it to RESULTS.md
#   --report FILE          run nothing: write the section from the raw runs of an earlier
#                          (e.g. interrupted) invocation, $PONTOON_BENCH_WORK/runs-*.tsv;
#                          give the same --rows/--shape/--only/--commit as that run
#   --note TEXT            a line of context for the RESULTS.md section
#
# Environment: PONTOON_BENCH_SERVERS (default /tmp/pontoon-bench-servers) is where the
# benchmark's own PostgreSQL and MariaDB run (never the test servers);
# PONTOON_BENCH_WORK (default /tmp/pontoon-bench-work) holds source SQLite files, job files,
# dumps and logs. Run bench/setup.sh first (installs the peers from Debian's packages).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

# ---------------------------------------------------------------------------- options

rows_list=100000
runs=3
rows_arg=""
only=pg-pg,my-pg,my-my,lite-pg
shapes=narrow,wide
workers=4
chunk_rows=20000
pontoon_bin=""
commit_rev=""
record=true
note=""
report_from=""
while (($#)); do
  case $1 in
    --rows) rows_list=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --shape) shapes=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --chunk-rows) chunk_rows=$2; shift 2 ;;
    --pontoon) pontoon_bin=$2; shift 2 ;;
    --commit) commit_rev=$2; shift 2 ;;
    --no-record) record=false; shift ;;
    --report) report_from=$(readlink -f "$2"); shift 2 ;;
    --note) note=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done
rows_arg=$rows_list
IFS=, read -r -a rows_list <<<"$rows_list"
IFS=, read -r -a scenarios <<<"$only"
IFS=, read -r -a shapes <<<"$shapes"
for s in "${scenarios[@]}"; do
  [[ $s =~ ^(pg-pg|my-pg|my-my|lite-pg)$ ]] || { echo "unknown scenario: $s" >&2; exit 2; }
done
for s in "${shapes[@]}"; do
  [[ $s =~ ^(narrow|wide)$ ]] || { echo "unknown shape: $s" >&2; exit 2; }
done
for n in "${rows_list[@]}" "$runs" "$workers" "$chunk_rows"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "not a positive number: $n" >&2; exit 2; }
done

servers_dir=${PONTOON_BENCH_SERVERS:-/tmp/pontoon-bench-servers}
work=${PONTOON_BENCH_WORK:-/tmp/pontoon-bench-work}
results_md="$here/RESULTS.md"
mkdir -p "$work/jobs" "$work/logs"

[[ -x /usr/bin/time ]] || { echo "GNU time is missing: run bench/setup.sh" >&2; exit 1; }

# log, the lock, the build, the servers, SQL clients, masking, report helpers
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

bench_lock

# ---------------------------------------------------------------------------- build, servers

build_pontoon
start_servers

# ---------------------------------------------------------------------------- source data

# Bump when the generated data changes: sources of another version are regenerated.
GEN=v1

pg_ddl() { # SHAPE
  case $1 in
    narrow) echo "CREATE TABLE narrow (aid int PRIMARY KEY, bid int, abalance int, filler char(84))" ;;
    wide) echo "CREATE TABLE wide (id bigint PRIMARY KEY, amount numeric(12,2), created_at timestamptz," \
      "note text, doc jsonb, ref uuid, blob bytea)" ;;
  esac
}

my_ddl() { # SHAPE
  case $1 in
    narrow) echo "CREATE TABLE narrow (aid int PRIMARY KEY, bid int, abalance int, filler char(84))" ;;
    wide) echo "CREATE TABLE wide (id bigint PRIMARY KEY, amount decimal(12,2), created_at timestamp(6) NULL," \
      "note text, doc json, ref uuid, \`blob\` varbinary(32))" ;;
  esac
}

lite_ddl() { # SHAPE
  case $1 in
    narrow) echo "CREATE TABLE narrow (aid INTEGER PRIMARY KEY, bid INT, abalance INT, filler CHAR(84))" ;;
    wide) echo "CREATE TABLE wide (id INTEGER PRIMARY KEY, amount DECIMAL_TEXT(12,2), created_at TIMESTAMPTZ," \
      "note TEXT, doc JSON_TEXT, ref UUID, blob BLOB)" ;;
  esac
}

# The same values in every engine, as far as the engines allow: filler is 84 characters;
# note ~100 characters; doc a small JSON object; ref a version-4-shaped UUID (MariaDB
# refuses UUIDs with an unknown version); blob 32 bytes.
lorem="lorem ipsum dolor sit amet, consectetur adipiscing elit "

pg_fill() { # SHAPE ROWS
  case $1 in
    narrow) echo "INSERT INTO narrow SELECT g, (g - 1) / 100000 + 1, (g::bigint * 7919) % 100000 - 50000, lpad(g::text, 84, '-')
      FROM generate_series(1, $2) g" ;;
    wide) echo "INSERT INTO wide SELECT g, ((g * 7919) % 100000000) / 100.0,
        timestamptz '2020-01-01 00:00:00+00' + g * interval '1 second' + ((g * 7919) % 1000000) * interval '1 microsecond',
        rpad('note ' || g || ': ', 100, '$lorem'),
        jsonb_build_object('id', g, 'tag', 'tag-' || (g % 100), 'qty', g % 17, 'ok', g % 2 = 0),
        (substr(h, 1, 12) || '4' || substr(h, 14, 3) || '8' || substr(h, 18))::uuid,
        decode(h || md5((g + 1)::text), 'hex')
      FROM generate_series(1::bigint, $2) g, LATERAL md5(g::text) h" ;;
  esac
}

my_fill() { # SHAPE ROWS
  case $1 in
    narrow) echo "INSERT INTO narrow SELECT seq, (seq - 1) DIV 100000 + 1, CAST((seq * 7919) % 100000 AS SIGNED) - 50000, LPAD(seq, 84, '-')
      FROM seq_1_to_$2" ;;
    wide) echo "SET time_zone = '+00:00';
      INSERT INTO wide SELECT seq, ((seq * 7919) % 100000000) / 100,
        TIMESTAMP '2020-01-01 00:00:00' + INTERVAL seq SECOND + INTERVAL ((seq * 7919) % 1000000) MICROSECOND,
        RPAD(CONCAT('note ', seq, ': '), 100, '$lorem'),
        JSON_OBJECT('id', seq, 'tag', CONCAT('tag-', seq % 100), 'qty', seq % 17, 'ok', seq % 2 = 0),
        CONCAT(SUBSTR(MD5(seq), 1, 12), '4', SUBSTR(MD5(seq), 14, 3), '8', SUBSTR(MD5(seq), 18)),
        UNHEX(CONCAT(MD5(seq), MD5(seq + 1)))
      FROM seq_1_to_$2" ;;
  esac
}

lite_fill() { # SHAPE ROWS
  local dashes
  dashes=$(printf '%084d' 0 | tr 0 -)
  case $1 in
    narrow) echo "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < $2)
      INSERT INTO narrow SELECT g, (g - 1) / 100000 + 1, (g * 7919) % 100000 - 50000,
        substr('$dashes', 1, 84 - length(g)) || g FROM s;" ;;
    wide) echo "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < $2)
      INSERT INTO wide SELECT g,
        printf('%d.%02d', ((g * 7919) % 100000000) / 100, (g * 7919) % 100),
        strftime('%Y-%m-%d %H:%M:%S', 1577836800 + g, 'unixepoch') || printf('.%06d', (g * 7919) % 1000000) || '+00:00',
        substr('note ' || g || ': ' || '$lorem$lorem', 1, 100),
        json_object('id', g, 'tag', 'tag-' || (g % 100), 'qty', g % 17, 'ok', json(CASE WHEN g % 2 = 0 THEN 'true' ELSE 'false' END)),
        printf('%08x-%04x-4%03x-8%03x-%012x', g, g % 65536, (g * 7) % 4096, (g * 13) % 4096, g * 7919),
        randomblob(32)
      FROM s;" ;;
  esac
}

# Source names: one database (or file) per shape and size, generated once and reused.
src_db() { echo "src_${1}_$2"; } # SHAPE ROWS
lite_file() { echo "$work/src_${1}_$2.$GEN.sqlite"; }

ensure_pg_source() { # SHAPE ROWS
  local shape=$1 rows=$2 db
  db=$(src_db "$1" "$2")
  if [[ $(pg_sql postgres "SELECT 1 FROM pg_database WHERE datname = '$db'") == 1 &&
    $(pg_sql "$db" "SELECT obj_description('$shape'::regclass, 'pg_class')" 2>/dev/null) == "pontoon-bench $GEN rows=$rows" ]]; then
    return
  fi
  log "generating PostgreSQL source $db"
  pg_sql postgres "DROP DATABASE IF EXISTS $db WITH (FORCE)" "CREATE DATABASE $db OWNER $bench_user"
  pg_sql "$db" "$(pg_ddl "$shape")" "ALTER TABLE $shape OWNER TO $bench_user" "$(pg_fill "$shape" "$rows")" \
    "VACUUM (FREEZE, ANALYZE) $shape" "COMMENT ON TABLE $shape IS 'pontoon-bench $GEN rows=$rows'" "CHECKPOINT"
}

ensure_my_source() { # SHAPE ROWS
  local shape=$1 rows=$2 db
  db=$(src_db "$1" "$2")
  if [[ $(my_sql "SELECT table_comment FROM information_schema.tables WHERE table_schema = '$db' AND table_name = '$shape'") == "pontoon-bench $GEN rows=$rows" ]]; then
    return
  fi
  log "generating MariaDB source $db"
  my_sql "DROP DATABASE IF EXISTS $db; CREATE DATABASE $db CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
  my_sql "SET sql_log_bin = 0; $(my_ddl "$shape") ENGINE=InnoDB; $(my_fill "$shape" "$rows");
    ANALYZE TABLE $shape; ALTER TABLE $shape COMMENT = 'pontoon-bench $GEN rows=$rows'" "$db" >/dev/null
}

ensure_lite_source() { # SHAPE ROWS
  local file
  file=$(lite_file "$1" "$2")
  [[ -f $file ]] && return
  log "generating SQLite source $file"
  rm -f "$file.tmp"
  sqlite3 "$file.tmp" "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; $(lite_ddl "$1"); $(lite_fill "$1" "$2")" >/dev/null
  mv "$file.tmp" "$file"
}

# ---------------------------------------------------------------------------- targets

DST=bench_dst

reset_pg_target() {
  pg_sql postgres "DROP DATABASE IF EXISTS $DST WITH (FORCE)" "CREATE DATABASE $DST OWNER $bench_user" "CHECKPOINT"
}
reset_my_target() {
  # Binlogs are on (as for the tests); every tool's writes are logged. Old ones are dropped
  # so they do not fill the disk over many runs.
  my_sql "DROP DATABASE IF EXISTS $DST; CREATE DATABASE $DST CHARACTER SET utf8mb4 COLLATE utf8mb4_bin; RESET MASTER"
}

# Rows in the target table, wherever the tool put it (pgloader puts a MariaDB source's
# tables in a schema named after the source database).
pg_target_count() { # TABLE
  local qualified
  qualified=$(pg_sql "$DST" "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
    WHERE tablename = '$1' AND schemaname NOT IN ('pg_catalog', 'information_schema')")
  if [[ -z $qualified || $qualified == *$'\n'* ]]; then echo "no-table"; return; fi
  pg_sql "$DST" "SELECT count(*) FROM $qualified"
}
my_target_count() { # TABLE
  my_sql "SELECT COUNT(*) FROM $DST.\`$1\`" 2>/dev/null || echo "no-table"
}

# ---------------------------------------------------------------------------- pontoon jobs

write_job() { # FILE SOURCE_URL TARGET_URL
  cat >"$1" <<EOF
# written by bench/copy.sh; the password comes from the environment
[source]
url = "$2"

[target]
url = "$3"

[copy]
workers = $workers
chunk_rows = $chunk_rows
EOF
}

# ---------------------------------------------------------------------------- measuring

# Raw figures, one line per attempt: scenario shape rows tool run seconds max_rss_kb user_s
# sys_s others load1 status, where `others` counts compilers/linkers/test runners running
# when the attempt started and status is `ok` or `failed: why`. The report reads only this.
if [[ -n $report_from ]]; then
  tsv=$report_from
  [[ -f $tsv ]] || { echo "no such file: $tsv" >&2; exit 2; }
else
  tsv=$work/runs-$(date +%Y%m%d-%H%M%S).tsv
  : >"$tsv"
fi
declare -A failures # "scenario shape rows tool" set: every attempt of a run failed, skip the rest

# measure SCENARIO SHAPE ROWS TOOL RUN TABLE COUNTER COMMAND
# Runs COMMAND (a bash string, pipefail on) under GNU time, checks the target's row count
# with COUNTER, appends a line to the TSV. A failed attempt (non-zero exit, or a target
# without every row) is retried on a fresh target, up to $max_attempts attempts; every
# failure is counted and reported. A measurement that fails every attempt voids the tool's
# result for that table.
max_attempts=3
measure() {
  local scenario=$1 shape=$2 rows=$3 tool=$4 run=$5 table=$6 counter=$7 cmd=$8
  local key="$scenario $shape $rows $tool" attempt why
  [[ -n ${failures[$key]:-} ]] && return 0
  for ((attempt = 1; attempt <= max_attempts; attempt++)); do
    if ((attempt > 1)); then
      log "  retrying on a fresh target (attempt $attempt of $max_attempts)"
      prepare_target "$scenario" "$shape" "$rows" "$tool"
    fi
    measure_once "$@" "$attempt" && return 0
  done
  failures[$key]=failed
}

# measure_once ... ATTEMPT: one attempt of `measure`; appends its line to the TSV and
# fails when the attempt did.
measure_once() {
  local scenario=$1 shape=$2 rows=$3 tool=$4 run=$5 table=$6 counter=$7 cmd=$8 attempt=$9
  local logf="$work/logs/$scenario-$shape-$rows-$tool-$run.log" timef="$work/logs/time.out"
  ((attempt == 1)) || logf=${logf%.log}-attempt$attempt.log
  sync
  sleep 1
  local others load
  others=$(other_load)
  load=$(cut -d' ' -f1 /proc/loadavg)
  log "$scenario $shape $rows: $tool, run $run"
  local status=0
  /usr/bin/time -f '%e %M %U %S' -o "$timef" \
    timeout $((1800 + rows / 500)) bash -o pipefail -c "$cmd" >"$logf" 2>&1 || status=$?
  local secs rss user sys
  read -r secs rss user sys < <(tail -n1 "$timef")
  local copied why=""
  copied=$("$counter" "$table")
  if ((status != 0)); then
    log "  FAILED: exit status $status; last lines of $logf:"
    tail -n 5 "$logf" | mask | cut -c1-300 >&2
    # the first line that names the failure, else the last one
    local line
    line=$(grep -m1 -iE 'fatal|error|exhausted|critical|deadlock' "$logf" || grep -v '^\s*$' "$logf" | tail -n1 || true)
    why="exit status $status: $(mask <<<"$line" | cut -c1-200)"
  elif [[ $copied != "$rows" ]]; then
    log "  FAILED: target has $copied rows, the source $rows"
    why="exit status 0 but the target has $copied rows of $rows"
  elif [[ $tool == pontoon ]]; then
    local reported
    reported=$(tail -n1 "$logf" | sed -n 's/^{"rows":\([0-9]*\).*/\1/p')
    if [[ $reported != "$rows" ]]; then
      log "  FAILED: pontoon reported ${reported:-no} rows"
      why="pontoon reported ${reported:-no} rows of $rows"
    fi
  fi
  why=${why//$'\t'/ }
  if [[ -z $why ]]; then
    log "  ${secs}s, max RSS $((rss / 1024)) MB, CPU $(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')s"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
    "$scenario" "$shape" "$rows" "$tool" "$run" "$secs" "$rss" "$user" "$sys" "$others" "$load" \
    "${why:+failed: }${why:-ok}" | tr -d '\r' >>"$tsv"
  [[ -z $why ]]
}

have() { command -v "$1" >/dev/null; }

tools_for() { # SCENARIO
  case $1 in
    pg-pg) echo "pontoon pgcopydb pg_dump ceiling" ;;
    my-pg) echo "pontoon pgloader" ;;
    my-my) echo "pontoon mydumper" ;;
    lite-pg) echo "pontoon pgloader" ;;
  esac
}

# Where a peer comes from; empty when it is installed.
missing_peer() { # TOOL
  case $1 in
    pgcopydb) have pgcopydb || echo "pgcopydb is not installed (bench/setup.sh)" ;;
    pgloader) have pgloader || echo "pgloader is not installed (bench/setup.sh)" ;;
    mydumper) { have mydumper && have myloader; } || echo "mydumper/myloader are not installed (bench/setup.sh)" ;;
  esac
}

# prepare_target SCENARIO SHAPE ROWS TOOL: a fresh, empty target (and a clean work area and
# state file) for one copy.
#
# pg-pg: pontoon, pgcopydb and the ceiling write into the same pre-created table (with its
# primary key); pg_dump | psql creates its own and adds the key after loading, as it does.
# my-my: pontoon writes into a pre-created copy of the source table; myloader creates its
# own from the dump. my-pg, lite-pg: pontoon and pgloader both create their own tables.
prepare_target() {
  local scenario=$1 shape=$2 rows=$3 tool=$4 job
  job=$(job_file "$scenario" "$shape" "$rows")
  case $scenario in
    my-my) reset_my_target ;;
    *) reset_pg_target ;;
  esac
  case "$scenario/$tool" in
    pg-pg/pontoon | pg-pg/pgcopydb | pg-pg/ceiling)
      pg_sql "$DST" "$(pg_ddl "$shape")" "ALTER TABLE $shape OWNER TO $bench_user"
      ;;
    my-my/pontoon)
      my_sql "$(my_ddl "$shape") ENGINE=InnoDB" "$DST"
      ;;
  esac
  case $tool in
    pontoon) rm -f "${job%.toml}.pontoon.db"{,-wal,-shm,-journal} ;;
    pgcopydb) rm -rf "$work/pgcopydb" ;;
    pgloader) rm -rf "$work/pgloader" ;;
    mydumper) rm -rf "$work/dump" ;;
  esac
}

job_file() { echo "$work/jobs/$1-$2-$3.toml"; } # SCENARIO SHAPE ROWS

# tool_command SCENARIO SHAPE ROWS TOOL: the command that copies (a bash string; no
# password in it but pgloader's MariaDB URL, masked wherever it is shown).
tool_command() {
  local scenario=$1 shape=$2 rows=$3 tool=$4 src job
  src=$(src_db "$shape" "$rows")
  job=$(job_file "$scenario" "$shape" "$rows")
  case "$scenario/$tool" in
    */pontoon)
      case $scenario in
        pg-pg) write_job "$job" "$(pg_job_url "$src")" "$(pg_job_url "$DST")" ;;
        my-pg) write_job "$job" "$(my_job_url "$src")" "$(pg_job_url "$DST")" ;;
        my-my) write_job "$job" "$(my_job_url "$src")" "$(my_job_url "$DST")" ;;
        lite-pg) write_job "$job" "sqlite:$(lite_file "$shape" "$rows")" "$(pg_job_url "$DST")" ;;
      esac
      echo "$pontoon_bin copy $job --json"
      ;;
    pg-pg/pgcopydb)
      # Same parallelism as pontoon: --table-jobs = workers, and the table split in as many
      # parts (pgcopydb copies a table with one job unless it is split).
      local size split
      size=$(pg_sql "$src" "SELECT pg_table_size('$shape')")
      split=$(((size / 1024 + workers - 1) / workers))kB
      echo "pgcopydb copy table-data --source $(pg_url "$src") --target $(pg_url $DST)" \
        "--table-jobs $workers --split-tables-larger-than $split --dir $work/pgcopydb"
      ;;
    pg-pg/pg_dump)
      echo "pg_dump -t $shape $(pg_url "$src") | psql -X -q -v ON_ERROR_STOP=1 $(pg_url $DST)"
      ;;
    pg-pg/ceiling)
      echo "psql -X $(pg_url "$src") -c '\\copy $shape to stdout (format binary)'" \
        "| psql -X -v ON_ERROR_STOP=1 $(pg_url $DST) -c '\\copy $shape from stdin (format binary)'"
      ;;
    my-pg/pgloader)
      echo "pgloader --root-dir $work/pgloader --logfile $work/pgloader/pgloader.log" \
        "mysql://$bench_user:$bench_password@127.0.0.1:$MY_PORT/$src $(pg_url $DST)"
      ;;
    my-my/mydumper)
      # Binlogs stay on for both tools: myloader turns them off unless --enable-binlog.
      local conn="--defaults-file=$my_cnf -h 127.0.0.1 -P $MY_PORT"
      echo "mydumper $conn -B $src -T $shape --threads 2 --rows $chunk_rows -o $work/dump" \
        "&& myloader $conn -d $work/dump -B $DST --threads 2 --enable-binlog --overwrite-tables"
      ;;
    lite-pg/pgloader)
      # pgloader does not know pontoon's SQLite type names: DECIMAL_TEXT becomes numeric (as
      # pontoon makes it), JSON_TEXT text (as pgloader makes MariaDB's json; pontoon makes
      # jsonb, which costs the server a parse).
      echo "pgloader --root-dir $work/pgloader --logfile $work/pgloader/pgloader.log" \
        "--cast 'type decimal_text to numeric keep typemod' --cast 'type json_text to text'" \
        "sqlite://$(lite_file "$shape" "$rows") $(pg_url $DST)"
      ;;
  esac
}

# run_tool SCENARIO SHAPE ROWS TOOL RUN: one measured copy into a fresh target.
run_tool() {
  local scenario=$1 shape=$2 rows=$3 tool=$4 counter=pg_target_count
  [[ $scenario == my-my ]] && counter=my_target_count
  prepare_target "$scenario" "$shape" "$rows" "$tool"
  measure "$@" "$shape" "$counter" "$(tool_command "$scenario" "$shape" "$rows" "$tool")"
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

if [[ -n $report_from ]]; then
  # The run's start, from the file name runs-YYYYmmdd-HHMMSS.tsv.
  stamp=$(basename "$tsv" .tsv)
  stamp=${stamp#runs-}
  started="$(date -u -d "${stamp:0:8} ${stamp:9:2}:${stamp:11:2}" '+%Y-%m-%d %H:%M UTC' 2>/dev/null || echo "$stamp")"
  load_before="not recorded"
  rows_list=() # the sizes of the file, in the order asked
  for rows in ${rows_arg//,/ }; do
    if awk -F'\t' -v r="$rows" '$3 == r { found = 1 } END { exit !found }' "$tsv"; then rows_list+=("$rows"); fi
  done
  ((${#rows_list[@]} > 0)) || { echo "$tsv has no runs of --rows $rows_arg" >&2; exit 2; }
fi

for rows in "${rows_list[@]}"; do
  [[ -z $report_from ]] || break
  for shape in "${shapes[@]}"; do
    for scenario in "${scenarios[@]}"; do
      case $scenario in
        pg-pg) ensure_pg_source "$shape" "$rows" ;;
        my-pg | my-my) ensure_my_source "$shape" "$rows" ;;
        lite-pg) ensure_lite_source "$shape" "$rows" ;;
      esac
    done
    for ((run = 1; run <= runs; run++)); do
      for scenario in "${scenarios[@]}"; do
        for tool in $(tools_for "$scenario"); do
          why=$(missing_peer "$tool")
          if [[ -n $why ]]; then
            skipped[$tool]=$why
            continue
          fi
          run_tool "$scenario" "$shape" "$rows" "$tool" "$run"
        done
      done
    done
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
[[ -z $report_from ]] || load_after="not recorded"

# ---------------------------------------------------------------------------- report

# column COL of the successful attempts in the TSV for one scenario/shape/rows/tool (a file
# written before the status column existed has only successful ones)
col() { awk -F'\t' -v s="$1" -v h="$2" -v r="$3" -v t="$4" -v c="$5" '$1 == s && $2 == h && $3 == r && $4 == t && ($12 == "" || $12 == "ok") { print $c }' "$tsv"; }
# the failed attempts: "run<TAB>why" lines
failed_col() { awk -F'\t' -v s="$1" -v h="$2" -v r="$3" -v t="$4" '$1 == s && $2 == h && $3 == r && $4 == t && $12 ~ /^failed/ { print $5 "\t" substr($12, 9) }' "$tsv"; }
# runs with failed attempts and no successful one: the tool's result is void
void_runs() { awk -F'\t' -v s="$1" -v h="$2" -v r="$3" -v t="$4" '$1 == s && $2 == h && $3 == r && $4 == t { if ($12 == "" || $12 == "ok") ok[$5] = 1; else bad[$5] = 1 } END { for (k in bad) if (!(k in ok)) print k }' "$tsv"; }

tool_label() {
  case $1 in
    pontoon) echo "pontoon" ;;
    pgcopydb) echo "pgcopydb copy table-data" ;;
    pg_dump) echo "pg_dump \\| psql" ;;
    ceiling) echo "ceiling: psql \\\\copy binary \\| psql" ;;
    pgloader) echo "pgloader" ;;
    mydumper) echo "mydumper + myloader" ;;
  esac
}

# ratio: pontoon's rows/s over the tool's (= the tool's seconds over pontoon's)
declare -A med_secs med_rss med_cpu
summarize() { # SCENARIO SHAPE ROWS TOOL
  local k="$1 $2 $3 $4"
  med_secs[$k]=$(col "$@" 6 | median)
  med_rss[$k]=$(col "$@" 7 | median)
  med_cpu[$k]=$(awk -F'\t' -v s="$1" -v h="$2" -v r="$3" -v t="$4" '$1 == s && $2 == h && $3 == r && $4 == t && ($12 == "" || $12 == "ok") { print $8 + $9 }' "$tsv" | median)
}

target_lines() { # SCENARIO SHAPE ROWS
  local p="$1 $2 $3 pontoon" ps
  ps=${med_secs[$p]:-}
  [[ -n $ps ]] || { echo "- pontoon has no valid run: no ratio"; return; }
  ratio() { awk -v a="${med_secs[$1 $2 $3 $4]}" -v b="$ps" 'BEGIN { printf "%.2f", a / b }'; }
  has() { [[ -n ${med_secs[$1 $2 $3 $4]:-} ]]; }
  case $1 in
    pg-pg)
      if has "$1" "$2" "$3" pgcopydb; then
        local r; r=$(ratio "$1" "$2" "$3" pgcopydb)
        echo "- pontoon >= 1.5x pgcopydb: ${r}x — $(verdict "$r" ">=" 1.5)"
      else echo "- pontoon >= 1.5x pgcopydb: no valid pgcopydb run"; fi
      if has "$1" "$2" "$3" ceiling; then
        local r; r=$(ratio "$1" "$2" "$3" ceiling)
        echo "- pontoon >= 0.85 of the ceiling: ${r} — $(verdict "$r" ">=" 0.85)"
      else echo "- pontoon >= 0.85 of the ceiling: no valid ceiling run"; fi
      ;;
    my-pg)
      if has "$1" "$2" "$3" pgloader; then
        local r m; r=$(ratio "$1" "$2" "$3" pgloader)
        m=$(awk -v a="${med_rss[$p]}" -v b="${med_rss[$1 $2 $3 pgloader]}" 'BEGIN { printf "%.2f", a / b }')
        echo "- pontoon >= 4x pgloader's rows/s: ${r}x — $(verdict "$r" ">=" 4)"
        echo "- pontoon's max RSS <= 1/4 of pgloader's: ${m} of it — $(verdict "$m" "<=" 0.25)"
      else echo "- pontoon >= 4x pgloader: no valid pgloader run"; fi
      ;;
    my-my)
      if has "$1" "$2" "$3" mydumper; then
        local r; r=$(ratio "$1" "$2" "$3" mydumper)
        echo "- pontoon >= 1.2x mydumper + myloader: ${r}x — $(verdict "$r" ">=" 1.2)"
      else echo "- pontoon >= 1.2x mydumper + myloader: no valid run of the peer"; fi
      ;;
    lite-pg)
      if has "$1" "$2" "$3" pgloader; then
        local r; r=$(ratio "$1" "$2" "$3" pgloader)
        echo "- pontoon >= 3x pgloader: ${r}x — $(verdict "$r" ">=" 3)"
      else echo "- pontoon >= 3x pgloader: no valid pgloader run"; fi
      ;;
  esac
}

scenario_title() {
  case $1 in
    pg-pg) echo "PostgreSQL -> PostgreSQL" ;;
    my-pg) echo "MariaDB -> PostgreSQL" ;;
    my-my) echo "MariaDB -> MariaDB" ;;
    lite-pg) echo "SQLite -> PostgreSQL" ;;
  esac
}

version_of() {
  case $1 in
    pgcopydb) pgcopydb --version 2>&1 | sed -n 's/.*pgcopydb version \([^ ]*\).*/\1/p' | head -n1 ;;
    pgloader) pgloader --version 2>&1 | sed -n 's/^pgloader version "\(.*\)"/\1/p' | head -n1 ;;
    mydumper) mydumper --version 2>&1 | awk '{ print $2 }' | tr -d ',' ;;
    sqlite3) sqlite3 --version | awk '{ print $1 }' ;;
  esac
}

section=$work/section.md
{
  echo
  echo "## $started — copy benchmark, rows: $(for r in "${rows_list[@]}"; do thousands "$r"; done | paste -sd/ -), $runs run(s) each"
  echo
  [[ -n $note ]] && { echo "$note"; echo; }
  [[ -z $report_from ]] || { echo "Written afterwards with \`--report\` from the raw runs in $(basename "$tsv") (an interrupted invocation); the load averages were not recorded."; echo; }
  echo "- pontoon: $("$pontoon_bin" --version), $built_from; \`workers = $workers\`, \`chunk_rows = $chunk_rows\`"
  machine_line
  servers_line
  echo "- peers: pgcopydb $(version_of pgcopydb || true), pgloader $(version_of pgloader || true), mydumper/myloader $(version_of mydumper || true), sqlite3 $(version_of sqlite3 || true)"
  for tool in "${!skipped[@]}"; do echo "- skipped $tool: ${skipped[$tool]}"; done
  echo "- load average (1/5/15 min) before: $load_before, after: $load_after; measurements that started while a compiler, linker or test runner was running (marked * in the runs column): $(awk -F'\t' -v r=" ${rows_list[*]} " -v h=" ${shapes[*]} " -v s=" ${scenarios[*]} " 'index(r, " " $3 " ") && index(h, " " $2 " ") && index(s, " " $1 " ") && $10 > 0' "$tsv" | wc -l)"
  echo "- seconds = wall clock of the whole command (process start to exit) from \`/usr/bin/time -f '%e %M %U %S'\`; max RSS is the largest single process of the command (a pipeline's or dump+load's biggest member); CPU = user + sys of the command and all its children. **The database servers' CPU is not in these figures** (both sides run on the same 2 cores)."
  echo
  for rows in "${rows_list[@]}"; do
    for shape in "${shapes[@]}"; do
      for scenario in "${scenarios[@]}"; do
        echo "### $(scenario_title "$scenario"), $shape, $(thousands "$rows") rows"
        echo
        echo "| tool | median s | runs (s) | rows/s | max RSS MB | CPU s | pontoon's rows/s ÷ tool's |"
        echo "|---|---:|---|---:|---:|---:|---:|"
        for tool in $(tools_for "$scenario"); do
          k="$scenario $shape $rows $tool"
          [[ -n ${skipped[$tool]:-} ]] && { echo "| $(tool_label "$tool") | — | skipped | | | | |"; continue; }
          void=$(void_runs "$scenario" "$shape" "$rows" "$tool" | sort -n | paste -sd, -)
          if [[ -n $void ]]; then
            echo "| $(tool_label "$tool") | — | FAILED in run(s) $void (every attempt; see below) | | | | |"
            continue
          fi
          summarize "$scenario" "$shape" "$rows" "$tool"
          s=${med_secs[$k]}
          [[ -n $s ]] || { echo "| $(tool_label "$tool") | — | no run | | | | |"; continue; }
          # every run's seconds; * = a compiler, linker or test runner was running
          all=$(awk -F'\t' -v s="$scenario" -v h="$shape" -v r="$rows" -v t="$tool" \
            '$1 == s && $2 == h && $3 == r && $4 == t && ($12 == "" || $12 == "ok") { print $6 ($10 > 0 ? "*" : "") }' "$tsv" | paste -sd' ' -)
          rate=$(awk -v n="$rows" -v s="$s" 'BEGIN { print (s > 0 ? n / s : 0) }')
          ratio="—"
          ps=${med_secs[$scenario $shape $rows pontoon]:-}
          if [[ $tool != pontoon && -n $ps ]]; then ratio="$(awk -v a="$s" -v b="$ps" 'BEGIN { printf "%.2f", a / b }')x"; fi
          echo "| $(tool_label "$tool") | $(fmt "$s" 2) | $all | $(thousands "$rate") | $(fmt "$(awk -v k="${med_rss[$k]}" 'BEGIN { print k / 1024 }')" 0) | $(fmt "${med_cpu[$k]}" 2) | $ratio |"
        done
        echo
        target_lines "$scenario" "$shape" "$rows"
        for tool in $(tools_for "$scenario"); do
          n=$(failed_col "$scenario" "$shape" "$rows" "$tool" | wc -l)
          ((n > 0)) || continue
          first=$(failed_col "$scenario" "$shape" "$rows" "$tool" | head -n1 | cut -f2-)
          echo "- $(tool_label "$tool"): $n failed attempt(s) (each retried on a fresh target, up to $max_attempts per run); first: $(mask <<<"$first" | sed 's/|/\\|/g')"
        done
        echo
        echo "<details><summary>commands</summary>"
        echo
        echo '```sh'
        for tool in $(tools_for "$scenario"); do
          [[ -n ${skipped[$tool]:-} ]] || tool_command "$scenario" "$shape" "$rows" "$tool" | mask
        done
        echo '```'
        job=$(job_file "$scenario" "$shape" "$rows")
        if [[ -f $job ]]; then
          echo
          echo '```toml'
          grep -v '^#' "$job" | mask
          echo '```'
        fi
        echo
        echo "</details>"
        echo
      done
    done
  done
} >"$section"

record_section
