#!/usr/bin/env bash
# Benchmark of ckpt against the performance targets:
#   checkpoint >= 4 GB/s and restart >= 4 GB/s of anonymous memory, a small program checkpointed and
#   restarted in < 15 ms each (whole command), tool memory (peak RSS) < 64 MiB.
# Also measures this machine's memcpy bandwidth, the physical reference for the GB/s figures.
#
# Usage: bench/run.sh [--size MiB] [--small MiB] [--runs N]
#   --size   memory of the large target (default 1024)
#   --small  memory of the small target (default 4)
#   --runs   runs of the small checkpoint/restart, median reported (default 5)
# Images go to /dev/shm (tmpfs). Needs root (or ptrace rights over its own children) and gcc.
# Exit status: 0 when every run worked (whether or not the targets are met), 1 when a run failed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
size=1024 small=4 runs=5
while (($#)); do
  case "$1" in
    --size) size="${2:?--size needs MiB}"; shift 2 ;;
    --small) small="${2:?--small needs MiB}"; shift 2 ;;
    --runs) runs="${2:?--runs needs a count}"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench: unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
done
[[ "$size" =~ ^[0-9]+$ && "$small" =~ ^[0-9]+$ && "$runs" =~ ^[0-9]+$ && $size -ge 1 && $small -ge 1 && $runs -ge 1 ]] \
  || { echo "bench: --size, --small and --runs take positive integers" >&2; exit 64; }

work="$(mktemp -d /tmp/ckpt-bench.XXXXXX)"
shm="$(mktemp -d /dev/shm/ckpt-bench.XXXXXX)"
targets=()      # pids of processes started (or restarted) by this script
failures=()

is_ours() {     # is this pid still one of our memhog targets (and not a reused pid)?
  local cmd
  cmd="$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline")" || return 1
  [[ "$cmd" == "$work/memhog "* ]]
}

cleanup() {
  local p
  for p in "${targets[@]}"; do is_ours "$p" && kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null || true     # reap our own children (targets started by this script)
  rm -rf "$work" "$shm"
}
trap cleanup EXIT
trap 'echo "bench: interrupted" >&2; exit 130' INT
trap 'exit 143' TERM

say() { printf '%s\n' "$*" >&2; }
fail() { failures+=("$*"); say "  FAILED: $*"; }

# ---------------------------------------------------------------- build
say "== building ckpt (./ckpt --help) and the benchmark programs"
if ! timeout 900 "$root/ckpt" --help >"$work/build.log" 2>&1; then
  cat "$work/build.log" >&2; say "bench: building ckpt failed"; exit 1
fi
ckpt="$root/artifacts/native/ckpt"
[[ -x "$ckpt" ]] || { say "bench: $ckpt missing after the build"; exit 1; }
for prog in memhog memcpy timeit; do
  gcc -O2 -Wall -o "$work/$prog" "$root/bench/$prog.c" || { say "bench: cannot compile bench/$prog.c"; exit 1; }
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

# start_target MiB LOG: starts memhog as our child; sets TPID; waits for READY
start_target() {
  "$work/memhog" "$1" </dev/null >"$2" 2>&1 &
  TPID=$!
  targets+=("$TPID")
  if ! wait_line "$2" '^READY' $((60 + $1 / 16)) "$TPID"; then
    say "bench: the target did not start: $(cat "$2")"; return 1
  fi
}

# stop_restored PID: kills a restarted process (not our child: pid 1 reaps it)
stop_restored() { is_ours "$1" && kill -KILL "$1" 2>/dev/null; return 0; }

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

# ---------------------------------------------------------------- memcpy reference
say "== memcpy bandwidth (1 GiB buffer, 5 copies)"
read -r memcpy_best memcpy_median first_touch < <(timeout 120 "$work/memcpy" 1024 5) || { say "bench: memcpy reference failed"; exit 1; }
say "   best $memcpy_best GB/s, median $memcpy_median GB/s; first touch of fresh memory $first_touch GB/s"
# what writing an image of this size into a new /dev/shm file costs by itself (tmpfs allocates as it goes)
run_timed 120 /dev/null dd if=/dev/zero of="$shm/dd" bs=4M count=$(((size + 3) / 4)) status=none
dd_gbps="$(gbps $((((size + 3) / 4) * 4 << 20)) "$T_US")"
rm -f "$shm/dd"
say "   dd of $size MiB into a new /dev/shm file: $dd_gbps GB/s"

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
say "== large target: $size MiB of anonymous memory"
big_log="$work/big.log" big_img="$shm/big.img"
ck_us=0 ck_rss=0 img_bytes=0 rs_us=0 rs_rss=0 ck_ok=0 rs_ok=0 nul_us=0 nul_rss=0 nul_ok=0
start_target "$size" "$big_log" || exit 1
big_pid="$TPID"
RSS_VIA_TIME=1
say "   target pid $big_pid ready; checkpoint to /dev/null, leaving it running (the tool without a file system)"
# to standard output redirected to /dev/null (not "-o /dev/null": see docs/architecture.md, known problems)
run_timed 300 /dev/null "$ckpt" checkpoint "$big_pid" --log "$work/big-null.log"
nul_us="$T_US" nul_rss="$RSS_KB"
if ((STATUS != 0)); then fail "checkpoint of $size MiB to /dev/null: exit $STATUS: $(cat "$work/stderr")"
elif ! verify_memory "$big_pid" "$big_log"; then fail "after a checkpoint to /dev/null the target's memory differs or it does not answer: $(tail -n 3 "$big_log")"
else nul_ok=1; say "   to /dev/null: $(ms "$nul_us") ms, peak RSS $(mib "$nul_rss") MiB; target still running, memory verified"
fi
say "   checkpoint --kill to $big_img"
{ # (the shell's "Killed" notice for its child is silenced)
  run_timed 300 "$work/ck.out" "$ckpt" checkpoint "$big_pid" -o "$big_img" --kill --log "$work/big-checkpoint.log"
  # the killed original is our child: reap it so that its pid is free for the restart
  kill -KILL "$big_pid" || true
  wait "$big_pid" || true
} 2>/dev/null
ck_us="$T_US" ck_rss="$RSS_KB"
if ((STATUS == 0)); then
  ck_ok=1
  img_bytes="$(stat -c %s "$big_img")"
  say "   checkpoint: $(ms "$ck_us") ms, image $img_bytes bytes, peak RSS $(mib "$ck_rss") MiB"
else
  fail "checkpoint of $size MiB: exit $STATUS: $(cat "$work/stderr")"
fi
if ((ck_ok)); then
  run_timed 300 "$work/rs.out" "$ckpt" restart -i "$big_img" --detach --log "$work/big-restart.log"
  rs_us="$T_US" rs_rss="$RSS_KB"
  newpid="$(head -n 1 "$work/rs.out" 2>/dev/null || true)"
  if ((STATUS == 0)) && [[ "$newpid" == "$big_pid" ]]; then
    targets+=("$newpid")
    say "   restart: $(ms "$rs_us") ms, peak RSS $(mib "$rs_rss") MiB, pid $newpid"
    if verify_memory "$newpid" "$big_log"; then rs_ok=1; say "   restarted memory verified (checksum equal)"
    else fail "restart of $size MiB: the restarted process's memory checksum differs or it does not answer: $(tail -n 3 "$big_log")"; fi
    stop_restored "$newpid"
  else
    fail "restart of $size MiB: exit $STATUS, printed '$newpid' (want $big_pid): $(cat "$work/stderr")"
    [[ -n "$newpid" && "$newpid" =~ ^[0-9]+$ ]] && { targets+=("$newpid"); stop_restored "$newpid"; }
  fi
fi
RSS_VIA_TIME=0
# frozen time, as logged by the checkpoint
frozen_ms="$(sed -n 's/.*target frozen for \([0-9.]*\) ms.*/\1/p' "$work/big-checkpoint.log" 2>/dev/null | tail -n 1)"
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

# ---------------------------------------------------------------- report
big_bytes=$((size << 20))
ck_gbps="n/a" rs_gbps="n/a" nul_gbps="n/a"
((ck_ok)) && ck_gbps="$(gbps "$img_bytes" "$ck_us")"
((nul_ok && ck_ok)) && nul_gbps="$(gbps "$img_bytes" "$nul_us")"
((rs_ok)) && rs_gbps="$(gbps "$img_bytes" "$rs_us")"
ratio() { awk -v a="$1" -v m="$memcpy_best" 'BEGIN { if (a == "n/a" || m == 0) print "n/a"; else printf "%.0f%%", 100 * a / m }'; }
verdict() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { if (v == "n/a" || v == "") { print "FAILED"; exit }
  ok = (op == ">=") ? (v + 0 >= t + 0) : (v + 0 < t + 0); print ok ? "met" : "NOT met" }'; }
small_rss_mib="$(mib "$(printf '%s\n' "$s_ck_rss" "$s_rs_rss" | sort -n | tail -n 1)")"

echo
echo "ckpt benchmark  ($(uname -r), $(nproc) CPUs, images on /dev/shm; GB = 1e9 bytes)"
echo "memcpy reference: best $memcpy_best GB/s, median $memcpy_median GB/s (1 GiB buffer; first touch of new memory: $first_touch GB/s)"
echo "writing $size MiB into a new /dev/shm file (dd): $dd_gbps GB/s"
echo
printf '%-44s %14s %12s %10s %10s\n' "measure" "value" "vs memcpy" "target" "verdict"
printf '%-44s %14s %12s %10s %10s\n' "-------" "-----" "---------" "------" "-------"
row() { printf '%-44s %14s %12s %10s %10s\n' "$@"; }
row "checkpoint $size MiB: wall time" "$( ((ck_ok)) && echo "$(ms "$ck_us") ms" || echo FAILED)" "" "" ""
row "checkpoint $size MiB: image size" "$( ((ck_ok)) && echo "$img_bytes B" || echo -)" "" "" ""
row "checkpoint $size MiB: throughput" "$ck_gbps GB/s" "$(ratio "$ck_gbps")" ">= 4 GB/s" "$(verdict "$ck_gbps" ">=" 4)"
row "checkpoint $size MiB: target frozen" "${frozen_ms:-n/a} ms" "" "" ""
row "checkpoint $size MiB to /dev/null (kept running)" "$( ((nul_ok)) && echo "$(ms "$nul_us") ms" || echo FAILED)" "" "" ""
row "  throughput without the file system" "$nul_gbps GB/s" "$(ratio "$nul_gbps")" "" ""
row "restart $size MiB (--detach): wall time" "$( ((rs_ok)) && echo "$(ms "$rs_us") ms" || echo FAILED)" "" "" ""
row "restart $size MiB: throughput" "$rs_gbps GB/s" "$(ratio "$rs_gbps")" ">= 4 GB/s" "$(verdict "$rs_gbps" ">=" 4)"
row "peak RSS of ckpt, checkpoint $size MiB" "$(mib "$ck_rss") MiB" "" "< 64 MiB" "$(verdict "$(mib "$ck_rss")" "<" 64)"
row "peak RSS of ckpt, checkpoint to /dev/null" "$(mib "$nul_rss") MiB" "" "< 64 MiB" "$(verdict "$(mib "$nul_rss")" "<" 64)"
row "peak RSS of ckpt, restart $size MiB" "$(mib "$rs_rss") MiB" "" "< 64 MiB" "$(verdict "$(mib "$rs_rss")" "<" 64)"
s_n="${#s_ck[@]}"
row "small ($small MiB) checkpoint, median of $s_n" "$( ((s_n)) && echo "$(ms "$s_ck_med") ms" || echo FAILED)" "" "< 15 ms" "$( ((s_n)) && verdict "$(ms "$s_ck_med")" "<" 15 || echo FAILED)"
row "small ($small MiB) restart, median of ${#s_rs[@]}" "$( ((${#s_rs[@]})) && echo "$(ms "$s_rs_med") ms" || echo FAILED)" "" "< 15 ms" "$( ((${#s_rs[@]})) && verdict "$(ms "$s_rs_med")" "<" 15 || echo FAILED)"
row "small: image size" "$s_img B" "" "" ""
row "small: peak RSS (checkpoint / restart)" "$(mib "$s_ck_rss")/$(mib "$s_rs_rss") MiB" "" "< 64 MiB" "$(verdict "$small_rss_mib" "<" 64)"
echo
echo "context (medians): start of /bin/true $(ms "$spawn_us") ms; 'ckpt --version' $(ms "$version_us") ms (binary); './ckpt --version' $(ms "$script_us") ms (entry script)"
echo "small runs (ms): checkpoint $(for x in "${s_ck[@]}"; do printf '%s ' "$(ms "$x")"; done)| restart $(for x in "${s_rs[@]}"; do printf '%s ' "$(ms "$x")"; done)"
if ((${#failures[@]})); then
  echo
  echo "FAILURES:"
  printf '  %s\n' "${failures[@]}"
  for f in big-null big-checkpoint big-restart; do
    [[ -s "$work/$f.log" ]] && { echo "--- $f log (tail)"; tail -n 20 "$work/$f.log"; }
  done
  exit 1
fi
