"""The MAML paper's sinusoid regression benchmark (Finn et al. 2017, section 5.1).

Task: y = A sin(x - phi), A ~ U[0.1, 5], phi ~ U[0, pi], x ~ U[-5, 5]; K = 10 support points
(and K query points) per task; MLP 1-40-40-1 with ReLU; one inner SGD step of alpha = 0.01
during meta-training; meta-batch 25 tasks; Adam 1e-3 on the meta-gradient. Evaluation: on
fresh tasks, fine-tune from the meta-learned initialisation with the same alpha on K points
and report the MSE on held-out points of the same sine after 0, 1 and 10 steps.

Baseline measured in the same run: "pretrained", the same network trained jointly on all
tasks (no inner step, same iterations, same optimiser), then fine-tuned the same way.

`run(quick=False)` returns the `results` part of the benchmark JSON; `bench/sinusoid.py`
writes the file.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from avatar_meta.meta.core import Params, TaskBatch, assign_grads, leaf_params, map_tasks
from avatar_meta.meta.maml import MAML, MAMLConfig

REFERENCE = {
    "mse_1_step": 0.69,
    "mse_10_steps": 0.17,
    "iterations": 20000,
    "source": "earlier reproduction on this machine (numbers given in the issue brief)",
}


@dataclass(frozen=True)
class SinusoidConfig:
    """The paper's setting by default."""

    amplitude: tuple[float, float] = (0.1, 5.0)
    """Range of the amplitude A."""
    phase: tuple[float, float] = (0.0, math.pi)
    """Range of the phase phi."""
    x_range: tuple[float, float] = (-5.0, 5.0)
    """Range of the inputs x."""
    k_shot: int = 10
    """Support points per task (and query points per task during meta-training)."""
    hidden: tuple[int, ...] = (40, 40)
    """Hidden widths of the ReLU MLP."""
    inner_lr: float = 0.01
    """alpha, for meta-training and for fine-tuning at evaluation."""
    inner_steps: int = 1
    """Inner steps during meta-training."""
    first_order: bool = False
    """FOMAML instead of MAML."""
    meta_batch: int = 25
    """Tasks per meta-iteration."""
    meta_lr: float = 1e-3
    """Adam learning rate on the meta-gradient."""
    iterations: int = 20000
    """Meta-iterations."""
    eval_tasks: int = 1000
    """Fresh tasks for evaluation."""
    eval_points: int = 100
    """Held-out points per evaluation task (uniform in x_range)."""
    eval_steps: tuple[int, ...] = (0, 1, 10)
    """Report the MSE after these numbers of fine-tuning steps."""
    seed: int = 0
    """Seeds the initialisation, the training tasks and (offset) the evaluation tasks."""
    use_vmap: bool = True
    """Batch the meta-batch with torch.func.vmap."""


def init_mlp(hidden: tuple[int, ...], seed: int) -> Params:
    """1-h1-...-1 MLP with torch's default Linear initialisation, as a params dict."""
    torch.manual_seed(seed)
    sizes = (1, *hidden, 1)
    params: Params = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layer = torch.nn.Linear(n_in, n_out)
        params[f"{i}.weight"] = layer.weight.detach().clone()
        params[f"{i}.bias"] = layer.bias.detach().clone()
    return params


def mlp(params: Params, x: Tensor) -> Tensor:
    """ReLU MLP as a pure function: x [..., 1] -> y [..., 1]."""
    n = len(params) // 2
    for i in range(n):
        x = F.linear(x, params[f"{i}.weight"], params[f"{i}.bias"])
        if i < n - 1:
            x = torch.relu(x)
    return x


def mse_loss(params: Params, batch: tuple[Tensor, Tensor]) -> Tensor:
    """Mean squared error of the MLP on one task's (x, y)."""
    x, y = batch
    return (mlp(params, x) - y).square().mean()


def sample_tasks(n: int, cfg: SinusoidConfig, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Amplitudes and phases [n, 1, 1] (broadcast over points)."""
    a = torch.empty(n, 1, 1).uniform_(*cfg.amplitude, generator=gen)
    p = torch.empty(n, 1, 1).uniform_(*cfg.phase, generator=gen)
    return a, p


def sample_points(
    amp: Tensor, phase: Tensor, k: int, cfg: SinusoidConfig, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """(x, y), each [n, k, 1], for the given tasks."""
    x = torch.empty(amp.shape[0], k, 1).uniform_(*cfg.x_range, generator=gen)
    return x, amp * torch.sin(x - phase)


def sample_meta_batch(cfg: SinusoidConfig, gen: torch.Generator) -> TaskBatch:
    """Task-stacked support and query sets (K points each) for one meta-iteration."""
    amp, phase = sample_tasks(cfg.meta_batch, cfg, gen)
    support = sample_points(amp, phase, cfg.k_shot, cfg, gen)
    return TaskBatch(support, sample_points(amp, phase, cfg.k_shot, cfg, gen))


def make_maml(cfg: SinusoidConfig, inner_steps: int | None = None) -> MAML:
    """MAML with the paper's constant alpha (no decay); inner_steps=0 is joint training."""
    steps = cfg.inner_steps if inner_steps is None else inner_steps
    mcfg = MAMLConfig(
        inner_lr=cfg.inner_lr,
        inner_lr_decay=1.0,
        inner_steps=steps,
        first_order=cfg.first_order,
        use_vmap=cfg.use_vmap,
    )
    return MAML(mse_loss, mse_loss, mcfg, forward=mlp)


def train(
    cfg: SinusoidConfig,
    inner_steps: int | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> Params:
    """Meta-train (or, with inner_steps=0, jointly pretrain) and return the initialisation."""
    gen = torch.Generator().manual_seed(cfg.seed)
    params = leaf_params(init_mlp(cfg.hidden, cfg.seed))
    opt = torch.optim.Adam(params.values(), lr=cfg.meta_lr)
    maml = make_maml(cfg, inner_steps)
    for it in range(cfg.iterations):
        tasks = sample_meta_batch(cfg, gen)
        grads, loss = maml.meta_grad({k: v.detach() for k, v in params.items()}, tasks)
        assign_grads(params, grads)
        opt.step()
        if progress is not None:
            progress(it, float(loss))
    return {k: v.detach() for k, v in params.items()}


def _finetune_curve(
    params: Params,
    support: tuple[Tensor, Tensor],
    query: tuple[Tensor, Tensor],
    steps: int,
    lr: float,
) -> Tensor:
    """Query MSE after 0..steps SGD steps on the support set: [steps + 1]."""
    curve = [mse_loss(params, query)]
    for _ in range(steps):
        g = torch.func.grad(mse_loss)(params, support)
        params = {k: v - lr * g[k] for k, v in params.items()}
        curve.append(mse_loss(params, query))
    return torch.stack(curve)


def evaluate(params: Params, cfg: SinusoidConfig) -> dict[str, Any]:
    """Mean query MSE (and its 95% CI) after each of cfg.eval_steps on cfg.eval_tasks fresh
    tasks (a generator seeded apart from training, so tasks never overlap by construction)."""
    gen = torch.Generator().manual_seed(cfg.seed + 1_000_003)
    amp, phase = sample_tasks(cfg.eval_tasks, cfg, gen)
    support = sample_points(amp, phase, cfg.k_shot, cfg, gen)
    query = sample_points(amp, phase, cfg.eval_points, cfg, gen)
    steps = max(cfg.eval_steps)

    def curve(s: tuple[Tensor, Tensor], q: tuple[Tensor, Tensor]) -> Tensor:
        return _finetune_curve(params, s, q, steps, cfg.inner_lr)

    curves = map_tasks(curve, (0, 0), use_vmap=True)(support, query)  # [tasks, steps + 1]
    mean, std = curves.mean(0), curves.std(0)
    ci = 1.96 * std / math.sqrt(cfg.eval_tasks)
    return {
        "mse": {str(k): round(float(mean[k]), 4) for k in cfg.eval_steps},
        "ci95": {str(k): round(float(ci[k]), 4) for k in cfg.eval_steps},
    }


def seconds_per_1k(cfg: SinusoidConfig, iterations: int = 200) -> float:
    """Wall seconds per 1000 meta-iterations, measured on a short run."""
    short = replace(cfg, iterations=iterations)
    train(replace(short, iterations=10))  # warm-up
    start = time.perf_counter()
    train(short)
    return (time.perf_counter() - start) * 1000.0 / iterations


def run(quick: bool = False, cfg: SinusoidConfig | None = None) -> dict[str, Any]:
    """Meta-train MAML and the pretrained baseline, evaluate both; the benchmark's results."""
    cfg = cfg or SinusoidConfig()
    if quick:
        cfg = replace(cfg, iterations=min(cfg.iterations, 1000), eval_tasks=200)
    start = time.perf_counter()
    meta = train(cfg)
    maml_seconds = time.perf_counter() - start
    start = time.perf_counter()
    pre = train(cfg, inner_steps=0)
    pre_seconds = time.perf_counter() - start
    maml_eval, pre_eval = evaluate(meta, cfg), evaluate(pre, cfg)

    def ratio(a: float, b: float) -> float:
        return round(a / b, 3) if b else float("nan")

    m = maml_eval["mse"]
    return {
        "config": asdict(cfg),
        "iterations": cfg.iterations,
        "maml": {
            **maml_eval,
            "train_seconds": round(maml_seconds, 1),
            "seconds_per_1k_iterations": round(maml_seconds * 1000 / cfg.iterations, 2),
        },
        "pretrained_baseline": {**pre_eval, "train_seconds": round(pre_seconds, 1)},
        "maml_over_pretrained": {k: ratio(m[k], pre_eval["mse"][k]) for k in m},
        "reference": REFERENCE,
        "maml_over_reference": {
            "1": ratio(m.get("1", float("nan")), REFERENCE["mse_1_step"]),  # type: ignore[arg-type]
            "10": ratio(m.get("10", float("nan")), REFERENCE["mse_10_steps"]),  # type: ignore[arg-type]
        },
    }
