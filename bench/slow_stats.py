"""Scenario 7's verdicts from its JSON: each variant's per-round ratios to the clean phase of the same server,
their median, a bootstrap interval of that median, and a permutation test against the A/A control.

    python -m bench.slow_stats bench/results/latest.json [more.json ...] [--json out.json]

Runs are pooled per variant when several files are given (the same variant in each). The control is
`clean-again`: the clean load a second time on the same server, so its ratios show what the comparison
resolves on this machine at this hour. A variant is "within +10 %" at a quantile only if the upper end of
its 90 % interval is at most 1.10; "separable" if the one-sided permutation test puts it above the control
at p < 0.05. The figures are the ones bench/RESULTS.md and docs/RELIABILITY.md quote.

An A/B run (`bench.run --slow-against REV`) also has every variant as `<variant>@REV`, REV's server compared
with its own clean phase and its own control; each variant is then tested against its `@REV` twin.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

CONTROL = "clean-again"
QUANTILES = ("p50", "p99")
RESAMPLES = 10_000


def bootstrap_median_interval(xs: list[float], level: float = 0.90, seed: int = 1) -> tuple[float, float]:
    """A percentile bootstrap interval of the median of `xs`."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(RESAMPLES))
    tail = (1 - level) / 2
    return medians[int(tail * RESAMPLES)], medians[min(RESAMPLES - 1, int((1 - tail) * RESAMPLES))]


def permutation_p(variant: list[float], control: list[float], seed: int = 1) -> float:
    """One-sided: how often relabelling the pooled ratios at random puts the variant's median at least as far
    above the control's as observed. Small: the variant costs more than the control's own spread explains."""
    rng = random.Random(seed)
    observed = statistics.median(variant) - statistics.median(control)
    pool, n = variant + control, len(variant)
    hits = 0
    for _ in range(RESAMPLES):
        rng.shuffle(pool)
        if statistics.median(pool[:n]) - statistics.median(pool[n:]) >= observed - 1e-12:
            hits += 1
    return (hits + 1) / (RESAMPLES + 1)


def round_ratios(slow: dict, variant: str, quantile: str) -> list[float]:
    r = slow.get(variant, {})
    return list(r.get("vs_clean_rounds" if quantile == "p99" else f"vs_clean_rounds_{quantile}", []))


def verdicts(slows: list[dict]) -> dict[str, dict[str, dict]]:
    """{variant: {quantile: {n, median, iqr, interval90, p_vs_control, within_10pct, separable}}}"""
    # "clean" (and an A/B's "clean@REV") is the reference each ratio is taken against: 1.0 by definition.
    names = [n for s in slows for n in s if n.split("@")[0] != "clean" and isinstance(s[n], dict)]
    out: dict[str, dict[str, dict]] = {}
    for name in dict.fromkeys(names):
        out[name] = {}
        for q in QUANTILES:
            xs = [x for s in slows for x in round_ratios(s, name, q)]
            if len(xs) < 2:
                continue
            suffix = name[name.index("@") :] if "@" in name else ""  # an A/B's other tree: its own control
            control = [x for s in slows for x in round_ratios(s, CONTROL + suffix, q)]
            lo, hi = bootstrap_median_interval(xs)
            quart = statistics.quantiles(xs, n=4)
            row = {
                "n": len(xs),
                "median": round(statistics.median(xs), 3),
                "iqr": [round(quart[0], 3), round(quart[2], 3)],
                "interval90": [round(lo, 3), round(hi, 3)],
                "within_10pct": hi <= 1.10,
            }
            if name != CONTROL + suffix and len(control) >= 2:
                p = permutation_p(xs, control)
                row["p_vs_control"] = round(p, 4)
                row["separable"] = p < 0.05
            out[name][q] = row
    return out


def ab(slows: list[dict]) -> dict[str, dict[str, dict]]:
    """An A/B run (`bench.run --slow-against REV`): each variant of this tree against the same variant of REV's
    server, both as ratios to their own server's clean phase. {variant@REV: {quantile: {this, other, p_higher,
    p_lower}}}: the one-sided permutation tests that this tree's ratios sit above (below) REV's."""
    out: dict[str, dict[str, dict]] = {}
    others = dict.fromkeys(n for s in slows for n in s if "@" in n and isinstance(s[n], dict))
    for other in others:
        name = other[: other.index("@")]
        if name == "clean":
            continue
        for q in QUANTILES:
            xs = [x for s in slows for x in round_ratios(s, name, q)]
            ys = [x for s in slows for x in round_ratios(s, other, q)]
            if len(xs) < 2 or len(ys) < 2:
                continue
            out.setdefault(other, {})[q] = {
                "this": round(statistics.median(xs), 3),
                "other": round(statistics.median(ys), 3),
                "p_higher": round(permutation_p(xs, ys), 4),
                "p_lower": round(permutation_p(ys, xs), 4),
            }
    return out


def table(result: dict[str, dict[str, dict]]) -> str:
    lines = [f"{'variant':<22}{'q':<5}{'n':>4}{'median':>9}{'IQR':>15}{'90% interval':>16}{'p vs A/A':>10}  verdict"]
    for name, by_q in result.items():
        for q, r in by_q.items():
            iqr = f"{r['iqr'][0]:.2f}-{r['iqr'][1]:.2f}"
            interval = f"{r['interval90'][0]:.2f}-{r['interval90'][1]:.2f}"
            p = f"{r['p_vs_control']:.3f}" if "p_vs_control" in r else "-"
            verdict = "within +10 %" if r["within_10pct"] else "not shown within +10 %"
            if r.get("separable"):
                verdict += ", above the control"
            lines.append(f"{name:<22}{q:<5}{r['n']:>4}{r['median']:>9.3f}{iqr:>15}{interval:>16}{p:>10}  {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="bench JSON files with a scenario 7 (slow) result")
    parser.add_argument("--json", type=Path, help="also write the verdicts here")
    args = parser.parse_args(argv)
    slows = []
    for path in args.files:
        try:
            slow = json.loads(path.read_text())["results"]["slow"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            parser.error(f"{path}: no scenario 7 result ({type(exc).__name__}: {exc})")
        if "error" in slow:
            parser.error(f"{path}: scenario 7 failed: {slow['error']}")
        slows.append(slow)
    result = verdicts(slows)
    print(table(result))
    compared = ab(slows)
    for other, by_q in compared.items():
        for q, r in by_q.items():
            print(
                f"A/B {other[: other.index('@')]} {q}: this tree x{r['this']:.3f}, {other[other.index('@') + 1 :]} "
                f"x{r['other']:.3f}; p(this higher) {r['p_higher']:.3f}, p(this lower) {r['p_lower']:.3f}"
            )
    if args.json:
        args.json.write_text(json.dumps({"verdicts": result, "ab": compared} if compared else result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
