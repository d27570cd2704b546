"""A real `pintor serve` subprocess on a loopback port, driven by real clients: the official `openai` package,
`webuiapi` (an A1111 client), raw SSE, and a kill -9 mid-job followed by a restart on the same history."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from pintor.server.testing import ServerProcess  # noqa: E402

KEY = "test-key-123"


@pytest.fixture(scope="module")
def server(tiny_k22, tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    with ServerProcess("--model", tiny_k22, "--no-ui", outputs=root / "outputs", api_key=KEY) as s:
        yield s


def disc() -> Image.Image:
    a = np.full((64, 64, 3), 255, np.uint8)
    yy, xx = np.mgrid[:64, :64]
    a[(yy - 32) ** 2 + (xx - 32) ** 2 < 15**2] = (220, 30, 30)
    return Image.fromarray(a)


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_openai_client(server):
    openai = pytest.importorskip("openai")
    import base64

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == ["tiny-k22"]
    res = client.images.generate(prompt="a red circle above a blue square", model="tiny-k22", n=2, size="64x64",
                                 response_format="b64_json", user="openai-test",
                                 extra_body={"seed": 4, "steps": 2, "guidance_scale": 4.0})
    assert res.created > 0 and len(res.data) == 2
    img = Image.open(io.BytesIO(base64.b64decode(res.data[1].b64_json)))
    record = json.loads(img.text["pintor"])
    assert img.size == (64, 64) and record["seed"] == 5 and record["user"] == "openai-test"

    res = client.images.generate(prompt="a green star", response_format="url")
    got = httpx.get(res.data[0].url, headers=server.headers())
    assert got.status_code == 200 and got.content.startswith(b"\x89PNG")

    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 32, 32))
    res = client.images.edit(image=("in.png", png(disc()), "image/png"), mask=("mask.png", png(mask), "image/png"),
                             prompt="a yellow star", response_format="b64_json", extra_body={"seed": 1})
    out = np.asarray(Image.open(io.BytesIO(base64.b64decode(res.data[0].b64_json))).convert("RGB"))
    assert np.array_equal(out[32:, :], np.asarray(disc())[32:, :])

    res = client.images.create_variation(image=("in.png", png(disc()), "image/png"), n=1, response_format="b64_json")
    assert len(res.data) == 1

    with pytest.raises(openai.BadRequestError, match="size must be WIDTHxHEIGHT"):
        client.images.generate(prompt="x", size="huge")
    with pytest.raises(openai.BadRequestError, match="n must be an integer from 1 to 8"):
        client.images.generate(prompt="x", n=9)
    with pytest.raises(openai.NotFoundError, match="unknown model"):
        client.images.generate(prompt="x", model="dall-e-3")
    with pytest.raises(openai.AuthenticationError, match="not valid"):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).models.list()


@pytest.mark.slow
def test_webuiapi_client(server):
    webuiapi = pytest.importorskip("webuiapi")

    api = webuiapi.WebUIApi(host="127.0.0.1", port=server.port, sampler="Euler a", steps=2)
    api.set_auth("pintor", KEY)  # A1111's --api-auth is HTTP Basic; the key is the password
    assert [m["model_name"] for m in api.get_sd_models()] == ["tiny-k22"]
    result = api.txt2img(prompt="a red circle", seed=3, cfg_scale=4, width=64, height=64, batch_size=2)
    assert len(result.images) == 2 and result.images[0].size == (64, 64)
    assert result.info["all_seeds"] == [3, 4] and result.parameters["prompt"] == "a red circle"
    assert "Seed: 4" in result.info["infotexts"][1]
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 64, 32))
    result = api.img2img(images=[disc()], mask_image=mask, prompt="a star", seed=1, width=64, height=64)
    out = np.asarray(result.image.convert("RGB"))
    assert np.array_equal(out[32:], np.asarray(disc())[32:])
    result = api.img2img(images=[disc()], prompt="a blue circle", denoising_strength=0.5, width=64, height=64)
    assert result.info["denoising_strength"] == 0.5
    progress = api.get_progress()
    assert progress["progress"] == 0.0 and progress["state"]["job_count"] == 0
    assert api.interrupt() == {}
    with pytest.raises(RuntimeError, match="400"):
        api.txt2img(prompt="x", steps=500)


@pytest.mark.slow
def test_restart_keeps_history_and_marks_the_killed_job(tiny_k22, tmp_path):
    outputs, db = tmp_path / "outputs", tmp_path / "state" / "history.db"
    args = ("--model", tiny_k22, "--no-ui", "--db", db)
    first = ServerProcess(*args, outputs=outputs).start()
    try:
        done = httpx.post(f"{first.url}/api/v1/jobs?wait=true", json={"prompt": "kept across restarts", "seed": 9},
                          timeout=60).json()
        assert done["state"] == "done"
        slow = httpx.post(f"{first.url}/api/v1/jobs", json={"prompt": "killed mid-job", "seed": 2, "steps": 200,
                                                             "prior_steps": 100, "n": 2}, timeout=30).json()
        # Watch its progress stream until it is mid-run, then kill the process without warning.
        with httpx.stream("GET", f"{first.url}/api/v1/jobs/{slow['id']}/events", timeout=60) as events:
            for line in events.iter_lines():
                if line.startswith("data: "):
                    data = json.loads(line[len("data: "):])
                    if data["state"] == "running" and data["progress"]["step"] >= 3:
                        assert data["progress"]["total"] == 300 and data["progress"]["eta"] > 0
                        break
        first.kill()
    finally:
        first.stop()
    assert db.exists() and not (outputs / "pintor.db").exists()

    with ServerProcess(*args, outputs=outputs) as second:
        history = second.get_json("/api/v1/history?q=kept")
        assert history["total"] == 1 and history["items"][0]["seed"] == 9
        assert httpx.get(history["items"][0]["url"]).status_code == 200
        job = second.get_json(f"/api/v1/jobs/{slow['id']}")
        assert job["state"] == "failed" and "interrupted by restart" in job["error"]
        assert second.get_json(f"/api/v1/jobs/{done['id']}")["state"] == "done"
        r = httpx.post(f"{second.url}/api/v1/jobs/{slow['id']}/rerun?wait=true", timeout=120)
        assert r.status_code == 200, r.text
        again = r.json()
        assert again["state"] == "done" and again["rerun_of"] == slow["id"] and len(again["images"]) == 2
        assert again["request"]["seed"] == 2 and again["request"]["steps"] == 200
        assert "recovered history: 1 interrupted job" in second.log()


def test_refuses_public_address_without_a_key(tmp_path):
    r = run_cli("serve", "--host", "0.0.0.0", "--port", "9", cwd=tmp_path, env={"PINTOR_API_KEY": ""})
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "pintor: error: refusing to listen on 0.0.0.0 without an API key: pass --api-key or set PINTOR_API_KEY "
        "(or bind 127.0.0.1)"]
    assert not (tmp_path / "outputs").exists()


def test_serve_cli_imports_no_server_stack():
    import subprocess
    import sys

    code = ("import argparse, sys, pintor.server.cli as c; c.add_parser(argparse.ArgumentParser().add_subparsers()); "
            "print(sorted(m for m in ('fastapi', 'gradio', 'torch', 'uvicorn', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
