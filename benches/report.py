#!/usr/bin/env python3
"""Prints the table of benches/README.md from criterion's results of the last run.

Usage: cargo bench -p async-fence-benches --bench baselines && python3 benches/report.py
Reads target/criterion/<group>/<id>/new/estimates.json (median point estimates).
"""
import json
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "criterion")

# (label, group, async-fence id, baseline id, target ratio or None)
ROWS = [
    ("quick path, body ready", "quick_ready", "fence", "baseline_or_timer", 1.25),
    ("quick path, body pending once", "quick_yield_once", "fence", "baseline_or_timer", 1.25),
    ("scope enter + exit, one timeout", "scope_enter_exit", "fence", "baseline_child_token", 1.0),
    ("  (same, baseline + async-io timer)", "scope_enter_exit", "fence", "baseline_token_and_timer", None),
    ("`Cx::clone` + drop", "cx_clone", "fence", "baseline_token", 1.0),
    ("`Cx::is_cancelled`", "cx_is_cancelled", "fence", "baseline_token", 1.0),
    ("spawn + join one child", "spawn_join", "fence", "baseline_executor_spawn", 1.3),
    ("cancel 10 000 pending children", "cancel_tree", "fence/10000", "baseline_tasks/10000", 1.5),
    ("cancel 100 000 pending children", "cancel_tree", "fence/100000", "baseline_tasks/100000", None),
    ("flag fanned out to 10 000 scopes", "flag_fanout", "fence/10000", "baseline_event/10000", 2.0),
]


def median_ns(group, ident):
    path = os.path.join(ROOT, group, ident, "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"]
    except OSError:
        return None


def show(ns):
    if ns is None:
        return "n/a"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"


def main():
    out = sys.stdout
    out.write("| case | async-fence | baseline | ratio | target | holds |\n")
    out.write("|---|---:|---:|---:|---:|:---:|\n")
    for label, group, ours, theirs, target in ROWS:
        a, b = median_ns(group, ours), median_ns(group, theirs)
        ratio = a / b if a and b else None
        holds = "" if target is None or ratio is None else ("yes" if ratio <= target else "**no**")
        out.write(
            f"| {label} | {show(a)} | {show(b)} | "
            f"{'n/a' if ratio is None else f'{ratio:.2f}'} | "
            f"{'' if target is None else f'≤ {target}'} | {holds} |\n"
        )
    small, large = median_ns("cancel_tree", "fence/10000"), median_ns("cancel_tree", "fence/100000")
    if small and large:
        ratio = large / small
        out.write(
            f"| linearity: 100 000 / 10 000 children | {show(large)} | {show(small)} | "
            f"{ratio:.2f} | ≤ 12 | {'yes' if ratio <= 12 else '**no**'} |\n"
        )
    out.write("\n| triggers that do not fire (enter + exit) | 1 | 8 | 64 | per extra trigger (1 → 64) |\n")
    out.write("|---|---:|---:|---:|---:|\n")
    for kind in ("timeouts", "flags"):
        t = [median_ns("triggers", f"{kind}/{n}") for n in (1, 8, 64)]
        per = (t[2] - t[0]) / 63 if t[0] and t[2] else None
        out.write(
            f"| {kind} | {show(t[0])} | {show(t[1])} | {show(t[2])} | "
            f"{'n/a' if per is None else f'{per:.1f} ns'} |\n"
        )


if __name__ == "__main__":
    main()
