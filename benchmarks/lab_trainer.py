"""Whole processes: the lab's own ``Trainer.py`` against ``cvae train`` with the same command line, one epoch.

Usage:
    python benchmarks/lab_trainer.py --lab ~/DLP/Lab4                        # every arm twice
    python benchmarks/lab_trainer.py --lab ~/DLP/Lab4 --repeats 3 --out benchmarks/results/lab_trainer.csv
    python benchmarks/lab_trainer.py --lab ~/DLP/Lab4 --threads 2             # OMP/MKL threads of every arm
    python benchmarks/lab_trainer.py --lab ~/DLP/Lab4 --extra-args="--fast_train"   # a flag for every arm
    python benchmarks/lab_trainer.py --lab ~/DLP/Lab4 --data LAB4_Dataset    # an existing dataset
    python benchmarks/lab_trainer.py --summary benchmarks/results/lab_trainer.csv   # the medians again

``--lab DIR`` is a completed copy of the lab's template, as a student has it: ``Trainer.py``, ``modules/`` and
``dataloader.py`` (the lab's code is not redistributable, so this repository does not hold it). One dataset,
generated once with ``cvae data synth`` (160 training frames, the 630-frame validation video) or ``--data``,
then one epoch at the lab's defaults, each arm a separate process timed whole (start-up, imports, data,
training, validation, what it writes at the end), interleaved (lab, ours, ours_equal, lab, ...) so that drift
in the machine's speed hits every arm alike, ``--repeats`` times:

- ``lab``: ``python Trainer.py --DR DATA --save_root RUN --num_epoch 1``;
- ``ours``: ``cvae train`` with that command line unchanged (its validation on a CPU by default: the lab's
  rollout with SSIM and the posterior's statistics, no full evaluation: docs/evaluation.md);
- ``ours_equal``: the same plus ``--val_samples 1 --no-val_diagnostics``: the lab's one validation rollout and
  its SSIM.

``--extra-args`` adds the same flags to every arm. A student's copy may have changed the template's defaults,
which ``cvae train`` keeps (batch 2, lr 1e-3, cyclical KL): pin the ones that differ for equal work, e.g.
``--extra-args="--batch_size 2 --kl_anneal_type Cyclical --lr 0.001"``. Every process gets the caller's environment with
``WANDB_MODE=offline``, ``MPLBACKEND=Agg``, its own empty frame cache (``CVAE_CACHE_DIR``: ours decodes the
PNGs once per process, the lab every epoch) and, with ``--threads N``, ``OMP_NUM_THREADS`` and
``MKL_NUM_THREADS``; a fresh ``--save_root``. The lab runs in a folder of its own that mirrors the lab
folder (its files linked, its folders such as ``figures/None`` made empty), so the GIFs and plots it writes
beside itself never land in ``--lab``. Where torch sees no CUDA, ``--device cpu`` joins the common flags
(the lab's default device is ``cuda``) and the lab runs under a one-line bootstrap that makes
``torch.cuda.FloatTensor`` (how completed templates draw z) a CPU tensor: column ``lab_shim``. The dataset
is passed as a folder of links that also holds the lab's paths as a Windows copy globs them
(``train\\train_img\\*.png``), so a dataloader written on Windows reads it on Linux too.

Each row of the CSV (``--out``, appended to after every run) is one timed process; the summary prints each
arm's median seconds and the lab's median over it (above 1: ours is faster).
"""

from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARMS = ("lab", "ours", "ours_equal")
EQUAL_FLAGS = ("--val_samples", "1", "--no-val_diagnostics")
LABELS = {
    "lab": "lab (its Trainer.py)",
    "ours": "ours (the lab's command line)",
    "ours_equal": "ours_equal (+ " + " ".join(EQUAL_FLAGS) + ": the lab's one rollout)",
}
FIELDS = ("arm", "repeat", "seconds", "exit_code", "command", "threads", "common_flags", "lab_shim",
          "trainer_sha256", "cpu", "torch")
# Run with ``python -c CPU_SHIM Trainer.py ARGS``: torch.cuda.FloatTensor(...) becomes a CPU float tensor.
CPU_SHIM = ("import runpy, sys, torch; torch.cuda.FloatTensor = lambda *size: torch.empty(*size); "
            "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
# What the lab's interpreter has: the modules the lab's code imports, torch's version, CUDA.
PROBE = ("import importlib.util, json, sys\n"
         "missing = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]\n"
         "torch = cuda = None\n"
         "if 'torch' not in missing:\n"
         "    import torch as t\n"
         "    torch, cuda = t.__version__, t.cuda.is_available()\n"
         "print(json.dumps({'missing': missing, 'torch': torch, 'cuda': cuda}))\n")
PIP_NAMES = {"PIL": "Pillow", "cv2": "opencv-python", "skimage": "scikit-image", "sklearn": "scikit-learn",
             "yaml": "PyYAML"}


def fail(message: str, code: int = 2) -> None:
    """Print one line to stderr and exit.

    Args:
        message: The line, without the script's name.
        code: The exit status.
    """
    print(f"lab_trainer.py: {message}", file=sys.stderr)
    raise SystemExit(code)


def lab_problem(lab: Path | None) -> str | None:
    """What a lab folder lacks, or None when it holds ``Trainer.py``, ``dataloader.py`` and ``modules/``."""
    if lab is None:
        return ("needs --lab DIR: a completed copy of the lab's template (Trainer.py, dataloader.py, "
                "modules/); the lab's code is not in this repository")
    missing = [n for n in ("Trainer.py", "dataloader.py", "modules") if not (lab / n).exists()]
    if missing:
        return f"--lab {lab}: no {', '.join(missing)} there (needs Trainer.py, dataloader.py, modules/)"
    return None


def third_party_imports(sources: list[str], local: set[str]) -> list[str]:
    """Top-level modules the sources import that are neither the standard library's nor the lab's own.

    Args:
        sources: Python source texts.
        local: Module names the lab folder provides (``modules``, ``dataloader``).

    Returns:
        Sorted module names (``imageio``, ``matplotlib``, ``torch``, ...).
    """
    names = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return sorted(names - local - set(sys.stdlib_module_names) - {"__future__"})


def lab_sources(lab: Path) -> tuple[list[str], set[str]]:
    """The lab's Python sources (top level and ``modules/``) and the module names its folder provides."""
    files = sorted(lab.glob("*.py")) + sorted((lab / "modules").rglob("*.py"))
    packages = {p.name for p in lab.iterdir() if (p / "__init__.py").exists()}
    local = {p.stem for p in lab.glob("*.py")} | packages
    return [p.read_text(encoding="utf-8", errors="replace") for p in files], local


def common_flags(device: str | None, extra: list[str]) -> list[str]:
    """The flags every arm gets beyond ``--DR --save_root --num_epoch 1``: ``--device`` if set, then extra."""
    return (["--device", device] if device else []) + list(extra)


def arm_command(arm: str, *, python: str, cvae: str, data: Path, save_root: Path, flags: list[str],
                shim: bool) -> list[str]:
    """One arm's command line; the lab's runs in a folder holding its ``Trainer.py``.

    Args:
        arm: ``lab``, ``ours`` or ``ours_equal``.
        python: The interpreter that runs the lab's ``Trainer.py``.
        cvae: The ``cvae`` executable.
        data: The dataset root (``--DR``).
        save_root: The run's fresh output folder.
        flags: :func:`common_flags`.
        shim: Run the lab's script under :data:`CPU_SHIM`.

    Returns:
        The argument list for :func:`subprocess.run`.
    """
    args = ["--DR", str(data), "--save_root", str(save_root), "--num_epoch", "1", *flags]
    if arm == "lab":
        return [python, *(["-c", CPU_SHIM] if shim else []), "Trainer.py", *args]
    if arm == "ours":
        return [cvae, "train", *args]
    if arm == "ours_equal":
        return [cvae, "train", *args, *EQUAL_FLAGS]
    raise ValueError(f"unknown arm {arm!r}")


def arm_env(base: dict[str, str], threads: int | None, cache_dir: Path) -> dict[str, str]:
    """The environment every arm runs in: ``base`` (the caller's) plus the benchmark's settings."""
    env = {**base, "WANDB_MODE": "offline", "MPLBACKEND": "Agg", "CVAE_CACHE_DIR": str(cache_dir)}
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def mirror_lab(lab: Path, dest: Path) -> None:
    """A working folder for one lab run: the lab's files and packages linked, its other folders made empty.

    Args:
        lab: The lab folder (never written to).
        dest: The new working folder.
    """
    dest.mkdir(parents=True)
    for entry in lab.iterdir():
        if entry.name.startswith(".") or entry.name == "__pycache__":
            continue
        if entry.is_dir() and not (entry / "__init__.py").exists():
            for folder, subdirs, _ in os.walk(entry):
                subdirs[:] = [d for d in subdirs if not d.startswith(".") and d != "__pycache__"]
                (dest / Path(folder).relative_to(lab)).mkdir(parents=True, exist_ok=True)
        else:
            (dest / entry.name).symlink_to(entry.resolve())


def dataset_view(data: Path, dest: Path) -> Path:
    """A folder of links to the dataset's entries; on POSIX also ``train\\train_img\\frameN.png`` and
    ``val\\val_img\\frameN.png`` links, the names a dataloader written on Windows globs.

    Args:
        data: The dataset root, in the lab's layout.
        dest: The new folder.

    Returns:
        ``dest``.
    """
    dest.mkdir(parents=True)
    for entry in data.iterdir():
        (dest / entry.name).symlink_to(entry.resolve())
    if os.sep == "/":
        for split in ("train", "val"):
            for png in (data / split / f"{split}_img").glob("*.png"):
                (dest / f"{split}\\{split}_img\\{png.name}").symlink_to(png.resolve())
    return dest


def stderr_tail(text: str, lines: int = 3) -> str:
    """The last non-empty lines of a process's stderr (progress bars' carriage returns too), as one line."""
    parts = [p.strip() for p in text.replace("\r", "\n").splitlines() if p.strip()]
    return " | ".join(parts[-lines:]) or "(no stderr)"


def summarize(rows: list[dict]) -> list[str]:
    """Per configuration, each arm's median seconds and the lab's median over it; failed runs left out.

    Args:
        rows: CSV rows (``seconds`` and ``exit_code`` as read: strings or numbers).

    Returns:
        The lines to print.
    """
    groups: dict[tuple, dict[str, list[float]]] = {}
    for r in rows:
        if int(r["exit_code"]) != 0:
            continue
        key = (r["cpu"], r["torch"], str(r["threads"]), r["common_flags"], r["trainer_sha256"], r["lab_shim"])
        groups.setdefault(key, {}).setdefault(r["arm"], []).append(float(r["seconds"]))
    lines = []
    for (cpu, torch, threads, flags, sha, shim), arms in groups.items():
        runs = "/".join(str(len(arms[a])) for a in ARMS if a in arms)
        lines.append(f"\nmedian seconds ({runs} run(s)): cpu {cpu}, torch {torch}, threads "
                     f"{threads or 'torch default'}, common flags {flags or '(none)'}, Trainer.py {sha}"
                     + (f", lab shim {shim}" if shim else ""))
        lab = statistics.median(arms["lab"]) if "lab" in arms else None
        for arm in [a for a in ARMS if a in arms] + sorted(set(arms) - set(ARMS)):
            med = statistics.median(arms[arm])
            ratio = f", {lab / med:.2f}x the lab's speed" if lab and arm != "lab" else ""
            lines.append(f"  {LABELS.get(arm, arm)}: {med:.1f} s{ratio}")
    return lines


def append_row(path: Path, row: dict) -> None:
    """Append one row to a CSV, writing the header when the file is new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lab", type=Path, help="folder holding the lab's Trainer.py, dataloader.py, modules/")
    ap.add_argument("--data", type=Path, help="a dataset in the lab's layout (default: generate one)")
    ap.add_argument("--train-frames", type=int, default=160, help="training frames to generate")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    ap.add_argument("--threads", type=int, help="OMP/MKL_NUM_THREADS of every arm (default unset)")
    ap.add_argument("--extra-args", default="", help='flags for every arm, e.g. --extra-args="--fast_train"')
    ap.add_argument("--python", default=sys.executable, help="interpreter of the lab's Trainer.py")
    ap.add_argument("--cvae", help="the cvae executable (default: beside --python, else on PATH)")
    ap.add_argument("--out", type=Path, help="CSV of every timed run (appended to)")
    ap.add_argument("--summary", type=Path, help="only print the medians of a CSV this script wrote")
    args = ap.parse_args()
    if args.summary:
        with args.summary.open(newline="") as fh:
            print("\n".join(summarize(list(csv.DictReader(fh)))))
        return

    if problem := lab_problem(args.lab):
        fail(problem)
    lab = args.lab.resolve()
    sources, local = lab_sources(lab)
    modules = third_party_imports(sources, local)
    probe = subprocess.run([args.python, "-c", PROBE, *modules], capture_output=True, text=True)
    if probe.returncode != 0:
        fail(f"{args.python} could not be probed: {stderr_tail(probe.stderr)}")
    info = json.loads(probe.stdout)
    if info["missing"]:
        names = " ".join(PIP_NAMES.get(m, m) for m in info["missing"])
        fail(f"the lab's code imports {', '.join(info['missing'])}, which {args.python} lacks: "
             f"{Path(args.python).with_name('pip')} install {names}")
    beside = Path(args.python).with_name("cvae")
    cvae = args.cvae or (str(beside) if beside.exists() else shutil.which("cvae"))
    if not cvae:
        fail("no cvae executable beside --python or on PATH: pass --cvae")
    shim = not info["cuda"]
    flags = common_flags("cpu" if shim else None, shlex.split(args.extra_args))
    meta = {"threads": args.threads or "", "common_flags": shlex.join(flags),
            "lab_shim": "cpu" if shim else "",
            "trainer_sha256": hashlib.sha256((lab / "Trainer.py").read_bytes()).hexdigest()[:12],
            "cpu": platform.processor() or platform.machine(), "torch": info["torch"]}
    print(f"lab {lab} (Trainer.py {meta['trainer_sha256']}), torch {info['torch']}, CUDA {info['cuda']}, "
          f"common flags: {meta['common_flags'] or '(none)'}", flush=True)

    rows = []
    with tempfile.TemporaryDirectory(prefix="lab_trainer-") as tmp:
        tmp = Path(tmp)
        data = args.data.resolve() if args.data else tmp / "data"
        if not args.data:
            synth = [cvae, "data", "synth", "--out", str(data), "--train-frames", str(args.train_frames),
                     "--train-video-len", "16", "--val-frames", "630", "--test-sequences", "1",
                     "--test-frames", "8", "--dancers", "1", "--seed", "0", "--workers", "2"]
            made = subprocess.run(synth, capture_output=True, text=True)
            if made.returncode != 0:
                fail(f"cvae data synth exited {made.returncode}: {stderr_tail(made.stderr)}")
        elif not (data / "train" / "train_img").is_dir() or not (data / "val" / "val_img").is_dir():
            fail(f"--data {data}: not the lab's layout (train/train_img, val/val_img)")
        view = dataset_view(data, tmp / "view")
        for rep in range(args.repeats):
            for arm in args.arms:
                run = tmp / f"{arm}-{rep}"
                cwd = run / "cwd"
                if arm == "lab":
                    mirror_lab(lab, cwd)
                else:
                    cwd.mkdir(parents=True)
                cmd = arm_command(arm, python=args.python, cvae=cvae, data=view, save_root=run / "save",
                                  flags=flags, shim=shim)
                env = arm_env(dict(os.environ), args.threads, run / "cache")
                t0 = time.perf_counter()
                done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
                seconds = time.perf_counter() - t0
                row = {"arm": arm, "repeat": rep, "seconds": round(seconds, 2), "exit_code": done.returncode,
                       "command": shlex.join(cmd), **meta}
                rows.append(row)
                if args.out:
                    append_row(args.out, row)
                if done.returncode != 0:
                    fail(f"arm {arm} (repeat {rep}) exited {done.returncode}: {stderr_tail(done.stderr)}", 1)
                print(f"repeat {rep} {arm:10s} {seconds:7.1f} s", flush=True)
                shutil.rmtree(run)
    print("\n".join(summarize(rows)))


if __name__ == "__main__":
    main()
