#!/usr/bin/env python3
"""Prints the tables of benches/README.md from criterion's results of the last runs.

Usage (from the repository's root):

    cargo bench -p async-fence-benches
    cargo bench -p async-fence-benches --features tracing --bench why -- tracing_cost
    python3 benches/report.py

Reads target/criterion/<group>/<id>/new/estimates.json (median point estimates). Every ratio
is of two medians measured in the same group of the same run, except the `tracing` rows,
which compare two builds (see README.md).
"""
import json
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "criterion")


def median_ns(group, ident):
    path = os.path.join(ROOT, group, *ident.split("/"), "new", "estimates.json")
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


def ratio_of(a, b):
    return a / b if a and b else None


def holds(ratio, target):
    if target is None or ratio is None:
        return ""
    return "yes" if ratio <= target else "**no**"


def fmt_ratio(r):
    return "n/a" if r is None else f"{r:.2f}"


def fmt_target(t):
    return "" if t is None else f"≤ {t}"


def table(out, rows):
    """Rows of (label, group, async-fence id, baseline id, target ratio or None)."""
    out.write("| case | async-fence | baseline | ratio | target | holds |\n")
    out.write("|---|---:|---:|---:|---:|:---:|\n")
    for label, group, ours, theirs, target in rows:
        a, b = median_ns(group, ours), median_ns(group, theirs)
        r = ratio_of(a, b)
        out.write(
            f"| {label} | {show(a)} | {show(b)} | {fmt_ratio(r)} | "
            f"{fmt_target(target)} | {holds(r, target)} |\n"
        )


# baselines.rs: the v0.1 cases, and the one-flag scope.
BASELINES = [
    ("quick path, body ready", "quick_ready", "fence", "baseline_or_timer", 1.25),
    ("quick path, body pending once", "quick_yield_once", "fence", "baseline_or_timer", 1.25),
    ("scope enter + exit, one timeout", "scope_enter_exit", "fence", "baseline_child_token", 1.0),
    ("  (same, baseline + async-io timer)", "scope_enter_exit", "fence", "baseline_token_and_timer", None),
    ("scope enter + exit, one flag", "scope_enter_exit", "fence_one_flag", "baseline_child_token", 1.0),
    ("`Cx::clone` + drop", "cx_clone", "fence", "baseline_token", 1.0),
    ("`Cx::is_cancelled`", "cx_is_cancelled", "fence", "baseline_token", 1.0),
    ("spawn + join one child", "spawn_join", "fence", "baseline_executor_spawn", 1.3),
    ("cancel 10 000 pending children", "cancel_tree", "fence/10000", "baseline_tasks/10000", 1.5),
    ("cancel 100 000 pending children", "cancel_tree", "fence/100000", "baseline_tasks/100000", None),
    ("flag fanned out to 10 000 scopes", "flag_fanout", "fence/10000", "baseline_event/10000", 2.0),
]

# nesting.rs: (label, group, id, small, large, unit, target of per-unit large / small).
SCALING = [
    ("chain of nested scopes across child tasks", "nesting_chain", "fence", 100, 1000, "level", 1.5),
    ("  (same, plain `Executor::spawn` chain)", "nesting_chain", "baseline_plain", 100, 1000, "level", None),
    ("one wake-up of the leaf (round trip)", "nesting_wake_leaf", "fence", 50, 500, None, 1.5),
    ("  (same, leaf of a plain chain)", "nesting_wake_leaf", "baseline_plain", 50, 500, None, None),
    ("leaf entered, woken by its own flag, returned", "nesting_fire_leaf", "fence", 50, 500, None, 1.5),
    ("building a fencing of n flags, one call each", "nesting_build_fencing", "flags", 1000, 10000, "flag", 2.0),
]

# stopping.rs, why.rs, beyond.rs: both sides measured in one group.
V02 = [
    ("grace unused, body ready (9)", "grace_unused", "fence_grace_ready", "fence_ready", 1.05),
    ("grace unused, body pending once (9)", "grace_unused", "fence_grace_yield_once", "fence_yield_once", 1.05),
    ("`spawn_try` + join vs `spawn` + join (9)", "spawn_try_join", "fence_spawn_try", "fence_spawn", 1.05),
    ("cancel 10 000 children: `spawn_try` failure vs flag (9)", "cancel_by_failure",
     "fence_spawn_try/10000", "fence_flag/10000", 1.1),
    ("scope enter + exit named vs not (10)", "named", "fence_named", "fence", 1.02),
    ("`cx.check()`, scope with no trigger, vs token `is_cancelled` (11)", "check_no_deadline",
     "fence_check_no_trigger", "baseline_token_is_cancelled", 1.0),
    ("`cx.check()`, scope with one flag, vs token `is_cancelled` (11)", "check_no_deadline",
     "fence_check_one_flag", "baseline_token_is_cancelled", 1.0),
    ("`cx.unblock` + join vs `blocking::unblock` + await (11)", "unblock_join",
     "fence_unblock", "baseline_blocking_unblock", 1.2),
    ("child via `with_spawner` on smol vs `smol::spawn` (11)", "with_spawner_smol",
     "fence_spawn", "baseline_smol_spawn", 1.3),
    ("child via `with_spawner` on tokio current-thread vs `tokio::spawn` (11)",
     "with_spawner_tokio_current_thread", "fence_spawn", "baseline_tokio_spawn", 1.3),
    ("child via `with_spawner` on tokio multi-thread vs `tokio::spawn` (11)",
     "with_spawner_tokio_multi_thread", "fence_spawn", "baseline_tokio_spawn", 1.3),
]


def scaling(out):
    out.write("| case | n (small, large) | small | large | per unit, small | per unit, large "
              "| large / small per unit | target | holds |\n")
    out.write("|---|---|---:|---:|---:|---:|---:|---:|:---:|\n")
    for label, group, ident, small, large, unit, target in SCALING:
        a, b = median_ns(group, f"{ident}/{small}"), median_ns(group, f"{ident}/{large}")
        if unit is None:
            pa, pb = a, b
        else:
            pa = a / small if a else None
            pb = b / large if b else None
        r = ratio_of(pb, pa)
        out.write(
            f"| {label} | {small:,}, {large:,} | {show(a)} | {show(b)} | {show(pa)} | {show(pb)} | "
            f"{fmt_ratio(r)} | {fmt_target(target)} | {holds(r, target)} |\n"
        )


def extras(out):
    # Issue 11: check with a deadline against one clock read: the difference is the figure.
    a, b = median_ns("check_deadline", "fence_check"), median_ns("check_deadline", "baseline_instant_now")
    diff = a - b if a and b else None
    ok = "" if diff is None else ("yes" if diff <= 10 else "**no**")
    out.write(
        f"| `cx.check()`, one timeout armed, vs one `Instant::now()` (11) | {show(a)} | {show(b)} | "
        f"{'n/a' if diff is None else f'+{diff:.1f} ns'} | ≤ +10 ns | {ok} |\n"
    )
    # Issue 10: the tracing feature, two builds; each normalised by its own run's baseline.
    for label, ours, theirs in [
        ("scope enter + exit (named)", "scope", "baseline_child_token"),
        ("spawn + join one child", "spawn_join", "baseline_executor_spawn"),
    ]:
        plain, traced = median_ns("tracing_cost", f"{ours}/plain"), median_ns("tracing_cost", f"{ours}/tracing")
        r = ratio_of(traced, plain)
        out.write(
            f"| `tracing` compiled in, no subscriber, vs not: {label} (10) | {show(traced)} | "
            f"{show(plain)} | {fmt_ratio(r)} | ≤ 1.1 | {holds(r, 1.1)} |\n"
        )
        bp, bt = median_ns("tracing_cost", f"{theirs}/plain"), median_ns("tracing_cost", f"{theirs}/tracing")
        rp, rt = ratio_of(plain, bp), ratio_of(traced, bt)
        n = ratio_of(rt, rp)
        out.write(
            f"|   (each against its own run's `{theirs}`: {fmt_ratio(rt)} vs {fmt_ratio(rp)}) | | | "
            f"{fmt_ratio(n)} | ≤ 1.1 | {holds(n, 1.1)} |\n"
        )
    # Issue 10: snapshot of 1,001 scopes (root + 1,000) holding 10,000 children.
    t = median_ns("snapshot", "tree_1000_scopes_10000_children")
    per = t / 1.001 if t else None
    ok = "" if per is None else ("yes" if per < 1e6 else "**no**")
    out.write(
        f"| snapshot of 1 001 scopes and 10 000 children (10): whole tree {show(t)}, "
        f"per 1 000 scopes | {show(per)} | | | well under 1 ms | {ok} |\n"
    )


def main():
    out = sys.stdout
    out.write("### v0.1 cases (`--bench baselines`)\n\n")
    table(out, BASELINES)
    small, large = median_ns("cancel_tree", "fence/10000"), median_ns("cancel_tree", "fence/100000")
    if small and large:
        r = large / small
        out.write(
            f"| linearity: 100 000 / 10 000 children | {show(large)} | {show(small)} | "
            f"{r:.2f} | ≤ 12 | {'yes' if r <= 12 else '**no**'} |\n"
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
    out.write("\n### Depth and size (`--bench nesting`, issue 8)\n\n")
    scaling(out)
    out.write("\n### v0.2 features (`--bench stopping`, `why`, `beyond`; issues 9, 10, 11)\n\n")
    table(out, V02)
    extras(out)


if __name__ == "__main__":
    main()
