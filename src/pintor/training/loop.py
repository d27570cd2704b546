"""The training loop every pintor trainer shares.

A trainer supplies a model and a `step_fn(step, generator) -> {"loss": tensor, ...}`; the loop owns
everything else: AdamW with warm-up and cosine decay, gradient clipping, EMA weights, a tqdm bar,
loss logging to `loss.csv` plus a `loss.png` plot, and checkpoints.

Checkpoints hold only safetensors and JSON (no pickle): the model, the EMA weights and the optimizer
state flattened into `.safetensors` files, the step and optimizer hyper-parameters in `state.json`.
Each step draws its randomness from a generator seeded by `(seed, step)`, so a run resumed from a
checkpoint takes the same batches and noise as an uninterrupted one and ends bit-identical on the
same machine.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from pintor.host import host_info
from pintor.training.plot import plot_loss

CHECKPOINT_PREFIX = "step-"


@dataclass
class TrainConfig:
    """Settings every trainer shares.

    Args:
        steps (`int`): optimizer steps to train for (the total, also when resuming).
        batch_size (`int`): samples per step.
        lr (`float`): peak learning rate of AdamW.
        weight_decay (`float`): AdamW's decoupled weight decay.
        warmup_steps (`int`): linear warm-up from 0 to `lr`.
        lr_schedule (`str`): `"cosine"` (decays to `min_lr_ratio * lr`) or `"constant"`.
        min_lr_ratio (`float`): the cosine schedule's final fraction of `lr`.
        grad_clip (`float`, *optional*): clip the global gradient norm to this; `None` for no clipping.
        ema_decay (`float`, *optional*): decay of the EMA weights the trainer exports; `None` exports the
            raw weights.
        checkpoint_every (`int`): steps between checkpoints (a final one is always written).
        keep_checkpoints (`int`): how many of the newest checkpoints to keep.
        seed (`int`): seeds initialisation, batches and noise.
        device (`str`): `"cpu"` or `"cuda"` (or `"cuda:N"`).
        resume (`bool`): continue from the newest checkpoint in the output folder, if any.
        progress (`bool`): show a tqdm progress bar.
        sync_every (`int`, *optional*): steps whose losses are read back (and checked) together; `None`
            reads every step on a CPU and every 50 on a GPU, which then need not wait for each step to end.
    """

    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 100
    lr_schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    grad_clip: float | None = 1.0
    ema_decay: float | None = 0.999
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    seed: int = 0
    device: str = "cpu"
    resume: bool = False
    progress: bool = True
    sync_every: int | None = None

    def validate(self) -> None:
        """Raises `ValueError` naming the first bad setting."""
        if self.sync_every is not None and not (isinstance(self.sync_every, int) and self.sync_every >= 1):
            raise ValueError(f"sync_every must be a positive int or None, got {self.sync_every!r}")
        for name in ("steps", "batch_size", "checkpoint_every", "keep_checkpoints"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay!r}")
        check_device(self.device)


def check_device(device: str) -> torch.device:
    """Parses a device string, raising `ValueError` when it is unknown or unavailable."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; expected 'cpu' or 'cuda'") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; expected 'cpu' or 'cuda'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available; use --device cpu")
    return dev


def lr_at(cfg: TrainConfig, step: int) -> float:
    """The learning rate of optimizer step `step` (0-based)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator for one step; depends only on `(seed, step)` so resuming replays the same randomness."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63 - 1))


class EMA:
    """Exponential moving average of a model's floating-point parameters.

    The decay warms up as `min(decay, (1 + n) / (10 + n))`, so early averages are not dominated by the
    random initialisation.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        # One fused call for every tensor: per-tensor lerps are hundreds of tiny kernel launches a step on a GPU.
        named = dict(model.named_parameters())
        torch._foreach_lerp_(list(self.shadow.values()), [named[k].detach() for k in self.shadow], 1 - d)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        params = dict(model.named_parameters())
        for k, v in self.shadow.items():
            params[k].copy_(v)


@dataclass
class LoopResult:
    """What `train_loop` returns.

    Args:
        model: the trained model, holding the EMA weights when EMA is on.
        steps (`int`): steps trained in total.
        history (`list[dict]`): one row per step, as written to `loss.csv`.
        checkpoint (`Path`): the final checkpoint folder.
        seconds (`float`): wall time of this call's steps.
        info (`dict`): facts a trainer adds after training (for example MoVQ's latent statistics).
    """

    model: torch.nn.Module
    steps: int
    history: list[dict] = field(default_factory=list)
    checkpoint: Path | None = None
    seconds: float = 0.0
    info: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------


def _tensors(d: dict) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous tensors that share no memory.
    return {k: v.detach().cpu().contiguous().clone() for k, v in d.items()}


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{idx}.{k}"] = v
            else:
                scalars[f"{idx}.{k}"] = v
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return _tensors(tensors), {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = v
    for key, v in meta.get("scalars", {}).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    """Complete checkpoint folders under `ckpt_root`, oldest first."""
    if not ckpt_root.is_dir():
        return []
    found = [p for p in ckpt_root.iterdir()
             if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def save_checkpoint(ckpt_root: Path, step: int, model: torch.nn.Module, opt: torch.optim.Optimizer,
                    ema: EMA | None, extra: dict | None = None, keep: int = 2) -> Path:
    """Writes `ckpt_root/step-NNNNNNN/` atomically and prunes all but the `keep` newest."""
    from safetensors.torch import save_file

    final = ckpt_root / f"{CHECKPOINT_PREFIX}{step:07d}"
    tmp = ckpt_root / f".tmp-{final.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(_tensors(model.state_dict()), tmp / "model.safetensors")
    if ema is not None:
        save_file(_tensors(ema.shadow), tmp / "ema.safetensors")
    opt_tensors, opt_meta = _flatten_optimizer(opt)
    save_file(opt_tensors, tmp / "optimizer.safetensors")
    state = {"step": step, "ema_updates": ema.updates if ema else 0, "optimizer": opt_meta, **(extra or {})}
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(ckpt_root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer | None,
                    ema: EMA | None) -> dict:
    """Restores a checkpoint written by `save_checkpoint` in place; returns its `state.json`."""
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text())
    device = next(model.parameters()).device
    model.load_state_dict(load_file(path / "model.safetensors", device=str(device)))
    if ema is not None and (path / "ema.safetensors").is_file():
        ema.shadow = load_file(path / "ema.safetensors", device=str(device))
        ema.updates = state.get("ema_updates", 0)
    if opt is not None:
        opt.load_state_dict(_unflatten_optimizer(load_file(path / "optimizer.safetensors", device=str(device)),
                                                 state["optimizer"]))
    return state


def load_weights(path: Path, model: torch.nn.Module, *, ema: bool = True) -> torch.nn.Module:
    """Loads a checkpoint's EMA weights (or raw weights with `ema=False`) into `model` for export."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(path / "model.safetensors"))
    if ema and (path / "ema.safetensors").is_file():
        e = EMA.__new__(EMA)
        e.shadow = load_file(path / "ema.safetensors")
        e.copy_to(model)
    return model


# ----------------------------------------------------------------------------------------------------
# Logging
# ----------------------------------------------------------------------------------------------------


class _LossLog:
    """`loss.csv` (one row per step) that survives resuming: rows past the checkpoint are dropped."""

    def __init__(self, path: Path, start_step: int):
        self.path = path
        self.rows: list[dict] = []
        self.header: list[str] | None = None
        if start_step > 0 and path.is_file():
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                self.header = list(reader.fieldnames or [])
                self.rows = [{k: float(v) for k, v in r.items()} for r in reader if float(r["step"]) < start_step]
        self._rewrite()

    def _rewrite(self) -> None:
        with open(self.path, "w", newline="", encoding="utf-8") as f:
            if self.header:
                w = csv.DictWriter(f, fieldnames=self.header)
                w.writeheader()
                w.writerows(self.rows)

    def add(self, row: dict) -> None:
        if self.header is None:
            self.header = list(row)
            self._rewrite()
        self.rows.append(row)
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=self.header, extrasaction="ignore").writerow(row)

    def plot(self, path: Path, title: str) -> None:
        plot_loss([r["step"] for r in self.rows], [r["loss"] for r in self.rows], path, title=title)


# ----------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------

StepFn = Callable[[int, torch.Generator], dict[str, torch.Tensor]]


def train_loop(model: torch.nn.Module, step_fn: StepFn, cfg: TrainConfig, out_dir: str | Path, *,
               name: str = "train", parameters: list[torch.nn.Parameter] | None = None,
               extra_state: dict | None = None) -> LoopResult:
    """Trains `model` for `cfg.steps` steps of `step_fn`, with checkpoints, EMA and loss logging in `out_dir`.

    Writes `out_dir/checkpoints/step-NNNNNNN/`, `out_dir/loss.csv` and `out_dir/loss.png`. With
    `cfg.resume`, training continues from the newest checkpoint (a finished run is not trained again).

    Args:
        model (`torch.nn.Module`): the module whose state is checkpointed; already on `cfg.device`.
        step_fn (`Callable`): `step_fn(step, generator)` computes one batch's losses; it must take all its
            randomness from `generator` (a CPU `torch.Generator`) for resuming to be exact. It returns
            a dict with a differentiable scalar `"loss"` and optionally other scalars to log.
        cfg (`TrainConfig`): loop settings.
        out_dir (`str` or `Path`): where checkpoints and logs go.
        name (`str`): the progress bar's and plot's title.
        parameters (`list`, *optional*): the parameters to optimise; defaults to every parameter of
            `model` that requires a gradient.
        extra_state (`dict`, *optional*): JSON-able facts stored in each checkpoint's `state.json`.

    Returns:
        `LoopResult` whose `model` holds the EMA weights (when `cfg.ema_decay` is set).
    """
    from tqdm.auto import tqdm

    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_root = out / "checkpoints"
    params = parameters if parameters is not None else [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{name}: the model has no trainable parameters")
    # Decay only matrices and kernels; norms, biases and embeddings of size 1-d are left alone.
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None

    start = 0
    existing = list_checkpoints(ckpt_root)
    if cfg.resume and existing:
        state = load_checkpoint(existing[-1], model, opt, ema)
        start = int(state["step"])
        if start > cfg.steps:
            raise ValueError(f"{name}: checkpoint {existing[-1]} is at step {start}, past the requested "
                             f"{cfg.steps} steps; use more --steps or a fresh --out")
    elif existing:
        # A fresh run must not mix with an older run's checkpoints.
        shutil.rmtree(ckpt_root)

    log = _LossLog(out / "loss.csv", start)
    # The machine goes with the run: loss.csv's seconds compare only across runs on the same kind of device.
    meta = {"config": asdict(cfg), "name": name, "host": host_info(cfg.device), **(extra_state or {})}
    (out / "config.json").write_text(json.dumps(meta, indent=1, default=str))

    model.train()
    t0 = time.time()
    last_ckpt = existing[-1] if (cfg.resume and existing) else None
    bar = tqdm(total=cfg.steps, initial=start, desc=name, disable=not cfg.progress, dynamic_ncols=True,
               mininterval=1.0 if os.isatty(2) else 30.0)
    pending: list[tuple[int, dict[str, torch.Tensor], float]] = []

    def flush() -> None:
        # Reading a loss back waits for the GPU; doing it for a batch of steps at once lets the host queue the
        # next steps' kernels meanwhile. A non-finite loss is still caught before any checkpoint is written.
        if not pending:
            return
        values = torch.stack([torch.stack([v.float() for v in ls.values()]) for _, ls, _ in pending]).cpu()
        for (step, ls, lr), row_values in zip(pending, values.tolist(), strict=True):
            row = {"step": step, **dict(zip(ls, row_values, strict=True)), "lr": lr,
                   "seconds": round(time.time() - t0, 3)}
            if not math.isfinite(row["loss"]):
                raise FloatingPointError(f"{name}: loss became {row['loss']} at step {step}; lower --lr")
            log.add(row)
        bar.update(len(pending))
        bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
        pending.clear()

    sync_every = cfg.sync_every or (1 if torch.device(cfg.device).type == "cpu" else 50)
    for step in range(start, cfg.steps):
        lr = lr_at(cfg, step)
        for g in opt.param_groups:
            g["lr"] = lr
        losses = step_fn(step, step_generator(cfg.seed, step))
        loss = losses["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        if ema is not None:
            ema.update(model)
        pending.append((step, {k: v.detach() for k, v in losses.items()}, lr))  # no graphs kept past their step
        done = step + 1
        checkpoint = done % cfg.checkpoint_every == 0 or done == cfg.steps
        if checkpoint or len(pending) >= sync_every:
            flush()
        if checkpoint:
            last_ckpt = save_checkpoint(ckpt_root, done, model, opt, ema, extra_state, cfg.keep_checkpoints)
            log.plot(out / "loss.png", name)
    bar.close()
    if start >= cfg.steps or not (out / "loss.png").is_file():
        log.plot(out / "loss.png", name)
    if ema is not None:
        ema.copy_to(model)
    model.eval()
    return LoopResult(model=model, steps=cfg.steps, history=log.rows, checkpoint=last_ckpt, seconds=time.time() - t0)
