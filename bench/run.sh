#!/usr/bin/env bash
# Benchmark of ckpt against the performance targets:
#   checkpoint >= 4 GB/s and restart >= 4 GB/s of anonymous memory, a small program checkpointed and
#   restarted in < 15 ms each (whole command), tool memory (peak RSS) < 64 MiB.
# Also measures this machine's memcpy bandwidth, the physical reference for the GB/s figures.
#
# Usage: bench/run.sh [--size MiB] [--small MiB] [--runs N] [--large-runs N]
#   --size   memory of the large target (default 1024)
#   --large-runs  checkpoint --kill / restart cycles of the large target, median reported (default 3)
#   --small  memory of the small target (default 4)
#   --runs   runs of the small checkpoint/restart, median reported (default 5)
# Images go to /dev/shm (tmpfs). Needs root (or ptrace rights over its own children) and gcc.
# Exit status: 0 when every run worked (whether or not the targets are met), 1 when a run failed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
size=1024 small=4 runs=5 large_runs=3
while (($#)); do
  case "$1" in
    --size) size="${2:?--size needs MiB}"; shift 2 ;;
    --small) small="${2:?--small needs MiB}"; shift 2 ;;
    --runs) runs="${2:?--runs needs a count}"; shift 2 ;;
    --large-runs) large_runs="${2:?--large-runs needs a count}"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench: unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
done
[[ "$size" =~ ^[0-9]+$ && "$small" =~ ^[0-9]+$ && "$runs" =~ ^[0-9]+$ && "$large_runs" =~ ^[0-9]+$ && $size -ge 1 && $small -ge 1 && $runs -ge 1 && $large_runs -ge 1 ]] \
  || { echo "bench: --size, --small, --runs and --large-runs take positive integers" >&2; exit 64; }

work="$(mktemp -d /tmp/ckpt-bench.XXXXXX)"
shm="$(mktemp -d /dev/shm/ckpt-bench.XXXXXX)"
targets=()      # pids of processes started (or restarted) by this script
failures=()

is_ours() {     # is this pid still one of our memhog targets (and not a reused pid)?
  local cmd
  cmd="$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline")" || return 1
  [[ "$cmd" == "$work/memhog "* || "$cmd" == "$work/threads "* || "$cmd" == "$work/tree "* || "$cmd" == "$work/regions "* || "$cmd" == "$work/fds "* ]]
}

cleanup() {
  local p
  for p in "${targets[@]}"; do is_ours "$p" && { kill -KILL -- "-$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null; }; done
  wait 2>/dev/null || true     # reap our own children (targets started by this script)
  rm -rf "$work" "$shm"
}
trap cleanup EXIT
trap 'echo "bench: interrupted" >&2; exit 130' INT
trap 'exit 143' TERM

say() { printf '%s\n' "$*" >&2; }
fail() { failures+=("$*"); say "  FAILED: $*"; }

load_start="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- build
say "== building ckpt (./ckpt --help) and the benchmark programs"
if ! timeout 900 "$root/ckpt" --help >"$work/build.log" 2>&1; then
  cat "$work/build.log" >&2; say "bench: building ckpt failed"; exit 1
fi
ckpt="$root/artifacts/native/ckpt"
[[ -x "$ckpt" ]] || { say "bench: $ckpt missing after the build"; exit 1; }
for prog in memhog memcpy timeit threads tree regions fds; do
  gcc -O2 -Wall -pthread -o "$work/$prog" "$root/bench/$prog.c" || { say "bench: cannot compile bench/$prog.c"; exit 1; }
done

# peak RSS: /usr/bin/time -f %M (Debian package "time"), installed when missing
if [[ ! -x /usr/bin/time ]]; then
  say "   installing the 'time' package for /usr/bin/time"
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time; }; } >/dev/null 2>&1 || true
fi
have_gnu_time=0
/usr/bin/time -f %M -o "$work/probe" true 2>/dev/null && have_gnu_time=1
((have_gnu_time)) || say "   /usr/bin/time unavailable: peak RSS is taken from wait4 (the same figure)"

# run_timed LIMIT_S STDOUT_FILE cmd...: sets T_US (wall time of the command), RSS_KB, STATUS.
# The command's stderr goes to $work/stderr. Timing is done by timeit (fork/exec/wait4, no shell in
# the measurement); peak RSS by /usr/bin/time when RSS_VIA_TIME=1, else from timeit's wait4.
RSS_VIA_TIME=0
run_timed() {
  local limit="$1" out="$2"; shift 2
  local cmd=("$@")
  if ((RSS_VIA_TIME && have_gnu_time)); then cmd=(/usr/bin/time -f %M -o "$work/rss" "$@"); fi
  STATUS=0
  "$work/timeit" "$limit" "$work/report" "${cmd[@]}" >"$out" 2>"$work/stderr" || STATUS=$?
  read -r T_US RSS_KB _ <"$work/report" || { T_US=0 RSS_KB=0; }
  if ((RSS_VIA_TIME && have_gnu_time)) && [[ -s "$work/rss" ]]; then RSS_KB="$(tail -n 1 "$work/rss")"; fi
  return 0
}

# wait_line FILE PATTERN SECONDS [PID]: waits until FILE has a line matching PATTERN
wait_line() {
  local file="$1" pat="$2" limit="$3" pid="${4:-}" end=$((SECONDS + $3))
  while ! grep -q -- "$pat" "$file" 2>/dev/null; do
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    ((SECONDS < end)) || return 1
    sleep 0.05
  done
}

# start_target MiB REPORT: starts memhog as our child (reporting to the file REPORT); sets TPID; waits for READY
start_target() {
  "$work/memhog" "$1" "$2" </dev/null >/dev/null 2>&1 &
  TPID=$!
  targets+=("$TPID")
  if ! wait_line "$2" '^READY' $((60 + $1 / 16)) "$TPID"; then
    say "bench: the target did not start: $(cat "$2")"; return 1
  fi
}

# stop_restored PID: kills a restarted process (not our child: pid 1 reaps it)
stop_restored() { is_ours "$1" && kill -KILL "$1" 2>/dev/null; return 0; }

# kill_restart_cycles NAME CHECK PROG ARGS...: $runs times, starts "$work/PROG ARGS... READYFILE" as our
# child, checkpoints it --kill, restarts it --detach (same pid), runs "CHECK PID" on the restarted process
# (a failure message on stdout when it is not as it was), stops it; the wall times go to CK_US and RS_US
kill_restart_cycles() {
  local name="$1" check="$2" prog="$3" i p ready img newpid bad
  shift 3
  CK_US=() RS_US=()
  for ((i = 1; i <= runs; i++)); do
    ready="$work/$name$i.ready" img="$shm/$name$i.img"
    "$work/$prog" "$@" "$ready" </dev/null >/dev/null 2>&1 &
    p=$!
    targets+=("$p")
    wait_line "$ready" '^READY' 30 "$p" || { fail "$name run $i: the target did not start"; break; }
    {
      run_timed 60 /dev/null "$ckpt" checkpoint "$p" -o "$img" --kill
      kill -KILL "$p" || true
      wait "$p" || true
    } 2>/dev/null
    if ((STATUS != 0)); then fail "$name checkpoint run $i: exit $STATUS: $(cat "$work/stderr")"; break; fi
    CK_US+=("$T_US")
    run_timed 60 "$work/rs.out" "$ckpt" restart -i "$img" --detach
    newpid="$(head -n 1 "$work/rs.out" 2>/dev/null || true)"
    if ((STATUS != 0)) || [[ "$newpid" != "$p" ]]; then
      fail "$name restart run $i: exit $STATUS, printed '$newpid' (want $p): $(cat "$work/stderr")"
      [[ "$newpid" =~ ^[0-9]+$ ]] && { targets+=("$newpid"); stop_restored "$newpid"; }
      break
    fi
    targets+=("$newpid")
    RS_US+=("$T_US")
    bad="$("$check" "$newpid")"
    [[ -z "$bad" ]] || fail "$name restart run $i: $bad"
    stop_restored "$newpid"
    rm -f "$img"
    say "   run $i: checkpoint $(ms "${CK_US[-1]}") ms, restart $(ms "${RS_US[-1]}") ms"
  done
}

# verify_memory PID LOG: the process recomputes its checksum; it must equal the one it started with
verify_memory() {
  local pid="$1" log="$2" want got before end=$((SECONDS + 60))
  want="$(sed -n 's/^READY pid=[0-9]* sum=//p' "$log" | head -n 1)"
  before="$(grep -c '^SUM ' "$log" || true)"
  kill -USR1 "$pid" 2>/dev/null || return 1
  while (($(grep -c '^SUM ' "$log" || true) <= before)); do
    kill -0 "$pid" 2>/dev/null && ((SECONDS < end)) || return 1
    sleep 0.05
  done
  got="$(sed -n 's/^SUM //p' "$log" | tail -n 1)"
  [[ -n "$want" && "$want" == "$got" ]]
}

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {if (NR == 0) print 0; else if (NR % 2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
gbps() { awk -v b="$1" -v us="$2" 'BEGIN { if (us > 0) printf "%.2f", b / (us * 1000); else print "n/a" }'; }
ms() { awk -v us="$1" 'BEGIN { printf "%.1f", us / 1000 }'; }
mib() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }
log_frozen_ms() { sed -n 's/.*frozen for \([0-9.]*\) ms.*/\1/p' "$1" 2>/dev/null | tail -n 1; }   # log_frozen_ms LOG: "tree frozen for" of a ckpt log

# ---------------------------------------------------------------- memcpy reference
say "== memcpy bandwidth (1 GiB buffer, 5 copies)"
read -r memcpy_best memcpy_median first_touch populate par_fill < <(timeout 120 "$work/memcpy" 1024 5) || { say "bench: memcpy reference failed"; exit 1; }
say "   best $memcpy_best GB/s, median $memcpy_median GB/s; new memory: $first_touch GB/s touched by the program, $populate GB/s populated by the kernel, $par_fill GB/s filled by $(nproc) threads"

# process start floor: how long any command takes to start on this machine
spawn=() ver=()
for ((i = 0; i < 5; i++)); do
  run_timed 10 /dev/null /bin/true; spawn+=("$T_US")
  run_timed 10 /dev/null "$ckpt" --version; ver+=("$T_US")
done
spawn_us="$(median "${spawn[@]}")" version_us="$(median "${ver[@]}")"
script_us=()
for ((i = 0; i < 3; i++)); do run_timed 30 /dev/null "$root/ckpt" --version; script_us+=("$T_US"); done
script_us="$(median "${script_us[@]}")"

# ---------------------------------------------------------------- large target
# 1. checkpoint to standard output redirected to /dev/null, target kept running: the tool alone
#    (not "-o /dev/null": ckpt deletes its output file when a checkpoint fails)
# 2. checkpoint -o a new /dev/shm file, target kept running: tmpfs allocates new pages as it goes
# 3. checkpoint -o the same file --kill: O_TRUNC has just freed the file's pages, which are reused
# 4. restart --detach from the image (checked: same pid, same memory), then checkpoint --kill of the
#    restarted process into the same file again; --large-runs cycles, medians reported (the memory
#    speed of this VM varies from one second to the next)
say "== large target: $size MiB of anonymous memory"
big_log="$work/big.log" big_img="$shm/big.img"
declare -A R_US=() R_RSS=() R_OK=()
img_bytes=0
record() {   # record KEY LABEL: files the last run_timed under KEY
  R_US[$1]="$T_US" R_RSS[$1]="$RSS_KB" R_OK[$1]=0
  if ((STATUS != 0)); then fail "$2: exit $STATUS: $(cat "$work/stderr")"; return 1; fi
  R_OK[$1]=1
  say "   $2: $(ms "$T_US") ms, peak RSS $(mib "$RSS_KB") MiB"
}
check_target() {   # check_target KEY PID WHAT: the process must still hold the same memory
  if verify_memory "$2" "$big_log"; then say "     $3: memory verified"
  else R_OK[$1]=0; fail "$3: memory checksum differs or no answer: $(tail -n 2 "$big_log" | tr '\n' ' ')"; fi
}
wait_gone() {   # wait_gone PID SECONDS: until the pid no longer exists (init has reaped it)
  local end=$((SECONDS + $2))
  while [[ -e "/proc/$1" ]] && ((SECONDS < end)); do sleep 0.05; done
  [[ ! -e "/proc/$1" ]]
}
restart_big() {   # restart_big KEY LABEL: restarts the image, checks it (the process is left running)
  run_timed 300 "$work/rs.out" "$ckpt" restart -i "$big_img" --detach --log "$work/big-$1.log"
  local newpid
  newpid="$(head -n 1 "$work/rs.out" 2>/dev/null || true)"
  [[ "$newpid" =~ ^[0-9]+$ ]] && targets+=("$newpid")
  record "$1" "$2" || return 1
  if [[ "$newpid" != "$big_pid" ]]; then R_OK[$1]=0; fail "$2: printed pid '$newpid', want $big_pid"; return 1; fi
  check_target "$1" "$newpid" "restarted pid $newpid"
}
summarize() {   # summarize KEY KEYS...: KEY gets the median of the runs (ok only if every run was)
  local v=() ok=1 k
  for k in "${@:2}"; do [[ -n "${R_US[$k]:-}" ]] && v+=("${R_US[$k]}"); [[ "${R_OK[$k]:-0}" == 1 ]] || ok=0; done
  ((${#v[@]})) || return 0
  R_US[$1]="$(median "${v[@]}")" R_OK[$1]="$ok"
  RUNS[$1]="$(for x in "${v[@]}"; do printf '%s ' "$(ms "$x")"; done)"
}
declare -A RUNS=()

start_target "$size" "$big_log" || exit 1
big_pid="$TPID"
RSS_VIA_TIME=1
say "   target pid $big_pid ready"
run_timed 300 /dev/null "$ckpt" checkpoint "$big_pid" --log "$work/big-null.log"
record null "checkpoint to /dev/null, target kept" && check_target null "$big_pid" "target after the checkpoint"
# the same job without ckpt, in the same conditions: dd of as many bytes into a new /dev/shm file just
# before and just after the checkpoint, each file kept so that no run reuses the pages of another
dd_blocks=$(((size + 3) / 4))
dd_new() {   # dd_new FILE: prints the rate
  run_timed 120 /dev/null dd if=/dev/zero of="$1" bs=4M count="$dd_blocks" status=none
  gbps $((dd_blocks << 22)) "$T_US"
}
dd_before="$(dd_new "$shm/dd1")"
run_timed 300 "$work/ck.out" "$ckpt" checkpoint "$big_pid" -o "$big_img" --log "$work/big-cold.log"
ck_status=$STATUS ck_us=$T_US ck_rss=$RSS_KB
dd_after="$(dd_new "$shm/dd2")"
rm -f "$shm/dd1" "$shm/dd2"
STATUS=$ck_status T_US=$ck_us RSS_KB=$ck_rss
say "   reference: dd of $((dd_blocks * 4)) MiB into a new /dev/shm file: $dd_before GB/s before, $dd_after GB/s after the next checkpoint"
record cold "checkpoint to a new /dev/shm file, target kept" && check_target cold "$big_pid" "target after the checkpoint"
{ # (the shell's "Killed" notice for its child is silenced)
  run_timed 300 "$work/ck.out" "$ckpt" checkpoint "$big_pid" -o "$big_img" --kill --log "$work/big-kill.log"
  # the killed original is our child: reap it so that its pid is free for the restart
  kill -KILL "$big_pid" || true
  wait "$big_pid" || true
} 2>/dev/null
kill_keys=(kill) rs_keys=()
if record kill "checkpoint --kill, rewriting the same file"; then
  img_bytes="$(stat -c %s "$big_img")"
  say "     image: $img_bytes bytes"
  for ((i = 1; i <= large_runs; i++)); do
    restart_big "rs$i" "restart --detach (run $i)" || break
    rs_keys+=("rs$i")
    if ((i == large_runs)); then stop_restored "$big_pid"; wait_gone "$big_pid" 20 || fail "pid $big_pid was not reaped within 20 s"; break; fi
    run_timed 300 "$work/ck.out" "$ckpt" checkpoint "$big_pid" -o "$big_img" --kill --log "$work/big-kill$((i + 1)).log"
    record "kill$((i + 1))" "checkpoint --kill of the restarted process, same file (run $((i + 1)))" || break
    kill_keys+=("kill$((i + 1))")
    # not our child: pid 1 reaps it, and its pid is free only then
    wait_gone "$big_pid" 20 || { fail "pid $big_pid was not reaped within 20 s"; break; }
  done
fi
summarize killmed "${kill_keys[@]}"
summarize rsmed "${rs_keys[@]}"
RSS_VIA_TIME=0
frozen_ms="$(log_frozen_ms "$work/big-kill.log")"
rm -f "$big_img"

# ---------------------------------------------------------------- small target
say "== small target: $small MiB, $runs runs (fresh target each run: checkpoint --kill, reap, restart --detach)"
s_ck=() s_rs=() s_ck_rss=0 s_rs_rss=0 s_img=0 s_fail=0
for ((i = 1; i <= runs; i++)); do
  log="$work/small$i.log" img="$shm/small$i.img"
  start_target "$small" "$log" || { s_fail=1; break; }
  p="$TPID"
  {
    run_timed 60 /dev/null "$ckpt" checkpoint "$p" -o "$img" --kill
    kill -KILL "$p" || true              # reap the killed original: its pid must be free
    wait "$p" || true
  } 2>/dev/null
  if ((STATUS != 0)); then fail "small checkpoint run $i: exit $STATUS: $(cat "$work/stderr")"; s_fail=1; break; fi
  s_ck+=("$T_US"); ((RSS_KB > s_ck_rss)) && s_ck_rss="$RSS_KB"
  s_img="$(stat -c %s "$img")"
  run_timed 60 "$work/rs.out" "$ckpt" restart -i "$img" --detach
  newpid="$(head -n 1 "$work/rs.out" 2>/dev/null || true)"
  if ((STATUS != 0)) || [[ "$newpid" != "$p" ]]; then
    fail "small restart run $i: exit $STATUS, printed '$newpid' (want $p): $(cat "$work/stderr")"; s_fail=1
    [[ "$newpid" =~ ^[0-9]+$ ]] && { targets+=("$newpid"); stop_restored "$newpid"; }
    break
  fi
  targets+=("$newpid")
  s_rs+=("$T_US"); ((RSS_KB > s_rs_rss)) && s_rs_rss="$RSS_KB"
  verify_memory "$newpid" "$log" || { fail "small restart run $i: memory checksum differs or no answer: $(tail -n 3 "$log")"; s_fail=1; }
  stop_restored "$newpid"
  rm -f "$img"
  say "   run $i: checkpoint $(ms "${s_ck[-1]}") ms, restart $(ms "${s_rs[-1]}") ms"
  ((s_fail)) && break
done
s_ck_med="$(median "${s_ck[@]}")" s_rs_med="$(median "${s_rs[@]}")"

# ---------------------------------------------------------------- many threads
nthreads=64
say "== $nthreads-thread process, $runs runs (checkpoint --kill, reap, restart --detach)"
threads_check() {
  local got
  got="$(ls "/proc/$1/task" 2>/dev/null | wc -l)"
  ((got == nthreads)) || echo "$got threads after restart, want $nthreads"
}
kill_restart_cycles threads threads_check threads "$nthreads"
t_ck=("${CK_US[@]}") t_rs=("${RS_US[@]}")
t_ck_med="$(median "${t_ck[@]}")" t_rs_med="$(median "${t_rs[@]}")"

# ---------------------------------------------------------------- many regions
nreg=20000
say "== process of $((2 * nreg)) one-page regions, $runs runs (checkpoint --kill, reap, restart --detach)"
regions_check() {
  local got
  got="$(wc -l <"/proc/$1/maps" 2>/dev/null || echo 0)"
  ((got >= 2 * nreg)) || echo "$got regions after restart, want at least $((2 * nreg))"
}
kill_restart_cycles regions regions_check regions "$nreg"
g_ck=("${CK_US[@]}") g_rs=("${RS_US[@]}")
g_ck_med="$(median "${g_ck[@]}")" g_rs_med="$(median "${g_rs[@]}")"

# ---------------------------------------------------------------- many fds
nfds=10000
say "== process of $nfds fds (files, dups, pipes and socket pairs whose other end is closed), $runs runs (checkpoint --kill, reap, restart --detach)"
fds_check() {
  local got
  got="$(ls "/proc/$1/fd" 2>/dev/null | wc -l)"
  ((got >= nfds)) || echo "$got fds after restart, want at least $nfds"
}
kill_restart_cycles fds fds_check fds "$nfds"
d_ck=("${CK_US[@]}") d_rs=("${RS_US[@]}")
d_ck_med="$(median "${d_ck[@]}")" d_rs_med="$(median "${d_rs[@]}")"

# ---------------------------------------------------------------- many busy threads
# 1000 threads waking every millisecond keep both CPUs busy: every seize and stop of the freeze is a
# hand-over with one of them (checkpoints that leave the process running, to /dev/null)
busy_n=1000 busy_runs=3
say "== $busy_n threads waking every ms, $busy_runs checkpoints leaving it running"
b_ck=() b_fz=()
ready="$work/busy.ready"
"$work/threads" "$busy_n" "$ready" 1000 </dev/null >/dev/null 2>&1 &
p=$!
targets+=("$p")
if wait_line "$ready" '^READY' 60 "$p"; then
  for ((i = 1; i <= busy_runs; i++)); do
    run_timed 600 /dev/null "$ckpt" checkpoint "$p" -o /dev/null --log "$work/busy.log"
    if ((STATUS != 0)); then fail "busy threads checkpoint run $i: exit $STATUS: $(cat "$work/stderr")"; break; fi
    b_ck+=("$T_US")
    b_fz+=("$(log_frozen_ms "$work/busy.log" | awk '{ printf "%d", $1 * 1000 }')")
    say "   run $i: checkpoint $(ms "${b_ck[-1]}") ms, frozen $(ms "${b_fz[-1]}") ms"
  done
else
  fail "busy threads: the target did not start"
fi
kill -KILL "$p" 2>/dev/null || true
wait "$p" 2>/dev/null || true
b_ck_med="$(median "${b_ck[@]}")" b_fz_med="$(median "${b_fz[@]}")"

# ---------------------------------------------------------------- process tree
tree_n=100 tree_mib=4 tree_runs=3
say "== tree of $tree_n processes with $tree_mib MiB each, $tree_runs runs (checkpoint --kill, wait for the pids, restart --detach)"
r_ck=() r_rs=() r_img=0
for ((i = 1; i <= tree_runs; i++)); do
  ready="$work/tree$i.ready" img="$shm/tree$i.img"
  "$work/tree" "$tree_n" "$tree_mib" "$ready" </dev/null >/dev/null 2>&1 &
  p=$!
  targets+=("$p")
  wait_line "$ready" '^READY' 60 "$p" || { fail "tree run $i: the target did not start"; break; }
  members="$(pgrep -g "$p" | tr '\n' ' ')"
  {
    run_timed 60 /dev/null "$ckpt" checkpoint "$p" -o "$img" --kill
    wait "$p" || true
  } 2>/dev/null
  if ((STATUS != 0)); then fail "tree checkpoint run $i: exit $STATUS: $(cat "$work/stderr")"; kill -KILL -- "-$p" 2>/dev/null; break; fi
  r_ck+=("$T_US")
  r_img="$(stat -c %s "$img")"
  # the killed children are orphans that pid 1 reaps (every ~2 s here): their pids are free only then
  end=$((SECONDS + 20))
  for m in $members; do while [[ -e /proc/$m ]] && ((SECONDS < end)); do sleep 0.05; done; done
  run_timed 60 "$work/rs.out" "$ckpt" restart -i "$img" --detach
  newpid="$(head -n 1 "$work/rs.out" 2>/dev/null || true)"
  if ((STATUS != 0)) || [[ "$newpid" != "$p" ]]; then
    fail "tree restart run $i: exit $STATUS, printed '$newpid' (want $p): $(cat "$work/stderr")"
    [[ "$newpid" =~ ^[0-9]+$ ]] && kill -KILL -- "-$newpid" 2>/dev/null
    break
  fi
  r_rs+=("$T_US")
  got="$(pgrep -g "$p" | wc -l)"
  ((got == tree_n)) || fail "tree restart run $i: $got processes in the group after restart, want $tree_n"
  kill -KILL -- "-$p" 2>/dev/null || true
  rm -f "$img"
  say "   run $i: checkpoint $(ms "${r_ck[-1]}") ms, restart $(ms "${r_rs[-1]}") ms, image $r_img B"
done
r_ck_med="$(median "${r_ck[@]}")" r_rs_med="$(median "${r_rs[@]}")"

# ---------------------------------------------------------------- report
ratio() { awk -v a="$1" -v m="$memcpy_best" 'BEGIN { if (a == "n/a" || m == 0) print "n/a"; else printf "%.0f%%", 100 * a / m }'; }
verdict() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { if (v == "n/a" || v == "") { print "FAILED"; exit }
  ok = (op == ">=") ? (v + 0 >= t + 0) : (v + 0 < t + 0); print ok ? "met" : "NOT met" }'; }
small_rss_mib="$(mib "$(printf '%s\n' "$s_ck_rss" "$s_rs_rss" | sort -n | tail -n 1)")"
big_rss=0
for k in "${!R_RSS[@]}"; do ((R_RSS[$k] > big_rss)) && big_rss="${R_RSS[$k]}"; done

echo
echo "ckpt benchmark  ($(uname -r), $(nproc) CPUs, images on /dev/shm; GB = 1e9 bytes; rates = image bytes / wall time)"
echo "load average at start: $load_start (other work on the machine skews every figure)"
echo "memcpy reference: best $memcpy_best GB/s, median $memcpy_median GB/s (1 GiB buffer)"
echo "new memory: $first_touch GB/s touched page by page by a program, $populate GB/s populated by the kernel (MAP_POPULATE),"
echo "  $par_fill GB/s filled from a buffer by $(nproc) threads (what a restart, which fills that much new memory, could reach at most)"
echo "dd of the same size into a new /dev/shm file, just before / after the 'new /dev/shm file' checkpoint: ${dd_before:-n/a} / ${dd_after:-n/a} GB/s"
echo
printf '%-48s %11s %10s %8s %11s %9s\n' "measure ($size MiB target unless said)" "wall" "rate" "/memcpy" "target" "verdict"
printf '%-48s %11s %10s %8s %11s %9s\n' "-------" "----" "----" "-------" "------" "-------"
row() { printf '%-48s %11s %10s %8s %11s %9s\n' "$@"; }
bigrow() {   # bigrow KEY LABEL TARGET
  local rate="n/a" wall="FAILED" label="$2"
  [[ -n "${RUNS[$1]:-}" ]] && label="$2, median of $(wc -w <<<"${RUNS[$1]}")"
  if [[ "${R_OK[$1]:-0}" == 1 && $img_bytes -gt 0 ]]; then rate="$(gbps "$img_bytes" "${R_US[$1]}")"; wall="$(ms "${R_US[$1]}") ms"; fi
  [[ -z "${R_US[$1]:-}" ]] && wall="not run"
  row "$label" "$wall" "$rate GB/s" "$(ratio "$rate")" "${3:+>= $3 GB/s}" "$([[ -n "$3" ]] && verdict "$rate" ">=" "$3")"
}
s_n="${#s_ck[@]}"
bigrow null "checkpoint, to /dev/null (tool alone)" ""
bigrow cold "checkpoint, to a new /dev/shm file" 4
bigrow killmed "checkpoint --kill, same file again" 4
row "  target frozen during checkpoint --kill" "${frozen_ms:-n/a} ms" "" "" "" ""
bigrow rsmed "restart --detach" 4
row "image size" "$img_bytes B" "" "" "" ""
row "peak RSS of ckpt (max of the runs above)" "$(mib "$big_rss") MiB" "" "" "< 64 MiB" "$(verdict "$(mib "$big_rss")" "<" 64)"
row "small ($small MiB) checkpoint --kill, median of $s_n" "$( ((s_n)) && echo "$(ms "$s_ck_med") ms" || echo FAILED)" "" "" "< 15 ms" "$( ((s_n)) && verdict "$(ms "$s_ck_med")" "<" 15 || echo FAILED)"
row "small ($small MiB) restart --detach, median of ${#s_rs[@]}" "$( ((${#s_rs[@]})) && echo "$(ms "$s_rs_med") ms" || echo FAILED)" "" "" "< 15 ms" "$( ((${#s_rs[@]})) && verdict "$(ms "$s_rs_med")" "<" 15 || echo FAILED)"
row "small: image size" "$s_img B" "" "" "" ""
row "small: peak RSS (checkpoint / restart)" "$(mib "$s_ck_rss")/$(mib "$s_rs_rss") MiB" "" "" "< 64 MiB" "$(verdict "$small_rss_mib" "<" 64)"
row "$nthreads threads: checkpoint --kill, median of ${#t_ck[@]}" "$( ((${#t_ck[@]})) && echo "$(ms "$t_ck_med") ms" || echo FAILED)" "" "" "< 50 ms" "$( ((${#t_ck[@]})) && verdict "$(ms "$t_ck_med")" "<" 50 || echo FAILED)"
row "$nthreads threads: restart --detach, median of ${#t_rs[@]}" "$( ((${#t_rs[@]})) && echo "$(ms "$t_rs_med") ms" || echo FAILED)" "" "" "< 50 ms" "$( ((${#t_rs[@]})) && verdict "$(ms "$t_rs_med")" "<" 50 || echo FAILED)"
row "$((2 * nreg)) regions: checkpoint --kill, median of ${#g_ck[@]}" "$( ((${#g_ck[@]})) && echo "$(ms "$g_ck_med") ms" || echo FAILED)" "" "" "" ""
row "$((2 * nreg)) regions: restart --detach, median of ${#g_rs[@]}" "$( ((${#g_rs[@]})) && echo "$(ms "$g_rs_med") ms" || echo FAILED)" "" "" "" ""
row "$nfds fds: checkpoint --kill, median of ${#d_ck[@]}" "$( ((${#d_ck[@]})) && echo "$(ms "$d_ck_med") ms" || echo FAILED)" "" "" "" ""
row "$nfds fds: restart --detach, median of ${#d_rs[@]}" "$( ((${#d_rs[@]})) && echo "$(ms "$d_rs_med") ms" || echo FAILED)" "" "" "" ""
row "$busy_n threads waking every ms: checkpoint, median of ${#b_ck[@]}" "$( ((${#b_ck[@]})) && echo "$(ms "$b_ck_med") ms" || echo FAILED)" "" "" "" ""
# (the wall time adds ckpt's own start before it can raise its priority, at the CPU share 1000 busy threads leave it)
row "  target frozen during those, median" "$( ((${#b_fz[@]})) && echo "$(ms "$b_fz_med") ms" || echo FAILED)" "" "" "" ""
row "tree of $tree_n x $tree_mib MiB: checkpoint --kill, median of ${#r_ck[@]}" "$( ((${#r_ck[@]})) && echo "$(ms "$r_ck_med") ms" || echo FAILED)" "" "" "< 500 ms" "$( ((${#r_ck[@]})) && verdict "$(ms "$r_ck_med")" "<" 500 || echo FAILED)"
row "tree of $tree_n x $tree_mib MiB: restart --detach, median of ${#r_rs[@]}" "$( ((${#r_rs[@]})) && echo "$(ms "$r_rs_med") ms" || echo FAILED)" "" "" "< 500 ms" "$( ((${#r_rs[@]})) && verdict "$(ms "$r_rs_med")" "<" 500 || echo FAILED)"
row "tree: image size" "$r_img B" "" "" "" ""
echo
echo "context (medians): start of /bin/true $(ms "$spawn_us") ms; 'ckpt --version' $(ms "$version_us") ms (binary); './ckpt --version' $(ms "$script_us") ms (entry script)"
echo "large runs (ms): checkpoint --kill ${RUNS[killmed]:-}| restart ${RUNS[rsmed]:-}"
echo "small runs (ms): checkpoint $(for x in "${s_ck[@]}"; do printf '%s ' "$(ms "$x")"; done)| restart $(for x in "${s_rs[@]}"; do printf '%s ' "$(ms "$x")"; done)"
if ((${#failures[@]})); then
  echo
  echo "FAILURES:"
  printf '  %s\n' "${failures[@]}"
  for f in big-null big-cold big-kill big-kill2 big-rs1 big-rs2; do
    [[ -s "$work/$f.log" ]] && { echo "--- $f log (tail)"; tail -n 20 "$work/$f.log"; }
  done
  exit 1
fi
