"""`pintor eval` on a tiny model: it runs every part and writes a well-formed report and contact sheet."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from conftest import run_cli
from pintor.data.shapes import HELD_OUT, parse_caption
from pintor.eval.evaluate import CATEGORIES, EvalConfig, category_of, default_prompts, evaluate_mixing
from pintor.eval.stats import compare_reports, mcnemar_p, wilson_interval


def test_default_prompts_cover_every_category():
    prompts = default_prompts(6)
    assert {c for c, _ in prompts} == set(CATEGORIES)
    for cat, caption in prompts:
        spec = parse_caption(caption)
        assert category_of(spec) == cat
        if cat != "single_held_out":
            assert not set(spec.objects) & HELD_OUT
    assert default_prompts(6) == prompts  # deterministic


@pytest.mark.parametrize("weights", [(1.0,), (0.5, 0.0), (1.0, 0.5)])
def test_mixing_weights_must_run_from_one_to_zero(weights):
    # Checked before any painting, so no painter is needed to see the refusal.
    with pytest.raises(ValueError, match="from 1.0 down to 0.0"):
        evaluate_mixing(None, EvalConfig(n=1), [], weights=weights)


@pytest.mark.slow
def test_eval_cli_writes_report_and_sheet(tiny_k22, tmp_path):
    r = run_cli("eval", "--model", tiny_k22, "--n", 1, "--out", "ev", "-q", "--guidance-scale", 3,
                "--prior-guidance-scale", 2, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert report["config"]["settings"] == {"guidance_scale": 3.0, "prior_guidance_scale": 2.0}
    assert set(report["prompts"]["accuracy"]) == set(CATEGORIES) | {"overall"}
    assert all(0 <= v <= 1 for v in report["prompts"]["accuracy"].values())
    assert set(report["mixing"]) == {"image", "text"} and "correct_and_placed" in report["control"]
    assert report["inpaint"]["outside_unchanged"] == 1.0  # the composite keeps every outside pixel
    forms = {"single", "count", "pair", "relation", "overall"}
    assert set(report["variations"]["accuracy"]) == forms == set(report["variations"]["movq_round_trip"])
    assert report["speed"]["load_seconds"] > 0 and report["speed"]["seconds_per_image"] > 0
    # The speed figures name the machine they were taken on.
    assert report["host"]["device"] == "cpu" and report["host"]["device_name"].startswith("CPU ")
    assert report["versions"]["torch"] and report["versions"]["diffusers"]
    sheet = Image.open(tmp_path / "ev" / "contact-sheet.png")
    assert sheet.width > 128 and sheet.height > 128
    assert "overall" in r.stdout and "MoVQ round trip" in r.stdout
    lo, hi = report["prompts"]["interval95"]["overall"]
    assert 0 <= lo <= report["prompts"]["accuracy"]["overall"] <= hi <= 1

    # Same model, seed and settings: the same pixels, so a rerun against this report differs on no case.
    r = run_cli("eval", "--model", tiny_k22, "--n", 1, "--out", "ev2", "-q", "--no-modes", "--guidance-scale", 3,
                "--prior-guidance-scale", 2, "--baseline", "ev/eval.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "ev2" / "eval.json").read_text())["comparison"]
    assert rows["overall"]["n"] == 6 and all(v["better"] == v["worse"] == 0 for v in rows.values())
    assert "against the baseline" in r.stdout

    # Control and inpainting alone (a new ControlNet or inpaint decoder): the very cases of the whole run.
    r = run_cli("eval", "--model", tiny_k22, "--n", 1, "--out", "ev3", "-q", "--only", "control,inpaint",
                "--guidance-scale", 3, "--prior-guidance-scale", 2, "--baseline", "ev/eval.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    part = json.loads((tmp_path / "ev3" / "eval.json").read_text())
    assert "prompts" not in part and "mixing" not in part and "variations" not in part
    for mode in ("control", "inpaint"):
        assert part[mode]["judged"] == report[mode]["judged"]
        assert part["comparison"][mode]["better"] == part["comparison"][mode]["worse"] == 0
    assert set(part["comparison"]) == {"control", "inpaint"} and "control" in r.stdout


def test_eval_only_names_its_parts(tmp_path):
    r = run_cli("eval", "--only", "control,paint", cwd=tmp_path)
    assert r.returncode == 2 and "--only: parts must be some of prompts, mix, control, inpaint, variations, " \
        "got control, paint" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("eval", "--only", "control", "--no-modes", cwd=tmp_path)
    assert r.returncode == 2 and "--only and --no-modes both choose what to run" in r.stderr


def test_eval_bad_prompts_file(tmp_path):
    (tmp_path / "p.txt").write_text("a red circle\na purple zebra\n")
    r = run_cli("eval", "--prompts", "p.txt", cwd=tmp_path)
    assert r.returncode == 2 and "p.txt:2: not a shapes-world caption" in r.stderr
    assert "Traceback" not in r.stderr


def test_eval_bad_guidance(tmp_path):
    r = run_cli("eval", "--prior-guidance-scale", -1, cwd=tmp_path)
    assert r.returncode == 2 and "prior_guidance_scale must be a number from 0 to 100, got -1.0" in r.stderr
    assert "Traceback" not in r.stderr


def test_data_shapes_cli(tmp_path):
    r = run_cli("data", "shapes", "--n", 3, "--out", "ds", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = (tmp_path / "ds" / "metadata.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(ln)["text"] for ln in lines)
    assert Image.open(tmp_path / "ds" / json.loads(lines[0])["file_name"]).size == (128, 128)


def test_wilson_interval_and_mcnemar_known_values():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0 and abs(hi - 0.2775) < 1e-3
    lo, hi = wilson_interval(20, 24)
    assert lo < 20 / 24 < hi and abs(lo - 0.6415) < 1e-3 and abs(hi - 0.9332) < 1e-3
    assert mcnemar_p(0, 5) == 2 / 32 and mcnemar_p(3, 3) == 1.0 and mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(9, 1) == mcnemar_p(1, 9) < 0.05


def test_compare_reports_counts_discordant_prompts():
    def report(marks, control):
        judged = [[cat, f"caption {i}", ok] for i, (cat, ok) in enumerate(marks)]
        return {"prompts": {"judged": judged}, "control": {"judged": control}}

    cats = ["pair"] * 4 + ["count"] * 2
    new = report(zip(cats, [1, 1, 1, 0, 1, 1], strict=True), [True, False])
    old = report(zip(cats, [0, 0, 1, 1, 1, 1], strict=True), [True, True])
    rows = compare_reports(new, old)
    assert rows["pair"] == {"this": 0.75, "baseline": 0.5, "better": 2, "worse": 1, "n": 4, "p": 1.0}
    assert rows["count"]["better"] == rows["count"]["worse"] == 0
    assert rows["overall"]["n"] == 6 and rows["control"]["worse"] == 1
    other = report(zip(cats, [1] * 6, strict=True), [True, True])
    other["prompts"]["judged"][0][1] = "another caption"
    with pytest.raises(ValueError, match="different prompts"):
        compare_reports(new, other)


def test_eval_baseline_errors_before_any_run(tmp_path):
    r = run_cli("eval", "--baseline", "missing.json", cwd=tmp_path)
    assert r.returncode == 2 and "--baseline missing.json: no such file" in r.stderr
    (tmp_path / "b.json").write_text(json.dumps({"prompts": {"judged": [["pair", "a red circle", True]]}}))
    r = run_cli("eval", "--baseline", "b.json", "--n", 1, cwd=tmp_path)
    assert r.returncode == 2 and "judged other prompts" in r.stderr and "Traceback" not in r.stderr
