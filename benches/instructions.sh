#!/usr/bin/env bash
# Instructions per iteration of each micro case under callgrind (repeatable, unlike timings).
# Usage: benches/instructions.sh [iterations]   (default 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
iters=${1:-20000}
bin=$(cargo bench --bench instructions --no-run --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
cases=$("$bin" --list-cases)
printf '%-28s %12s %12s %8s\n' case fence baseline ratio
for group in $cases; do
  declare -A ir=()
  for side in fence baseline; do
    out=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file="$out" --toggle-collect='*measured*' \
      "$bin" "$group/$side" "$iters" >/dev/null 2>&1
    total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    rm -f "$out"
    ir[$side]=$(( total / iters ))
  done
  ratio=$(awk -v a="${ir[fence]}" -v b="${ir[baseline]}" 'BEGIN { printf "%.2f", a / b }')
  printf '%-28s %12s %12s %8s\n' "$group" "${ir[fence]}" "${ir[baseline]}" "$ratio"
done
