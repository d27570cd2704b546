"""`pintor bench` on tiny models: it runs, its JSON is well formed; random-weights architectures match the
published sizes. No test asserts a time."""

from __future__ import annotations

import json
import math

import pytest
import torch

import pintor
from conftest import run_cli
from pintor.bench.core import BenchConfig, default_result_path, format_table, run_bench, write_report
from pintor.bench.measure import PeakMemory, StageTimer, compare_images, unet_flops
from pintor.bench.random_weights import PUBLISHED, ensure_random_model, parameter_counts, published_check

FIGURES = ("load_s", "first_run_s", "compile_s", "end_to_end_s", "end_to_end_runs_s", "images_per_s", "stages",
           "memory", "memory_after_load")
STAGES = ("text_encoding_s", "prior_s", "prior_step_s", "decoder_s", "decoder_steps_s", "decoder_step_s",
          "unet_call_s", "movq_decode_s")


def _check_side(side: dict, steps: int, prior_steps: int):
    for k in FIGURES:
        assert k in side, k
    assert side["load_s"] > 0 and side["end_to_end_s"] > 0 and side["images_per_s"] > 0
    for k in STAGES:
        assert k in side["stages"], k
    assert len(side["stages"]["decoder_steps_s"]) == steps == side["stages"]["unet_calls"]
    assert side["stages"]["prior_calls"] == prior_steps
    assert side["memory"]["rss_peak_mb"] > 0


def test_bench_in_process_report_is_complete(tiny_k22, tmp_path):
    cfg = BenchConfig(model=str(tiny_k22), device="cpu", steps=3, prior_steps=2, repeat=2, warmup=1, batch=2,
                      cold_start=False)
    report = run_bench(cfg, log=lambda m: None)
    _check_side(report["pintor"], 3, 2)
    _check_side(report["baseline"], 3, 2)
    assert report["schema"] == "pintor-bench/1"
    assert report["versions"]["torch"] == torch.__version__ and "diffusers" in report["versions"]
    assert "sha" in report["commit"] and report["date"][:2] == "20"
    assert report["settings"]["generation"]["steps"] == 3 and report["settings"]["batch"] == 2
    assert report["settings"]["optimizations"]["sdpa"] is True
    for k in ("load_speedup", "end_to_end_speedup", "images_per_s", "decoder_step_speedup", "rss_peak_ratio"):
        assert report["ratios"][k] > 0, k
    q = report["quality"]
    assert q["within_bound"] and q["bound_db"] == 30.0 and len(q["psnr_db"]) == 2
    assert len(report["_images"]["pintor"]) == 2
    assert report["unet"]["flops_per_call"] > 0 and report["unet"]["batch_per_call"] == 4
    assert report["unet"]["pintor_tflops"] > 0 and report["unet"]["baseline_tflops"] > 0
    table = format_table(report)
    for row in ("end to end (s)", "images/s", "decoder step", "MoVQ decode", "peak RSS", "UNet TFLOP/s", "quality"):
        assert row in table, row
    path = write_report(report, tmp_path / "r.json")
    data = json.loads(path.read_text())  # strict JSON: no NaN or Infinity
    assert "_images" not in data and data["pintor"]["stages"]["unet_calls"] == 3
    name = default_result_path(report).name
    assert name.endswith("-cpu.json") and name[:4] == report["date"][:4]


def test_bench_step_changing_options_are_recorded(tiny_k22):
    cfg = BenchConfig(model=str(tiny_k22), device="cpu", steps=6, prior_steps=2, repeat=1, warmup=0,
                      cold_start=False, optimizations="deepcache=2,fuse_qkv", pintor_steps=4, pintor_scheduler="ddim")
    report = run_bench(cfg, log=lambda m: None)
    assert report["pintor"]["deepcache"] == {"interval": 2, "depth": 1}
    assert report["pintor"]["stages"]["unet_calls"] == 4 and report["baseline"]["stages"]["unet_calls"] == 6
    assert report["quality"]["same_settings"] is False
    assert report["settings"]["optimizations"]["fuse_qkv"] is True
    assert "pintor runs 4 + 2 steps" in format_table(report)


def test_bench_candidates_are_pintors_alone(tiny_k22):
    # Stock draws one image per image: candidates are pintor's work alone, 1 unless asked for.
    cfg = BenchConfig(model=str(tiny_k22), device="cpu", steps=2, prior_steps=2, repeat=1, warmup=0,
                      cold_start=False, pintor_candidates=3)
    report = run_bench(cfg, log=lambda m: None)
    s = report["settings"]
    assert s["pintor_generation"]["candidates"] == 3 and s["generation"]["candidates"] == 1
    assert report["quality"]["same_settings"] is False
    (img,) = report["_images"]["pintor"]
    assert json.loads(img.info["pintor"])["candidate"]["of"] == 3
    assert "3 candidates per image" in format_table(report)
    with pytest.raises(ValueError, match="pintor_candidates"):
        run_bench(BenchConfig(model=str(tiny_k22), device="cpu", pintor_candidates=0), log=lambda m: None)


def test_bench_low_vram_without_baseline(tiny_k22):
    cfg = BenchConfig(model=str(tiny_k22), device="cpu", steps=2, prior_steps=2, repeat=1, cold_start=False,
                      low_vram=True, baseline=False)
    report = run_bench(cfg, log=lambda m: None)
    assert "baseline" not in report and "ratios" not in report
    assert report["settings"]["low_vram"] and report["settings"]["optimizations"]["lazy_image_encoder"]
    assert report["pintor"]["stages"]["image_encoder_s"] == 0.0  # text to image loads no image encoder
    assert "memory mode: low VRAM" in format_table(report)


def test_bench_cli_writes_json_with_cold_start(tiny_k22, tmp_path):
    out = tmp_path / "bench.json"
    r = run_cli("bench", "--model", tiny_k22, "--device", "cpu", "--steps", "2", "--prior-steps", "2",
                "--repeat", "1", "--warmup", "0", "--json", out, "-q", timeout=600)
    assert r.returncode == 0, r.stderr
    assert "end to end (s)" in r.stdout and str(out) in r.stdout
    data = json.loads(out.read_text())
    cs = data["cold_start"]
    assert cs["pintor_s"] > 0 and cs["baseline_s"] > 0 and cs["speedup"] > 0
    for k in ("date", "commit", "versions", "host", "settings", "pintor", "baseline", "ratios", "quality", "unet"):
        assert k in data, k
    assert data["host"]["device"] == "cpu" and data["settings"]["model"] == str(tiny_k22)


def test_bench_cli_errors_are_one_line(tiny_k22):
    r = run_cli("bench", "--model", tiny_k22, "--size", "64by64")
    assert r.returncode == 2 and "--size" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("bench", "--model", tiny_k22, "--opt", "warp_drive")
    assert r.returncode == 2 and "warp_drive" in r.stderr
    r = run_cli("bench", "--model", tiny_k22, "--candidates", "0")
    assert r.returncode == 2 and "--candidates" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bench_params_command():
    r = run_cli("bench", "--params", "--model", "kandinsky-2.2")
    assert r.returncode == 0, r.stderr
    assert "published unet" in r.stdout and "OFF BY" not in r.stdout


@pytest.mark.parametrize("model", ["kandinsky-2.2", "kandinsky-2.1"])
def test_random_weights_configs_match_published_parameter_counts(model):
    checks = published_check(model)
    assert set(checks) == set(PUBLISHED[model])
    for name, c in checks.items():
        assert abs(c["rel_error"]) <= 0.05, (name, c)


def test_random_weights_full_size_components():
    counts = parameter_counts("kandinsky-2.2")
    # Published: prior ~1.0B, CLIP ViT-bigG/14 image tower ~1.8B, decoder UNet ~1.22B, MoVQ ~67M.
    assert math.isclose(counts["image_encoder"], 1.8e9, rel_tol=0.05)
    assert math.isclose(counts["unet"], 1.22e9, rel_tol=0.05)
    assert math.isclose(counts["movq"], 67e6, rel_tol=0.05)
    assert math.isclose(counts["prior"], 1.0e9, rel_tol=0.05)


def _small(model: str) -> dict:
    d = 32
    tower = dict(hidden_size=d, intermediate_size=64, projection_dim=d, num_hidden_layers=1, num_attention_heads=2)
    unet = dict(block_out_channels=[32, 64], layers_per_block=1, attention_head_dim=8, cross_attention_dim=d,
                encoder_hid_dim=d, down_block_types=["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"],
                up_block_types=["SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"])
    out = {"prior": dict(num_attention_heads=2, attention_head_dim=16, num_layers=1, embedding_dim=d),
           "text_encoder": tower, "image_encoder": dict(tower, image_size=32, patch_size=8), "unet": unet,
           "movq": dict(block_out_channels=[32, 32, 32, 32], layers_per_block=1, num_vq_embeddings=64)}
    if model == "kandinsky-2.1":
        out["mclip"] = dict(transformerDimSize=d, imageDimSize=d, hidden_size=d, num_hidden_layers=1,
                            num_attention_heads=2, intermediate_size=64, vocab_size=49408)
    return out


@pytest.mark.parametrize("model", ["kandinsky-2.2", "kandinsky-2.1"])
def test_random_weights_folder_loads_and_generates(model, tmp_path):
    """The writing path of `--random-weights`, with the shipped configs shrunk (full size is for GPUs)."""
    path = ensure_random_model(model, "float32", tmp_path, device="cpu", overrides=_small(model))
    assert (path / "prior" / "model_index.json").is_file() and (path / "decoder" / "unet").is_dir()
    meta = json.loads((path / "pintor.json").read_text())
    assert meta["random_weights"] and meta["family"] == model
    assert ensure_random_model(model, "float32", tmp_path, device="cpu", overrides=_small(model)) == path
    painter = pintor.load(path, device="cpu")
    img = painter.generate("a red circle", seed=0, steps=2, prior_steps=2, width=64, height=64,
                           show_progress=False)[0]
    assert img.size == (64, 64)
    import numpy as np

    assert np.isfinite(np.asarray(img, dtype=float)).all() and np.asarray(img).std() > 0


def test_unet_flops_scale_with_pixels(tiny_k22):
    from diffusers import UNet2DConditionModel

    cfg = UNet2DConditionModel.load_config(tiny_k22 / "decoder", subfolder="unet")
    small = unet_flops(cfg, 2, 64, 64)
    big = unet_flops(cfg, 2, 128, 128)
    assert small > 0 and 3.0 < big / small < 5.0
    assert unet_flops(cfg, 4, 64, 64) == pytest.approx(2 * small, rel=0.01)


def test_stage_timer_and_memory(painter):
    timer = StageTimer("cpu")
    comps = painter.components
    timer.attach("unet", comps["unet"])
    timer.attach("prior", comps["prior.prior"])
    timer.attach("text_encoder", comps["prior.text_encoder"])
    timer.wrap("movq_decode", comps["movq"], "decode")
    mem = PeakMemory("cpu")
    mem.reset()
    painter.generate("a red circle", seed=0, steps=3, prior_steps=2, show_progress=False)
    timer.detach()
    s = timer.summary()
    assert s["unet_calls"] == 3 and len(s["decoder_steps_s"]) == 3 and s["prior_calls"] == 2
    assert s["movq_decode_s"] > 0 and s["text_encoding_s"] > 0
    assert "decode" not in vars(comps["movq"])  # the wrapper is gone
    assert mem.read()["rss_peak_mb"] > 0


def test_compare_images_identical_and_bounded(painter):
    a = painter.generate("a red circle", seed=0, show_progress=False)[0]
    b = painter.generate("a red circle", seed=1, show_progress=False)[0]
    same = compare_images([a], [a])
    assert same["identical"] and same["psnr_db_min"] is None and same["within_bound"]
    diff = compare_images([a], [b])
    assert not diff["identical"] and diff["psnr_db_min"] < 30 and not diff["within_bound"]


@pytest.mark.gpu
def test_bench_on_cuda_with_every_gpu_option(tiny_k22):
    cfg = BenchConfig(model=str(tiny_k22), device="cuda", steps=3, prior_steps=2, repeat=1, cold_start=False,
                      optimizations="compile,cuda_graphs,fuse_qkv,channels_last")
    report = run_bench(cfg, log=lambda m: None)
    assert report["pintor"]["memory"]["cuda_max_allocated_mb"] > 0
    assert report["quality"]["within_bound"]
    for mode in ("low_vram", "lowest_vram"):
        report = run_bench(BenchConfig(model=str(tiny_k22), device="cuda", steps=2, prior_steps=2, repeat=1,
                                       cold_start=False, **{mode: True}), log=lambda m: None)
        assert report["quality"]["within_bound"]


def test_bench_quality_runs_eval_for_each_configuration(tiny_k22, tmp_path):
    out = tmp_path / "quality.json"
    r = run_cli("bench", "--quality", "--model", tiny_k22, "--device", "cpu", "--quality-n", "1",
                "--quality-reference", "4/2/ddpm", "--quality-configs", "dc2=deepcache=2;dpm=@2/2/dpm++2m",
                "--json", out, "-q", timeout=900)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert set(data["configs"]) == {"stock", "dc2", "dpm"}
    assert data["configs"]["dc2"]["optimizations"]["deepcache_interval"] == 2
    assert data["configs"]["dpm"]["settings"] == {"steps": 2, "prior_steps": 2, "scheduler": "dpm++2m"}
    for c in data["configs"].values():
        assert 0.0 <= c["accuracy"]["overall"] <= 1.0 and "delta_points" in c


def test_readme_table_from_results(tiny_k22, tmp_path):
    from pintor.bench.report import table

    report = run_bench(BenchConfig(model=str(tiny_k22), device="cpu", steps=2, prior_steps=2, repeat=1,
                                   cold_start=False, optimizations="fuse_qkv"), log=lambda m: None)
    path = write_report(report, tmp_path / "r.json")
    md = table([json.loads(path.read_text())])
    lines = md.splitlines()
    assert len(lines) == 3 and lines[1].startswith("|---") and "fuse_qkv" in lines[2] and "x |" in lines[2]


def test_peak_table_and_cpu_has_none():
    from pintor.bench.measure import bf16_peak_tflops

    assert bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bf16_peak_tflops("NVIDIA H200") == 989.0
    assert bf16_peak_tflops("CPU AMD EPYC") is None
