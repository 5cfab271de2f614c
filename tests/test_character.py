"""Few-shot character-attribute generation (meta/character.py) and `avatar-meta generate`."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from avatar_meta.benchmarks import character_bench as cb
from avatar_meta.meta import character as ch
from avatar_meta.meta.core import TaskBatch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "config" / "character_examples.json"
QUERY = ROOT / "config" / "character_query.json"
AVATAR_META = str(Path(sys.executable).parent / "avatar-meta")
TINY = ch.CharacterConfig(hidden=(16,), iterations=20, meta_batch=4, k_query=5)


@pytest.fixture(autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    """Small ops: one thread is fastest and robust when other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_style_family_is_seeded_smooth_and_splits_train_from_heldout() -> None:
    fam = ch.StyleFamily()
    a = ch.sample_styles(8, fam, torch.Generator().manual_seed(ch.TRAIN_STREAM))
    b = ch.sample_styles(8, fam, torch.Generator().manual_seed(ch.TRAIN_STREAM))
    held = ch.sample_styles(8, fam, torch.Generator().manual_seed(ch.HELDOUT_STREAM))
    assert torch.equal(a.w, b.w) and not torch.allclose(a.w, held.w)
    d = torch.rand(8, 30, ch.N_IN, generator=torch.Generator().manual_seed(1))
    y = a(d)
    assert y.shape == (8, 30, ch.N_OUT) and bool(((y > 0) & (y < 1)).all())
    # smooth: a small change of the descriptor moves the attributes a little
    assert float((a(d + 1e-3) - y).abs().max()) < 0.01
    # styles differ: the same descriptors give different attributes per designer
    assert float((y[0] - y[1]).abs().mean()) > 0.05


def test_stacked_network_equals_vmapped_network() -> None:
    params = [ch.init_net((8, 8), seed=s) for s in range(3)]
    stacked = {k: torch.stack([p[k] for p in params]) for k in params[0]}
    d = torch.rand(3, 5, ch.N_IN)
    torch.testing.assert_close(
        cb.net_stacked(stacked, d), torch.func.vmap(ch.net)(stacked, d), rtol=1e-6, atol=1e-6
    )


def test_metasgd_meta_gradient_wrt_step_sizes_matches_finite_differences() -> None:
    cfg = replace(TINY, hidden=(6,))
    learner = ch._learner(cfg)
    assert isinstance(learner, ch.MetaSGD)
    init = {k: v.double() for k, v in ch.init_net(cfg.hidden, seed=0).items()}
    meta = learner.init(init)
    gen = torch.Generator().manual_seed(2)
    styles = ch.sample_styles(3, cfg.family, gen)
    tasks = TaskBatch(
        tuple(x.double() for x in ch.sample_points(styles, 4, cfg.family, gen)),
        tuple(x.double() for x in ch.sample_points(styles, 6, cfg.family, gen)),
    )
    grads, _ = learner.meta_grad(meta, tasks)
    eps = 1e-6
    for step in range(cfg.inner_steps):
        key = "0.weight"
        bumped = [dict(lr) for lr in meta.lrs]
        delta = torch.zeros_like(bumped[step][key])
        delta[1, 2] = eps
        up = list(bumped)
        up[step] = {**bumped[step], key: bumped[step][key] + delta}
        down = list(bumped)
        down[step] = {**bumped[step], key: bumped[step][key] - delta}
        fd = (
            learner.meta_loss(ch.MetaSGDParams(meta.init, tuple(up)), tasks)
            - learner.meta_loss(ch.MetaSGDParams(meta.init, tuple(down)), tasks)
        ) / (2 * eps)
        assert float(grads.lrs[step][key][1, 2]) == pytest.approx(float(fd), rel=1e-4, abs=1e-10)


def test_meta_training_is_deterministic_and_saves_and_loads(tmp_path: Path) -> None:
    a, b = ch.meta_train(TINY), ch.meta_train(TINY)
    for k in a.init:
        assert torch.equal(a.init[k], b.init[k])
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a.lrs, b.lrs, strict=True) for k in x)
    a.save(tmp_path / "m.pt")
    c = ch.CharacterModel.load(tmp_path / "m.pt")
    assert c.cfg == a.cfg
    support = ch.parse_examples(json.loads(EXAMPLES.read_text()))
    _, q = ch.parse_queries(json.loads(QUERY.read_text()))
    torch.testing.assert_close(c.adapt_predict(support, q), a.adapt_predict(support, q))


def test_meta_learned_generator_beats_the_prior_and_fitting_from_scratch() -> None:
    """A short meta-training run (a few seconds) must already adapt better from 5 examples
    than the same network fitted from scratch and than its own unadapted prior."""
    cfg = replace(
        ch.CharacterConfig(), hidden=(32, 32), iterations=150, meta_batch=8, inner_steps=1
    )
    model = ch.meta_train(cfg)
    support, qd, qy = ch.heldout_designers(cfg, 40, 5, 30, ch.HELDOUT_STREAM)
    adapted = torch.stack(
        [model.adapt_predict((support[0][i], support[1][i]), qd[i]) for i in range(40)]
    )
    meta_mse = cb.designer_mse(adapted, qy)[0]
    prior_mse = cb.designer_mse(ch.net(model.init, qd), qy)[0]
    scratch_mse = cb.designer_mse(cb.fit_scratch(support, qd, cfg.hidden, 3e-3, 300, 0), qy)[0]
    assert meta_mse < 0.7 * prior_mse
    assert meta_mse < scratch_mse


@pytest.mark.parametrize(
    ("example", "needle"),
    [
        (
            {"descriptor": [0.1, 0.2, 0.3], "attributes": {}},
            "examples[0].descriptor: has 3 values, expected 4",
        ),
        (
            {
                "descriptor": {"friendliness": 0.5, "energy": 0.5, "formality": 0.5},
                "attributes": {},
            },
            "examples[0].descriptor: missing descriptor(s) ['age']",
        ),
        ({"descriptor": [0.1, 0.2, 0.3, 1.5], "attributes": {}}, "examples[0].descriptor.age"),
        ({"attributes": {}}, "examples[0].descriptor is missing"),
    ],
)
def test_bad_descriptors_name_the_field(example: dict[str, object], needle: str) -> None:
    with pytest.raises(ch.InputError) as err:
        ch.parse_examples({"examples": [example]})
    assert needle in str(err.value)


def _good_attributes() -> dict[str, float]:
    return {a.name: (a.low + a.high) / 2 for a in ch.ATTRIBUTES}


def test_bad_attributes_name_the_field_and_the_fix() -> None:
    d = [0.5, 0.5, 0.5, 0.5]
    attrs = _good_attributes()
    del attrs["voice_pitch"]
    with pytest.raises(ch.InputError, match=r"examples\[0\]\.attributes: missing.*voice_pitch"):
        ch.parse_examples({"examples": [{"descriptor": d, "attributes": attrs}]})
    attrs = {**_good_attributes(), "hair_colour": 3}
    with pytest.raises(ch.InputError, match=r"unknown attribute\(s\) \['hair_colour'\]"):
        ch.parse_examples({"examples": [{"descriptor": d, "attributes": attrs}]})
    attrs = {**_good_attributes(), "walk_speed": 9.0}
    with pytest.raises(ch.InputError, match=r"walk_speed: 9.0 m/s is outside .*\[0.6, 2.2\]"):
        ch.parse_examples({"examples": [{"descriptor": d, "attributes": attrs}]})
    with pytest.raises(ch.InputError, match='"examples" list'):
        ch.parse_examples([1, 2])
    with pytest.raises(ch.InputError, match=r"queries\[1\]\.descriptor is missing"):
        ch.parse_queries({"queries": [{"descriptor": d}, {"name": "x"}]})


def test_example_files_parse_and_round_trip_units() -> None:
    d, y = ch.parse_examples(json.loads(EXAMPLES.read_text()))
    assert d.shape == (5, ch.N_IN) and y.shape == (5, ch.N_OUT)
    back = ch.to_units(y)
    first = json.loads(EXAMPLES.read_text())["examples"][0]["attributes"]
    assert back[0] == pytest.approx(first)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AVATAR_META, "generate", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_generate_end_to_end_and_bad_input(tmp_path: Path) -> None:
    out = tmp_path / "generated.json"
    model = tmp_path / "model.pt"
    done = _cli(
        "--examples", str(EXAMPLES), "--query", str(QUERY), "--iterations", "10",
        "--out", str(out), "--save-model", str(model),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    names = [g["name"] for g in result["generated"]]
    assert names == ["cheerful_guide", "shy_elder", "security_guard"]
    for g in result["generated"]:
        assert set(g["attributes"]) == set(ch.ATTRIBUTE_NAMES)
        for a in ch.ATTRIBUTES:
            assert a.low <= g["attributes"][a.name] <= a.high
    assert result["adaptation"]["examples"] == 5 and model.exists()

    bad = tmp_path / "bad.json"
    data = json.loads(EXAMPLES.read_text())
    data["examples"][2]["attributes"]["hair_colour"] = 1
    bad.write_text(json.dumps(data))
    failed = _cli("--examples", str(bad), "--query", str(QUERY), "--model", str(model))
    assert failed.returncode == 2
    assert "examples[2].attributes: unknown attribute(s) ['hair_colour']" in failed.stderr
    assert "walk_speed" in failed.stderr  # the fix: the list of known attributes
    assert "Traceback" not in failed.stderr


@pytest.mark.slow
def test_bench_meta_learning_beats_scratch() -> None:
    out = cb.bench(quick=True, iterations=300, heldout=40)
    assert out["beats_baseline"] is True
    assert out["value"] < out["baseline_value"]
    assert set(out["mse_by_examples"]) == {"3", "5", "10"}
