#!/usr/bin/env bash
# Instructions per iteration of each case under callgrind: a repeatable second opinion to the
# timings of baselines.rs on a noisy machine.
# Usage: benches/instructions.sh [iterations]   (default 10000)
#        FEATURES=tracing benches/instructions.sh   (the bench crate's features: async-fence's
#        `tracing` compiled in, no subscriber; compare with a run without)
# Each case runs twice, with N and 2N iterations; (Ir(2N) - Ir(N)) / N is the cost of one
# iteration, set-up and warm-up cancelling out.
set -euo pipefail
cd "$(dirname "$0")/.."
iters=${1:-10000}
bin=$(cargo bench -p async-fence-benches ${FEATURES:+--features "$FEATURES"} --bench instructions \
  --no-run --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
total() {
  local out
  out=$(mktemp)
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "$1" "$2" >/dev/null 2>&1
  callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
  rm -f "$out"
}
printf '%-20s %10s %10s %7s\n' case fence baseline ratio
for group in $("$bin" --list-cases); do
  declare -A ir=()
  for side in fence baseline; do
    small=$(total "$group/$side" "$iters")
    large=$(total "$group/$side" $((2 * iters)))
    ir[$side]=$(( (large - small) / iters ))
  done
  ratio=$(awk -v a="${ir[fence]}" -v b="${ir[baseline]}" 'BEGIN { printf "%.2f", a / b }')
  printf '%-20s %10s %10s %7s\n' "$group" "${ir[fence]}" "${ir[baseline]}" "$ratio"
done
