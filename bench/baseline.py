"""B: this tree against a baseline revision, side by side in one run.

Issue #12 asks that none of its fixes slow P1-P4 by more than 5%. The baseline (by default the
last commit before that work) is checked out with `git worktree` into the bench's temporary
folder and installed there as `make` installs this tree; then both taps (and both `meltano run`
jobs) read the same emulator in alternating turns, each turn's order swapped, so that a load
that comes and goes weighs on both. Both run with the tuned window, the only way the baseline's
P1-P4 were measured (it predates the walk that finds where history begins).
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.harness import (
    HERE,
    LIVE_KEY,
    P4_SMALL,
    ROOT,
    STREAMS,
    UNLIMITED,
    Row,
    Tree,
    emulator,
    job_env,
    meltano,
    peak_rss,
    run_job,
    run_tap,
)

BASELINE = "e8f9a96"  # 2026-11-26, P1-P4 all met; issue #12's first commit came next
GOAL = "≥ 0.95"  # no more than 5% slower (or larger) than the baseline


@contextlib.contextmanager
def checkout(revision: str, workdir: Path) -> Iterator[Tree]:
    """`revision` installed in its own worktree, removed afterwards."""
    root = workdir / f"baseline-{revision}"
    git = ["git", "-C", str(ROOT), "worktree"]
    subprocess.run([*git, "add", "--detach", str(root), revision], check=True, capture_output=True)
    try:
        subprocess.run(["make", ".venv/.installed"], cwd=root, check=True, capture_output=True)
        yield Tree(root, root / ".venv" / "bin")
    finally:
        subprocess.run([*git, "remove", "--force", str(root)], check=True, capture_output=True)


def in_turns(measure: Callable[[Tree, int], float], old: Tree, rounds: int) -> dict[str, list]:
    """`measure(tree, turn)` for both trees, `rounds` times, the order swapped each round."""
    trees = {"baseline": old, "this tree": HERE}
    results: dict[str, list] = {name: [] for name in trees}
    for turn in range(rounds):
        for name in sorted(trees, reverse=bool(turn % 2)):
            results[name].append(measure(trees[name], turn))
    return results


def row(measure: str, results: dict[str, list], unit: str, higher_is_better: bool) -> Row:
    old, new = statistics.median(results["baseline"]), statistics.median(results["this tree"])
    return Row(
        f"B {measure}: this tree ÷ {BASELINE}",
        new / old if higher_is_better else old / new,
        GOAL,
        f"medians of {len(results['baseline'])}: this tree {new:,.1f} {unit}, baseline "
        f"{old:,.1f} {unit}",
    )


def p4_row(small: dict[str, list], large: dict[str, list]) -> Row:
    """P4 is memory's growth with the data (peak RSS, large ÷ small), compared as such."""
    growth = {tree: large[tree][0] / small[tree][0] for tree in small}
    return Row(
        f"B P4 peak RSS large ÷ small: {BASELINE} ÷ this tree",
        growth["baseline"] / growth["this tree"],
        GOAL,
        ", ".join(
            f"{tree} {small[tree][0]:.0f} → {large[tree][0]:.0f} MiB ({growth[tree]:.2f})"
            for tree in small
        ),
    )


def b_baseline(sizes: dict[str, int], workdir: Path, revision: str = BASELINE) -> list[Row]:
    """P1 (tap objects/s, limiter lifted), P2 (wall under live limits at 200 ms), P3 (`meltano
    run` objects/s) and P4 (the tap's peak RSS, large ÷ small data set), both trees."""
    with checkout(revision, workdir) as old:
        rows = []
        total = sizes["P1"] * len(STREAMS)
        with emulator(sizes["P1"]) as url:

            def p1(tree: Tree, turn: int) -> float:
                return total / run_tap(url, STREAMS, workdir, tree=tree, **UNLIMITED)["seconds"]

            rows.append(row("P1 tap objects/s", in_turns(p1, old, 3), "objects/s", True))
        with emulator(sizes["P2"], "--latency-ms", "200", "--rate-limit", "live") as url:

            def p2(tree: Tree, turn: int) -> float:
                return run_tap(url, STREAMS, workdir, tree=tree, api_key=LIVE_KEY)["seconds"]

            rows.append(row("P2 wall, live limits, 200 ms", in_turns(p2, old, 2), "s", False))
        for tree in (old, HERE):
            meltano("install", env=job_env(workdir / "install"), tree=tree)
        total = sizes["P3"] * len(STREAMS)
        with emulator(sizes["P3"]) as url:

            def p3(tree: Tree, turn: int) -> float:
                env = job_env(workdir / f"job-{tree.root.name}-{turn}")  # a first run each
                return total / run_job(url, env, tree)["seconds"]

            rows.append(row("P3 meltano run objects/s", in_turns(p3, old, 3), "objects/s", True))
        peaks: dict[int, dict[str, list]] = {}
        for objects in (P4_SMALL, sizes["P4"]):
            with emulator(objects) as url:
                peaks[objects] = in_turns(lambda tree, turn: peak_rss(url, workdir, tree), old, 1)
        rows.append(p4_row(peaks[P4_SMALL], peaks[sizes["P4"]]))
        return rows
