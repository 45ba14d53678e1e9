"""Tests of the typed configuration (core/config.py): defaults, coercion, validation, YAML, precedence."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cvae.core.config import (
    FLAT_KEYS,
    ConfigError,
    ExperimentConfig,
    field_docs,
    load_yaml_config,
    resolve_config,
)

# The defaults of the lab's Trainer.py argparse flags.
LAB_DEFAULTS = {
    "batch_size": 2, "lr": 0.001, "num_epoch": 70, "per_save": 3, "partial": 1.0, "train_vi_len": 16,
    "val_vi_len": 630, "frame_H": 32, "frame_W": 64, "F_dim": 128, "L_dim": 32, "N_dim": 12, "D_out_dim": 192,
    "tfr": 1.0, "tfr_sde": 10, "tfr_d_step": 0.1, "fast_partial": 0.4, "fast_train_epoch": 5,
    "kl_anneal_type": "cyclical", "kl_anneal_cycle": 10, "kl_anneal_ratio": 1, "optim": "Adam",
}  # fmt: skip


def _error(values: dict) -> str:
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_flat(values)
    return str(info.value)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- defaults and round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("key, expected", sorted(LAB_DEFAULTS.items()))
def test_default_equals_lab_trainer_default(key: str, expected: object) -> None:
    assert ExperimentConfig().to_flat()[key] == expected


def test_empty_flat_mapping_gives_the_defaults() -> None:
    assert ExperimentConfig.from_flat({}) == ExperimentConfig()


@pytest.mark.parametrize(
    "spelling, canonical",
    [
        ("Cyclical", "cyclical"), ("cyclical", "cyclical"), ("Monotonic", "monotonic"),
        ("monotonic", "monotonic"), ("linear", "monotonic"), ("none", "none"), ("None", "none"),
        ("constant", "none"), ("Constant", "none"), ("hybrid", "hybrid"),
    ],
)  # fmt: skip
def test_kl_anneal_type_alias_maps_to_canonical_name(spelling: str, canonical: str) -> None:
    cfg = ExperimentConfig.from_flat({"kl_anneal_type": spelling})
    assert cfg.schedule.kl_anneal_type == canonical


@pytest.mark.parametrize("spelling, canonical", [("adam", "Adam"), ("Adam", "Adam"), ("adamw", "AdamW"),
                                                 ("AdamW", "AdamW")])
def test_optim_spelling_maps_to_canonical_name(spelling: str, canonical: str) -> None:
    assert ExperimentConfig.from_flat({"optim": spelling}).optim.optim == canonical


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"tfr": 0.5, "kl_anneal_type": "hybrid", "aug_crop_scale": [0.5, 0.9], "lr_milestones": [3, 7],
         "weight_decay": 0.02, "fast_train": True, "DR": "/data", "num_threads": 2, "optim": "AdamW"},
    ],
    ids=["defaults", "changed"],
)  # fmt: skip
def test_to_flat_from_flat_round_trip(values: dict) -> None:
    cfg = ExperimentConfig.from_flat(values)
    flat = cfg.to_flat()
    assert set(flat) == set(FLAT_KEYS)
    assert ExperimentConfig.from_flat(flat) == cfg
    assert ExperimentConfig.from_flat(flat).to_flat() == flat


def test_string_values_are_coerced_to_field_types() -> None:
    cfg = ExperimentConfig.from_flat(
        {"batch_size": "4", "lr": "2e-4", "fast_train": "yes", "lr_milestones": ["3", "6"], "tfr": "0"}
    )
    assert (cfg.optim.batch_size, cfg.optim.lr, cfg.data.fast_train) == (4, 2e-4, True)
    assert (cfg.optim.lr_milestones, cfg.schedule.tfr) == ((3, 6), 0.0)


@pytest.mark.parametrize(("raw", "value"), [("auto", "auto"), ("AUTO", "auto"), ("3", 3), (0, 0), (2.0, 2)])
def test_val_eval_every_is_a_count_or_auto(raw: object, value: object) -> None:
    assert ExperimentConfig.from_flat({"val_eval_every": raw}).run.val_eval_every == value


def test_replace_changes_one_key_and_validates() -> None:
    cfg = ExperimentConfig().replace(batch_size=8)
    assert cfg.optim.batch_size == 8 and cfg.run.num_epoch == 70
    with pytest.raises(ConfigError, match="batch_size"):
        ExperimentConfig().replace(batch_size=0)


# -- errors ----------------------------------------------------------------------------------------------


def test_unknown_key_is_rejected_listing_valid_keys() -> None:
    msg = _error({"learning_rate": 0.1})
    assert "learning_rate" in msg
    for key in FLAT_KEYS:
        assert key in msg


@pytest.mark.parametrize(
    "key, value",
    [
        ("tfr", 1.5), ("tfr", -0.1), ("num_epoch", -1), ("num_epoch", 0), ("batch_size", 0),
        ("kl_anneal_type", "sigmoid"), ("partial", 0), ("batch_size", "abc"), ("num_epoch", 2.5),
        ("fast_train", "maybe"), ("augment", 2), ("lr", "fast"), ("optim", "SGD"), ("lr", float("nan")),
        ("val_eval_every", -1), ("val_eval_every", "sometimes"), ("val_eval_every", 1.5), ("val_eval_at", "first"),
        ("val_frame_stride", 0),
    ],
)  # fmt: skip
def test_invalid_value_names_key_and_value(key: str, value: object) -> None:
    msg = _error({key: value})
    assert key in msg
    assert str(value) in msg


@pytest.mark.parametrize(
    "values, fragments",
    [
        ({"tfr": 1.5, "batch_size": 0}, ["tfr must be in [0, 1] (got 1.5)", "batch_size must be >= 1 (got 0)"]),
        ({"batch_size": "abc", "fast_train": "maybe"}, ["batch_size='abc'", "fast_train='maybe'"]),
        ({"learning_rate": 1, "batch_size": "abc"}, ["learning_rate", "batch_size='abc'"]),
        pytest.param(
            {"batch_size": "abc", "tfr": 1.5}, ["batch_size='abc'", "tfr must be in [0, 1] (got 1.5)"],
            id="type+range",
        ),
        pytest.param(
            {"learning_rate": 1, "tfr": 1.5}, ["learning_rate", "tfr must be in [0, 1] (got 1.5)"],
            id="unknown+range",
        ),
    ],
)
def test_several_errors_are_reported_together(values: dict, fragments: list[str]) -> None:
    msg = _error(values)
    for fragment in fragments:
        assert fragment in msg


@pytest.mark.parametrize(
    "values",
    [
        {"tfr_sde": 70, "num_epoch": 70},
        {"tfr_sde": 80, "num_epoch": 70, "tfr": 0.5, "tfr_d_step": 0.05},
        {"tfr_sde": 5, "num_epoch": 3},
    ],
)
def test_decay_that_never_starts_is_accepted_with_a_warning(values: dict) -> None:
    """The lab runs it (its `Trainer.py --num_epoch 1` keeps tfr 1.0 throughout), so we do: warn, never refuse."""
    cfg = ExperimentConfig.from_flat(values)
    (message,) = [msg for key, msg in cfg.warnings() if key == "tfr_sde"]
    assert f"tfr_sde={values['tfr_sde']} >= num_epoch={values['num_epoch']}" in message
    assert f"stays at tfr={cfg.schedule.tfr}" in message


@pytest.mark.parametrize(
    "values",
    [
        {"tfr": 0, "tfr_sde": 80, "num_epoch": 70},  # report 000's final command
        {"tfr_d_step": 0, "tfr_sde": 80, "num_epoch": 70},  # a constant ratio
        {"tfr_sde": 69, "num_epoch": 70},  # decays in the last epoch
    ],
)
def test_constant_or_reachable_schedules_get_no_warning(values: dict) -> None:
    assert [key for key, _ in ExperimentConfig.from_flat(values).warnings()] == []


@pytest.mark.parametrize(
    ("values", "keys"),
    [
        ({"F_dim": 16}, ["F_dim"]),  # the quickstart's old widths: 2-channel stages
        ({"D_out_dim": 23}, ["D_out_dim"]),  # floor division: 23 // 8 = 2
        ({"F_dim": 16, "D_out_dim": 16}, ["F_dim", "D_out_dim"]),
        ({"F_dim": 24, "D_out_dim": 24}, []),  # 3 channels: as wide as RGB
        ({}, []),  # the lab's defaults
    ],
)
def test_a_stage_narrower_than_rgb_is_warned_about(values: dict, keys: list[str]) -> None:
    warnings = ExperimentConfig.from_flat(values).warnings()
    assert [key for key, _ in warnings] == keys
    for key, message in warnings:
        value = values[key]
        assert message.startswith(f"{key}={value}: ") and f"{key} // 8 = {value // 8} channel(s)" in message
    stages = " ".join(msg for _, msg in warnings)
    assert ("frame encoder's first stage" in stages) == ("F_dim" in keys)
    assert ("generator's last stage" in stages) == ("D_out_dim" in keys)


# -- YAML and precedence ---------------------------------------------------------------------------------


def test_precedence_defaults_then_yaml_then_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.yaml", "lr: 0.01\nbatch_size: 4\nkl_anneal_type: Monotonic\n")
    cfg = resolve_config(path, {"batch_size": 8})
    assert cfg.optim.lr == 0.01  # YAML over default
    assert cfg.optim.batch_size == 8  # override over YAML
    assert cfg.schedule.kl_anneal_type == "monotonic"
    assert cfg.run.num_epoch == 70  # default


def test_resolve_config_without_yaml_uses_overrides() -> None:
    assert resolve_config(None, {"N_dim": 32}).model.N_dim == 32
    assert resolve_config() == ExperimentConfig()


def test_empty_yaml_file_gives_defaults(tmp_path: Path) -> None:
    assert resolve_config(_write(tmp_path / "empty.yaml", "")) == ExperimentConfig()


def test_unknown_yaml_key_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.yaml", "lr: 0.01\nbogus_key: 3\n")
    with pytest.raises(ConfigError) as info:
        resolve_config(path)
    assert str(path) in str(info.value) and "bogus_key" in str(info.value)


@pytest.mark.parametrize(
    "text, line, column",
    [
        ("lr: 0.1\nbatch_size: 2\n  tfr: 1\n", 3, 6),  # the second ':' on an indented line
        ("lr: 0.1\n\tbatch_size: 2\n", 2, 1),  # a tab
    ],
)
def test_yaml_syntax_error_gives_file_line_and_column(tmp_path: Path, text: str, line: int, column: int) -> None:
    path = _write(tmp_path / "broken.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_yaml_config(path)
    msg = str(info.value)
    assert str(path) in msg
    assert re.search(rf"line {line}, column {column}\b", msg), msg


@pytest.mark.parametrize("text", ["- lr\n- 0.1\n", "just a string\n", "42\n"])
def test_yaml_that_is_not_a_mapping_is_rejected(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path / "notmap.yaml", text)
    with pytest.raises(ConfigError, match="mapping") as info:
        load_yaml_config(path)
    assert str(path) in str(info.value)


def test_alias_bomb_config_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    path = _write(tmp_path / "bomb.yaml", "\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as info:
        load_yaml_config(path)
    assert str(info.value) == (f"{path}: YAML aliases expand to more than 100000 values (an alias bomb?): "
                               "write the values out")


def test_config_with_a_benign_alias_loads(tmp_path: Path) -> None:
    path = _write(tmp_path / "alias.yaml", "lr: &rate 0.01\nlr_gamma: *rate\n")
    assert load_yaml_config(path) == {"lr": 0.01, "lr_gamma": 0.01}


def test_missing_yaml_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as info:
        resolve_config(path)
    assert str(path) in str(info.value)


def test_field_docs_cover_every_key() -> None:
    docs = field_docs()
    missing = [key for key in FLAT_KEYS if not docs.get(key, "").strip()]
    assert missing == []
