"""Few-shot character-attribute generation: a designer's handful of (style descriptor ->
character attributes) examples in, attributes for new descriptors out.

Each designer has a *style*: their own smooth mapping from a descriptor (friendliness,
energy, formality, age, each in [0, 1]) to an avatar's attributes (walk speed, personal-space
radius, gesture rate, voice pitch, greeting distance). A new designer gives 3-10 examples; a
network meta-learned over many designers adapts to them in a few gradient steps and
generates attributes for any descriptor. This is few-shot regression, the sinusoid problem
of MAML (Finn et al. 2017, section 5.1) with a designer instead of a sine:

- learner: Meta-SGD (Li et al. 2017, learned per-parameter, per-step inner step sizes) over
  an MLP 4-64-64-5, `meta.metasgd`; MAML (`meta.maml`) is measured beside it;
- baselines, measured in the same run on the same examples: the same network fitted from
  scratch (Adam, steps and learning rate chosen on training designers), ridge regression on
  the descriptor, and the network pretrained on all training designers jointly then
  fine-tuned (the "pretrained" baseline of the MAML paper).

The designer-style family (`StyleFamily`, documented in docs/algorithms.md). A descriptor
d in [0, 1]^4 maps to normalised attributes y in [0, 1]^5:

    d'_i = clip(d_i + a_i sin(2 pi f_i d_i + p_i), 0, 1)                  (a taste curve)
    z    = W (d' - 0.5) + c + u * 4 (d'_friendliness - 0.5)(d'_energy - 0.5)
    y    = sigmoid(z)

with W = W_PRIOR + 0.8 N(0, 1) (W_PRIOR holds the plausible signs, e.g. energy raises walk
speed and gesture rate, friendliness shrinks personal space, age lowers pitch), c ~ N(0, 0.7),
u ~ N(0, 1), a_i ~ U(0, 0.15), f_i ~ U(0.5, 1.5), p_i ~ U(0, 2 pi). A designer's examples
carry noise N(0, 0.02) in normalised units (they are hand-typed); the metric is the MSE
against the noiseless mapping, in normalised units (each attribute counts the same). Real
units: y_j scaled to `ATTRIBUTES[j]`'s range. Training and held-out designers come from
different random streams (continuous parameters: disjoint by construction).

Gotchas
- The model is only as good as the style family: a designer whose mapping is far from the
  family (say, walk speed falling with energy *and* with friendliness, steeply) gets a prior
  that pulls the wrong way with few examples; more examples and more steps help.
- Attribute values are checked against their plausible ranges and descriptors against
  [0, 1]: the network never saw anything outside and would extrapolate freely.
- Adapt with the number of inner steps the model was meta-trained with (Meta-SGD's learned
  step sizes are for those steps; more steps reuse the last set and may overshoot).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from avatar_meta.meta.core import Params, TaskBatch, assign_grads, leaf_params
from avatar_meta.meta.maml import MAML, MAMLConfig
from avatar_meta.meta.metasgd import MetaSGD, MetaSGDConfig, MetaSGDParams

DESCRIPTORS: tuple[str, ...] = ("friendliness", "energy", "formality", "age")
"""Style descriptor fields, each in [0, 1] (0 = cold / calm / casual / young)."""


@dataclass(frozen=True)
class Attribute:
    """One generated character attribute and its plausible range (real units)."""

    name: str
    low: float
    high: float
    unit: str
    doc: str


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("walk_speed", 0.6, 2.2, "m/s", "preferred walking speed"),
    Attribute("personal_space", 0.4, 2.5, "m", "radius the avatar keeps free around itself"),
    Attribute("gesture_rate", 0.0, 20.0, "1/min", "spontaneous gestures per minute"),
    Attribute("voice_pitch", -6.0, 6.0, "semitones", "pitch shift of the voice"),
    Attribute("greeting_distance", 0.8, 4.0, "m", "distance at which it greets a visitor"),
)
ATTRIBUTE_NAMES = tuple(a.name for a in ATTRIBUTES)
N_IN, N_OUT = len(DESCRIPTORS), len(ATTRIBUTES)

W_PRIOR = torch.tensor(
    [
        # friendliness, energy, formality, age
        [0.5, 2.5, 0.5, -1.5],  # walk_speed: energetic and young walk faster
        [-2.0, -0.5, 1.5, 0.5],  # personal_space: friendly = close, formal = distant
        [1.5, 2.5, -1.5, -0.5],  # gesture_rate: friendly and energetic gesture more
        [0.5, 1.0, -0.5, -2.5],  # voice_pitch: older voices are lower
        [1.5, 0.5, 1.0, 0.0],  # greeting_distance: friendly greet early, formal from afar
    ]
)
"""Signs and rough sizes every designer style shares (rows = attributes)."""


# ---------------------------------------------------------------------------------------------
# the designer-style task family
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StyleFamily:
    """The distribution of designer styles (see the module docstring for the formula)."""

    weight_std: float = 0.8
    """Spread of each designer's weights around W_PRIOR."""
    bias_std: float = 0.7
    """Spread of the per-attribute offsets c."""
    interaction_std: float = 1.0
    """Spread of the friendliness x energy interaction weights u."""
    warp: float = 0.15
    """Largest amplitude of the per-descriptor taste curve."""
    noise: float = 0.02
    """Std of the noise on a designer's examples (normalised units)."""


@dataclass(frozen=True)
class Styles:
    """A batch of S designer styles (parameters stacked on dim 0)."""

    w: Tensor  # [S, OUT, IN]
    c: Tensor  # [S, OUT]
    u: Tensor  # [S, OUT]
    amp: Tensor  # [S, IN]
    freq: Tensor  # [S, IN]
    phase: Tensor  # [S, IN]

    def __call__(self, d: Tensor) -> Tensor:
        """Noiseless normalised attributes [S, N, OUT] of descriptors d [S, N, IN]."""
        warped = d + self.amp[:, None] * torch.sin(
            2 * math.pi * self.freq[:, None] * d + self.phase[:, None]
        )
        x = warped.clamp(0.0, 1.0) - 0.5
        z = torch.einsum("soi,sni->sno", self.w, x) + self.c[:, None]
        z = z + self.u[:, None] * 4.0 * x[..., 0:1] * x[..., 1:2]
        return torch.sigmoid(z)


def sample_styles(n: int, fam: StyleFamily, gen: torch.Generator) -> Styles:
    """n designer styles from the family."""
    return Styles(
        w=W_PRIOR + fam.weight_std * torch.randn(n, N_OUT, N_IN, generator=gen),
        c=fam.bias_std * torch.randn(n, N_OUT, generator=gen),
        u=fam.interaction_std * torch.randn(n, N_OUT, generator=gen),
        amp=fam.warp * torch.rand(n, N_IN, generator=gen),
        freq=0.5 + torch.rand(n, N_IN, generator=gen),
        phase=2 * math.pi * torch.rand(n, N_IN, generator=gen),
    )


def sample_points(
    styles: Styles, k: int, fam: StyleFamily, gen: torch.Generator, noise: bool = True
) -> tuple[Tensor, Tensor]:
    """(descriptors [S, k, IN], normalised attributes [S, k, OUT]) for each style."""
    d = torch.rand(styles.w.shape[0], k, N_IN, generator=gen)
    y = styles(d)
    if noise and fam.noise > 0:
        y = y + fam.noise * torch.randn(y.shape, generator=gen)
    return d, y


TRAIN_STREAM, HELDOUT_STREAM = 0, 1_000_003
"""Seed offsets of the training and held-out designer streams (disjoint)."""


# ---------------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------------
def init_net(hidden: tuple[int, ...], seed: int) -> Params:
    """MLP IN-h..-OUT with torch's default Linear initialisation, as a params dict."""
    gen = torch.Generator().manual_seed(seed)
    sizes = (N_IN, *hidden, N_OUT)
    params: Params = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        bound = 1.0 / math.sqrt(n_in)
        params[f"{i}.weight"] = (torch.rand(n_out, n_in, generator=gen) * 2 - 1) * bound
        params[f"{i}.bias"] = (torch.rand(n_out, generator=gen) * 2 - 1) * bound
    return params


def net(params: Params, d: Tensor) -> Tensor:
    """ReLU MLP: descriptors [..., IN] -> normalised attributes [..., OUT] (unbounded)."""
    n = len(params) // 2
    x = d - 0.5
    for i in range(n):
        x = F.linear(x, params[f"{i}.weight"], params[f"{i}.bias"])
        if i < n - 1:
            x = torch.relu(x)
    return x + 0.5


def mse_loss(params: Params, batch: tuple[Tensor, Tensor]) -> Tensor:
    """Mean squared error of the network on one designer's (descriptors, attributes)."""
    d, y = batch
    return (net(params, d) - y).square().mean()


# ---------------------------------------------------------------------------------------------
# meta-training
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CharacterConfig:
    """Meta-training of the few-shot attribute generator."""

    learner: str = "metasgd"
    """"metasgd" (learned per-parameter step sizes) or "maml"."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden widths of the ReLU MLP."""
    k_shot: tuple[int, int] = (3, 10)
    """Examples per designer during meta-training: uniform in this range (per meta-batch)."""
    k_query: int = 20
    """Held-out descriptors per designer during meta-training."""
    inner_steps: int = 3
    """Inner gradient steps (meta-training and adaptation)."""
    inner_lr: float = 0.3
    """MAML's step size / Meta-SGD's initial step sizes (decayed by 0.7 per step)."""
    meta_batch: int = 16
    """Designers per meta-iteration."""
    meta_lr: float = 3e-3
    """Adam learning rate of the meta-parameters."""
    iterations: int = 2000
    """Meta-iterations."""
    family: StyleFamily = StyleFamily()
    """The designer-style distribution."""
    seed: int = 0
    """Seeds the network, the training designers and (offset) the held-out designers."""


def _learner(cfg: CharacterConfig) -> MAML | MetaSGD:
    if cfg.learner == "maml":
        return MAML(
            mse_loss,
            mse_loss,
            MAMLConfig(inner_lr=cfg.inner_lr, inner_lr_decay=0.7, inner_steps=cfg.inner_steps),
            forward=net,
        )
    if cfg.learner == "metasgd":
        return MetaSGD(
            mse_loss,
            mse_loss,
            MetaSGDConfig(
                init_lr=cfg.inner_lr,
                init_lr_decay=0.7,
                inner_steps=cfg.inner_steps,
                per_step=True,
            ),
            forward=net,
        )
    raise ValueError(f"learner must be 'metasgd' or 'maml', got {cfg.learner!r}")


@dataclass
class CharacterModel:
    """A meta-trained generator: meta-parameters plus what is needed to adapt and decode."""

    cfg: CharacterConfig
    init: Params
    lrs: tuple[Params, ...] = ()
    """Meta-SGD step sizes (empty for MAML)."""
    train_seconds: float = 0.0

    def adapt(self, support: tuple[Tensor, Tensor], steps: int | None = None) -> Params:
        """Parameters adapted to one designer's examples (normalised units)."""
        learner = _learner(self.cfg)
        with torch.no_grad():
            if isinstance(learner, MetaSGD):
                return learner.adapt(MetaSGDParams(self.init, self.lrs), support, steps)
            return learner.adapt(self.init, support, steps)

    def adapt_predict(
        self, support: tuple[Tensor, Tensor], query: Tensor, steps: int | None = None
    ) -> Tensor:
        """Normalised attributes [N, OUT] for query descriptors [N, IN] after adapting."""
        return net(self.adapt(support, steps), query)

    def save(self, path: str | Path) -> None:
        cfg = asdict(self.cfg)
        torch.save(
            {
                "kind": "avatar_meta.character",
                "config": cfg,
                "descriptors": list(DESCRIPTORS),
                "attributes": [asdict(a) for a in ATTRIBUTES],
                "init": self.init,
                "lrs": list(self.lrs),
                "train_seconds": self.train_seconds,
            },
            str(path),
        )

    @staticmethod
    def load(path: str | Path) -> CharacterModel:
        data = torch.load(str(path), weights_only=True)
        if not isinstance(data, dict) or data.get("kind") != "avatar_meta.character":
            raise ValueError(f"{path}: not a character-generation model (from --save-model)")
        raw = dict(data["config"])
        raw["hidden"] = tuple(raw["hidden"])
        raw["k_shot"] = tuple(raw["k_shot"])
        raw["family"] = StyleFamily(**raw["family"])
        return CharacterModel(
            CharacterConfig(**raw),
            data["init"],
            tuple(data["lrs"]),
            float(data.get("train_seconds", 0.0)),
        )


def meta_train(
    cfg: CharacterConfig, progress: Callable[[int, float], None] | None = None
) -> CharacterModel:
    """Meta-train on designers from the training stream; seconds on one core."""
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed + TRAIN_STREAM)
    learner = _learner(cfg)
    init = leaf_params(init_net(cfg.hidden, cfg.seed))
    meta: MetaSGDParams | Params
    if isinstance(learner, MetaSGD):
        meta = learner.init(init)
        leaves = [*meta.init.values(), *(v for lr in meta.lrs for v in lr.values())]
    else:
        meta = init
        leaves = list(init.values())
    opt = torch.optim.Adam(leaves, lr=cfg.meta_lr)
    lo, hi = cfg.k_shot
    for it in range(cfg.iterations):
        styles = sample_styles(cfg.meta_batch, cfg.family, gen)
        k = int(torch.randint(lo, hi + 1, (1,), generator=gen))
        support = sample_points(styles, k, cfg.family, gen)
        query = sample_points(styles, cfg.k_query, cfg.family, gen)
        tasks = TaskBatch(support, query)
        if isinstance(learner, MetaSGD):
            assert isinstance(meta, MetaSGDParams)
            detached = MetaSGDParams(
                {k_: v.detach() for k_, v in meta.init.items()},
                tuple({k_: v.detach() for k_, v in lr.items()} for lr in meta.lrs),
            )
            g, loss = learner.meta_grad(detached, tasks)
            assign_grads(meta.init, g.init)
            for lr, glr in zip(meta.lrs, g.lrs, strict=True):
                assign_grads(lr, glr)
        else:
            assert isinstance(meta, dict)
            grads, loss = learner.meta_grad({k_: v.detach() for k_, v in meta.items()}, tasks)
            assign_grads(meta, grads)
        opt.step()
        if progress is not None:
            progress(it, float(loss))
    seconds = time.perf_counter() - start
    if isinstance(meta, MetaSGDParams):
        return CharacterModel(
            cfg,
            {k: v.detach() for k, v in meta.init.items()},
            tuple({k: v.detach() for k, v in lr.items()} for lr in meta.lrs),
            seconds,
        )
    return CharacterModel(cfg, {k: v.detach() for k, v in meta.items()}, (), seconds)


def heldout_designers(
    cfg: CharacterConfig, n: int, k: int, points: int, stream: int
) -> tuple[tuple[Tensor, Tensor], Tensor, Tensor]:
    """Designers from a stream: noisy support (k), query descriptors and noiseless targets."""
    gen = torch.Generator().manual_seed(cfg.seed + stream + k)
    styles = sample_styles(n, cfg.family, gen)
    support = sample_points(styles, k, cfg.family, gen)
    qd, qy = sample_points(styles, points, cfg.family, gen, noise=False)
    return support, qd, qy


# ---------------------------------------------------------------------------------------------
# designer files (avatar-meta generate)
# ---------------------------------------------------------------------------------------------
class InputError(ValueError):
    """A designer file is wrong; the message names the field and the fix."""


def _descriptor(value: Any, where: str) -> list[float]:
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(DESCRIPTORS))
        if unknown:
            raise InputError(
                f"{where}: unknown descriptor(s) {unknown}; the descriptors are "
                f"{', '.join(DESCRIPTORS)}"
            )
        missing = [n for n in DESCRIPTORS if n not in value]
        if missing:
            raise InputError(
                f"{where}: missing descriptor(s) {missing}; give all of "
                f"{', '.join(DESCRIPTORS)} (each in [0, 1])"
            )
        values = [value[n] for n in DESCRIPTORS]
    elif isinstance(value, list):
        if len(value) != N_IN:
            raise InputError(
                f"{where}: has {len(value)} values, expected {N_IN} "
                f"({', '.join(DESCRIPTORS)}); or give an object with those keys"
            )
        values = value
    else:
        raise InputError(
            f"{where}: must be an object {{{', '.join(DESCRIPTORS)}}} or a list of {N_IN} numbers"
        )
    out = []
    for name, v in zip(DESCRIPTORS, values, strict=True):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(f"{where}.{name}: {v!r} is not a number; use a value in [0, 1]")
        if not 0.0 <= v <= 1.0:
            raise InputError(f"{where}.{name}: {v} is outside [0, 1]; rescale it into [0, 1]")
        out.append(float(v))
    return out


def _attributes(value: Any, where: str) -> list[float]:
    """Real-unit attributes -> normalised [0, 1] values, checked."""
    if not isinstance(value, Mapping):
        raise InputError(f"{where}: must be an object with keys {', '.join(ATTRIBUTE_NAMES)}")
    unknown = sorted(set(value) - set(ATTRIBUTE_NAMES))
    if unknown:
        raise InputError(
            f"{where}: unknown attribute(s) {unknown}; the attributes are "
            f"{', '.join(ATTRIBUTE_NAMES)}"
        )
    missing = [n for n in ATTRIBUTE_NAMES if n not in value]
    if missing:
        raise InputError(
            f"{where}: missing attribute(s) {missing}; every example needs all of "
            f"{', '.join(ATTRIBUTE_NAMES)}"
        )
    out = []
    for a in ATTRIBUTES:
        v = value[a.name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(f"{where}.{a.name}: {v!r} is not a number ({a.unit})")
        if not a.low <= v <= a.high:
            raise InputError(
                f"{where}.{a.name}: {v} {a.unit} is outside the supported range "
                f"[{a.low}, {a.high}]; use a value inside it"
            )
        out.append((float(v) - a.low) / (a.high - a.low))
    return out


def _load_json(path: str | Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{what} file {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{what} file {path} is not valid JSON: {err}") from None


def parse_examples(data: Any) -> tuple[Tensor, Tensor]:
    """`{"examples": [{"descriptor": ..., "attributes": ...}, ...]}` -> (d [K, IN], y [K, OUT])
    in normalised units. Raises InputError naming the field."""
    if not isinstance(data, Mapping) or "examples" not in data:
        raise InputError(
            'examples: the file must be an object with an "examples" list, e.g. '
            '{"examples": [{"descriptor": {...}, "attributes": {...}}]}'
        )
    items = data["examples"]
    if not isinstance(items, list) or not items:
        raise InputError("examples: must be a non-empty list (give 3-10 examples)")
    ds, ys = [], []
    for i, item in enumerate(items):
        where = f"examples[{i}]"
        if not isinstance(item, Mapping):
            raise InputError(f"{where}: must be an object with descriptor and attributes")
        for key in ("descriptor", "attributes"):
            if key not in item:
                raise InputError(
                    f"{where}.{key} is missing; each example has descriptor and attributes"
                )
        ds.append(_descriptor(item["descriptor"], f"{where}.descriptor"))
        ys.append(_attributes(item["attributes"], f"{where}.attributes"))
    return torch.tensor(ds), torch.tensor(ys)


def parse_queries(data: Any) -> tuple[list[str], Tensor]:
    """`{"queries": [{"name": ..., "descriptor": ...}, ...]}` (or a list of descriptors) ->
    (names, d [N, IN])."""
    items = data.get("queries") if isinstance(data, Mapping) else data
    if not isinstance(items, list) or not items:
        raise InputError(
            'queries: the file must be an object with a non-empty "queries" list, e.g. '
            '{"queries": [{"name": "shy_elder", "descriptor": {...}}]}'
        )
    names, ds = [], []
    for i, item in enumerate(items):
        where = f"queries[{i}]"
        if isinstance(item, Mapping) and "descriptor" in item:
            names.append(str(item.get("name", f"query{i}")))
            ds.append(_descriptor(item["descriptor"], f"{where}.descriptor"))
        elif isinstance(item, Mapping) and "name" in item:
            raise InputError(f"{where}.descriptor is missing")
        else:
            names.append(f"query{i}")
            ds.append(_descriptor(item, where))
    return names, torch.tensor(ds)


def to_units(y: Tensor) -> list[dict[str, float]]:
    """Normalised predictions [N, OUT] -> real-unit attribute dicts (clipped to the ranges)."""
    out = []
    for row in y.clamp(0.0, 1.0).tolist():
        out.append(
            {
                a.name: round(a.low + v * (a.high - a.low), 3)
                for a, v in zip(ATTRIBUTES, row, strict=True)
            }
        )
    return out


def generate(
    examples_path: str | Path,
    query_path: str | Path,
    model: CharacterModel | None = None,
    iterations: int = 1500,
    seed: int = 0,
    save_model: str | Path | None = None,
) -> dict[str, Any]:
    """Adapt to a designer's examples file and generate attributes for the query file.
    Meta-trains a model (`iterations`, seconds) when none is given, and then saves it to
    `save_model` if given. Both files are checked before any training."""
    support = parse_examples(_load_json(examples_path, "examples"))
    names, queries = parse_queries(_load_json(query_path, "query"))
    trained_now = model is None
    if model is None:
        model = meta_train(CharacterConfig(iterations=iterations, seed=seed))
        if save_model is not None:
            model.save(save_model)
    pred = model.adapt_predict(support, queries)
    fit = float((model.adapt_predict(support, support[0]) - support[1]).square().mean())
    return {
        "attributes": {a.name: {"unit": a.unit, "range": [a.low, a.high]} for a in ATTRIBUTES},
        "generated": [
            {
                "name": n,
                "descriptor": {n: round(v, 4) for n, v in zip(DESCRIPTORS, d, strict=True)},
                "attributes": attrs,
            }
            for n, d, attrs in zip(names, queries.tolist(), to_units(pred), strict=True)
        ],
        "adaptation": {
            "examples": int(support[0].shape[0]),
            "inner_steps": model.cfg.inner_steps,
            "learner": model.cfg.learner,
            "examples_mse_normalised": round(fit, 5),
            "meta_trained_now": trained_now,
            "meta_train_seconds": round(model.train_seconds, 1),
        },
    }
