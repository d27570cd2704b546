"""The web UI: Gradio Blocks mounted at `/` on the same FastAPI app, over the same queue and history.

Tabs: Generate, Mix, Img2Img, Inpaint, Control, History, Models. Every run shows live progress with an
ETA, has a seed field with a randomise button, and offers each PNG (with its metadata) for download. It
works offline: system fonts only, analytics off, no CDN.
"""

# No `from __future__ import annotations` here: Gradio finds `gr.Request` and `gr.SelectData` parameters by
# their evaluated annotations.
import os
import random
from pathlib import Path
from typing import Any

from pintor.request import GenerationRequest, candidates_that_fit
from pintor.server.errors import APIError

# Before gradio is imported: it reads these at import time.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

_FONTS = ("ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif")
_MONO = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace")
_CSS = """
#pintor-title h1 { margin-bottom: 0; }
.pintor-status { min-height: 1.5em; }
"""


def mount_ui(app, service):
    """Mounts the UI at `/` (after the API routes, which keep precedence) and returns the app."""
    import gradio as gr
    from PIL import Image

    from pintor.server.security import key_matches

    # Gradio decodes UI uploads itself, before our checks: lower Pillow's bomb guard (it errors at twice this)
    # from ~179M pixels to the server's input limit. This process serves; nothing else here decodes huge images.
    Image.MAX_IMAGE_PIXELS = service.config.max_input_pixels
    blocks = build_ui(service)
    key = service.config.api_key
    auth = (lambda _user, password: key_matches(password, key)) if key else None
    theme = gr.themes.Default(font=list(_FONTS), font_mono=list(_MONO))
    return gr.mount_gradio_app(
        app, blocks, path="/", auth=auth, auth_message="Enter any user name and the server's API key as password.",
        theme=theme, css=_CSS, footer_links=["settings"], ssr_mode=False, pwa=False, mcp_server=False,
        enable_monitoring=False, max_file_size=service.config.max_upload_bytes,
        # The gallery serves PNGs from the outputs folder, never the history database that may live there.
        allowed_paths=[str(service.config.outputs.resolve())],
        blocked_paths=[str(service.config.db.resolve()) + suffix for suffix in ("", "-wal", "-shm")],
        show_error=False)  # gr.Error messages are shown; anything unexpected stays in the server log


# -- building blocks -------------------------------------------------------------------------------------------
class _Settings:
    """The settings every tab shares, as one group of components."""

    def __init__(self, service, tab: str):
        import gradio as gr

        from pintor.schedulers import SCHEDULERS

        painter = service.painters[service.default_model]
        d, limits = painter.defaults, service.config.limits
        with gr.Accordion("Settings", open=True):
            with gr.Row():
                self.model = gr.Dropdown(list(service.painters), value=service.default_model, label="Model",
                                         elem_id=f"{tab}-model")
                self.scheduler = gr.Dropdown(["default", *SCHEDULERS], value="default", label="Scheduler",
                                             elem_id=f"{tab}-scheduler")
                self.n = gr.Slider(1, limits.max_n, value=1, step=1, label="Images", elem_id=f"{tab}-n")
                self.candidates = gr.Slider(1, min(limits.max_n, limits.max_candidates), value=d.get("candidates", 1),
                                            step=1, label="Candidates (best by CLIP)", elem_id=f"{tab}-candidates")
            with gr.Row(equal_height=True):
                self.seed = gr.Number(-1, precision=0, minimum=-1, label="Seed (-1: random)", elem_id=f"{tab}-seed")
                self.randomise = gr.Button("Randomise", size="sm", elem_id=f"{tab}-randomise", scale=0)
            with gr.Row():
                self.steps = gr.Slider(1, limits.max_steps, value=d.get("steps", 30), step=1, label="Steps",
                                       elem_id=f"{tab}-steps")
                self.guidance = gr.Slider(0, 20, value=d.get("guidance_scale", 4.0), step=0.5,
                                          label="Guidance scale", elem_id=f"{tab}-guidance")
            with gr.Row():
                size_max = limits.max_size
                self.width = gr.Slider(64, size_max, value=d.get("width", 512), step=64, label="Width",
                                       elem_id=f"{tab}-width")
                self.height = gr.Slider(64, size_max, value=d.get("height", 512), step=64, label="Height",
                                        elem_id=f"{tab}-height")
        self.randomise.click(lambda: random.randrange(2**32), outputs=self.seed, api_visibility="private")
        # More images leave room for fewer candidates each (n x candidates <= max_n): lower the slider to fit
        # rather than let the next click fail.
        self.n.change(lambda n, c: candidates_that_fit(n, c, limits.max_n), inputs=[self.n, self.candidates],
                      outputs=self.candidates, api_visibility="private")

    @property
    def inputs(self) -> list:
        return [self.model, self.scheduler, self.n, self.candidates, self.seed, self.steps, self.guidance, self.width,
                self.height]

    @staticmethod
    def fields(model, scheduler, n, candidates, seed, steps, guidance, width, height) -> dict[str, Any]:
        return dict(model=model, scheduler=None if scheduler in (None, "default") else scheduler, n=int(n),
                    candidates=int(candidates),
                    seed=None if seed is None or int(seed) < 0 else int(seed), steps=int(steps),
                    guidance_scale=float(guidance), width=int(width), height=int(height))


class _Outputs:
    def __init__(self, tab: str):
        import gradio as gr

        self.status = gr.Markdown("", elem_id=f"{tab}-status", elem_classes=["pintor-status"])
        self.gallery = gr.Gallery(label="Images", columns=4, height="auto", elem_id=f"{tab}-gallery",
                                  buttons=["download", "fullscreen"])
        self.files = gr.File(label="Download PNGs (with their metadata)", file_count="multiple",
                             elem_id=f"{tab}-files", interactive=False)
        self.job = gr.State(None)

    @property
    def list(self) -> list:
        return [self.job, self.status, self.gallery, self.files]


def _run_buttons(tab: str, label: str):
    """A tab's primary button and its Stop beside it, in a row of their own."""
    import gradio as gr

    with gr.Row():
        return (gr.Button(label, variant="primary", elem_id=f"{tab}-run"),
                gr.Button("Stop", variant="stop", elem_id=f"{tab}-stop"))


def _progress_text(job) -> str:
    p = job.progress()
    if job.state == "queued":
        return f"Queued (job `{job.id}`)"
    eta = f", about {p['eta']:.1f} s left" if p["eta"] is not None else ""
    return f"Running {p['stage'] or ''} step {p['step']}/{p['total']}{eta} (job `{job.id}`, seed {job.request.seed})"


def _run(service, build, username: str | None, progress):
    """A Gradio generator: queues the request that `build()` returns and streams progress, then the images."""
    import gradio as gr

    from pintor.errors import PintorError

    try:
        req = build()
        job = service.submit(req, api="ui", user=username or "ui")
    except APIError as e:
        raise gr.Error(e.message) from None
    except PintorError as e:
        raise gr.Error(str(e)) from None
    yield job.id, _progress_text(job), gr.skip(), gr.skip()
    seen = -1
    while not job.wait(0.2):
        if job.version != seen:
            seen = job.version
            p = job.progress()
            if p["total"]:
                progress((p["step"], p["total"]), desc=f"{p['stage'] or 'queued'}", unit="steps")
            yield job.id, _progress_text(job), gr.skip(), gr.skip()
    if job.state != "done":
        raise gr.Error(f"job {job.id} {job.state}: {job.error}")
    paths = [str(service.config.outputs / im["file"]) for im in job.images]
    seeds = ", ".join(str(im["seed"]) for im in job.images)
    took = job.progress()["elapsed"]
    yield (job.id, f"Done in {took:.1f} s: {len(paths)} image(s), seed(s) {seeds} (job `{job.id}`)",
           [(p, f"seed {im['seed']}") for p, im in zip(paths, job.images, strict=True)], paths)


def _stop(service, job_id):
    job = service.queue.get(job_id) if job_id else None
    if job is not None:
        service.queue.cancel(job)


def _ui_input(service, image, what: str) -> Path:
    """A UI upload (already decoded by Gradio, under Pillow's pixel guard) checked and stored like an API one."""
    if image is None:
        raise APIError(400, f"upload the {what} first")
    if image.width * image.height > service.config.max_input_pixels:
        raise APIError(413, f"the {what} is {image.width}x{image.height}: at most {service.config.max_input_pixels} "
                            "pixels")
    from pintor.images import load_image

    return service.store_input(load_image(image, what))


def _editor_inputs(service, value) -> tuple[Path, Path]:
    """Image and mask from the ImageEditor: whatever was painted on any layer is repainted."""
    from PIL import Image

    if not value or value.get("background") is None:
        raise APIError(400, "upload an image to the editor first")
    background = value["background"]
    mask = Image.new("L", background.size, 0)
    for layer in value.get("layers") or []:
        if layer is None:
            continue
        alpha = layer.convert("RGBA").getchannel("A").point(lambda a: 255 if a > 0 else 0)
        if alpha.size != background.size:
            alpha = alpha.resize(background.size, Image.NEAREST)
        mask.paste(255, mask=alpha)
    if mask.getextrema()[1] == 0:
        raise APIError(400, "paint the region to repaint over the image first")
    return _ui_input(service, background, "image"), service.store_input(mask)


# -- the page --------------------------------------------------------------------------------------------------
def build_ui(service):
    """The Gradio Blocks of the web UI."""
    import gradio as gr

    def generator(build_fn, inputs):
        # Inputs given as a set reach the function as one {component: value} dict, which leaves Gradio free
        # to inject the request and the progress tracker by their annotations.
        def fn(values: dict, request: gr.Request, progress=gr.Progress()):  # noqa: B008 - how Gradio asks for it
            username = getattr(request, "username", None)
            yield from _run(service, lambda: build_fn(*(values[c] for c in inputs)), username, progress)

        return fn

    def wire(button, stop, fn, inputs, outputs: _Outputs):
        event = button.click(generator(fn, inputs), inputs=set(inputs), outputs=outputs.list,
                             concurrency_limit=None, api_visibility="private")
        stop.click(lambda job_id: _stop(service, job_id), inputs=outputs.job, outputs=None,
                   cancels=[event], api_visibility="private")

    # Gradio copies every image it shows into its cache: clear files older than a day, every hour.
    with gr.Blocks(title="pintor", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        gr.Markdown("# pintor\nKandinsky 2.x text-to-image: generate, mix, repaint, follow a depth map.",
                    elem_id="pintor-title")
        with gr.Tabs(elem_id="tabs") as tabs:
            # Generate
            with gr.Tab("Generate", id="generate", elem_id="tab-generate"):
                with gr.Row():
                    with gr.Column(scale=1):
                        g_prompt = gr.Textbox(label="Prompt", lines=2, elem_id="generate-prompt",
                                              placeholder="a red circle above a blue square")
                        g_negative = gr.Textbox(label="Negative prompt", elem_id="generate-negative")
                        g_run, g_stop = _run_buttons("generate", "Generate")
                        g_set = _Settings(service, "generate")
                    with gr.Column(scale=1):
                        g_out = _Outputs("generate")

                def build_generate(prompt, negative, *s):
                    return GenerationRequest(mode="generate", prompt=prompt or "", negative_prompt=negative or "",
                                             **_Settings.fields(*s))

                wire(g_run, g_stop, build_generate, [g_prompt, g_negative, *g_set.inputs], g_out)

            # Mix
            with gr.Tab("Mix", id="mix", elem_id="tab-mix"):
                gr.Markdown("Up to four ingredients, each a text or an image (an image wins when both are given), "
                            "each with a weight. Weights need not sum to 1.")
                slots = []
                with gr.Row():
                    for i in range(4):
                        with gr.Column(min_width=180):
                            text = gr.Textbox(label=f"Text {i + 1}", elem_id=f"mix-text-{i}")
                            image = gr.Image(label=f"or image {i + 1}", type="pil", image_mode="RGB", height=180,
                                             elem_id=f"mix-image-{i}")
                            weight = gr.Slider(-1, 2, value=0.5 if i < 2 else 0.0, step=0.05, label="Weight",
                                               elem_id=f"mix-weight-{i}")
                            slots += [text, image, weight]
                with gr.Row():
                    with gr.Column():
                        m_negative = gr.Textbox(label="Negative prompt", elem_id="mix-negative")
                        m_run, m_stop = _run_buttons("mix", "Mix")
                        m_set = _Settings(service, "mix")
                    with gr.Column():
                        m_out = _Outputs("mix")

                def build_mix(*args):
                    slot_values, negative, s = args[:12], args[12], args[13:]
                    items, weights = [], []
                    for i in range(4):
                        text, image, weight = slot_values[3 * i: 3 * i + 3]
                        if image is not None:
                            items.append(_ui_input(service, image, f"image {i + 1}"))
                        elif text and text.strip():
                            items.append(service.text_item(text))
                        else:
                            continue
                        weights.append(float(weight))
                    if not items:
                        raise APIError(400, "give at least one text or image to mix")
                    return GenerationRequest(mode="mix", items=items, weights=weights, negative_prompt=negative or "",
                                             **_Settings.fields(*s))

                wire(m_run, m_stop, build_mix, [*slots, m_negative, *m_set.inputs], m_out)

            # Img2Img
            with gr.Tab("Img2Img", id="img2img", elem_id="tab-img2img"):
                with gr.Row():
                    with gr.Column():
                        i_image = gr.Image(label="Input image", type="pil", image_mode="RGB", elem_id="img2img-image")
                        i_prompt = gr.Textbox(label="Prompt", lines=2, elem_id="img2img-prompt")
                        i_negative = gr.Textbox(label="Negative prompt", elem_id="img2img-negative")
                        i_strength = gr.Slider(0.05, 1.0, value=0.5, step=0.05, label="Strength (how much to change)",
                                               elem_id="img2img-strength")
                        i_run, i_stop = _run_buttons("img2img", "Repaint")
                        i_set = _Settings(service, "img2img")
                    with gr.Column():
                        i_out = _Outputs("img2img")

                def build_img2img(image, prompt, negative, strength, *s):
                    return GenerationRequest(mode="img2img", image=_ui_input(service, image, "input image"),
                                             prompt=prompt or "", negative_prompt=negative or "",
                                             strength=float(strength), **_Settings.fields(*s))

                wire(i_run, i_stop, build_img2img, [i_image, i_prompt, i_negative, i_strength, *i_set.inputs], i_out)

            # Inpaint
            with gr.Tab("Inpaint", id="inpaint", elem_id="tab-inpaint"):
                with gr.Row():
                    with gr.Column():
                        p_editor = gr.ImageEditor(label="Image: paint over the region to repaint", type="pil",
                                                  image_mode="RGBA", sources=["upload", "clipboard"],
                                                  brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"),
                                                  layers=False, elem_id="inpaint-editor")
                        p_prompt = gr.Textbox(label="Prompt", lines=2, elem_id="inpaint-prompt")
                        p_negative = gr.Textbox(label="Negative prompt", elem_id="inpaint-negative")
                        p_run, p_stop = _run_buttons("inpaint", "Inpaint")
                        p_set = _Settings(service, "inpaint")
                    with gr.Column():
                        p_out = _Outputs("inpaint")

                def build_inpaint(value, prompt, negative, *s):
                    image, mask = _editor_inputs(service, value)
                    return GenerationRequest(mode="inpaint", image=image, mask=mask, prompt=prompt or "",
                                             negative_prompt=negative or "", **_Settings.fields(*s))

                wire(p_run, p_stop, build_inpaint, [p_editor, p_prompt, p_negative, *p_set.inputs], p_out)

            # Control
            with gr.Tab("Control", id="control", elem_id="tab-control"):
                with gr.Row():
                    with gr.Column():
                        c_hint = gr.Image(label="Depth map (white is near), or a photo", type="pil", image_mode="RGB",
                                          elem_id="control-hint")
                        c_estimate = gr.Checkbox(label="It is a photo: estimate its depth first",
                                                 elem_id="control-estimate")
                        c_prompt = gr.Textbox(label="Prompt", lines=2, elem_id="control-prompt")
                        c_negative = gr.Textbox(label="Negative prompt", elem_id="control-negative")
                        c_run, c_stop = _run_buttons("control", "Paint")
                        c_set = _Settings(service, "control")
                    with gr.Column():
                        c_out = _Outputs("control")

                def build_control(hint, estimate, prompt, negative, *s):
                    return GenerationRequest(mode="control", hint=_ui_input(service, hint, "depth map"),
                                             estimate_depth=bool(estimate), prompt=prompt or "",
                                             negative_prompt=negative or "", **_Settings.fields(*s))

                wire(c_run, c_stop, build_control, [c_hint, c_estimate, c_prompt, c_negative, *c_set.inputs], c_out)

            # History
            with gr.Tab("History", id="history", elem_id="tab-history") as history_tab:
                with gr.Row():
                    h_search = gr.Textbox(label="Search prompts", elem_id="history-search", scale=4)
                    h_refresh = gr.Button("Refresh", elem_id="history-refresh", scale=1)
                h_gallery = gr.Gallery(label="History (newest first)", columns=6, height="auto", preview=False,
                                       elem_id="history-gallery", buttons=["download", "fullscreen"])
                h_ids = gr.State([])
                h_selected = gr.State(None)
                h_details = gr.Code(label="Parameters", language=None, elem_id="history-details", interactive=False)
                h_reuse = gr.Button("Reuse these parameters in Generate", elem_id="history-reuse")

                def load_history(q):
                    rows, total = service.store.history(q=q or None, limit=60)
                    items, ids = [], []
                    for r in rows:
                        path = service.config.outputs / r["file"]
                        if path.is_file():
                            items.append((str(path), (r["prompt"] or r["mode"] or "")[:60]))
                            ids.append(r["id"])
                    return items, ids

                def select(ids, evt: gr.SelectData):
                    if evt.index is None or evt.index >= len(ids):
                        return None, ""
                    row = service.store.get_image(ids[evt.index])
                    if row is None:
                        return None, ""
                    from pintor.metadata import a1111_parameters

                    return row["id"], a1111_parameters(row["record"])

                def reuse(image_id):
                    row = service.store.get_image(image_id) if image_id is not None else None
                    if row is None:
                        raise gr.Error("select an image in the history first")
                    r, painter_models = row["record"].get("request", {}), list(service.painters)
                    model = r.get("model") if r.get("model") in painter_models else service.default_model
                    return (r.get("prompt") or "", r.get("negative_prompt") or "", model,
                            r.get("scheduler") or "default", r.get("n") or 1, r.get("candidates") or 1, row["seed"],
                            r.get("steps"),
                            r.get("guidance_scale"), r.get("width"), r.get("height"), gr.Tabs(selected="generate"))

                for trigger in (h_refresh.click, h_search.submit, history_tab.select):
                    trigger(load_history, inputs=h_search, outputs=[h_gallery, h_ids], api_visibility="private")
                h_gallery.select(select, inputs=h_ids, outputs=[h_selected, h_details], api_visibility="private")
                h_reuse.click(reuse, inputs=h_selected,
                              outputs=[g_prompt, g_negative, g_set.model, g_set.scheduler, g_set.n,
                                       g_set.candidates, g_set.seed,
                                       g_set.steps, g_set.guidance, g_set.width, g_set.height, tabs],
                              api_visibility="private")

            # Models
            with gr.Tab("Models", id="models", elem_id="tab-models"):
                gr.Markdown(_models_markdown(service), elem_id="models-table")
    demo.queue(default_concurrency_limit=None)
    return demo


def _models_markdown(service) -> str:
    from pintor.registry import REGISTRY

    lines = ["### Served", "", "| name | family | modes | device | dtype |", "|---|---|---|---|---|"]
    for m in service.models():
        default = " (default)" if m["default"] else ""
        lines.append(f"| `{m['name']}`{default} | {m['family']} | {', '.join(m['modes'])} | {m['device']} | "
                     f"{m['dtype']} |")
    lines += ["", "### Registry", "", "Serve others with `pintor serve --model NAME ...`.", "",
              "| name | modes | description |", "|---|---|---|"]
    for spec in REGISTRY.values():
        lines.append(f"| `{spec.name}` | {', '.join(spec.modes)} | {spec.description} |")
    return "\n".join(lines)
