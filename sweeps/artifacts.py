"""What a sweep shows in optuna-dashboard besides values: metric names, the description, trial artifacts.

- The study's metric names (``study.set_metric_names([spec.metric.name])``): the dashboard and
  ``trials_dataframe`` name the objective ``val/psnr`` instead of "Objective 0".
- The spec's ``description`` as the study's user attribute :data:`cvae.schema.DESCRIPTION` and as its
  optuna-dashboard note (the Markdown panel on the study page); a note edited in the dashboard is kept.
- Each trial's rollout GIF and per-frame PSNR plot as Optuna artifacts (``optuna.artifacts``) in a
  ``FileSystemArtifactStore`` at ``<output_dir>/artifacts`` (:func:`artifact_store`), uploaded when the
  trial ends (complete, pruned or failed); ``cvae sweep dashboard`` serves that store, so the dashboard
  lists them on the trial's page. A retry is a new Optuna trial: it uploads its own.

Torch-free (the queue imports it); optuna-dashboard is imported only to write the note.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import optuna
from cvae.sweeps import experimental_ok
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from cvae.schema import DESCRIPTION

log = logging.getLogger("cvae")

ARTIFACTS_DIR = "artifacts"
"""The artifact store's folder in a sweep's ``output_dir``."""
PSNR_PLOT = "psnr_per_frame.png"
"""A sweep trial's per-frame validation PSNR plot (last epoch, with the baselines), in its run folder."""


def artifact_dir(output_dir: str | os.PathLike[str]) -> Path:
    """Where a sweep's artifact store keeps its files."""
    return Path(output_dir) / ARTIFACTS_DIR


def artifact_store(output_dir: str | os.PathLike[str], *, create: bool = False) -> FileSystemArtifactStore:
    """The sweep's artifact store (``<output_dir>/artifacts``); ``create`` makes the folder."""
    folder = artifact_dir(output_dir)
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(folder)


def upload_trial_files(output_dir: str | os.PathLike[str], trial: optuna.Trial,
                       paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Upload the files among ``paths`` that exist as artifacts of the (still running) ``trial``.

    Returns the uploaded file names. A file that cannot be uploaded (a full disk, a storage error, a trial
    another worker failed meanwhile) is one warning line, never an error: the trial's outcome matters more.
    """
    files = [Path(p) for p in paths if Path(p).is_file()]
    if not files:
        return []
    try:
        store = artifact_store(output_dir, create=True)
    except OSError as err:
        log.warning("trial %d: artifacts not uploaded (%s)", trial.number, err)
        return []
    done, failed = [], []
    for path in files:
        try:
            upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)
            done.append(path.name)
        except Exception as err:  # noqa: BLE001 - storage and file errors of many types; see the docstring
            text = str(err).strip().splitlines()
            failed.append(f"{path.name} ({type(err).__name__}: {text[0] if text else ''})")
    if failed:
        log.warning("trial %d: artifacts not uploaded: %s", trial.number, "; ".join(failed))
    return done


def name_metric(study: optuna.Study, metric: str) -> bool:
    """Give a study without metric names the spec's metric as its name; returns whether it set it.

    A study that already has names keeps them (they were set from the spec that created it).
    """
    if study.metric_names is not None:
        return False
    with experimental_ok():
        study.set_metric_names([metric])
    return True


def describe_study(study: optuna.Study, description: str) -> bool:
    """Record the spec's description on the study: the :data:`DESCRIPTION` user attribute and the
    optuna-dashboard note. Returns whether anything changed.

    The note is written only while it is empty or still the description set before: a note someone wrote
    in the dashboard is not overwritten.
    """
    description = description or ""
    old = study.user_attrs.get(DESCRIPTION)
    if description == (old or ""):
        return False
    study.set_user_attr(DESCRIPTION, description)
    try:
        from optuna_dashboard import get_note, save_note
    except ImportError:  # optuna-dashboard is a dependency; without it there is simply no note
        return True
    if get_note(study) in ("", old or ""):
        save_note(study, description)
    return True
