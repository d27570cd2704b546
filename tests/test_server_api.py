"""The HTTP API in-process (FastAPI's TestClient over the real app, the tiny model and a real SQLite history):
every endpoint of the OpenAI-compatible, A1111-compatible and native APIs, and every limit and bad input."""

from __future__ import annotations

import base64
import io
import json
import struct
import threading
import time
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from pintor.server.app import create_app  # noqa: E402
from pintor.server.config import ServerConfig  # noqa: E402

SLOW = {"steps": 200, "prior_steps": 200, "n": 8}  # seconds of work on a CPU: time to cancel it mid-run


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def b64(img: Image.Image) -> str:
    return base64.b64encode(png_bytes(img)).decode()


def disc(size: int = 64) -> Image.Image:
    a = np.full((size, size, 3), 255, np.uint8)
    yy, xx = np.mgrid[:size, :size]
    a[(yy - size // 2) ** 2 + (xx - size // 2) ** 2 < (size // 4) ** 2] = (220, 30, 30)
    return Image.fromarray(a)


def decode(b64_png: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64_png)))


def bomb_png() -> bytes:
    """A 1x1 PNG whose header claims 100000x100000 pixels (a decompression bomb's calling card)."""
    data = bytearray(png_bytes(Image.new("RGB", (1, 1))))
    struct.pack_into(">II", data, 16, 100_000, 100_000)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


@pytest.fixture(scope="module")
def client(tiny_k22, tmp_path_factory):
    out = tmp_path_factory.mktemp("server") / "outputs"
    app = create_app(ServerConfig(models=[str(tiny_k22)], outputs=out, ui=False))
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def painters(client):
    """The loaded models of the main app, shared by the apps with other settings (no second load)."""
    return client.app.state.service.painters


def other_app(painters, tmp_path, **settings) -> TestClient:
    return TestClient(create_app(ServerConfig(outputs=tmp_path / "out", ui=False, **settings), painters=painters),
                      raise_server_exceptions=False)


def wait_running(client, job_id, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["state"] == "running" and job["progress"]["step"] > 0:
            return job
        assert job["state"] in ("queued", "running"), job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not start")


def wait_finished(client, job_id, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


# -- OpenAI-compatible ---------------------------------------------------------------------------------------------
def test_openai_generations_b64(client):
    r = client.post("/v1/images/generations", json={"prompt": "a red circle", "n": 2, "size": "64x64", "seed": 7,
                                                   "steps": 2, "guidance_scale": 3.0, "user": "alice",
                                                   "quality": "standard"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["created"], int) and len(body["data"]) == 2
    images = [decode(d["b64_json"]) for d in body["data"]]
    assert [im.size for im in images] == [(64, 64), (64, 64)]
    record = json.loads(images[1].text["pintor"])
    assert record["seed"] == 8 and record["user"] == "alice" and record["model"] == "tiny-k22"
    assert record["request"]["guidance_scale"] == 3.0 and "Seed: 8" in images[1].text["parameters"]
    job = client.get(f"/api/v1/jobs/{r.headers['x-pintor-job']}").json()
    assert job["state"] == "done" and job["api"] == "openai" and job["user"] == "alice"


def test_openai_generations_url_serves_png(client):
    r = client.post("/v1/images/generations", json={"prompt": "a blue square", "response_format": "url",
                                                   "negative_prompt": "blurry"})
    assert r.status_code == 200, r.text
    url = r.json()["data"][0]["url"]
    assert url.startswith("http://testserver/api/v1/images/") and url.endswith(".png")
    img = client.get(url)
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    request = json.loads(Image.open(io.BytesIO(img.content)).text["pintor"])["request"]
    assert request["prompt"] == "a blue square" and request["negative_prompt"] == "blurry"


def test_openai_edits_inpaint_keeps_pixels_outside_transparent_mask(client):
    image = disc()
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (16, 16, 48, 48))  # OpenAI: transparent = repaint
    files = {"image": ("in.png", png_bytes(image), "image/png"), "mask": ("mask.png", png_bytes(mask), "image/png")}
    r = client.post("/v1/images/edits", files=files, data={"prompt": "a yellow star", "seed": "3", "size": "64x64"})
    assert r.status_code == 200, r.text
    out = np.asarray(decode(r.json()["data"][0]["b64_json"]).convert("RGB"))
    inside = np.zeros((64, 64), bool)
    inside[16:48, 16:48] = True
    assert np.array_equal(out[~inside], np.asarray(image)[~inside])
    record = json.loads(decode(r.json()["data"][0]["b64_json"]).text["pintor"])
    assert record["request"]["mode"] == "inpaint" and record["seed"] == 3


def test_openai_edits_array_field_and_alpha_of_image(client):
    rgba = disc().convert("RGBA")
    rgba.paste((0, 0, 0, 0), (0, 0, 32, 32))  # no mask: the image's own transparent area is repainted
    r = client.post("/v1/images/edits", files={"image[]": ("in.png", png_bytes(rgba), "image/png")},
                    data={"prompt": "a green star"})
    assert r.status_code == 200, r.text
    r = client.post("/v1/images/edits", files={"image": ("in.png", png_bytes(disc()), "image/png")},
                    data={"prompt": "a green star"})
    assert r.status_code == 400 and "mask" in r.json()["error"]["message"]


def test_openai_variations_and_models(client):
    r = client.post("/v1/images/variations", files={"image": ("in.png", png_bytes(disc()), "image/png")},
                    data={"n": "2", "seed": "1"})
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 2
    assert json.loads(decode(r.json()["data"][0]["b64_json"]).text["pintor"])["request"]["mode"] == "variations"
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["tiny-k22"]
    assert client.get("/v1/models/tiny-k22").json()["id"] == "tiny-k22"
    assert client.get("/v1/models/dall-e-3").status_code == 404


# -- A1111-compatible ----------------------------------------------------------------------------------------------
def test_a1111_txt2img(client):
    payload = {"prompt": "a red circle", "seed": 11, "steps": 2, "cfg_scale": 5,
               "width": 64, "height": 64, "batch_size": 2, "n_iter": 2, "sampler_name": "Euler a",
               "scheduler": "automatic", "enable_hr": False, "alwayson_scripts": {}, "restore_faces": False}
    r = client.post("/sdapi/v1/txt2img", json=payload)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"images", "parameters", "info"} and len(body["images"]) == 4
    info = json.loads(body["info"])
    assert info["all_seeds"] == [11, 12, 13, 14] and info["sampler_name"] == "Euler a" and info["cfg_scale"] == 5
    assert info["sd_model_name"] == "tiny-k22" and info["infotexts"][0].startswith("a red circle\nSteps: 2")
    assert body["parameters"]["prompt"] == "a red circle" and body["parameters"]["batch_size"] == 2
    assert decode(body["images"][3]).size == (64, 64)
    # The sampler chosen here must not become the default of the next request (the decoder pipeline is shared).
    after = client.post("/api/v1/jobs", json={"prompt": "a red circle"}).json()
    assert after["request"]["scheduler"] == "ddpm"


def test_a1111_img2img_and_inpaint(client):
    image = disc()
    r = client.post("/sdapi/v1/img2img", json={"init_images": [b64(image)], "prompt": "a blue circle", "steps": 4,
                                               "denoising_strength": 0.5, "seed": 2})
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["denoising_strength"] == 0.5
    assert r.json()["parameters"]["init_images"] is None  # not echoed back unless include_init_images
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    r = client.post("/sdapi/v1/img2img", json={"init_images": ["data:image/png;base64," + b64(image)],
                                               "mask": b64(mask), "prompt": "a star", "steps": 2})
    assert r.status_code == 200, r.text
    out = np.asarray(decode(r.json()["images"][0]).convert("RGB"))
    assert np.array_equal(out[:, 32:], np.asarray(image)[:, 32:])  # white repainted, the rest kept exactly
    assert json.loads(r.json()["info"])["is_using_inpainting_conditioning"] is True


def test_a1111_models_samplers_options(client):
    assert client.get("/sdapi/v1/sd-models").json()[0]["model_name"] == "tiny-k22"
    assert "Euler a" in [s["name"] for s in client.get("/sdapi/v1/samplers").json()]
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == "tiny-k22"
    assert client.get("/sdapi/v1/scripts").json() == {"txt2img": [], "img2img": []}
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "sampler_name": "LMS"})
    assert r.status_code == 400 and "unknown sampler_name" in r.json()["detail"]
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "override_settings": {"sd_model_checkpoint": "sdxl"}})
    assert r.status_code == 404 and "does not serve" in r.json()["detail"]


def test_a1111_progress_and_interrupt_of_a_waiting_request(client):
    idle = client.get("/sdapi/v1/progress").json()
    assert idle["progress"] == 0.0 and idle["state"]["job_count"] == 0
    result = {}

    def call():
        result["r"] = client.post("/sdapi/v1/txt2img", json={"prompt": "a slow circle", "steps": 200, "batch_size": 8})

    t = threading.Thread(target=call)
    t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        p = client.get("/sdapi/v1/progress").json()
        if p["state"]["sampling_step"] > 0:
            break
        time.sleep(0.05)
    assert 0 < p["progress"] < 1 and p["state"]["sampling_steps"] > p["state"]["sampling_step"]
    assert p["eta_relative"] > 0 and p["state"]["job_count"] == 1
    assert client.post("/sdapi/v1/interrupt").json() == {}
    t.join(60)
    assert result["r"].status_code == 409 and "cancelled" in result["r"].json()["detail"]


# -- native ---------------------------------------------------------------------------------------------------------
def test_native_job_lifecycle_and_progress_stream(client):
    r = client.post("/api/v1/jobs", json={"prompt": "a green star", "seed": 5, "user": "bob"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] in ("queued", "running", "done") and job["request"]["seed"] == 5
    with client.stream("GET", f"/api/v1/jobs/{job['id']}/events") as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        text = s.read().decode()
    events = [block for block in text.split("\n\n") if block.strip()]
    last = events[-1].splitlines()
    assert last[0] == "event: done"
    done = json.loads(last[1][len("data: "):])
    assert done["progress"]["step"] == done["progress"]["total"] == 4  # 2 prior + 2 decoder steps
    assert done["images"][0]["seed"] == 5
    listed = client.get("/api/v1/jobs", params={"state": "done", "limit": 5}).json()["jobs"]
    assert job["id"] in [j["id"] for j in listed]
    assert client.get("/api/v1/jobs", params={"state": "exploded"}).status_code == 400
    assert client.get("/api/v1/jobs/nope").status_code == 404


def test_native_wait_mix_and_control(client):
    r = client.post("/api/v1/jobs", params={"wait": "true"},
                    json={"mode": "generate", "prompt": "a red square", "response_format": "b64_json"})
    assert r.status_code == 200 and r.json()["state"] == "done"
    assert decode(r.json()["images"][0]["b64_json"]).size == (64, 64)
    r = client.post("/api/v1/mix", json={"items": [{"text": "a red circle", "weight": 0.7},
                                                   {"image": b64(disc()), "weight": 0.3}], "seed": 1})
    assert r.status_code == 200, r.text
    assert r.json()["request"]["weights"] == [0.7, 0.3] and r.json()["request"]["items"][0] == "a red circle"
    depth = Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1)))
    r = client.post("/api/v1/control", json={"prompt": "a blue square", "hint": b64(depth)})
    assert r.status_code == 200 and r.json()["mode"] == "control"


def test_native_candidates(client):
    r = client.post("/api/v1/jobs", params={"wait": "true"}, json={"prompt": "a red square", "seed": 2, "candidates": 2})
    assert r.status_code == 200 and r.json()["state"] == "done", r.text
    assert r.json()["request"]["candidates"] == 2
    r = client.post("/api/v1/jobs", json={"prompt": "a red square", "n": 5, "candidates": 2})
    assert r.status_code == 400 and "n x candidates is 10: at most 8" in r.json()["detail"], r.text


def test_native_autoguidance_refused_without_a_weak_decoder(client):
    r = client.post("/api/v1/jobs", json={"prompt": "a red square", "autoguidance_scale": 0.5})
    assert r.status_code == 400 and "has no autoguidance model" in r.json()["detail"], r.text
    r = client.post("/api/v1/jobs", json={"prompt": "a red square", "autoguidance_scale": -1})
    assert r.status_code == 400 and "autoguidance_scale must be a number from 0 to 100" in r.json()["detail"], r.text


@pytest.mark.parametrize("items, message", [
    ([], "at least one item"),
    ([{"text": "a", "image": "AAAA"}], "exactly one of text or image"),
    ([{"text": "/etc/hostname"}], "looks like a file name"),
    ([{"text": "cat.png"}], "looks like a file name"),
    ([{"text": "a cat", "weight": "heavy"}], "weight"),
])
def test_native_mix_bad_items(client, items, message):
    r = client.post("/api/v1/mix", json={"items": items})
    assert r.status_code in (400, 422) and message in r.json()["detail"], r.text


def test_cancel_queued_and_interrupt_running(client):
    slow = client.post("/api/v1/jobs", json={"prompt": "a slow one", **SLOW}).json()
    queued = client.post("/api/v1/jobs", json={"prompt": "waits its turn"}).json()
    wait_running(client, slow["id"])
    assert client.get(f"/api/v1/jobs/{queued['id']}").json()["queue_position"] == 1
    r = client.post(f"/api/v1/jobs/{queued['id']}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    r = client.delete(f"/api/v1/jobs/{slow['id']}")
    assert r.status_code == 200
    job = wait_finished(client, slow["id"])
    assert job["state"] == "cancelled" and job["error"].startswith("interrupted at step")
    assert 0 < job["progress"]["step"] < job["progress"]["total"]
    assert client.post(f"/api/v1/jobs/{slow['id']}/cancel").status_code == 409


def test_rerun_gives_the_same_pixels(client):
    first = client.post("/api/v1/jobs", params={"wait": "true"}, json={"prompt": "a red circle", "n": 2}).json()
    r = client.post(f"/api/v1/jobs/{first['id']}/rerun", params={"wait": "true"})
    assert r.status_code == 200, r.text
    again = r.json()
    assert again["rerun_of"] == first["id"] and again["request"]["seed"] == first["request"]["seed"]
    a, b = (client.get(j["images"][1]["url"]).content for j in (first, again))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(a))), np.asarray(Image.open(io.BytesIO(b))))
    assert client.post("/api/v1/jobs/nope/rerun").status_code == 404


def test_history_pages_and_searches(client):
    for prompt in ("history needle one", "history needle two", "history 100% other"):
        client.post("/api/v1/jobs", params={"wait": "true"}, json={"prompt": prompt, "user": "carol"})
    page = client.get("/api/v1/history", params={"q": "NEEDLE", "limit": 1}).json()
    assert page["total"] == 2 and len(page["items"]) == 1 and page["items"][0]["prompt"] == "history needle two"
    second = client.get("/api/v1/history", params={"q": "needle", "limit": 1, "offset": 1}).json()
    assert second["items"][0]["prompt"] == "history needle one"
    assert client.get("/api/v1/history", params={"q": "100%"}).json()["total"] == 1  # % is literal
    item = page["items"][0]
    assert item["user"] == "carol" and item["seconds"] is not None and item["queue_seconds"] is not None
    assert item["parameters"].startswith("history needle two\nSteps: 2")
    assert client.get(f"/api/v1/history/{item['id']}").json()["seed"] == item["seed"]
    assert client.get("/api/v1/history", params={"user": "carol"}).json()["total"] == 3
    assert client.get("/api/v1/history/999999").status_code == 404
    assert client.get("/api/v1/images/999999.png").status_code == 404
    assert client.get("/api/v1/images/..%2Fpintor.db").status_code == 404


def test_models_health_and_docs(client):
    models = client.get("/api/v1/models").json()["models"]
    assert models[0]["name"] == "tiny-k22" and "control" in models[0]["modes"] and models[0]["default"]
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["models"] == ["tiny-k22"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs/static/swagger-ui-bundle.js" in docs.text
    assert "https://" not in docs.text  # no CDN: the docs work offline
    assert client.get("/docs/static/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs/static/../pintor.db").status_code == 404
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/v1/images/generations", "/v1/images/edits", "/v1/images/variations", "/v1/models",
              "/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/progress", "/sdapi/v1/interrupt",
              "/sdapi/v1/sd-models", "/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/events",
              "/api/v1/jobs/{job_id}/rerun", "/api/v1/mix", "/api/v1/control", "/api/v1/history", "/health"):
        assert p in paths, p


# -- limits and bad input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("payload, status, message", [
    ({"prompt": "x", "size": "4096x4096"}, 400, "above the limit of 2048"),
    ({"prompt": "x", "size": "100"}, 400, "size must be WIDTHxHEIGHT"),
    ({"prompt": "x", "size": "60x64"}, 400, "multiple of 8"),
    ({"prompt": "x", "n": 9}, 400, "n must be an integer from 1 to 8"),
    ({"prompt": "x", "steps": 201}, 400, "at most 200"),
    ({"prompt": "x" * 2001}, 400, "at most 2000"),
    ({"prompt": "x", "negative_prompt": "y" * 2001}, 400, "at most 2000"),
    ({"prompt": "   "}, 400, "prompt is empty"),
    ({"prompt": "x", "model": "../../etc/passwd"}, 400, "looks like a path"),
    ({"prompt": "x", "model": "/models/sdxl"}, 400, "looks like a path"),
    ({"prompt": "x", "model": "no-such-model"}, 404, "unknown model"),
    ({"prompt": "x", "model": "kandinsky-2.2"}, 404, "does not serve"),
    ({"prompt": "x", "n": "many"}, 422, "n:"),
    ({"prompt": "x", "response_format": "gif"}, 422, "response_format"),
    ({"prompt": "x", "stream": True}, 400, "stream=true is not supported"),
    ({"prompt": "x", "output_format": "jpeg"}, 400, "output_format"),
    ({}, 422, "prompt"),
])
def test_openai_limits_and_bad_input(client, payload, status, message):
    r = client.post("/v1/images/generations", json=payload)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert message in err["message"] and err["type"]
    assert "Traceback" not in r.text


@pytest.mark.parametrize("field, value, status, message", [
    ("image", "not base64 at all!", 400, "not valid base64"),
    ("image", base64.b64encode(b"hello, not an image").decode(), 400, "not a readable image"),
    ("image", base64.b64encode(png_bytes(Image.new("RGB", (64, 64)))[:60]).decode(), 400, "corrupt"),
    ("image", base64.b64encode(bomb_png()).decode(), 413, "too large"),
    ("image", base64.b64encode(png_bytes(Image.new("L", (5000, 5000)))).decode(), 413, "pixels"),
    ("image", "", 400, "empty"),
    ("hint", "AAAA", 400, "not a readable image"),
])
def test_native_bad_images(client, field, value, status, message):
    body = {"mode": "img2img" if field == "image" else "control", "prompt": "x", field: value}
    r = client.post("/api/v1/jobs", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"] and "Traceback" not in r.text


def test_bad_multipart_uploads(client):
    r = client.post("/v1/images/variations", files={"image": ("b.png", bomb_png(), "image/png")})
    assert r.status_code == 413 and "too large" in r.json()["error"]["message"]
    r = client.post("/v1/images/variations", files={"image": ("x.txt", b"plain text", "text/plain")})
    assert r.status_code == 400 and "not a readable image" in r.json()["error"]["message"]
    r = client.post("/v1/images/variations", data={"n": "1"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "image"
    r = client.post("/v1/images/edits", files={"image": ("a.png", png_bytes(disc()), "image/png")},
                    data={"prompt": "x", "seed": "soon"})
    assert r.status_code == 400 and "seed must be an integer" in r.json()["error"]["message"]


def test_validation_and_malformed_json_are_json(client):
    r = client.post("/sdapi/v1/txt2img", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "detail" in r.json()
    r = client.post("/api/v1/jobs", json={"prompt": "x", "colour": "red"})
    assert r.status_code == 422 and "colour" in r.json()["detail"]
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "batch_size": 3, "n_iter": 3})
    assert r.status_code == 400 and "batch_size x n_iter is 9" in r.json()["detail"]
    r = client.post("/sdapi/v1/img2img", json={"prompt": "x", "init_images": []})
    assert r.status_code == 400 and "init_images" in r.json()["detail"]


def test_upload_limits(painters, tmp_path):
    with other_app(painters, tmp_path, max_upload_bytes=50_000) as c:
        big = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)  # ~120 kB as PNG
        big_png = png_bytes(Image.fromarray(big))
        r = c.post("/v1/images/variations", files={"image": ("big.png", big_png, "image/png")})
        assert r.status_code == 413 and r.json()["error"]["message"] == "image is larger than 0.0477 MB"
        r = c.post("/api/v1/jobs", json={"mode": "variations", "image": base64.b64encode(big_png).decode()})
        assert r.status_code == 413 and "at most 0.0477 MB" in r.json()["detail"]
        # The whole body is capped before it is read (3 uploads' worth plus 1 MB).
        r = c.post("/api/v1/jobs", content=b"x" * (3 * 50_000 + 1024 * 1024 + 1),
                   headers={"content-type": "application/json"})
        assert r.status_code == 413 and "request body" in r.json()["detail"]
        # Without a Content-Length (chunked), the body is counted as it arrives.
        chunks = (b"x" * 10_000 for _ in range(200))
        r = c.post("/api/v1/jobs", content=chunks, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "request body is larger than" in r.json()["detail"]
        assert c.get("/health").status_code == 200  # and the server goes on serving


def test_default_limits_are_on():
    cfg = ServerConfig()
    assert (cfg.limits.max_size, cfg.limits.max_n, cfg.limits.max_steps, cfg.limits.max_prompt_chars) == (
        2048, 8, 200, 2000)
    assert cfg.max_upload_bytes == 20 * 1024 * 1024 and cfg.host == "127.0.0.1" and cfg.cors_origins == []
    assert cfg.api_key is None


def test_api_key(painters, tmp_path):
    with other_app(painters, tmp_path, api_key="s3cret") as c:
        for method, path in (("get", "/v1/models"), ("get", "/sdapi/v1/sd-models"), ("get", "/api/v1/history"),
                             ("get", "/health"), ("get", "/docs"), ("get", "/openapi.json"),
                             ("post", "/v1/images/generations"), ("post", "/api/v1/jobs")):
            r = getattr(c, method)(path)
            assert r.status_code == 401, path
            assert "API key" in r.text and "www-authenticate" in r.headers
        r = c.get("/v1/models", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["message"] == "the API key is not valid"
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        basic = base64.b64encode(b"anyone:s3cret").decode()
        assert c.get("/sdapi/v1/sd-models", headers={"Authorization": f"Basic {basic}"}).status_code == 200
        assert c.get("/docs", headers={"Authorization": f"Basic {basic}"}).status_code == 200
        r = c.post("/v1/images/generations", json={"prompt": "a red circle"},
                   headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200


def test_cors_off_by_default_and_on_when_asked(client, painters, tmp_path):
    preflight = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    r = client.options("/v1/images/generations", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    r = client.get("/v1/models", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    with other_app(painters, tmp_path, cors_origins=["http://studio.example"]) as c:
        r = c.options("/v1/images/generations", headers={**preflight, "Origin": "http://studio.example"})
        assert r.headers["access-control-allow-origin"] == "http://studio.example"
        r = c.get("/v1/models", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_unexpected_errors_are_json_without_traceback(painters, tmp_path):
    with other_app(painters, tmp_path) as c:
        def boom():
            raise RuntimeError("secret internals")

        c.app.add_api_route("/api/v1/boom", boom)
        r = c.get("/api/v1/boom")
        assert r.status_code == 500 and r.json()["error"] == "server_error"
        assert "secret internals" not in r.text and "Traceback" not in r.text
        assert c.get("/health").status_code == 200


def test_mode_the_model_lacks(tiny_k22_no_control, tmp_path):
    app = create_app(ServerConfig(models=[str(tiny_k22_no_control)], outputs=tmp_path / "out", ui=False))
    with TestClient(app) as c:
        depth = Image.new("L", (64, 64), 128)
        r = c.post("/api/v1/control", json={"prompt": "x", "hint": b64(depth)})
        assert r.status_code == 400 and "does not offer control" in r.json()["detail"]


def test_store_recovers_after_a_crash(tmp_path):
    from pintor.server.store import INTERRUPTED, Store

    store = Store(tmp_path / "h.db", tmp_path)
    store.add_job("aaaaaaaaaaaa", api="native", user=None, request={"mode": "generate", "prompt": "p"}, created=1.0)
    store.add_job("bbbbbbbbbbbb", api="native", user=None, request={"mode": "generate", "prompt": "q"}, created=2.0)
    store.update_job("bbbbbbbbbbbb", state="running", started=2.5)
    store.close()  # as if killed: nothing else was written
    # ...after one image of job b reached the disk but not the database, next to a foreign PNG.
    from pintor.metadata import save_png

    record = {"request": {"mode": "generate", "prompt": "orphan", "width": 64, "height": 64}, "seed": 3, "model": "m"}
    save_png(disc(), tmp_path / "20260101-000000-bbbbbbbbbbbb-0-orphan.png", record)
    disc().save(tmp_path / "holiday.png")
    again = Store(tmp_path / "h.db", tmp_path)
    assert again.recover() == {"interrupted": 2, "imported": 1}
    jobs = again.list_jobs()
    assert [j["state"] for j in jobs] == ["failed", "failed"] and jobs[0]["error"] == INTERRUPTED
    rows, total = again.history(q="orphan")
    assert total == 1 and rows[0]["job_id"] == "bbbbbbbbbbbb" and rows[0]["seed"] == 3
    assert again.recover() == {"interrupted": 0, "imported": 0}
    assert again._read("PRAGMA journal_mode")[0][0] == "wal"


def test_ui_is_mounted_at_root_and_its_mask_comes_from_the_brush(painters, tmp_path):
    pytest.importorskip("gradio")
    from pintor.server.ui import _editor_inputs

    app = create_app(ServerConfig(outputs=tmp_path / "out"), painters=painters)
    with TestClient(app) as c:
        page = c.get("/")
        assert page.status_code == 200 and "<gradio-app" in page.text
        assert c.get("/health").json()["status"] == "ok"  # the API keeps its routes under the UI's mount
        db = str(app.state.service.config.db.resolve())
        assert c.get(f"/gradio_api/file={db}").status_code in (403, 404)  # the UI serves images, not the history
        config = c.get("/config").json()
        assert config["analytics_enabled"] is False
        labels = [comp["props"].get("label") for comp in config["components"] if comp.get("type") == "tabitem"]
        assert labels == ["Generate", "Mix", "Img2Img", "Inpaint", "Control", "History", "Models"]
        service = app.state.service
        stroke = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
        stroke.paste((255, 255, 255, 255), (10, 10, 20, 30))
        image_path, mask_path = _editor_inputs(service, {"background": disc(), "layers": [stroke], "composite": None})
        mask = np.asarray(Image.open(mask_path))
        assert mask[15, 15] == 255 and mask[40, 40] == 0 and (mask > 0).sum() == 10 * 20
        with pytest.raises(Exception, match="paint the region"):
            _editor_inputs(service, {"background": disc(), "layers": [], "composite": None})


def test_job_request_mirrors_generation_request():
    """The native body has every field of the request, so `to_generation_request` can pass them through by name."""
    from dataclasses import fields

    from pintor.request import GenerationRequest
    from pintor.server.native import JobRequest

    # Mix weights travel inside the body's items.
    assert {f.name for f in fields(GenerationRequest)} - {"weights"} <= set(JobRequest.model_fields)
