"""How sure an eval figure is: Wilson intervals for one model, paired McNemar tests between two.

With 24 prompts a category a single image moves the accuracy by 4 points, so two models' figures can differ
by chance alone. Both reports of a comparison judge the same prompts with the same seeds, so the test counts
only the prompts on which exactly one of the two models is right (McNemar's exact test).
"""

from __future__ import annotations

import math


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of `correct` successes out of `n` (95% for the default `z`); `(nan, nan)` for n=0."""
    if n == 0:
        return float("nan"), float("nan")
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_p(better: int, worse: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs: `better` prompts only the new model gets right,
    `worse` only the baseline gets right. 1.0 when there are none."""
    n = better + worse
    if n == 0:
        return 1.0
    k = min(better, worse)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _paired(this: list, base: list, what: str) -> dict:
    if len(this) != len(base):
        raise ValueError(f"{what}: this report judged {len(this)} cases, the baseline {len(base)}; "
                         "expected the same prompt set (same --n, --seed and --prompts)")
    better = sum(1 for a, b in zip(this, base, strict=True) if a and not b)
    worse = sum(1 for a, b in zip(this, base, strict=True) if b and not a)
    n = len(this)
    return {"this": sum(map(bool, this)) / n if n else float("nan"),
            "baseline": sum(map(bool, base)) / n if n else float("nan"),
            "better": better, "worse": worse, "n": n, "p": round(mcnemar_p(better, worse), 4)}


def judged_prompts(report: dict) -> list[tuple[str, str]]:
    """The `(category, caption)` prompts a report judged, in order (as `default_prompts` gives them)."""
    return [(j[0], j[1]) for j in report["prompts"]["judged"]]


def compare_reports(report: dict, baseline: dict) -> dict:
    """Paired comparison of two `pintor eval` reports over the same prompts.

    Returns, for each category, `overall`, and `control` / `inpaint` when both reports judged as many: both
    accuracies, how many cases only this model (`better`) or only the baseline (`worse`) got right, and
    McNemar's two-sided p-value.

    Raises:
        ValueError: a report lacks per-prompt results, or the two judged different prompts.
    """
    rows = {}
    if "prompts" in report:  # a report of modes alone (`pintor eval --only control`) has none
        try:
            this_j, base_j = report["prompts"]["judged"], baseline["prompts"]["judged"]
        except (KeyError, TypeError):
            raise ValueError("a report has no per-prompt results (prompts.judged); expected eval.json from this "
                             "version of pintor eval") from None
        if judged_prompts(report) != judged_prompts(baseline):
            raise ValueError("the two reports judged different prompts; expected the same --n, --seed and --prompts")
        cats = list(dict.fromkeys(j[0] for j in this_j))
        for cat in cats:
            rows[cat] = _paired([j[2] for j in this_j if j[0] == cat], [j[2] for j in base_j if j[0] == cat], cat)
        rows["overall"] = _paired([j[2] for j in this_j], [j[2] for j in base_j], "overall")
    for mode in ("control", "inpaint"):
        a, b = (report.get(mode) or {}).get("judged"), (baseline.get(mode) or {}).get("judged")
        if a is not None and b is not None and len(a) == len(b):  # other lengths: modes run with another --n
            rows[mode] = _paired(a, b, mode)
    return rows
