# Shared by the benchmark scripts (bench/copy.sh, bench/sync.sh); sourced, not run.
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

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# One benchmark at a time: two at once share the servers, the target databases, the work
# directory and the two cores, and spoil each other's numbers (or fail). Held until exit,
# the build included (a compilation during another run's measurements spoils them too).
bench_lock() {
  exec 9>>"$work/lock"
  if ! flock -n 9; then
    log "another benchmark (bench/copy.sh or bench/sync.sh) is running (it holds $work/lock); waiting for it to finish"
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
