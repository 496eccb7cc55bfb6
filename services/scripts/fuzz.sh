#!/usr/bin/env bash
# Runs every native Go fuzzer of the services module for the given time each (default 3s).
#
# Go 1.26's fuzzing coordinator can fail a target with a bare "context deadline exceeded" when
# -fuzztime ends while a starved worker is mid-call (go.dev/issue/75804, fixed in Go 1.27). That
# failure writes no failing input, so a target that fails that way, and only that way, is run once
# more; any failure that wrote an input, or any other message, fails at once.
set -euo pipefail
fuzztime=${1:-3s}
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT

coordinator_race() {
  ! grep -q 'Failing input written to' "$log" &&
    grep -qx '[[:space:]]*context deadline exceeded' "$log" &&
    [ "$(grep -c -- '--- FAIL' "$log")" -eq 1 ]
}

grep -rl --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]+\(f \*testing\.F\)' . | sort | while read -r file; do
  pkg=./$(dirname "${file#./}")
  grep -hoE '^func Fuzz[A-Za-z0-9_]+' "$file" | sed 's/^func //' | while read -r fz; do
    for attempt in 1 2; do
      echo "fuzz $pkg $fz ($fuzztime)"
      if go test -run '^$' -fuzz "^${fz}\$" -fuzztime "$fuzztime" "$pkg" >"$log" 2>&1; then
        break
      fi
      if [ "$attempt" -eq 1 ] && coordinator_race; then
        echo "fuzz $pkg $fz: 'context deadline exceeded' with no failing input (go.dev/issue/75804); running it again"
        continue
      fi
      cat "$log"
      exit 1
    done
  done
done
