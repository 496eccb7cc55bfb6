#!/usr/bin/env bash
# Runs every native Go fuzzer of the services module for the given time each (default 3s).
set -euo pipefail
fuzztime=${1:-3s}
cd "$(dirname "$0")/.."
grep -rl --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]+\(f \*testing\.F\)' . | sort | while read -r file; do
  pkg=./$(dirname "${file#./}")
  grep -hoE '^func Fuzz[A-Za-z0-9_]+' "$file" | sed 's/^func //' | while read -r fz; do
    echo "fuzz $pkg $fz ($fuzztime)"
    go test -run '^$' -fuzz "^${fz}\$" -fuzztime "$fuzztime" "$pkg" >/tmp/fuzz.$$.log 2>&1 || { cat /tmp/fuzz.$$.log; exit 1; }
  done
done
