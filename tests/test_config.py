"""Config: YAML round trip, and errors that name the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from avatar_meta.config import ConfigError, RunConfig, config_from_dict, dump_config, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_round_trip_through_yaml(tmp_path: Path) -> None:
    config = load_config(None, {"env.num_envs": 2, "meta.algorithms": ["maml", "reptile"]})
    path = tmp_path / "c.yaml"
    dump_config(config, path)
    again = load_config(path)
    assert again == config
    assert again.env.num_envs == 2 and again.meta.algorithms == ["maml", "reptile"]


@pytest.mark.parametrize("name", ["demo.yaml", "demo_maml.yaml", "default.yaml"])
def test_shipped_configs_load(name: str) -> None:
    config = load_config(ROOT / "config" / name)
    assert isinstance(config, RunConfig)
    assert config.tasks.n_heldout >= 20
    assert config.eval.adaptation_steps == 3


def test_default_yaml_lists_every_field() -> None:
    """config/default.yaml is the full reference: every field of every section is in it."""
    import yaml

    written = yaml.safe_load((ROOT / "config" / "default.yaml").read_text())
    missing = [
        f"{section}.{name}"
        for section, fields in RunConfig().to_dict().items()
        for name in fields
        if name not in (written.get(section) or {})
    ]
    assert missing == []


def test_overrides_none_keeps_file_value(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("env: {num_areas: 30}\n")
    assert load_config(path, {"env.num_areas": None}).env.num_areas == 30


@pytest.mark.parametrize(
    ("data", "needles"),
    [
        (
            {"meta": {"meta_bach_size": 4}},
            ["meta.meta_bach_size", "did you mean 'meta_batch_size'"],
        ),
        ({"metaa": {}}, ["metaa", "did you mean 'meta'"]),
        ({"meta": {"meta_batch_size": "ten"}}, ["meta.meta_batch_size", "whole number"]),
        ({"meta": {"outer_lr": True}}, ["meta.outer_lr", "number"]),
        ({"meta": {"algorithms": "maml"}}, ["meta.algorithms", "list"]),
        (
            {"meta": {"meta_batch_size": 50}, "env": {"num_areas": 20}},
            ["meta.meta_batch_size = 50", "areas available", "raise env.num_areas"],
        ),
        ({"tasks": {"families": ["patrl"]}}, ["tasks.families[0]", "did you mean 'patrol'"]),
        ({"tasks": {"heldout_family": "dance"}}, ["tasks.heldout_family", "use one of"]),
        ({"tasks": {"heldout_family": "patrol"}}, ["tasks.heldout_family", "meta.per_family"]),
        ({"meta": {"algorithms": ["mamll"]}}, ["meta.algorithms[0]", "did you mean 'maml'"]),
        ({"meta": {"support_episodes": 40}}, ["meta.support_episodes", "1..20"]),
        ({"eval": {"episodes_per_step": 0}}, ["eval.episodes_per_step"]),
        ({"env": {"editor": True, "env_path": "x"}}, ["env.editor", "env.env_path"]),
        ({"baselines": {"methods": ["orcle"]}}, ["baselines.methods[0]", "did you mean 'oracle'"]),
        ({"policy": {"activation": "gelu"}}, ["policy", "activation"]),
        ({"meta": {"adapt": "context"}}, ["meta.adapt = context", "policy.context_size"]),
        ({"meta": {"adapt": "bias"}}, ["meta.adapt", "actor or context"]),
        ({"meta": {"outer_loss": "bc"}}, ["meta.outer_loss", "ppo, imitation, ppo+imitation"]),
        (
            {"meta": {"outer_loss": "imitation", "algorithms": ["maml", "reptile"]}},
            ["meta.outer_loss = imitation", "reptile"],
        ),
        ({"policy": {"context_size": -1}}, ["policy", "context_size"]),
        ({"meta": {"outer_lr_final_scale": 0}}, ["meta.outer_lr_final_scale", "(0, 1]"]),
        ({"eval": {"stability_repeats": -1}}, ["eval.stability_repeats", "use 0"]),
        ({"meta": {"algorithms": ["encoder"]}}, ["encoder", "policy.context_size"]),
        ({"meta": {"algorithms": ["search"]}}, ["policy.context_size = 0", "search", ": 9"]),
        (
            {
                "meta": {"algorithms": ["search"], "per_family": False},
                "policy": {"context_size": 9},
            },
            ["meta.per_family = false", "search", "meta.per_family: true"],
        ),
        (
            {
                "meta": {"algorithms": ["search"], "search_probes": 5},
                "policy": {"context_size": 9},
                "tasks": {"n_train": 20},
                "eval": {"episodes_per_step": 10},
            },
            ["tasks.n_train = 20", "5 hypotheses", "tasks.n_train >= 30"],
        ),
        (
            {
                "meta": {"algorithms": ["search"], "search_probes": 11},
                "policy": {"context_size": 9},
            },
            ["meta.search_probes = 11", "use 1..10"],
        ),
        (
            {
                "meta": {"algorithms": ["search"], "search_probes": 8, "search_finalists": 3},
                "policy": {"context_size": 9},
            },
            ["meta.search_finalists = 3", "2 episodes left", "use 1..2"],
        ),
        (
            {
                "meta": {"algorithms": ["search"], "search_probes": 8, "search_refine": 10},
                "policy": {"context_size": 9},
            },
            ["meta.search_refine = 10", "use 0..9"],
        ),
        (
            {"meta": {"family_weights": {"patrl": 2}}},
            ["meta.family_weights key 'patrl'", "'patrol'"],
        ),
        ({"meta": {"family_weights": {"patrol": 0}}}, ["meta.family_weights.patrol", "> 0"]),
        ({"meta": {"family_weights": [2]}}, ["meta.family_weights", "YAML mapping"]),
        ({"meta": {"family_weights": {"patrol": "x"}}}, ["meta.family_weights.patrol"]),
        (
            {
                "meta": {"algorithms": ["encoder"], "encoder_hidden": 0},
                "policy": {"context_size": 4},
            },
            ["meta.encoder_hidden", "whole number"],
        ),
    ],
)
def test_errors_name_field_and_fix(data: dict, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    for needle in needles:
        assert needle in str(info.value), str(info.value)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("meta:\n  inner_lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: meta.inner_lrr.*did you mean 'inner_lr'"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
