"""The scenes the experiment scripts judge: `n` per caption form, each from its own seeded generator."""
import numpy as np

from pintor.data.shapes import make_sample, sample_spec
from pintor.eval.detector import judge
from pintor.eval.evaluate import FORMS


def judge_per_form(paint, n: int, seed: int, allow_held_out: bool) -> dict:
    """Accuracy per form (and "all") of `paint(sample, i)`, an image judged against the sample's caption."""
    res = {}
    for k, form in enumerate(FORMS):
        ok = []
        for i in range(n):
            rng = np.random.default_rng([seed, i, k])
            s = make_sample(sample_spec(rng, form=form, allow_held_out=allow_held_out), rng)
            ok.append(judge(paint(s, i), s.caption).correct)
        res[form] = float(np.mean(ok))
    res["all"] = float(np.mean(list(res.values())))
    return res
