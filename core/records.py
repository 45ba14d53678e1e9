"""Run records on disk: the resolved config, per-epoch metrics, per-frame PSNR, videos.

A run folder (``save_root``) holds:

- ``config.yaml``: the resolved training config, flat keys (``cvae train --config`` reads it back);
- ``metrics.csv``: one row per epoch (columns :data:`cvae.schema.METRIC_COLUMNS`, the records format);
- ``psnr_per_frame.csv``: ``epoch,frame`` and the scores of every predicted validation frame
  (:data:`cvae.schema.FRAME_COLUMNS`: the lab's rollout's PSNR and SSIM, the best and mean of K samples, z = 0,
  the frame-input diagnostics; :mod:`core.evaluate`);
- ``latents.csv``: ``epoch,channel,kl,mean_var,active``, the posterior per latent channel;
- ``baselines.csv``: ``frame,copy_first,mean_frame,copy_prev`` then ``ssim_copy_first,...``, the trivial
  predictors' PSNR and SSIM of every frame on the same validation clips (:mod:`core.baselines`); their means
  are ``metrics.csv``'s ``val_psnr_copy_first``, ... columns, and ``val_psnr_margin`` is
  ``val_psnr - val_psnr_copy_first``;
- ``last.ckpt``, ``best.ckpt``, ``epoch={e}.ckpt``: checkpoints (see :mod:`core.checkpoint`).

The CSV files are appended one epoch at a time and flushed; when a run resumes at epoch e, rows of epochs
>= e (a killed epoch's partial output) are dropped first, so a record never holds an epoch twice.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml
from PIL import Image

from cvae.schema import (  # noqa: F401 - the records format, re-exported for the trainer's modules
    BASELINE_COLUMNS,
    BASELINE_NAMES,
    BASELINE_TITLES,
    BASELINES_CSV,
    MARGIN_COLUMN,
    METRIC_COLUMNS,
    read_csv,
    read_table,
)

if TYPE_CHECKING:
    import torch

@contextlib.contextmanager
def _naming(path: str | os.PathLike) -> Iterator[None]:
    """An OSError without a file name (a write on a full disk: ``[Errno 28] No space left on device``) is
    raised again, same errno and type, naming ``path``."""
    try:
        yield
    except OSError as err:
        if err.filename is not None:
            raise
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err


def write_config(cfg_flat: dict[str, Any], path: str | os.PathLike) -> None:
    """Write a flat config as YAML (key order kept)."""
    with _naming(path):
        Path(path).write_text(yaml.safe_dump(cfg_flat, sort_keys=False))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


class CsvLog:
    """An append-only CSV whose rows carry an integer ``epoch`` column."""

    def __init__(self, path: str | os.PathLike, columns: Sequence[str]) -> None:
        self.path = Path(path)
        self.columns = tuple(columns)

    def truncate_from(self, epoch: int) -> None:
        """Drop rows of epochs >= ``epoch`` and any unparsable (half-written) row."""
        if not self.path.exists():
            return
        keep = []
        with self.path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                try:
                    if int(row["epoch"]) < epoch and None not in row.values():
                        keep.append(row)
                except (KeyError, TypeError, ValueError):
                    continue
        tmp = self.path.with_suffix(".tmp")
        with _naming(tmp):
            with tmp.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, self.columns)
                writer.writeheader()
                writer.writerows(keep)
            os.replace(tmp, self.path)

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append ``rows`` and fsync.

        Raises:
            OSError: the write failed (e.g. ENOSPC, a full disk); the message names the file.
        """
        new = not self.path.exists()
        with _naming(self.path), self.path.open("a", newline="") as fh:
            if new:
                fh.write(",".join(self.columns) + "\n")
            for row in rows:
                fh.write(",".join(_fmt(row.get(c, "")) for c in self.columns) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def baseline_metrics(val_psnr: float, baselines: Any) -> dict[str, float]:
    """``metrics.csv``'s baseline columns and margin for one epoch (``baselines``: a :class:`core.baselines.Baselines`)."""
    avg = baselines.avg_psnr()
    out = {f"val_psnr_{name}": avg[name] for name in BASELINE_NAMES}
    out[MARGIN_COLUMN] = val_psnr - avg["copy_first"]
    return out


def write_baselines(baselines: Any, path: str | os.PathLike) -> None:
    """``baselines.csv``: the trivial predictors' PSNR of every predicted frame (frame 1 first), then their SSIM
    (``ssim_copy_first``, ...)."""
    per_frame = list(baselines.per_frame().values())
    tmp = Path(path).with_suffix(".tmp")
    with _naming(tmp):
        with tmp.open("w", newline="") as fh:
            fh.write("frame," + ",".join(BASELINE_NAMES) + "," + ",".join(f"ssim_{n}" for n in BASELINE_NAMES) + "\n")
            for i, values in enumerate(zip(*per_frame, strict=True), start=1):
                fh.write(f"{i}," + ",".join(_fmt(float(v)) for v in values) + "\n")
        os.replace(tmp, path)


def to_images(video: torch.Tensor) -> list[Image.Image]:
    """(T, 3, H, W) float in [0, 1] -> PIL images, clamped and rounded to uint8."""
    import torch  # here, not at the top: the records schema is read by torch-free tools (analysis)

    arr = (video.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(frame)) for frame in arr]


def write_gif(video: torch.Tensor, path: str | os.PathLike, *, fps: int = 25) -> None:
    """Save a (T, 3, H, W) video as an animated GIF with exactly T frames, looping.

    Unlike the lab's ``make_gif`` (which appends the first frame twice), every frame appears once. One
    256-colour palette serves the whole video: built once from up to 64 frames spread over it, instead of
    PIL quantizing every frame on its own, which was most of a sweep trial's tracking time (see the README's
    sweep-efficiency table, before and after).
    """
    images = to_images(video)
    width, height = images[0].size
    sample = images[:: max(1, len(images) // 64)]
    mosaic = Image.new("RGB", (width, height * len(sample)))
    for i, image in enumerate(sample):
        mosaic.paste(image, (0, i * height))
    palette = mosaic.quantize(256, method=Image.Quantize.MEDIANCUT)
    frames = [image.quantize(palette=palette, dither=Image.Dither.NONE) for image in images]
    # optimize=False and disposal=1 keep PIL from merging identical consecutive frames.
    frames[0].save(
        path, format="GIF", save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0,
        optimize=False, disposal=1,
    )


def write_psnr_plot(psnr_per_frame: Sequence[float], path: str | os.PathLike, *, title: str,
                    references: dict[str, Sequence[float]] | None = None) -> None:
    """A PNG line plot of PSNR per frame with the average in the legend, and the baselines' lines
    (``references``: ``{"copy_first": [...], ...}`` of the same frames) in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(psnr_per_frame, dtype=float)
    fig, ax = plt.subplots(figsize=(8, 4), dpi=120)
    frames = np.arange(1, len(values) + 1)
    ax.plot(frames, values, lw=1.2, label=f"{np.mean(values):.2f} dB average PSNR")
    for (name, ref), style in zip((references or {}).items(), ("--", ":", "-."), strict=False):
        ref = np.asarray(ref, dtype=float)
        ax.plot(frames, ref, style, color="0.45", lw=1.0,
                label=f"{BASELINE_TITLES.get(name, name)}: {np.mean(ref):.2f} dB")
    ax.set_xlabel("frame")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
