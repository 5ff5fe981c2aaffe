# Shared by the benchmark scripts (bench/copy.sh, bench/sync.sh, bench/verify.sh); sourced, not run.
#
# Defines functions only. The caller sets `here` (bench/), `root` (the checkout) and `work`
# ($PONTOON_BENCH_WORK) before calling them. What the functions set for the caller:
#
#   bench_lock                 holds $work/lock on fd 9 until exit (one benchmark at a time)
#   build_pontoon              from commit_rev / pontoon_bin: sets pontoon_bin, built_from,
#                              target_dir (and builds pontoon-test-servers in the checkout)
#   start_servers              starts (or reuses) the benchmark servers in $servers_dir and
#                              exports their PG_* / MY_* variables; sets bench_user,
#                              bench_password, PGPASSWORD, BENCH_DB_PASSWORD, my_cnf
#   pg_sql, my_sql, pg_url, pg_job_url, my_job_url, mask
#   other_load, median, thousands, fmt, verdict, machine_line, servers_line
#   record_section             prints $section and appends it to $results_md (unless --no-record)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# One benchmark at a time: two at once share the servers, the target databases, the work
# directory and the two cores, and spoil each other's numbers (or fail). Held until exit,
# the build included (a compilation during another run's measurements spoils them too).
bench_lock() {
  exec 9>>"$work/lock"
  if ! flock -n 9; then
    log "another benchmark (bench/copy.sh, sync.sh or verify.sh) is running (it holds $work/lock); waiting for it to finish"
    flock 9
  fi
}

# build_pontoon: the pontoon binary the benchmark runs, from `commit_rev` (--commit),
# `pontoon_bin` (--pontoon) or else the working tree.
build_pontoon() {
  target_dir=${CARGO_TARGET_DIR:-$root/target}
  built_from="" # how the pontoon binary was made, for RESULTS.md
  if [[ -n $commit_rev ]]; then
    [[ -z $pontoon_bin ]] || { echo "--commit and --pontoon exclude each other" >&2; exit 2; }
    local rev src
    rev=$(git -C "$root" rev-parse --verify --quiet "$commit_rev^{commit}") || { echo "no such commit: $commit_rev" >&2; exit 2; }
    src=$work/src-${rev:0:12}
    if [[ ! -f $src/Cargo.toml ]]; then
      log "exporting commit ${rev:0:12} to $src"
      rm -rf "$src.tmp" && mkdir -p "$src.tmp"
      git -C "$root" archive "$rev" | tar -x -C "$src.tmp"
      mv "$src.tmp" "$src"
    fi
    # A target dir per commit. Never share one between exports of different commits: cargo
    # identifies a workspace crate by its path relative to the workspace root and judges
    # freshness by mtimes, and `git archive` stamps files with the commit's time, so an older
    # commit's sources look older than a newer commit's artifacts and are not recompiled
    # (this produced a binary mixing two commits' crates once).
    log "building pontoon at ${rev:0:12} (release, target dir $work/target-${rev:0:12})"
    (cd "$src" && CARGO_TARGET_DIR=$work/target-${rev:0:12} cargo build --release --quiet -p pontoon)
    pontoon_bin=$work/target-${rev:0:12}/release/pontoon
    built_from="built from commit ${rev:0:12} (git archive, no uncommitted changes)"
  elif [[ -z $pontoon_bin ]]; then
    log "building pontoon (release) from the working tree"
    (cd "$root" && cargo build --release --quiet -p pontoon)
    pontoon_bin=$target_dir/release/pontoon
    local head
    head=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ -n $(git -C "$root" --no-optional-locks status --porcelain --untracked-files=no 2>/dev/null || true) ]]; then
      built_from="built from the working tree at $head, with uncommitted changes"
    else
      built_from="built from commit $head"
    fi
  else
    built_from="binary given with --pontoon ($pontoon_bin, modified $(date -u -r "$pontoon_bin" '+%Y-%m-%d %H:%M UTC'))"
  fi
  # The server launcher always comes from this checkout.
  (cd "$root" && cargo build --release --quiet -p pontoon-testsupport --bin pontoon-test-servers)
  pontoon_bin=$(readlink -f "$pontoon_bin")
  [[ -x $pontoon_bin ]] || { echo "no pontoon binary at $pontoon_bin" >&2; exit 1; }
}

start_servers() {
  log "starting (or reusing) the benchmark servers in $servers_dir"
  # (without fd 9: a server started here outlives the script and must not hold its lock)
  eval "$(PONTOON_TEST_DIR=$servers_dir "$target_dir/release/pontoon-test-servers" start 9>&-)"
  export PATH="$PG_BIN_DIR:$PATH" # pg_dump/psql of the server's version, also for pgcopydb

  # The harness's fixed loopback test login. Tools get it from the environment (PGPASSWORD,
  # pontoon's ${BENCH_DB_PASSWORD}) or an option file (mydumper/myloader); only pgloader
  # needs it in a URL (below). Everything shown or recorded goes through `mask`.
  bench_user=${PG_URL_BASE#*://}
  bench_user=${bench_user%%:*}
  bench_password=${PG_URL_BASE#*://*:}
  bench_password=${bench_password%%@*}
  export PGPASSWORD=$bench_password BENCH_DB_PASSWORD=$bench_password
  my_cnf=$work/my.cnf
  (umask 077 && printf '[client]\nuser=%s\npassword=%s\n' "$bench_user" "$bench_password" >"$my_cnf")
}

pg_url() { echo "postgres://$bench_user@127.0.0.1:$PG_PORT/$1"; }
pg_job_url() { echo "postgres://$bench_user:\${BENCH_DB_PASSWORD}@127.0.0.1:$PG_PORT/$1"; }
my_job_url() { echo "mysql://$bench_user:\${BENCH_DB_PASSWORD}@127.0.0.1:${2:-$MY_PORT}/$1"; } # DB [PORT]

# pgloader takes the MariaDB password in its URL only: it is on pgloader's command line
# (visible in ps, loopback test login) and masked in every log and in RESULTS.md; so are a
# libpq connection string's password=, CHANGE MASTER's MASTER_PASSWORD and sysbench's
# --mysql-password.
mask() {
  sed -e 's#\(://[^:/@]*\):\([^$@][^@]*\)@#\1:***@#g' \
    -e "s#\(password=\)[^ '\$][^ ']*#\1***#g" \
    -e "s#\(MASTER_PASSWORD *= *'\)[^']*'#\1***'#g"
}

# Admin clients over the unix sockets (no password).
pg_sql() { # DB SQL...
  local db=$1; shift
  local args=()
  for sql in "$@"; do args+=(-c "$sql"); done
  psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$PG_PORT" -U postgres -d "$db" "${args[@]}"
}
my_sql() { # SQL [DB]
  mariadb --no-defaults -N -B -u root --socket="$MY_SOCKET" ${2:+"$2"} -e "$1"
}

# Other heavy processes on these 2 cores spoil the numbers: count them before each run.
other_load() {
  ps -eo comm= | grep -cxE 'cargo|rustc|cargo-nextest|cc|cc1|cc1plus|ld|ld.lld|ld.bfd|ld.gold' || true
}

# median of the numbers on stdin (mean of the two middle ones for an even count)
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit; m = int((NR + 1) / 2); print (NR % 2 ? v[m] : (v[m] + v[m + 1]) / 2) }'; }
thousands() { awk -v n="$1" 'BEGIN { s = sprintf("%.0f", n); o = ""; while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) } print s o }'; }
fmt() { awk -v n="$1" -v d="$2" 'BEGIN { printf "%.*f", d, n }'; }

verdict() { # VALUE OP LIMIT -> met / NOT met
  if awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN { exit !((op == ">=") ? v >= l : v <= l) }'; then echo "met"; else echo "**NOT met**"; fi
}

machine_line() {
  echo "- machine: $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -n1)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)"
}

servers_line() {
  echo "- servers: $("$PG_BIN_DIR/postgres" --version | sed 's/postgres (PostgreSQL) /PostgreSQL /'), MariaDB $(my_sql 'SELECT VERSION()'), both on loopback, harness settings (PostgreSQL \`fsync=off\`, \`full_page_writes=off\`, \`shared_buffers=128MB\`, \`wal_level=logical\`; MariaDB \`innodb_flush_log_at_trx_commit=2\`, \`sync_binlog=0\`, binlog ON in ROW format, \`innodb_buffer_pool_size=256M\`). Every tool writes to the same servers, so the comparison is fair; absolute numbers on durable settings would be lower."
}

# ---------------------------------------------------------------------------- second servers
#
# A second PostgreSQL instance and a MariaDB replica (bench/sync.sh's targets, bench/verify.sh's
# targets and replica), set up like the harness's servers: their settings files are copied
# from the benchmark servers, with another port and paths and, for the replica, server_id 2
# and the replication settings below. Call after start_servers:
#
#   second_servers DIR         where they live (DIR/pg, DIR/mariadb); sets tpg_dir, rep_dir,
#                              REP_SOCKET, and clears TPG_PORT / REP_PORT
#   start_target_pg            a fresh instance (whatever was in DIR/pg is removed); TPG_PORT
#   start_replica PATTERN...   a fresh replica applying only the tables that match the
#                              `replicate_wild_do_table` patterns; REP_PORT. Not yet following
#                              the master: replica_load does that.
#   target_pg_running, replica_running   an instance left running by an earlier invocation:
#                              sets TPG_PORT / REP_PORT and succeeds if it answers
#   stop_target_pg, stop_replica, tpg_sql, rep_sql, tpg_job_url
#   replica_load DB TABLE...   copies the tables from the master into the replica's DB (dump
#                              with the binlog position) and points the replica at that position
#                              (CHANGE MASTER; START SLAVE is the caller's)
#   replica_status             SHOW SLAVE STATUS, one "Field: value" line each
#   replica_error              the replica's thread states and last errors, on one line

is_root() { [[ $(id -u) == 0 ]]; }
as_owner() { # USER CMD...: run as the servers' OS user when we are root (as the harness does)
  local user=$1; shift
  if is_root; then runuser -u "$user" -- "$@"; else "$@"; fi
}
free_port() {
  local p
  for _ in {1..200}; do
    p=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  echo "no free port found" >&2; return 1
}

second_servers() { # DIR
  tpg_dir=$1/pg
  rep_dir=$1/mariadb
  TPG_PORT="" REP_PORT=""
  REP_SOCKET=$rep_dir/run/mysqld.sock
  REPLICA_SETTINGS=(server_id=2 log_slave_updates=ON skip_slave_start "relay_log=$rep_dir/run/relay")
}

tpg_sql() { # DB SQL...: the target PostgreSQL, as superuser over its socket
  local db=$1; shift
  local args=()
  for sql in "$@"; do args+=(-c "$sql"); done
  psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$tpg_dir/run" -p "$TPG_PORT" -U postgres -d "$db" "${args[@]}"
}
rep_sql() { # SQL [DB]: the replica, as root over its socket
  mariadb --no-defaults -N -B -u root --socket="$REP_SOCKET" ${2:+"$2"} -e "$1"
}
tpg_job_url() { echo "postgres://$bench_user:\${BENCH_DB_PASSWORD}@127.0.0.1:$TPG_PORT/$1"; }

stop_target_pg() {
  [[ -f $tpg_dir/data/postmaster.pid ]] || return 0
  as_owner postgres "$PG_BIN_DIR/pg_ctl" -D "$tpg_dir/data" -m fast -w -t 60 -s stop >/dev/null 2>&1 ||
    as_owner postgres "$PG_BIN_DIR/pg_ctl" -D "$tpg_dir/data" -m immediate -w -t 60 -s stop >/dev/null 2>&1 || true
}

start_target_pg() {
  stop_target_pg
  rm -rf "$tpg_dir"
  mkdir -p "$tpg_dir/data" "$tpg_dir/run"
  chmod 700 "$tpg_dir/data"
  ! is_root || chown -R postgres: "$tpg_dir"
  as_owner postgres "$PG_BIN_DIR/initdb" -D "$tpg_dir/data" -A trust -U postgres --encoding=UTF8 --locale=C --no-sync \
    >"$tpg_dir/run/initdb.log" 2>&1 || { tail -n 20 "$tpg_dir/run/initdb.log" >&2; return 1; }
  TPG_PORT=$(free_port)
  sed -e "s/^port = .*/port = $TPG_PORT/" -e "s#^unix_socket_directories = .*#unix_socket_directories = '$tpg_dir/run'#" \
    "$PG_DATA_DIR/pontoon.conf" >"$tpg_dir/data/pontoon.conf"
  cp "$PG_DATA_DIR/pg_hba.conf" "$tpg_dir/data/pg_hba.conf"
  echo "include 'pontoon.conf'" >>"$tpg_dir/data/postgresql.conf"
  ! is_root || chown -R postgres: "$tpg_dir"
  # (without fds 7-9: the server must not hold the lock or the script's output open)
  as_owner postgres "$PG_BIN_DIR/pg_ctl" -D "$tpg_dir/data" -l "$tpg_dir/run/postgres.log" -w -t 60 -s start 7>&- 8>&- 9>&- ||
    { tail -n 20 "$tpg_dir/run/postgres.log" >&2; return 1; }
  tpg_sql postgres "CREATE ROLE $bench_user WITH LOGIN SUPERUSER REPLICATION PASSWORD '$bench_password'"
}

target_pg_running() {
  [[ -f $tpg_dir/data/postmaster.pid && -f $tpg_dir/data/pontoon.conf ]] || return 1
  TPG_PORT=$(sed -n 's/^port = \([0-9]*\)$/\1/p' "$tpg_dir/data/pontoon.conf")
  if [[ -z $TPG_PORT ]] || ! tpg_sql postgres "SELECT 1" >/dev/null 2>&1; then TPG_PORT=""; return 1; fi
}

replica_pid() { local p; p=$(cat "$rep_dir/run/mysqld.pid" 2>/dev/null) && [[ -d /proc/$p ]] && echo "$p"; }

replica_running() {
  replica_pid >/dev/null || return 1
  REP_PORT=$(sed -n 's/^port=\([0-9]*\)$/\1/p' "$rep_dir/my.cnf" 2>/dev/null | tail -n1)
  if [[ -z $REP_PORT ]] || ! rep_sql "SELECT 1" >/dev/null 2>&1; then REP_PORT=""; return 1; fi
}

stop_replica() {
  local pid
  pid=$(replica_pid) || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in {1..600}; do [[ -d /proc/$pid ]] || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

start_replica() { # PATTERN...: the replicate_wild_do_table patterns
  stop_replica
  rm -rf "$rep_dir"
  mkdir -p "$rep_dir/run"
  local install=(mariadb-install-db --no-defaults "--datadir=$rep_dir/data" --auth-root-authentication-method=normal
    --skip-test-db --skip-name-resolve)
  ! is_root || { chown -R mysql: "$rep_dir"; install+=(--user=mysql); }
  "${install[@]}" >"$rep_dir/run/install.log" 2>&1 || { tail -n 20 "$rep_dir/run/install.log" >&2; return 1; }
  REP_PORT=$(free_port)
  local harness_dir pattern
  harness_dir=$(dirname "$MY_DATA_DIR")
  # the harness's option file, with this instance's port and paths, server_id 2 and the
  # replication settings; only the tables matching the patterns are applied
  {
    grep -v -e '^server_id=' -e '^port=' "$harness_dir/my.cnf" | sed "s#$harness_dir/#$rep_dir/#g"
    echo "port=$REP_PORT"
    printf '%s\n' "${REPLICA_SETTINGS[@]}"
    for pattern in "$@"; do echo "replicate_wild_do_table=$pattern"; done
  } >"$rep_dir/my.cnf"
  ! is_root || chown -R mysql: "$rep_dir"
  # its own session: a Ctrl-C of the script does not reach it; the caller stops it
  setsid "$(command -v mariadbd || echo /usr/sbin/mariadbd)" "--defaults-file=$rep_dir/my.cnf" \
    </dev/null >>"$rep_dir/run/mariadbd.out" 2>&1 7>&- 8>&- 9>&- &
  local i
  for ((i = 0; i < 600; i++)); do
    if [[ -S $REP_SOCKET ]] && rep_sql "SELECT 1" >/dev/null 2>&1; then break; fi
    sleep 0.1
  done
  rep_sql "SELECT 1" >/dev/null || { tail -n 20 "$rep_dir/run/error.log" >&2; return 1; }
  local host users=""
  for host in % 127.0.0.1 localhost; do
    users+="CREATE USER IF NOT EXISTS '$bench_user'@'$host' IDENTIFIED BY '$bench_password';
      GRANT ALL PRIVILEGES ON *.* TO '$bench_user'@'$host' WITH GRANT OPTION;"
  done
  rep_sql "$users"
}

replica_load() { # DB TABLE...
  local db=$1 dump=$work/replica-dump-$$.sql pos
  shift
  rep_sql "STOP SLAVE; RESET SLAVE ALL; DROP DATABASE IF EXISTS $db;
    CREATE DATABASE $db CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
  mariadb-dump --no-defaults -u root --socket="$MY_SOCKET" --single-transaction --master-data=2 "$db" "$@" >"$dump"
  pos=$(sed -n "s/^-- CHANGE MASTER TO MASTER_LOG_FILE='\([^']*\)', MASTER_LOG_POS=\([0-9]*\);.*/\1 \2/p" "$dump" | head -n1)
  [[ -n $pos ]] || { echo "no binlog position in $dump" >&2; return 1; }
  mariadb --no-defaults -u root --socket="$REP_SOCKET" "$db" <"$dump"
  rm -f "$dump"
  rep_sql "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = $MY_PORT, MASTER_USER = '$bench_user',
    MASTER_PASSWORD = '$bench_password', MASTER_LOG_FILE = '${pos% *}', MASTER_LOG_POS = ${pos#* }, MASTER_USE_GTID = no"
}

# SHOW SLAVE STATUS as "Field: value" lines (rep_sql's -N would drop the names)
replica_status() { mariadb --no-defaults -B -u root --socket="$REP_SOCKET" -e 'SHOW SLAVE STATUS\G'; }
replica_error() { replica_status | grep -E 'Running:|Last_.*Error:' | tr -s ' ' | paste -sd';' -; }

# record_section: prints the report section ($section) and, unless --no-record ($record is
# false), appends it to $results_md (created with its heading when missing); names the raw
# runs ($tsv) either way.
record_section() {
  cat "$section"
  if $record; then
    if [[ ! -f $results_md ]]; then
      printf '# Benchmark results\n\nAppended by the scripts in bench/ (see bench/README.md). Newest last. Figures are medians of runs made on the machine described in each section.\n' >"$results_md"
    fi
    cat "$section" >>"$results_md"
    log "appended to $results_md (raw runs: $tsv)"
  else
    log "not recorded (--no-record); raw runs: $tsv"
  fi
}
