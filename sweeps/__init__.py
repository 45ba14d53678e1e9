"""Sweeps: a YAML spec in, an Optuna study out, every trial a tracked W&B run."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def experimental_ok() -> Iterator[None]:
    """Silence Optuna's ExperimentalWarning for the block: heartbeats, their retry callback and
    ``set_metric_names`` have been "experimental" for years, and the warning is noise where the sweeps use
    them. Only there: importing the package changes no global warning filter."""
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        yield
