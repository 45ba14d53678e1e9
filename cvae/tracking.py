"""W&B tracking: one W&B run per ``cvae train --wandb`` run or per sweep trial chain, with W&B's conventions.

- Charts use ``epoch`` as their x-axis (``define_metric``), so a resumed run that logs an epoch again adds a
  point instead of failing on W&B's monotonic ``_step``; the training loss of every ``log_every_n_steps``-th
  optimizer step (``train/loss_step``, ...) uses ``trainer/global_step``, as W&B's Lightning logger does.
  Summaries follow each metric's goal: the highest PSNR or SSIM (``summary="max"``), the lowest loss
  (``"min"``); W&B shows them as ``val/psnr.max``, ...;
  the evaluation's diagnostics, which have no goal (``val/psnr_no_prev``, ``val/active_units``, ...), keep
  their best epoch's value.
- Every validation logs the scores of each predicted frame as a table (``val/psnr_per_frame``: PSNR, the
  evaluation's other curves such as SSIM and the best of K, and the trivial predictors' PSNR of the same
  frames), the posterior per latent channel (``val/latents``), and every new best epoch its rollout
  (``val/rollout``), so
  W&B's media slider steps through them. At the end the best epoch's table, per-frame chart and rollout are
  logged once more as the run's last media row: the summary, the best checkpoint and the media always show
  the same epoch.
- Checkpoints go up as versions of a ``model`` artifact named ``model-<run id>`` (the name Lightning's
  WandbLogger uses) as they are written, so a killed run keeps what it had: ``best.ckpt`` at each new best
  epoch (aliases ``best``, ``latest``) and ``last.ckpt`` at the end when the last epoch is not the best
  (``latest``); with ``log_model="all"``, ``last.ckpt`` at every epoch (``latest``, and ``best`` at a best
  epoch), as Lightning's ``log_model="all"``. A resumed run adds versions to the same artifact and the aliases
  move. ``log_model=False`` turns the upload off for large models.
- The console (stdout and stderr, the log lines included) is captured into the run's Logs tab.
- W&B's environment is respected: ``WANDB_MODE`` (over ``auto``), ``WANDB_PROJECT``, ``WANDB_ENTITY``,
  ``WANDB_RUN_GROUP``, ``WANDB_DIR``, ``WANDB_RUN_ID`` and a ``wandb agent``'s sweep (``WANDB_SWEEP_ID``).
- Offline needs no account; ``auto`` is online only where credentials exist. Online never falls back to
  offline: a user who asked for online would otherwise find an empty dashboard afterwards.

:mod:`cvae.wandb_offline` reads the offline runs back. ``wandb`` is imported lazily: importing this module,
and :func:`resolve_wandb_mode`, cost nothing.
"""

from __future__ import annotations

import logging
import math
import netrc
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cvae.schema import (
    BASELINE_TITLES,
    EVAL_COLUMNS,
    FRAME_COLUMNS,
    METRICS_CSV,
    WANDB_KEYS,
    read_csv,
)
from cvae.wandb_offline import find_offline_runs, has_exit_record, read_offline_run

if TYPE_CHECKING:
    from wandb.sdk.wandb_run import Run

log = logging.getLogger("cvae")

MODES = ("online", "offline", "disabled")
STATES = ("complete", "pruned", "failed")
DEFAULT_BASE_URL = "https://api.wandb.ai"

_ENV_MODE_ALIASES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline",
                     "disabled": "disabled"}
"""WANDB_MODE values wandb itself accepts, mapped to the three modes (``dryrun``/``run`` are its old names)."""

SUMMARIES = {
    **{key: "max" for key in ("train/psnr", "val/psnr", "val/psnr_margin", "val/ssim", "val/psnr_mean_of_k",
                              "val/psnr_best_of_k", "val/ssim_mean_of_k", "val/ssim_best_of_k")},
    **{key: "min" for key in ("train/loss", "train/mse", "train/kl", "val/loss")},
}
"""W&B key -> its summary: the best value for metrics with a goal."""
AT_BEST_EPOCH = tuple(WANDB_KEYS[col] for col in EVAL_COLUMNS if WANDB_KEYS[col] not in SUMMARIES)
"""Diagnostics without a goal (what the model uses: ``val/psnr_no_prev``, ``val/active_units``, ...): their
summary is their value at the best epoch, the epoch of ``best.ckpt``, the per-frame table and the rollout."""


GLOBAL_STEP = "trainer/global_step"
"""The x-axis of the per-step history (W&B Lightning's name): optimizer steps since the run began."""
STEP_KEYS = {"loss": "train/loss_step", "mse": "train/mse_step", "kl": "train/kl_step", "psnr": "train/psnr_step"}
"""A training step's stats (``EpochResult.train_steps``) -> their W&B keys, every ``log_every_n_steps`` steps."""


class TrackingError(RuntimeError):
    """W&B was asked for and could not start; the message says why and what to do."""


# -- mode -----------------------------------------------------------------------------------------------------
def _netrc_path() -> Path:
    # Same lookup order as wandb's own login, so 'auto' agrees with what wandb.init would find.
    if env := os.environ.get("NETRC"):
        return Path(env).expanduser()
    for name in ("~/.netrc", "~/_netrc"):
        path = Path(name).expanduser()
        if path.exists():
            return path
    return Path("~/.netrc").expanduser()


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).netloc
    try:
        creds = netrc.netrc(str(_netrc_path())).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        # No file, or one we cannot parse: wandb would not log in from it either.
        return False
    return bool(creds and creds[2])


def resolve_wandb_mode(mode: str) -> str:
    """The W&B mode a run should use.

    ``'auto'`` -> ``'online'`` when W&B credentials exist (``WANDB_API_KEY`` or ``WANDB_IDENTITY_TOKEN_FILE``
    set, or an entry for the W&B host, ``api.wandb.ai`` unless ``WANDB_BASE_URL`` says otherwise, in
    ``$NETRC`` / ``~/.netrc``), else ``'offline'``. An explicit ``WANDB_MODE`` environment variable
    (``online``/``offline``/``disabled``, or wandb's older ``run``/``dryrun``) wins over ``'auto'``.
    ``'online'``, ``'offline'`` and ``'disabled'`` pass through.

    Raises:
        ValueError: ``mode`` is none of ``auto``, ``online``, ``offline``, ``disabled`` (case-insensitive).
    """
    wanted = str(mode).strip().lower()
    if wanted in MODES:
        return wanted
    if wanted != "auto":
        raise ValueError(f"wandb mode {mode!r} is not auto, online, offline or disabled")
    env_mode = _ENV_MODE_ALIASES.get(os.environ.get("WANDB_MODE", "").strip().lower())
    if env_mode is not None:
        return env_mode
    return "online" if _has_credentials() else "offline"


# -- starting and finishing a run -----------------------------------------------------------------------------
def _settings() -> Any:
    """Settings for runs started in a long-lived process: quiet, the console captured, flushed every second."""
    import wandb

    wanted: dict[str, Any] = {
        "silent": True,
        "quiet": True,
        # The Logs tab: stdout and stderr (our log lines too) go to the run as they are written.
        "console": "wrap",
        # Flush the transaction log every second instead of every 15 s: a worker killed hard (OOM, SIGKILL)
        # otherwise loses up to 15 s of epochs, since wandb-core buffers them in memory.
        "x_transaction_log_flush_interval": 1.0,
    }
    # Private (x_) settings come and go between wandb versions, and Settings forbids unknown fields.
    fields = getattr(wandb.Settings, "model_fields", {})
    return wandb.Settings(**{k: v for k, v in wanted.items() if k in fields or not k.startswith("x_")})


_SERVICE_TOKEN = re.compile(r"^\d+-(?P<pid>\d+)-")


def _detach_inherited_service() -> None:
    """Make this process start its own wandb-core instead of using its parent's.

    wandb saves its service address in ``WANDB_SERVICE`` (``<version>-<owner pid>-...``) and child
    processes connect to it. For sweep workers that is harmful: a worker killed mid-trial leaves its run's
    stream open in the parent's service, and the retry of that trial, same run id, then fails with "run ID
    ... is in use". A service of its own dies with the worker and frees the id.
    """
    token = os.environ.get("WANDB_SERVICE", "")
    match = _SERVICE_TOKEN.match(token)
    if match and int(match.group("pid")) != os.getpid():
        log.debug("not sharing the parent's wandb service (%s)", token)
        del os.environ["WANDB_SERVICE"]


FINISH_WAIT_S = 10.0
"""How long :func:`finish_run` waits for wandb-core to write a finished run's exit record to disk."""


def finish_run(run: Run, run_dir: Path | None, exit_code: int) -> None:
    """``run.finish``, then wait until the run's ``.wandb`` file holds its exit record.

    ``run.finish()`` returns once wandb-core has the exit record, not once it is on disk: wandb-core closes
    the transaction log asynchronously, milliseconds later. Waiting makes "finish returned" mean "the file
    is complete", for anything reading it in this process and for a retry reusing the run id.
    """
    run.finish(exit_code=exit_code)
    if run_dir is None or not any(run_dir.glob("*.wandb")):
        return  # disabled, or an online run told to skip its transaction log
    deadline = time.monotonic() + FINISH_WAIT_S
    pause = 0.005
    while not has_exit_record(run_dir):
        if time.monotonic() > deadline:
            log.debug("W&B run folder %s: no exit record after %.0f s", run_dir, FINISH_WAIT_S)
            return
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]


def start_run(*, project: str | None, entity: str | None, group: str | None, name: str | None,
              run_id: str | None, config: Mapping[str, Any], tags: Sequence[str], mode: str, job_type: str,
              notes: str | None) -> Run:
    """``wandb.init`` with our settings, resuming ``run_id`` when it exists.

    None for ``project``, ``entity``, ``group`` or ``run_id`` lets wandb take its environment variables
    (``WANDB_PROJECT``, ...), and, under ``wandb agent``, the agent's sweep run.

    Raises:
        TrackingError: the run cannot start; online says how to log in or go offline.
    """
    if mode not in MODES:
        raise ValueError(f"wandb mode {mode!r} is not online, offline or disabled (resolve 'auto' first)")
    _detach_inherited_service()
    import wandb

    try:
        return wandb.init(
            project=project, entity=entity, group=group, name=name, id=run_id, resume="allow",
            job_type=job_type, config=dict(config), tags=list(tags), notes=notes, mode=mode,
            # W&B's convention: files go under WANDB_DIR when set, else the working directory. Passing it
            # explicitly also honours a WANDB_DIR changed after wandb's first use in this process, which
            # wandb itself would ignore (it snapshots the environment once).
            dir=os.environ.get("WANDB_DIR") or None,
            # One process runs many trials one after another; "create_new" never returns or finishes a
            # run other than the one asked for.
            reinit="create_new",
            settings=_settings(),
        )
    except Exception as err:  # noqa: BLE001 - wandb raises CommError, UsageError, AuthenticationError, ...
        if mode == "online":
            raise TrackingError(
                f"W&B online was requested but could not start ({_first_line(err)}); use wandb mode offline, "
                "or set WANDB_API_KEY (and WANDB_BASE_URL for a private server)"
            ) from err
        raise TrackingError(f"W&B {mode} run {run_id!r} could not start ({_first_line(err)})") from err


# -- one run --------------------------------------------------------------------------------------------------
_ACTIVE: dict[str, WandbRun] = {}
"""Unfinished runs of this process by run id."""


class WandbRun:
    """One training run as one W&B run, resumable by its id.

    Feed it every epoch (:meth:`log_epoch`, or the trainer callback :meth:`callback`), then :meth:`finish` it.
    A W&B problem while logging is a warning, never an error: a lost chart point must not end a long training.

    Raises:
        TrackingError: from the constructor, when the run cannot start.
    """

    def __init__(self, *, project: str | None, entity: str | None = None, group: str | None = None,
                 name: str | None = None, run_id: str | None = None, config: Mapping[str, Any] | None = None,
                 tags: Sequence[str] = (), mode: str = "offline", job_type: str = "train",
                 notes: str | None = None, log_model: bool | str = True, log_every_n_steps: int = 50) -> None:
        self.log_model = log_model
        self.log_every_n_steps = max(1, int(log_every_n_steps))
        self._model_epoch: int | None = None
        self.write_error: str | None = None
        """Why the run's files could not be written (a full disk under ``WANDB_DIR``), once that is known."""
        self._finished = False
        self._last_epoch: int | None = None
        self._best: tuple[int, float] | None = None
        self._best_diagnostics: dict[str, float] = {}
        self._best_table: Any = None
        self._best_latents: Any = None
        self._best_video: Path | None = None
        self._frames: list[float] | None = None
        self._save_root: Path | None = None
        self._baselines: dict[str, list[float]] = {}
        stale = _ACTIVE.get(run_id) if run_id else None
        if stale is not None and not stale.finished:
            # wandb refuses a second live run with the same id in one process ("run ID ... is in use"); an
            # attempt that never reached finish() must not block the retry.
            log.warning("W&B run %s: an earlier attempt was never finished; closing it as failed", run_id)
            stale.finish(state="failed", reason="superseded by a new attempt")
        # The training's own W&B settings (wandb, wandb_project, ...) are this run's project, group, tags and
        # mode, which W&B shows as such: in its config a sweep trial's `wandb: false` would read wrong.
        config = {k: v for k, v in (config or {}).items() if k != "wandb" and not str(k).startswith("wandb_")}
        self._run = start_run(project=project, entity=entity, group=group, name=name, run_id=run_id,
                              config=config, tags=tags, mode=mode, job_type=job_type, notes=notes)
        self.mode = mode
        self.run_id: str = self._run.id
        self.run_dir: Path | None = Path(self._run.sync_dir) if mode != "disabled" else None
        """The run's folder (``.../wandb/offline-run-<date>-<id>`` offline); None when disabled."""
        self.url: str | None = self._run.url if mode == "online" else None
        """The run's page on the W&B server; None unless online."""
        self.path: str = "/".join(str(p) for p in (self._run.entity, self._run.project, self._run.id) if p)
        """``entity/project/id`` (``wandb.Api().run(path)``); offline, the entity may be unknown."""
        _ACTIVE[self.run_id] = self
        try:
            self._run.define_metric("epoch")
            # Every chart against epoch: W&B's _step restarts at 0 in a resumed offline run and counts the
            # final media row as a step; epoch means the same thing in every run.
            self._run.define_metric("*", step_metric="epoch")
            for key, summary in SUMMARIES.items():
                self._run.define_metric(key, step_metric="epoch", summary=summary)
            self._run.define_metric(GLOBAL_STEP)
            for key in STEP_KEYS.values():
                self._run.define_metric(key, step_metric=GLOBAL_STEP)
        except Exception as err:  # noqa: BLE001 - cosmetic; the metrics still get logged
            log.warning("W&B run %s: could not define its metrics: %s", self.run_id, err)

    @property
    def finished(self) -> bool:
        return self._finished

    # -- per epoch ---------------------------------------------------------------------------------------
    def log_epoch(self, result: Any) -> None:
        """One epoch (a :class:`cvae.core.trainer.EpochResult`): its metrics at x = ``epoch``; where it was
        validated the per-frame table, and where it is the best epoch so far its rollout."""
        if self._finished:
            log.debug("W&B run %s: epoch %d logged after finish, ignored", self.run_id, result.epoch)
            return
        self._save_root = Path(result.save_root)
        self._baselines = dict(getattr(result, "baseline_frames", None) or {})
        # A diverged or unvalidated epoch's NaN is left out: in a max/min summary it would replace the best
        # value (W&B compares with NaN), and a chart shows a gap either way.
        row: dict[str, Any] = {key: value for col, key in WANDB_KEYS.items()
                               if not _non_finite(value := getattr(result, col))}
        row["epoch"] = int(result.epoch)
        self._log_steps(result)
        try:
            table = self._frame_table(result.val_psnr_per_frame, getattr(result, "val_curves", None) or {})
            if table is not None:
                row["val/psnr_per_frame"] = table
            latents = self._latent_table(getattr(result, "val_latents", None) or [])
            if latents is not None:
                row["val/latents"] = latents
            if result.is_best:
                self._best = (int(result.epoch), float(result.val_psnr))
                self._best_diagnostics = {key: row[key] for key in AT_BEST_EPOCH if key in row}
                self._best_table = table
                self._best_latents = latents
                self._frames = list(result.val_psnr_per_frame)
                video = self._rollout(result)
                if video is not None:
                    row["val/rollout"] = video
        except Exception as err:  # noqa: BLE001 - media are a bonus; the scalars must still go
            log.warning("W&B run %s: epoch %d media not logged: %s", self.run_id, result.epoch, err)
        try:
            self._run.log(row)
            self._last_epoch = int(result.epoch)
        except Exception as err:  # noqa: BLE001 - see the class docstring
            log.warning("W&B run %s: could not log epoch %d: %s", self.run_id, result.epoch, err)
            if isinstance(err, OSError):
                self.write_error = self.write_error or f"{err}"
        if self.log_model == "all" or (self.log_model and result.is_best):
            # The trainer wrote this epoch's checkpoints before its callbacks ran.
            name = "last.ckpt" if self.log_model == "all" else "best.ckpt"
            self._log_checkpoint(self._save_root / name, int(result.epoch), best=bool(result.is_best))

    def _log_steps(self, result: Any) -> None:
        """The epoch's training steps, every ``log_every_n_steps``-th of the run, at x = its global step."""
        first = int(getattr(result, "first_step", 0))
        for i, stats in enumerate(getattr(result, "train_steps", None) or ()):
            step = first + i + 1
            if step % self.log_every_n_steps:
                continue
            row = {key: value for name, key in STEP_KEYS.items() if not _non_finite(value := getattr(stats, name))}
            try:
                self._run.log({GLOBAL_STEP: step, **row})
            except Exception as err:  # noqa: BLE001 - see the class docstring
                log.warning("W&B run %s: could not log step %d: %s", self.run_id, step, err)
                return

    def logged_epochs(self) -> set[int] | None:
        """The epochs the run's history already holds from its earlier attempts: offline, read back from its
        earlier run folders (same id) beside this one; online, asked of the server through W&B's public API.
        None where that cannot be known (disabled, no server)."""
        if self.mode == "offline" and self.run_dir is not None:
            epochs: set[int] = set()
            for folder in find_offline_runs(self.run_dir.parent):
                if folder == self.run_dir or not folder.name.endswith(f"-{self.run_id}"):
                    continue
                try:
                    history = read_offline_run(folder).history
                except ValueError:  # an attempt killed before its file had a record
                    continue
                # An epoch's row has its scalars (train/loss is in every one); the closing media row has none.
                epochs |= {int(h["epoch"]) for h in history if "train/loss" in h and "epoch" in h}
            return epochs
        if self.mode == "online":
            try:
                import wandb

                rows = wandb.Api(timeout=30).run(self.path).scan_history(keys=["epoch", "train/loss"])
                return {int(r["epoch"]) for r in rows if r.get("epoch") is not None}
            except Exception as err:  # noqa: BLE001 - no server: nothing is backfilled, and nothing logged twice
                log.warning("W&B run %s: cannot read its history back (%s): epochs it may lack are not re-logged",
                            self.run_id, _first_line(err))
        return None

    def backfill(self, rows: Sequence[Mapping[str, Any]], before: int) -> list[int]:
        """Log the epochs before ``before`` that the run's records hold (``metrics.csv`` ``rows``) and its W&B
        history lacks (:meth:`logged_epochs`): an attempt killed between an epoch's checkpoint and its W&B
        write lost it. Scalars only, each once. Returns the epochs logged."""
        if self._finished or before <= 0:
            return []
        have = self.logged_epochs()
        if have is None:
            return []
        done = []
        for record in rows:
            epoch = int(record["epoch"])
            if epoch >= before or epoch in have:
                continue
            row: dict[str, Any] = {}
            for col, key in WANDB_KEYS.items():
                try:
                    value = float(record.get(col, "nan"))
                except (TypeError, ValueError):
                    continue
                if math.isfinite(value):
                    row[key] = value
            row["epoch"] = epoch
            try:
                self._run.log(row)
            except Exception as err:  # noqa: BLE001 - see the class docstring
                log.warning("W&B run %s: could not re-log epoch %d: %s", self.run_id, epoch, err)
                break
            have.add(epoch)
            done.append(epoch)
        if done:
            log.info("W&B run %s: logged %d checkpointed epoch(s) its history lacked: %s", self.run_id, len(done),
                     ", ".join(map(str, done)))
        return done

    def _frame_table(self, per_frame: Sequence[float], curves: Mapping[str, Sequence[float]]) -> Any:
        """Every predicted frame: the lab's PSNR, the evaluation's other curves (SSIM, best of K, ...) and the
        baselines' PSNR and SSIM (the epoch result's ``baseline_frames``)."""
        if not per_frame or not all(math.isfinite(v) for v in per_frame):
            return None
        import wandb

        others = {name: v for name, v in curves.items() if name != "psnr" and name in FRAME_COLUMNS
                  and len(v) == len(per_frame)}
        refs = {name: v for name, v in self._baselines.items() if len(v) == len(per_frame)}
        columns = ["frame", "psnr", *others, *(name if name.startswith("ssim_") else f"psnr_{name}" for name in refs)]
        # A curve measured on every val_frame_stride-th frame (the frame replacements) is empty (None) in between.
        rows = [[i, float(v), *(None if math.isnan(float(c[i - 1])) else float(c[i - 1]) for c in others.values()),
                 *(float(r[i - 1]) for r in refs.values())] for i, v in enumerate(per_frame, start=1)]
        return wandb.Table(columns=columns, data=rows)

    @staticmethod
    def _latent_table(latents: Sequence[Mapping[str, float]]) -> Any:
        """The posterior per latent channel: its KL from the prior, the variance of its mean, active or not."""
        if not latents:
            return None
        import wandb

        columns = ["channel", "kl", "mean_var", "active"]
        return wandb.Table(columns=columns, data=[[c[k] for k in columns] for c in latents])

    def _rollout(self, result: Any) -> Any:
        """The best epoch's rollout as ``best_rollout.gif`` in the run folder (overwritten by a better epoch),
        logged as a W&B video."""
        if result.val_video is None or self._save_root is None or self.mode == "disabled":
            return None
        import wandb

        from cvae.core.records import write_gif

        path = self._save_root / "best_rollout.gif"
        write_gif(result.val_video, path)
        self._best_video = path
        return wandb.Video(str(path), format="gif")

    # -- the end -----------------------------------------------------------------------------------------
    def _final_media(self) -> dict[str, Any]:
        """The best epoch's table, chart and rollout, pinned to that epoch."""
        if self._best is None or self._best_table is None:
            return {}
        import wandb

        epoch, _ = self._best
        media: dict[str, Any] = {"epoch": epoch, "val/psnr_per_frame": self._best_table}
        if self._best_latents is not None:
            media["val/latents"] = self._best_latents
        refs = {n: v for n, v in self._baselines.items() if n in ("copy_first", "mean_frame")
                and len(v) == len(self._frames or [])}
        frames = list(range(1, len(self._frames or []) + 1))
        # The model beside the trivial predictors it must beat (copy_prev, an oracle far above, stays in the
        # table: on the chart it would flatten the other lines).
        media["val/psnr_per_frame_plot"] = wandb.plot.line_series(
            xs=frames, ys=[list(self._frames or []), *refs.values()],
            keys=["model", *(BASELINE_TITLES[n] for n in refs)],
            title=f"Validation PSNR per frame (best epoch, {epoch})", xname="frame")
        if self._best_video is not None and self._best_video.is_file():
            media["val/rollout"] = wandb.Video(str(self._best_video), format="gif")
        return media

    def _log_checkpoint(self, path: Path, epoch: int | None, *, best: bool) -> None:
        """``path`` as the next version of the artifact ``model-<run id>`` (``latest``, and ``best`` when it is
        the best epoch's); a failed upload is a warning (the checkpoint stays on disk)."""
        if self.mode == "disabled" or not path.is_file():
            return
        try:
            import wandb

            meta: dict[str, Any] = {"file": path.name, "epoch": epoch}
            if best and self._best is not None:
                meta["val/psnr"] = self._best[1]
            artifact = wandb.Artifact(f"model-{self.run_id}", type="model", metadata=meta)
            artifact.add_file(str(path), name="model.ckpt")
            self._run.log_artifact(artifact, aliases=["best", "latest"] if best else ["latest"])
            self._model_epoch = epoch
        except Exception as err:  # noqa: BLE001 - the checkpoints stay on disk
            log.warning("W&B run %s: checkpoint %s not logged as a model version: %s", self.run_id, path.name, err)

    def finish(self, *, state: str = "complete", summary: Mapping[str, Any] | None = None, reason: str = "") -> None:
        """Log the best epoch's media and the model, write the summary, close the run; a second call does nothing.

        Args:
            state: ``complete``, ``pruned`` or ``failed``; ``failed`` closes the run with exit code 1, so W&B
                shows it as failed.
            summary: Extra summary values (the best epoch, the trial number, ...).
            reason: Why the run failed or was pruned (summary ``fail_reason``).
        """
        if self._finished:
            return
        self._finished = True
        if _ACTIVE.get(self.run_id) is self:
            del _ACTIVE[self.run_id]
        if state not in STATES:
            log.warning("W&B run %s: unknown state %r recorded as is", self.run_id, state)
        try:
            media = self._final_media()
            if media:
                self._run.log(media)
        except Exception as err:  # noqa: BLE001
            log.warning("W&B run %s: best epoch's media not logged: %s", self.run_id, err)
        if self.log_model and self._save_root is not None and self._last_epoch not in (None, self._model_epoch):
            self._log_checkpoint(self._save_root / "last.ckpt", self._last_epoch, best=False)  # the model handed over
        final = {**(summary or {}), "state": state}
        if self._best is not None:
            final.setdefault("best_epoch", self._best[0])
            final.update(self._best_diagnostics)
        if self._last_epoch is not None:
            final.setdefault("epoch", self._last_epoch)  # the media row above is pinned to the best epoch
        if reason:
            final["fail_reason"] = reason
        try:
            self._run.summary.update(final)
        except Exception as err:  # noqa: BLE001 - a bad value in summary must not lose the state
            log.warning("W&B run %s: summary not fully written: %s", self.run_id, err)
        try:
            finish_run(self._run, self.run_dir, 0 if state in ("complete", "pruned") else 1)
        except Exception as err:  # noqa: BLE001 - the outcome is already on disk; report only
            log.warning("W&B run %s: finishing failed: %s", self.run_id, err)
            if isinstance(err, OSError):  # a full or read-only disk under WANDB_DIR: the run's files are cut
                self.write_error = f"{err} (W&B's files: {self.run_dir or os.environ.get('WANDB_DIR', '.')})"
        if self.write_error:  # one line that says what the run lacks, whichever write failed first
            log.warning("W&B run %s: its files are incomplete: %s", self.run_id, self.write_error)


    def abandon(self) -> None:
        """Close the run without its final media, model or summary: another process has taken it over (a fenced
        sweep worker's trial, resumed by its retry elsewhere) and finishes it."""
        if self._finished:
            return
        self._finished = True
        if _ACTIVE.get(self.run_id) is self:
            del _ACTIVE[self.run_id]
        try:
            finish_run(self._run, self.run_dir, 0)
        except Exception as err:  # noqa: BLE001 - nothing of this process's is owed to the run any more
            log.warning("W&B run %s: closing failed: %s", self.run_id, err)


class WandbCallback:
    """The trainer callback that tracks a training in its W&B run, for ``cvae train --wandb`` and every sweep
    trial alike: each epoch's result logged; on a resume, first the checkpointed epochs the run's history lacks
    (a process killed between an epoch's checkpoint and its log), from the training's ``metrics.csv`` rows."""

    def __init__(self, run: WandbRun | None = None) -> None:
        self.run = run

    def on_train_start(self, cfg: Any, start_epoch: int, rows: Sequence[Mapping[str, Any]] | None = None) -> None:
        """``rows``: the training's records when the caller has read them already."""
        if self.run is None or start_epoch == 0:
            return
        if rows is None:
            metrics = Path(cfg.run.save_root) / METRICS_CSV
            rows = read_csv(metrics) if metrics.exists() else []
        self.run.backfill(list(rows), start_epoch)

    def on_before_save(self, result: Any) -> None:
        pass

    def on_epoch_end(self, result: Any) -> None:
        if self.run is not None:
            self.run.log_epoch(result)

    def on_train_end(self, result: Any) -> None:
        pass


def _non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)
