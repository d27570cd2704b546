"""The web UI in headless Chromium (Debian's `chromium`, driven by Playwright) against a real `pintor serve`:
log in with the API key, type a prompt, generate, find the image in History, reuse its parameters, run every
other tab (mix, img2img, depth control, inpainting with a brush-drawn mask), and check that the page never asks
anything of a host other than the server (it must work offline).

The screenshot goes to `$PINTOR_ARTIFACTS` (default `tests/artifacts/`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

from pintor.server.testing import ServerProcess

KEY = "browser-key"


def run_tab(page, tab: str) -> None:
    page.wait_for_timeout(300)  # let the upload land before the click reads it
    page.locator(f"#{tab}-run").click()
    # An image, or an error toast (say which, rather than time out on a request the server refused).
    page.wait_for_function(f"() => document.querySelector('#{tab}-gallery img') || document.querySelector('.toast-body')",
                           timeout=180_000)
    assert page.locator(f"#{tab}-gallery img").count() > 0, f"{tab}: {page.locator('.toast-body').all_inner_texts()}"
    page.wait_for_function(f"() => document.querySelector('#{tab}-status').innerText.includes('Done')")


def chromium_path() -> str | None:
    for candidate in (os.environ.get("PINTOR_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


@pytest.mark.slow
def test_generate_in_the_browser_then_find_it_in_history(tiny_k22, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    pytest.importorskip("gradio", reason="gradio is not installed")
    executable = chromium_path()
    if executable is None:
        pytest.skip("no chromium executable found (apt-get install chromium, or set PINTOR_CHROMIUM)")
    artifacts = Path(os.environ.get("PINTOR_ARTIFACTS") or Path(__file__).parent / "artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)

    picture, depth = tmp_path / "square.png", tmp_path / "depth.png"
    a = np.full((64, 64, 3), 255, np.uint8)
    a[16:48, 16:48] = (220, 30, 30)
    Image.fromarray(a).save(picture)
    Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))).save(depth)

    with ServerProcess("--model", tiny_k22, outputs=tmp_path / "outputs", api_key=KEY) as server:
        foreign, seen = [], []

        def gate(route):
            host = urlparse(route.request.url).hostname
            seen.append(route.request.url)
            if route.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
                route.continue_()
            else:  # offline means offline: record it, and never let it leave the machine
                foreign.append(route.request.url)
                route.abort()

        with playwright_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.route("**/*", gate)
                page.goto(server.url + "/", wait_until="domcontentloaded")

                # Login: any user name, the API key as password.
                page.locator("input[data-testid=textbox]").first.fill("tester")
                page.locator("input[type=password]").fill(KEY)
                page.get_by_role("button", name="Login").click()
                prompt = page.locator("#generate-prompt textarea")
                prompt.wait_for(timeout=180_000)

                seed = page.locator("#generate-seed input")
                assert seed.input_value() == "-1"
                page.locator("#generate-randomise").click()
                page.wait_for_function("() => document.querySelector('#generate-seed input').value !== '-1'")
                chosen = int(seed.input_value())
                prompt.fill("a red circle above a blue square")
                page.locator("#generate-run").click()
                page.locator("#generate-gallery img").first.wait_for(timeout=180_000)
                status = page.locator("#generate-status")
                page.wait_for_function("() => document.querySelector('#generate-status').innerText.includes('Done')")
                assert f"seed(s) {chosen}" in status.inner_text()
                assert page.locator("#generate-files a[download]").count() >= 1  # the PNG download
                page.screenshot(path=str(artifacts / "ui-generate.png"), full_page=True)

                page.get_by_role("tab", name="History").click()
                first = page.locator("#history-gallery img").first
                first.wait_for(timeout=90_000)
                first.click()
                details = page.locator("#history-details")
                page.wait_for_function("() => document.querySelector('#history-details').innerText.includes('Seed')")
                assert "a red circle above a blue square" in details.inner_text()
                assert f"Seed: {chosen}" in details.inner_text()
                page.screenshot(path=str(artifacts / "ui-history.png"), full_page=True)

                page.get_by_role("tab", name="Generate").click()
                prompt.fill("")
                page.get_by_role("tab", name="History").click()
                page.locator("#history-reuse").click()
                page.wait_for_function(
                    "() => document.querySelector('#generate-prompt textarea').value.includes('red circle')")
                assert seed.input_value() == str(chosen)

                # Every other mode's tab, with uploads (and a brush stroke for the inpainting mask).
                page.get_by_role("tab", name="Mix").click()
                page.locator("#mix-text-0 textarea").fill("a red circle")
                page.locator("#mix-image-1 input[type=file]").set_input_files(str(picture))
                run_tab(page, "mix")
                page.get_by_role("tab", name="Img2Img").click()
                page.locator("#img2img-image input[type=file]").set_input_files(str(picture))
                page.locator("#img2img-prompt textarea").fill("a blue square")
                page.locator("#img2img-steps input[type=number]").fill("4")
                run_tab(page, "img2img")
                page.get_by_role("tab", name="Control").click()
                page.locator("#control-hint input[type=file]").set_input_files(str(depth))
                page.locator("#control-prompt textarea").fill("a blue square")
                run_tab(page, "control")
                page.get_by_role("tab", name="Inpaint").click()
                with page.expect_file_chooser() as chooser:
                    page.locator("#inpaint-editor").get_by_text("Upload an image").click()
                chooser.value.set_files(str(picture))
                # Draw only once the editor shows the picture: on a busy machine the upload takes a while.
                page.locator("#inpaint-editor").get_by_text("Upload an image").wait_for(state="hidden", timeout=60_000)
                canvas = page.locator("#inpaint-editor .pixi-target canvas").first
                page.wait_for_timeout(500)
                box = canvas.bounding_box()
                x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                page.mouse.move(x - 40, y)
                page.mouse.down()
                for i in range(10):
                    page.mouse.move(x - 40 + 8 * i, y + i % 2)
                page.mouse.up()
                page.locator("#inpaint-prompt textarea").fill("a yellow star")
                run_tab(page, "inpaint")
                page.get_by_role("tab", name="Models").click()
                assert "tiny-k22" in page.locator("#models-table").inner_text()

                # The API docs render offline too (Swagger UI served by the app); a browser logs in with Basic.
                docs = browser.new_context(http_credentials={"username": "tester", "password": KEY}).new_page()
                docs.route("**/*", gate)
                docs.goto(server.url + "/docs", wait_until="domcontentloaded")
                docs.locator(".opblock").first.wait_for(timeout=90_000)
                assert docs.locator(".opblock").count() >= 20
                assert docs.get_by_text("/v1/images/generations").count() >= 1
            finally:
                browser.close()

        assert not foreign, f"the UI asked for non-loopback resources: {foreign[:5]}"
        assert any("/gradio_api/" in u for u in seen)
        history = server.get_json("/api/v1/history")
        assert [it["mode"] for it in history["items"]] == ["inpaint", "control", "img2img", "mix", "generate"]
        assert {it["user"] for it in history["items"]} == {"tester"}
        assert history["items"][-1]["seed"] == chosen
        inpaint = history["items"][0]["request"]
        mask = np.asarray(Image.open(inpaint["mask"]["path"]))
        assert 0 < (mask > 0).mean() < 1  # the brush stroke, and only it, became the mask
