"""`avatar-meta fit LEARNER`: the learners config, training each learner, saving and loading."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avatar_meta.config import ConfigError
from avatar_meta.meta.metric import EpisodeSampler, episode_accuracy
from avatar_meta.training import fit, fit_config

AVATAR_META = str(Path(sys.executable).parent / "avatar-meta")
REPO = Path(__file__).resolve().parents[1]
TINY = {
    "protonet": {"steps": 30, "per_style": 12, "eval_episodes": 30},
    "matching": {
        "data": "digits",
        "train_way": 10,
        "steps": 30,
        "eval_episodes": 30,
        "fce_steps": 1,
        "scale": 20.0,
    },
    "hypernet": {"n_train": 16, "n_heldout": 8, "iterations": 30, "eval_episodes": 1},
    "probabilistic": {"iterations": 40, "eval_tasks": 20, "eval_samples": 5},
    "metagrad": {
        "iterations": 4,
        "episodes_per_iter": 2,
        "num_areas": 2,
        "eval_episodes": 2,
        "gamma_init": 0.6,
        "lam_init": 0.3,
        "meta_lr": 0.3,
    },
    "character": {"iterations": 40, "eval_designers": 20},
}


@pytest.fixture(autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _config(tmp_path: Path, data: dict) -> Path:  # type: ignore[type-arg]
    import yaml

    path = tmp_path / "learners.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AVATAR_META, "fit", *args], capture_output=True, text=True, timeout=300, check=False
    )


# --------------------------------------------------------------------------------- config
def test_shipped_learners_config_lists_every_default() -> None:
    """config/learners.yaml documents the defaults: it must load to exactly them."""
    assert (
        fit_config.load_learners_config(REPO / "config" / "learners.yaml")
        == fit_config.LearnersConfig()
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"protonet": {"stepz": 3}}, "protonet.stepz: unknown key; did you mean 'steps'?"),
        ({"hypernet": {"iterations": "many"}}, "hypernet.iterations = 'many': expected a whole"),
        ({"matching": {"data": "faces"}}, "matching.data = 'faces': use 'styles' or 'digits'"),
        ({"protonet": {"n_way": 9}}, "protonet.n_way = 9: styles has 7 held-out styles"),
        ({"metagrad": {"family": "dance"}}, "metagrad.family = 'dance': unknown family"),
        ({"metagrad": {"gamma_init": 1.0}}, "metagrad.gamma_init = 1.0: use a value in (0, 1)"),
        ({"hypernet": {"families": ["juggle"]}}, "hypernet.families: unknown family 'juggle'"),
        ({"character": {"learner": "sgd"}}, "character.learner = 'sgd': use 'metasgd' or 'maml'"),
        ({"probabilistic": {"iterations": 0}}, "probabilistic.iterations = 0: use a value >= 1"),
        ({"tuning": {}}, "tuning: unknown key"),
    ],
)
def test_config_errors_name_the_field_and_the_fix(tmp_path: Path, data: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as err:
        fit_config.load_learners_config(_config(tmp_path, data))
    assert message in str(err.value)


def test_cli_refuses_rl_learners_and_unknown_names_and_keeps_existing_models(
    tmp_path: Path,
) -> None:
    res = _run("maml", "--out", str(tmp_path / "m"))
    assert res.returncode == 2
    assert "avatar-meta train" in res.stderr and "meta.algorithms: [maml]" in res.stderr
    res = _run("protonets", "--out", str(tmp_path / "m"))
    assert res.returncode == 2 and "unknown learner 'protonets'" in res.stderr

    out = tmp_path / "character"
    cfg = _config(tmp_path, {"character": TINY["character"]})
    assert _run("character", "--config", str(cfg), "--out", str(out)).returncode == 0
    before = (out / "character.pt").read_bytes()
    res = _run("character", "--config", str(cfg), "--out", str(out))
    assert res.returncode == 2 and "--force" in res.stderr
    assert (out / "character.pt").read_bytes() == before
    assert not list(out.glob(".*"))  # no temporary files left behind
    # the model is what `avatar-meta generate --model` loads
    gen = subprocess.run(
        [
            AVATAR_META,
            "generate",
            "--examples",
            str(REPO / "config" / "character_examples.json"),
            "--query",
            str(REPO / "config" / "character_query.json"),
            "--model",
            str(out / "character.pt"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(gen.stdout)
    assert result["generated"] and result["adaptation"]["meta_trained_now"] is False
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["learner"] == "character" and metrics["config"]["iterations"] == 40
    assert 0.0 < metrics["value"] < 1.0


# --------------------------------------------------------------------------------- learners
def _fit(tmp_path: Path, learner: str) -> tuple[Path, dict]:  # type: ignore[type-arg]
    config = fit_config.load_learners_config(_config(tmp_path, {learner: TINY[learner]}))
    model = fit.fit(learner, config, tmp_path / learner)
    return model, json.loads((model.parent / "metrics.json").read_text())


@pytest.mark.parametrize("learner", ["protonet", "matching"])
def test_metric_learner_model_reloads_to_the_same_accuracy(tmp_path: Path, learner: str) -> None:
    """The saved encoder, rebuilt by `load_fitted`, scores exactly the accuracy `fit` measured
    on the same held-out episodes (matching: digits with full-context embeddings)."""
    model, metrics = _fit(tmp_path, learner)
    loaded = fit.load_fitted(model)
    assert isinstance(loaded, fit.FittedClassifier)
    cfg = getattr(fit_config.load_learners_config(model.parent / "config.yaml"), learner)
    data = fit._metric_data(cfg)
    x, y, classes = data["test"]
    sampler = EpisodeSampler(x, y, classes, cfg.n_way, cfg.k_shot, cfg.n_query, 100)
    acc = episode_accuracy(loaded.predict, sampler, cfg.eval_episodes)
    assert acc.mean == pytest.approx(metrics["value"], abs=1e-4)
    assert acc.mean > 1.0 / cfg.n_way + 0.1  # well above chance after a few steps
    if learner == "protonet":
        assert loaded.standardiser is not None and loaded.classes is not None
    else:
        assert loaded.learner.fce_steps == 1


def test_hypernet_model_adapts_in_one_forward_pass(tmp_path: Path) -> None:
    model, metrics = _fit(tmp_path, "hypernet")
    loaded = fit.load_fitted(model)
    assert isinstance(loaded, fit.FittedHypernet)
    from avatar_meta.meta.hypernet import Context

    dim = loaded.learner.cfg.transition_dim
    context = Context(torch.randn(16, dim), torch.ones(16))
    a1 = loaded.learner.adapt(context)(torch.randn(3, loaded.learner.cfg.obs_dim))
    assert a1.shape == (3, 2) and torch.isfinite(a1).all()
    other = Context(torch.randn(16, dim), torch.ones(16))
    assert not torch.equal(
        loaded.learner.adapt(context).params["policy.2.weight"],
        loaded.learner.adapt(other).params["policy.2.weight"],
    )
    assert metrics["value"] == metrics["value"]  # a number, not NaN
    assert metrics["scripted_expert_value"] > metrics["task_agnostic_value"]


def test_probabilistic_fit_reports_likelihood_per_shot(tmp_path: Path) -> None:
    model, metrics = _fit(tmp_path, "probabilistic")
    assert set(metrics["by_shot"]) == {"1", "3", "5"}
    saved = fit.load_fitted(model)
    assert saved["kind"] == "avatar_meta.probabilistic"
    assert set(saved["meta"]) == {"mean", "log_std", "log_noise", "gamma"}
    assert all(torch.isfinite(v).all() for v in saved["meta"]["mean"].values())


def test_metagrad_fit_learns_gamma_lambda_and_logs_them(tmp_path: Path) -> None:
    model, metrics = _fit(tmp_path, "metagrad")
    assert len(metrics["gamma_trajectory"]) == TINY["metagrad"]["iterations"]
    assert metrics["gamma_trajectory"][0] == pytest.approx(0.6, abs=1e-5)
    assert metrics["final_gamma"] != pytest.approx(0.6, abs=1e-4)  # the meta-gradient moved it
    assert list((model.parent / "tensorboard").glob("events.out.tfevents.*"))
    # meta_lr = 0 is plain PPO: gamma and lambda stay put
    fixed = dataclasses.replace(
        fit_config.LearnersConfig().metagrad, **{**TINY["metagrad"], "meta_lr": 0.0}
    )
    out = fit.fit_metagrad(fixed, None)
    assert all(g == pytest.approx(0.6, abs=1e-6) for g in out.metrics["gamma_trajectory"])
