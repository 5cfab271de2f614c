"""Metric-based few-shot learners: Prototypical Networks and Matching Networks.

Pure-function cores over an encoder's parameters (`Params`, like the rest of `meta/`), episodic
N-way K-shot training, and a small object API (`ProtoNet`, `MatchingNet`).

- Prototypical Networks (Snell, Swersky & Zemel 2017): embed the support set, average each
  class's embeddings into a prototype, classify a query by the softmax of the negative squared
  Euclidean distances to the prototypes.
- Matching Networks (Vinyals et al. 2016): classify a query by attention over the support set,
  a softmax of cosine similarities, summed per class. Optional full-context embeddings (FCE):
  a bidirectional LSTM over the support embeddings (g) and an attention LSTM that reads the
  support set K times for each query (f).

No gradient step at test time: adapting to a new set of classes is a forward pass over the
support set (the "non-gradient adaptation path" of design section 6).

Episode layout: `support_x [N*K, ...]`, `support_y [N*K]` (int64 labels 0..N-1),
`query_x [Q, ...]`, `query_y [Q]`. A batch of episodes adds a leading episode dimension and is
mapped with `torch.func.vmap`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avatar_meta.meta.core import Params

Encoder = Callable[[Params, Tensor], Tensor]
"""`encode(params, x [B, ...]) -> embeddings [B, D]`, a pure function."""


class Episode(NamedTuple):
    """One N-way K-shot episode (or, stacked, a batch of them)."""

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor


# =============================================================================== encoders
def init_mlp(sizes: Sequence[int], seed: int = 0, dtype: torch.dtype = torch.float32) -> Params:
    """Parameters of an MLP encoder with layer sizes `sizes` (input first), He-initialised."""
    gen = torch.Generator().manual_seed(seed)
    params: Params = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        params[f"enc.{i}.w"] = torch.randn(b, a, generator=gen, dtype=dtype) * math.sqrt(2.0 / a)
        params[f"enc.{i}.b"] = torch.zeros(b, dtype=dtype)
    return params


def mlp_encode(params: Params, x: Tensor) -> Tensor:
    """ReLU MLP over the last dimension; the last layer is linear."""
    layers = sorted({int(k.split(".")[1]) for k in params if k.startswith("enc.")})
    h = x
    for i in layers:
        h = F.linear(h, params[f"enc.{i}.w"], params[f"enc.{i}.b"])
        if i != layers[-1]:
            h = torch.relu(h)
    return h


def init_conv(
    channels: int = 32,
    layers: int = 2,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Params:
    """Parameters of a small conv encoder for square grey images (flattened input):
    `layers` blocks of 3x3 conv (`channels`), ReLU and 2x2 max-pool (Snell et al.'s block
    without batch norm, which would mix the support and query statistics)."""
    gen = torch.Generator().manual_seed(seed)
    params: Params = {}
    c_in = 1
    for i in range(layers):
        fan_in = c_in * 9
        params[f"conv.{i}.w"] = torch.randn(
            channels, c_in, 3, 3, generator=gen, dtype=dtype
        ) * math.sqrt(2.0 / fan_in)
        params[f"conv.{i}.b"] = torch.zeros(channels, dtype=dtype)
        c_in = channels
    return params


def conv_encode(params: Params, x: Tensor) -> Tensor:
    """Conv blocks over `x [B, side*side]`; the output is flattened."""
    side = int(math.isqrt(x.shape[-1]))
    h = x.reshape(x.shape[0], 1, side, side)
    i = 0
    while f"conv.{i}.w" in params:
        h = F.conv2d(h, params[f"conv.{i}.w"], params[f"conv.{i}.b"], padding=1)
        h = F.max_pool2d(torch.relu(h), 2)
        i += 1
    return h.reshape(h.shape[0], -1)


def with_input(encode: Encoder) -> Encoder:
    """`x -> [x, encode(x)]`: the raw input concatenated to the learned embedding, so the
    metric starts as nearest neighbour on raw features and training adds learned features
    (useful when only a handful of training classes exist, e.g. digits 0-4)."""

    def encoded(params: Params, x: Tensor) -> Tensor:
        return torch.cat([x.reshape(x.shape[0], -1), encode(params, x)], -1)

    return encoded


# =============================================================================== ProtoNet core
def class_one_hot(labels: Tensor, n_way: int, dtype: torch.dtype) -> Tensor:
    """[S, N] one-hot of int labels (pure: no data-dependent control flow, vmappable)."""
    return F.one_hot(labels, n_way).to(dtype)


def prototypes(support_emb: Tensor, support_y: Tensor, n_way: int) -> Tensor:
    """[N, D] class means of the support embeddings (every class must have >= 1 example)."""
    onehot = class_one_hot(support_y, n_way, support_emb.dtype)  # [S, N]
    return (onehot.T @ support_emb) / onehot.sum(0).unsqueeze(1)


def squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """[A, B] squared Euclidean distances between rows of a [A, D] and b [B, D]."""
    return ((a.unsqueeze(1) - b.unsqueeze(0)) ** 2).sum(-1)


def protonet_logits(
    encode: Encoder,
    params: Params,
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    n_way: int,
) -> Tensor:
    """[Q, N] logits = -||f(query) - prototype_c||^2."""
    emb = encode(params, torch.cat([support_x, query_x]))
    s = support_x.shape[0]
    return -squared_distances(emb[s:], prototypes(emb[:s], support_y, n_way))


# =============================================================================== Matching core
def cosine_attention(
    query_emb: Tensor, support_emb: Tensor, scale: float = 1.0, eps: float = 1e-8
) -> Tensor:
    """[Q, S] attention a(x, x_i) = softmax_i(scale * cos(f(x), g(x_i))); rows sum to 1.

    The paper's softmax has scale 1; cosines live in [-1, 1], so with few classes that softmax
    is nearly uniform. `scale` (an inverse temperature, default 10 in `MatchingNet`) sharpens it.
    """
    q = query_emb / query_emb.norm(dim=-1, keepdim=True).clamp_min(eps)
    s = support_emb / support_emb.norm(dim=-1, keepdim=True).clamp_min(eps)
    return torch.softmax(scale * (q @ s.T), dim=-1)


def matching_log_probs(attention: Tensor, support_y: Tensor, n_way: int) -> Tensor:
    """[Q, N] log P(y = c | x) = log sum_{i: y_i = c} a(x, x_i)."""
    probs = attention @ class_one_hot(support_y, n_way, attention.dtype)
    return torch.log(probs.clamp_min(1e-12))


def _lstm_cell(
    params: Params, prefix: str, x: Tensor, h: Tensor, c: Tensor
) -> tuple[Tensor, Tensor]:
    """One LSTM cell step with gates (i, f, g, o) in PyTorch's layout."""
    gates = F.linear(x, params[f"{prefix}.w_ih"], params[f"{prefix}.b"]) + F.linear(
        h, params[f"{prefix}.w_hh"]
    )
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def init_fce(dim: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> Params:
    """Parameters of the FCE LSTMs for embeddings of size `dim` (added to the encoder's).

    g: a bidirectional LSTM with hidden size `dim` in each direction (outputs are added to the
    embedding, as in the paper's skip connection). f: an attention LSTM with input `dim` and
    hidden state `dim`, fed [h; r] through its recurrent weights (hidden 2*dim -> 4*dim).
    """
    gen = torch.Generator().manual_seed(seed + 1)
    scale = 1.0 / math.sqrt(dim)

    def u(*shape: int) -> Tensor:
        return (torch.rand(*shape, generator=gen, dtype=dtype) * 2 - 1) * scale

    params: Params = {}
    for name in ("fce.fw", "fce.bw"):
        params[f"{name}.w_ih"], params[f"{name}.w_hh"] = u(4 * dim, dim), u(4 * dim, dim)
        params[f"{name}.b"] = torch.zeros(4 * dim, dtype=dtype)
    params["fce.att.w_ih"], params["fce.att.w_hh"] = u(4 * dim, dim), u(4 * dim, 2 * dim)
    params["fce.att.b"] = torch.zeros(4 * dim, dtype=dtype)
    return params


def fce_support(params: Params, support_emb: Tensor) -> Tensor:
    """g(x_i, S) = g'(x_i) + h_fw_i + h_bw_i: a bidirectional LSTM over the support sequence."""
    s, d = support_emb.shape
    zero = support_emb.new_zeros(d)
    outs_fw, outs_bw = [], []
    h, c = zero, zero
    for i in range(s):
        h, c = _lstm_cell(params, "fce.fw", support_emb[i], h, c)
        outs_fw.append(h)
    h, c = zero, zero
    for i in reversed(range(s)):
        h, c = _lstm_cell(params, "fce.bw", support_emb[i], h, c)
        outs_bw.append(h)
    return support_emb + torch.stack(outs_fw) + torch.stack(outs_bw[::-1])


def fce_query(params: Params, query_emb: Tensor, support_g: Tensor, steps: int) -> Tensor:
    """f(x, S): `steps` reads of the support set by an attention LSTM (Vinyals et al., app. A).

    h_hat, c = LSTM(f'(x), [h; r], c); h = h_hat + f'(x); r = sum_i softmax(h . g_i) g_i.
    """
    q, d = query_emb.shape
    h = query_emb
    r = query_emb.new_zeros(q, d)
    c = query_emb.new_zeros(q, d)
    for _ in range(steps):
        h_hat, c = _lstm_cell(params, "fce.att", query_emb, torch.cat([h, r], -1), c)
        h = h_hat + query_emb
        r = torch.softmax(h @ support_g.T, dim=-1) @ support_g
    return h


def matching_logits(
    encode: Encoder,
    params: Params,
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    n_way: int,
    fce_steps: int = 0,
    scale: float = 1.0,
) -> Tensor:
    """[Q, N] log-probabilities of Matching Networks (FCE when `fce_steps > 0`)."""
    emb = encode(params, torch.cat([support_x, query_x]))
    s = support_x.shape[0]
    g, f = emb[:s], emb[s:]
    if fce_steps > 0:
        g = fce_support(params, g)
        f = fce_query(params, f, g, fce_steps)
    return matching_log_probs(cosine_attention(f, g, scale), support_y, n_way)


# =============================================================================== episodic loss
def episode_loss(
    logits_fn: Callable[..., Tensor], params: Params, ep: Episode, n_way: int
) -> Tensor:
    """Cross-entropy of one episode's queries (mean)."""
    logits = logits_fn(params, ep.support_x, ep.support_y, ep.query_x, n_way)
    return F.cross_entropy(logits, ep.query_y)


def batch_loss(
    logits_fn: Callable[..., Tensor], params: Params, episodes: Episode, n_way: int
) -> Tensor:
    """Mean episode loss over a task-stacked batch of episodes (vmapped over episodes)."""

    def one(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
        return episode_loss(logits_fn, params, Episode(sx, sy, qx, qy), n_way)

    return torch.func.vmap(one)(*episodes).mean()


# =============================================================================== episodes
class EpisodeSampler:
    """Samples N-way K-shot episodes from `x [M, ...]`, `y [M]` restricted to `classes`.

    Each episode draws N distinct classes, relabels them 0..N-1 in a random order, and K
    support plus `n_query` query examples per class without overlap.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        classes: Sequence[int],
        n_way: int,
        k_shot: int,
        n_query: int,
        seed: int = 0,
    ) -> None:
        self.x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        self.n_way, self.k_shot, self.n_query = n_way, k_shot, n_query
        self.classes = [int(c) for c in classes]
        if len(self.classes) < n_way:
            raise ValueError(f"{n_way}-way episodes need >= {n_way} classes, got {classes}")
        y = np.asarray(y)
        self.index = {c: np.flatnonzero(y == c) for c in self.classes}
        for c, idx in self.index.items():
            if len(idx) < k_shot + n_query:
                raise ValueError(f"class {c} has {len(idx)} examples, needs {k_shot + n_query}")
        self.rng = np.random.default_rng(seed)

    def sample(self) -> tuple[Episode, list[int]]:
        """One episode and the original class of each episode label."""
        chosen = [int(c) for c in self.rng.choice(self.classes, self.n_way, replace=False)]
        s_idx, q_idx = [], []
        for c in chosen:
            pick = self.rng.choice(self.index[c], self.k_shot + self.n_query, replace=False)
            s_idx.append(pick[: self.k_shot])
            q_idx.append(pick[self.k_shot :])
        labels = torch.arange(self.n_way)
        return (
            Episode(
                self.x[np.concatenate(s_idx)],
                labels.repeat_interleave(self.k_shot),
                self.x[np.concatenate(q_idx)],
                labels.repeat_interleave(self.n_query),
            ),
            chosen,
        )

    def batch(self, n: int) -> Episode:
        """`n` episodes stacked along a leading dimension."""
        eps = [self.sample()[0] for _ in range(n)]
        return Episode(*(torch.stack(parts) for parts in zip(*eps, strict=True)))


def nearest_neighbour_predict(support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
    """Baseline: label of the nearest support example in raw feature space (Euclidean)."""
    flat_s = support_x.reshape(support_x.shape[0], -1)
    flat_q = query_x.reshape(query_x.shape[0], -1)
    return support_y[squared_distances(flat_q, flat_s).argmin(1)]


@dataclass
class Accuracy:
    """Mean accuracy over episodes and its 95% confidence half-width."""

    mean: float
    ci95: float
    episodes: int


def episode_accuracy(
    predict: Callable[[Tensor, Tensor, Tensor], Tensor], sampler: EpisodeSampler, episodes: int
) -> Accuracy:
    """Accuracy of `predict(support_x, support_y, query_x) -> labels` on sampled episodes."""
    accs = []
    with torch.no_grad():
        for _ in range(episodes):
            ep, _ = sampler.sample()
            pred = predict(ep.support_x, ep.support_y, ep.query_x)
            accs.append(float((pred == ep.query_y).float().mean()))
    arr = np.array(accs)
    half = 1.96 * float(arr.std(ddof=1)) / math.sqrt(len(arr)) if len(arr) > 1 else 0.0
    return Accuracy(float(arr.mean()), half, len(arr))


# =============================================================================== object API
@dataclass
class MetricConfig:
    """Episodic training settings shared by both learners."""

    lr: float = 1e-3
    steps: int = 500
    meta_batch: int = 4
    weight_decay: float = 0.0
    seed: int = 0


class _MetricLearner(ABC):
    """Common object API: `fit` on an episode sampler, `predict`/`log_probs` on an episode."""

    name = "metric"

    def __init__(self, encode: Encoder, params: Params, config: MetricConfig | None = None):
        self.encode = encode
        self.params: Params = {k: v.detach().clone() for k, v in params.items()}
        self.config = config or MetricConfig()
        self.history: list[float] = []

    @abstractmethod
    def logits(
        self, params: Params, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int
    ) -> Tensor:
        """Query logits [Q, n_way] from a labelled support set (pure in params)."""

    def loss(self, params: Params, episodes: Episode, n_way: int) -> Tensor:
        """Mean query cross-entropy over a stacked batch of episodes (pure in params)."""
        return batch_loss(self.logits, params, episodes, n_way)

    def fit(self, sampler: EpisodeSampler, steps: int | None = None) -> list[float]:
        """Episodic training with Adam; returns the loss per step (also kept in `history`)."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in self.params.items()}
        opt = torch.optim.Adam(leaves.values(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        for _ in range(cfg.steps if steps is None else steps):
            loss = self.loss(leaves, sampler.batch(cfg.meta_batch), sampler.n_way)
            opt.zero_grad()
            loss.backward()
            opt.step()
            self.history.append(float(loss.detach()))
        self.params = {k: v.detach() for k, v in leaves.items()}
        return self.history

    def log_probs(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        """[Q, N] class log-probabilities of the queries given a labelled support set."""
        n_way = int(support_y.max()) + 1
        with torch.no_grad():
            return torch.log_softmax(
                self.logits(self.params, support_x, support_y, query_x, n_way), -1
            )

    def predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        """[Q] predicted support labels; adapting to new classes is this forward pass."""
        return self.log_probs(support_x, support_y, query_x).argmax(-1)


class ProtoNet(_MetricLearner):
    """Prototypical Networks over `encode(params, x)`."""

    name = "protonet"

    def logits(
        self, params: Params, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int
    ) -> Tensor:
        return protonet_logits(self.encode, params, support_x, support_y, query_x, n_way)


class MatchingNet(_MetricLearner):
    """Matching Networks over `encode(params, x)`; `fce_steps > 0` turns FCE on (then
    `params` must include `init_fce(embedding_dim)`)."""

    name = "matching"

    def __init__(
        self,
        encode: Encoder,
        params: Params,
        config: MetricConfig | None = None,
        fce_steps: int = 0,
        scale: float = 10.0,
    ) -> None:
        super().__init__(encode, params, config)
        self.fce_steps, self.scale = fce_steps, scale
        if fce_steps > 0 and "fce.att.b" not in params:
            raise ValueError("fce_steps > 0 needs the FCE parameters: params | init_fce(dim)")

    def logits(
        self, params: Params, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int
    ) -> Tensor:
        return matching_logits(
            self.encode, params, support_x, support_y, query_x, n_way, self.fce_steps, self.scale
        )
