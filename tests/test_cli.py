"""The `pintor` command in a subprocess, as a user runs it: outputs, metadata round trip and every bad input."""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli


def _only_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_generate_writes_numbered_png_with_metadata(tiny_k22, tmp_path):
    r = run_cli("generate", "a red circle above a blue square", "--model", tiny_k22, "--seed", 4, "-n", 2, "-q",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    paths = r.stdout.split()
    assert paths == ["outputs/00000-a-red-circle-above-a-blue-square.png",
                     "outputs/00001-a-red-circle-above-a-blue-square.png"]
    img = Image.open(tmp_path / paths[1])
    assert img.size == (64, 64)
    params = img.text["parameters"]
    assert params.splitlines()[0] == "a red circle above a blue square"
    for key in ("Steps: 2", "Sampler: ddpm", "CFG scale: 4.0", "Seed: 5", "Size: 64x64", "Model: tiny-k22",
                "Version: pintor"):
        assert key in params
    record = json.loads(img.text["pintor"])
    assert record["seed"] == 5 and record["request"]["n"] == 2


def test_every_model_setting_is_an_option():
    """Each model-default setting of the request is a flag of every generation command, and of eval but the size."""
    from pintor.cli import build_parser
    from pintor.request import SETTING_NAMES

    assert SETTING_NAMES == ("steps", "prior_steps", "guidance_scale", "prior_guidance_scale", "width", "height",
                             "scheduler", "candidates", "autoguidance_scale")
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("generate", "mix", "img2img", "inpaint", "control", "variations", "eval"):
        dests = {a.dest for a in sub.choices[command]._actions}
        expected = set(SETTING_NAMES) - ({"width", "height"} if command == "eval" else set())
        assert expected <= dests, (command, expected - dests)


def test_info_and_from_repeat_identical_pixels(tiny_k22, tmp_path):
    r = run_cli("generate", "a green star", "--model", tiny_k22, "--negative-prompt", "blurry", "-o", "a.png", "-q",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    info = run_cli("info", "a.png", cwd=tmp_path)
    assert info.returncode == 0
    assert info.stdout.startswith("a green star\nNegative prompt: blurry\nSteps: 2")
    as_json = json.loads(run_cli("info", "a.png", "--json", cwd=tmp_path).stdout)
    again = run_cli("generate", "--from", "a.png", "-o", "b.png", "-q", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    a, b = (np.asarray(Image.open(tmp_path / f)) for f in ("a.png", "b.png"))
    assert np.array_equal(a, b)
    assert json.loads(Image.open(tmp_path / "b.png").text["pintor"])["seed"] == as_json["seed"]


def test_prompts_file(tiny_k22, tmp_path):
    (tmp_path / "prompts.txt").write_text("a red circle\n\n# a comment\na blue square\n")
    r = run_cli("generate", "--prompts-file", "prompts.txt", "--out-dir", "batch", "--model", tiny_k22, "--seed", 1,
                "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["batch/00000-a-red-circle.png", "batch/00001-a-blue-square.png"]
    prompts = [json.loads(Image.open(tmp_path / p).text["pintor"])["request"]["prompt"] for p in r.stdout.split()]
    assert prompts == ["a red circle", "a blue square"]


def test_every_mode_from_the_cli(tiny_k22, rgb_png, mask_png, tmp_path):
    depth = tmp_path / "depth.png"
    Image.fromarray(np.full((64, 64), 180, np.uint8)).save(depth)
    runs = (["mix", rgb_png, "a blue square", "--weights", "0.5", "0.5"],
            ["img2img", rgb_png, "a blue star", "--strength", "0.5"],
            ["inpaint", rgb_png, mask_png, "a yellow square"],
            ["control", depth, "a red square"],
            ["variations", rgb_png])
    for args in runs:
        (tmp_path / args[0]).mkdir()

    def run(args):
        return run_cli(*args, "--model", tiny_k22, "--seed", 0, "-q", cwd=tmp_path / args[0])

    # Five processes, two at a time: about half of each is importing torch and diffusers (4 s), single-threaded.
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, runs))
    for args, r in zip(runs, results, strict=True):
        assert r.returncode == 0, (args, r.stderr)
        out = tmp_path / args[0] / r.stdout.split()[0]
        assert Image.open(out).size == (64, 64)
        assert json.loads(Image.open(out).text["pintor"])["request"]["mode"] == args[0]


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (tmp_path / "afile").write_text("x")
    return tmp_path


BAD = [
    (["img2img", "missing.png", "a red circle"], "image file not found: missing.png"),
    (["img2img", "corrupt.png", "a red circle"], "is not a readable image"),
    (["img2img", "notes.txt", "a red circle"], "is not a readable image"),
    (["generate", "a red circle", "--width", "100"], "width must be a multiple of 8, got 100"),
    (["generate", "a red circle", "--height", "32"], "height 32 is below the minimum of 64"),
    (["generate", "a red circle", "--width", "4096"], "width 4096 is above the limit of 2048"),
    (["generate", "a red circle", "--steps", "0"], "steps must be a positive integer"),
    (["generate", "a red circle", "--steps", "-3"], "steps must be a positive integer"),
    (["mix", "a red circle", "a blue square", "--weights", "1"], "2 items but 1 weights"),
    (["generate", ""], "the prompt is empty"),
    (["generate", "a red circle", "--model", "no-such-model"], "unknown model 'no-such-model'"),
    (["generate", "a red circle", "-o", "afile/out.png"], "cannot write to afile"),
    (["generate", "a red circle", "-o", "out.jpg"], "output must be a .png file"),
    (["generate", "a red circle", "--steps", "many"], "invalid int value: 'many'"),
    (["generate", "a red circle", "--candidates", "0"], "candidates must be an integer from 1 to 16, got 0"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(a)[:40] for a, _ in BAD])
def test_bad_input_is_one_line_and_nonzero(tiny_k22, bad_files, args, message):
    if "--model" not in args:
        args = [*args, "--model", str(tiny_k22)]
    before = {p.name for p in bad_files.rglob("*")}
    r = run_cli(*args, cwd=bad_files)
    assert r.returncode != 0
    line = _only_line(r.stderr)
    assert message in line
    assert {p.name for p in bad_files.rglob("*")} - before <= {"outputs"}  # no partial output
    assert not list(bad_files.rglob("*.png")) or {p.name for p in bad_files.rglob("*.png")} <= before


def test_missing_weights_offline_names_the_model(tmp_path):
    r = run_cli("generate", "a cat", "--model", "kandinsky-2.2", cwd=tmp_path,
                env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert r.returncode != 0
    line = _only_line(r.stderr)
    assert "kandinsky-community/kandinsky-2-2-prior" in line and "pintor download kandinsky-2.2" in line


def test_models_lists_every_registry_entry():
    r = run_cli("models")
    assert r.returncode == 0
    for name in ("pintor-shapes", "kandinsky-2.2", "kandinsky-2.1", "kandinsky-3", "stable-diffusion-1.5", "sdxl"):
        assert name in r.stdout
    assert "generate,mix,img2img,inpaint,control,variations" in r.stdout


def test_download_offline_is_one_line(tmp_path):
    r = run_cli("download", "kandinsky-2.2", env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert r.returncode != 0
    assert "cannot download kandinsky-community/kandinsky-2-2-prior" in r.stderr.splitlines()[-1]
    assert "Traceback" not in r.stderr


def test_info_without_metadata(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    r = run_cli("info", "plain.png", cwd=tmp_path)
    assert r.returncode != 0 and "carries no pintor or A1111 parameters" in _only_line(r.stderr)
