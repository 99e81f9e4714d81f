#!/usr/bin/env bash
# Runs every test (unit and end-to-end). Needs root (ptrace, clone3 set_tid).
# Prints the runner's summary and a closing "N passed, N failed" line; exits non-zero on any failure.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"
scripts/install-deps.sh || exit 1
./ckpt --help >/dev/null || { echo "test: building ckpt failed" >&2; exit 1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
dotnet test tests/Ckpt.Tests/Ckpt.Tests.csproj -nologo 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
summary=$(grep -E 'Failed:[[:space:]]*[0-9]+, Passed:[[:space:]]*[0-9]+' "$log" | tail -1)
if [[ -n "$summary" ]]; then
  failed=$(sed -E 's/.*Failed:[[:space:]]*([0-9]+).*/\1/' <<<"$summary")
  passed=$(sed -E 's/.*Passed:[[:space:]]*([0-9]+).*/\1/' <<<"$summary")
  skipped=$(sed -nE 's/.*Skipped:[[:space:]]*([0-9]+).*/\1/p' <<<"$summary")
  echo "tests: ${passed} passed, ${failed} failed${skipped:+, ${skipped} skipped}"
  if [[ "$passed" == 0 && "$failed" == 0 ]]; then echo "test: no test ran" >&2; exit 1; fi
fi
exit "$rc"
