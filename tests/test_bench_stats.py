"""bench/slow_stats.py: the verdicts quoted for the +10 % criterion must say what the rounds say."""

from __future__ import annotations

import json
import random

from bench import slow_stats


def _rounds(center: float, spread: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [round(center + rng.uniform(-spread, spread), 3) for _ in range(n)]


def test_the_interval_holds_the_median_and_narrows_with_more_rounds():
    few, many = _rounds(1.0, 0.2, 8, 1), _rounds(1.0, 0.2, 96, 1)
    lo_few, hi_few = slow_stats.bootstrap_median_interval(few)
    lo_many, hi_many = slow_stats.bootstrap_median_interval(many)
    assert lo_few <= sorted(few)[4] <= hi_few
    assert hi_many - lo_many < hi_few - lo_few


def test_the_permutation_test_separates_a_shift_and_not_a_repeat():
    control = _rounds(1.0, 0.1, 24, 2)
    assert slow_stats.permutation_p(_rounds(1.0, 0.1, 24, 3), control) > 0.05
    assert slow_stats.permutation_p(_rounds(1.3, 0.1, 24, 4), control) < 0.01
    # one-sided: a variant cheaper than the control is not "above" it
    assert slow_stats.permutation_p(_rounds(0.7, 0.1, 24, 5), control) > 0.5


def test_verdicts_pool_files_and_name_what_is_within(tmp_path, capsys):
    def result(seed: int, shift: float) -> dict:
        slow = {"clean": {"vs_clean_rounds": [1.0] * 12}}
        slow["clean-again"] = {
            "vs_clean_rounds": _rounds(1.0, 0.05, 12, seed),
            "vs_clean_rounds_p50": _rounds(1.0, 0.02, 12, seed),
        }
        slow["trickle"] = {
            "vs_clean_rounds": _rounds(1.0 + shift, 0.05, 12, seed + 1),
            "vs_clean_rounds_p50": _rounds(1.0, 0.02, 12, seed + 1),
        }
        return {"meta": {}, "results": {"slow": slow}}

    files = []
    for i in range(2):
        path = tmp_path / f"run{i}.json"
        path.write_text(json.dumps(result(10 * i, 0.3)))
        files.append(str(path))
    out = tmp_path / "verdicts.json"
    assert slow_stats.main([*files, "--json", str(out)]) == 0
    verdicts = json.loads(out.read_text())
    assert verdicts["trickle"]["p99"]["n"] == 24  # both files' rounds
    assert verdicts["trickle"]["p99"]["separable"] and not verdicts["trickle"]["p99"]["within_10pct"]
    assert verdicts["trickle"]["p50"]["within_10pct"] and not verdicts["trickle"]["p50"]["separable"]
    assert verdicts["clean-again"]["p99"]["within_10pct"] and "p_vs_control" not in verdicts["clean-again"]["p99"]
    assert "clean" not in verdicts
    assert "above the control" in capsys.readouterr().out


def test_an_ab_run_compares_each_variant_with_its_twin_of_the_other_tree(tmp_path, capsys):
    """`bench.run --slow-against REV`: REV's variants are `<name>@REV`, each against its own server's control."""
    slow = {"clean": {}, "clean@old": {"vs_clean_rounds": [1.0] * 20}}
    for suffix, shift, seed in (("", 0.3, 1), ("@old", 0.0, 20)):
        slow["clean-again" + suffix] = {"vs_clean_rounds": _rounds(1.0, 0.05, 20, seed)}
        slow["trickle" + suffix] = {"vs_clean_rounds": _rounds(1.0 + shift, 0.05, 20, seed + 1)}
    path, out = tmp_path / "ab.json", tmp_path / "verdicts.json"
    path.write_text(json.dumps({"meta": {}, "results": {"slow": slow}}))
    assert slow_stats.main([str(path), "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    verdicts, ab = written["verdicts"], written["ab"]
    # the other tree's trickle is judged against its own A/A control, not this tree's
    assert "p_vs_control" not in verdicts["clean-again@old"]["p99"]
    assert not verdicts["trickle@old"]["p99"]["separable"] and verdicts["trickle"]["p99"]["separable"]
    assert set(ab) == {"clean-again@old", "trickle@old"} and "clean@old" not in verdicts
    assert ab["trickle@old"]["p99"]["p_higher"] < 0.01 < 0.5 < ab["trickle@old"]["p99"]["p_lower"]
    assert ab["clean-again@old"]["p99"]["p_higher"] > 0.05
    assert "A/B trickle p99: this tree x1.3" in capsys.readouterr().out
