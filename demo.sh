#!/usr/bin/env bash
# See ckpt work: start a small counter program, checkpoint it (killing it), look at the image, restart
# it from the image, and watch it carry on with the same pid from where it was.
# Usage: ./demo.sh      (run as root; builds ckpt on first use, which takes about half a minute)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ckpt="$root/ckpt"
work="$(mktemp -d /tmp/ckpt-demo.XXXXXX)"
log="$work/counter.log" img="$work/counter.img"
pids=()

bold() { if [[ -t 1 ]]; then printf '\n\033[1m== %s\033[0m\n' "$*"; else printf '\n== %s\n' "$*"; fi; }
say() { printf '%s\n' "$*"; }
show() { sed 's/^/    | /'; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

is_counter() {   # is this pid still our counter (and not a reused pid)?
  local cmd
  cmd="$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline")" || return 1
  [[ "$cmd" == "$work/counter "* ]]
}
running() { [[ -r "/proc/$1/stat" ]] && [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]; }
cleanup() {
  local p
  for p in "${pids[@]}"; do
    if is_counter "$p"; then kill -KILL "$p" 2>/dev/null || true; fi
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'say "demo: interrupted"; exit 130' INT
trap 'exit 143' TERM

[[ $(id -u) -eq 0 ]] || say "note: not running as root; restarting with the original pid needs CAP_CHECKPOINT_RESTORE, so the restart step may fail"

bold "1. Build ckpt (only the first time: about half a minute) and the demo program"
if [[ ! -x "$root/artifacts/native/ckpt" ]]; then say "building the native ckpt binary..."; fi
timeout 900 "$ckpt" --help >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; die "building ckpt failed"; }
command -v gcc >/dev/null || die "gcc is needed to compile demo/counter.c"
gcc -O2 -o "$work/counter" "$root/demo/counter.c" || die "cannot compile demo/counter.c"
say "ok: $("$ckpt" --version 2>/dev/null | head -n 1)"

bold "2. Start the counter: every 0.3 s it updates its heap and logs pid, tick and heap checksum"
# Our own child, so that we can reap it once ckpt has killed it (its pid must be free for the restart).
"$work/counter" "$log" </dev/null >/dev/null 2>&1 &
pid=$!
pids+=("$pid")
sleep 1.6
running "$pid" || die "the counter did not start: $(cat "$log" 2>/dev/null)"
say "counter running as pid $pid; its log so far:"
tail -n 4 "$log" | show

bold "3. Checkpoint it into $img, killing it (--kill)"
say "\$ ckpt checkpoint $pid -o $img --kill"
# (the shell's own "Killed" notice for its child is silenced: fd 3 carries ckpt's messages)
{
  timeout 60 "$ckpt" checkpoint "$pid" -o "$img" --kill 2>&3 || true
  wait "$pid" || true                    # reap it: the pid is free again
} 3>&2 2>/dev/null
[[ -s "$img" ]] || die "the checkpoint failed (see above)"
last_tick="$(tail -n 1 "$log" | awk '{print $4}')"
if running "$pid"; then die "pid $pid is still running after --kill"; fi
say "pid $pid is gone; the last line it wrote was tick $last_tick. Image: $(stat -c %s "$img") bytes."

bold "4. What the image holds (ckpt info, abridged)"
say "\$ ckpt info $img"
timeout 60 "$ckpt" info "$img" >"$work/info.txt" || die "ckpt info failed"
grep -E '^  (format_version|tool_version|kernel):|^  (pid|comm|cmdline|cwd):|^memory \(|^  (page_bytes|records|image_bytes):|^fds \(|^  fd=|^threads \(|^  tid=' \
  "$work/info.txt" | show

bold "5. Restart it from the image (--detach: print the pid and return, leaving it running)"
say "\$ ckpt restart -i $img --detach"
newpid="$(timeout 60 "$ckpt" restart -i "$img" --detach)" || die "the restart failed (see above)"
pids+=("$newpid")
same=""
[[ "$newpid" == "$pid" ]] && same=" - the same pid"
say "restarted: pid $newpid (before the checkpoint: $pid)$same"
sleep 1.6
running "$newpid" || die "the restarted counter is not running; its log: $(tail -n 3 "$log")"

bold "6. It carries on from tick $last_tick, with the same heap and start time (no restart from 0)"
grep -n -A 5 -E "  tick +$last_tick  " "$log" | sed 's/^[0-9]*[:-]//' | show
say "process $newpid: $(tr '\0' ' ' <"/proc/$newpid/cmdline")- state $(awk '{print $3}' "/proc/$newpid/stat")"

bold "7. Stop it and clean up"
kill -TERM "$newpid"
# the restarted process is no child of ours (ckpt --detach left it to init), which reaps it
for ((i = 0; i < 50; i++)); do running "$newpid" || break; sleep 0.1; done
if running "$newpid"; then kill -KILL "$newpid" 2>/dev/null || true; fi
say "stopped pid $newpid; removing $work"
say "done."
