"""The Lab-4 cVAE trainer: model, data, schedules, training loop, rollouts, checkpoints.

The public API (docs/python-api.md), what the sweeps use of the trainer::

    from cvae.core import ExperimentConfig, fit, generate_dataset

Each name is imported on first use (PEP 562), so that ``import cvae.core.config`` (the spec, the analysis)
does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "fit": "trainer", "EpochResult": "trainer", "RunResult": "trainer", "BaseCallback": "trainer",
    "StopTraining": "trainer", "DivergenceError": "trainer",
    "ExperimentConfig": "config", "ConfigError": "config", "resolve_config": "config",
    "DatasetError": "layout", "CheckpointError": "checkpoint", "generate_dataset": "synth",
    "epoch_seconds": "estimate",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)


def __dir__() -> list[str]:
    return [*globals(), *__all__]
