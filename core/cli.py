"""``cvae data``, ``cvae train``, ``cvae test``: thin wrappers around core's functions."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from typing import Any, Literal, get_args, get_origin

from cvae.core.config import (
    FIELD_TYPES,
    FLAT_KEYS,
    ConfigError,
    ModelConfig,
    RunConfig,
    field_docs,
    resolve_config,
)

from cvae.console import fail
from cvae.tracking import WandbCallback

log = logging.getLogger("cvae")

LAB_ONLY_FLAGS = {
    "gpu": "accepted for the lab's scripts and ignored: choose the GPU with --device cuda:N",
    "store_visualization": "accepted for the lab's scripts: the validation GIF and PSNR plot are always written",
}


class _BoolFlag(argparse.Action):
    """``--key`` / ``--no-key`` like ``BooleanOptionalAction``, and also ``--key=true|false``: the form
    ``wandb agent`` passes for a swept boolean (``${args}`` is ``--key=value`` for every parameter)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        names = [*option_strings, *(f"--no-{o[2:]}" for o in option_strings if o.startswith("--"))]
        super().__init__(names, dest, nargs="?", metavar="BOOL", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001 - argparse's
        if option_string and option_string.startswith("--no-"):
            if values is not None:
                parser.error(f"{option_string} takes no value")
            setattr(namespace, self.dest, False)
        else:
            setattr(namespace, self.dest, True if values is None else values)  # a string: the config checks it

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    docs = field_docs()
    groups: dict[str, argparse._ArgumentGroup] = {}
    for key, section in FLAT_KEYS.items():
        group = groups.setdefault(section, parser.add_argument_group(f"{section} options"))
        hint = FIELD_TYPES[key]
        help_text = docs.get(key, "")
        if hint is bool or bool in get_args(hint):  # bool | Literal["all"]: --key, --no-key, --key=all
            group.add_argument(f"--{key}", action=_BoolFlag, default=argparse.SUPPRESS, help=help_text)
        elif get_origin(hint) is tuple:
            group.add_argument(f"--{key}", nargs="+", default=argparse.SUPPRESS, metavar="V", help=help_text)
        else:
            words = [w for a in (hint, *get_args(hint)) if get_origin(a) is Literal for w in get_args(a)]
            if get_origin(hint) is Literal:
                metavar = "{" + ",".join(words) + "}"
            else:  # int | Literal["auto"]: N or a word
                metavar = "|".join([key.upper(), *words]) if words else key.upper()
            group.add_argument(f"--{key}", default=argparse.SUPPRESS, metavar=metavar, help=help_text)


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), format="%(message)s", stream=sys.stderr)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``data``, ``train`` and ``test`` to the ``cvae`` command."""
    data = sub.add_parser("data", help="generate or check a dataset in the lab's layout")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    synth = data_sub.add_parser(
        "synth", help="generate the dancing-figure dataset",
        description="Write a generated dataset of an articulated 2D dancer in the lab's layout "
        "(train/train_img, train/train_label, val/..., test/test_img/<i>, test/test_label/<i>).",
    )
    synth.add_argument("--out", required=True, help="output folder")
    _synth_flags(synth)
    synth.set_defaults(func=_cmd_synth)
    check = data_sub.add_parser(
        "check", help="check a dataset's layout (pairs, frame numbering without gaps, test lengths) and decode it "
        "into the cache")
    check.add_argument("--DR", required=True, help="dataset root")
    check.add_argument("--frame_H", type=int, default=32)
    check.add_argument("--frame_W", type=int, default=64)
    check.add_argument("--test_vi_len", type=int, default=630)
    check.set_defaults(func=_cmd_check)

    train = sub.add_parser(
        "train", help="train a cVAE (the lab's Trainer.py flags, or --config FILE.yaml)",
        description="Train the Lab-4 cVAE. Every option is also a key of --config FILE.yaml (flat, same "
        "names). Precedence: defaults < YAML < flags.",
    )
    train.add_argument("--config", help="YAML file of flat config keys")
    train.add_argument("--test", action="store_true",
                       help="the lab's --test: only roll out the validation video of --ckpt_path")
    train.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    for flag, text in LAB_ONLY_FLAGS.items():
        train.add_argument(f"--{flag}", nargs="?", const=True, default=None, help=text)
    _add_config_flags(train)
    train.set_defaults(func=_cmd_train)

    test = sub.add_parser(
        "test", help="the lab Tester's job: test-set GIFs + submission.csv, validation PSNR per frame",
        description="Roll out 630 frames for each test sequence from a checkpoint (ours or the lab's), "
        "write pred_seq{i}.gif and submission.csv, and on the validation video write the PSNR per frame "
        "(CSV and plot).",
    )
    test.add_argument("--DR", required=True, help="dataset root")
    test.add_argument("--save_root", required=True, help="output folder")
    test.add_argument("--ckpt_path", required=True, help="checkpoint (ours or the lab's)")
    for key in ("frame_H", "frame_W", "F_dim", "L_dim", "N_dim", "D_out_dim"):
        test.add_argument(f"--{key}", type=int, default=None, help="default: from the checkpoint")
    test.add_argument("--device", default="auto")
    test.add_argument("--seed", type=int, default=0, help="seed of z (default 0)")
    test.add_argument("--test_vi_len", type=int, default=630, help="poses per test sequence (default 630)")
    test.add_argument("--val_vi_len", type=int, default=630, help="validation rollout length (default 630)")
    test.add_argument("--full", action="store_true",
                      help="the full evaluation of every video with ground truth: 5 samples of z and the diagnostics "
                      "(the default on a GPU; on a CPU it costs several rollouts per video, docs/evaluation.md)")
    test.add_argument("--samples", type=int, default=None,
                      help="K: rollouts with z from the prior per video with ground truth (default: 5 with --full or "
                      "on a GPU, else 1, the lab's one rollout)")
    test.add_argument("--diagnostics", action=argparse.BooleanOptionalAction, default=None,
                      help="also measure what the model uses: z = 0, its previous frame replaced, active units "
                      "(default: with --full or on a GPU)")
    test.add_argument("--val_frame_stride", type=int, default=RunConfig.val_frame_stride,
                      help="the frame replacements on every this many frames (default %(default)s; 1: every frame)")
    test.add_argument("--num_workers", type=int, default=4)
    test.add_argument("--no-val", dest="do_val", action="store_false", help="skip the validation video")
    test.add_argument("--no-test", dest="do_test", action="store_false", help="skip the test set")
    test.add_argument("--no-progress", dest="progress", action="store_false")
    test.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=True,
                      help="NHWC memory format (default; same math, faster on a CPU)")
    test.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    test.set_defaults(func=_cmd_test)


def _synth_flags(parser: argparse.ArgumentParser) -> None:
    """``generate_dataset``'s keyword options as flags (``train_frames`` -> ``--train-frames``), with its defaults."""
    import inspect

    from cvae.core.synth import OPTION_HELP, generate_dataset

    for name, param in inspect.signature(generate_dataset).parameters.items():
        if param.kind is not param.KEYWORD_ONLY or name == "progress":
            continue
        flag, default, text = f"--{name.replace('_', '-')}", param.default, OPTION_HELP[name]
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", help=text)
        elif name == "size":
            parser.add_argument(flag, default="x".join(map(str, default)), help=f"{text} (default %(default)s)")
        else:
            parser.add_argument(flag, type=int, default=default,
                                help=text if default is None else f"{text} (default %(default)s)")


def _cmd_synth(args: argparse.Namespace) -> int:
    from cvae.core.synth import OPTION_HELP, generate_dataset, parse_size

    options = {k: v for k, v in vars(args).items() if k in OPTION_HELP}
    try:
        options["size"] = parse_size(args.size)
    except ValueError as err:
        return fail("data synth", f"--size {args.size!r}: {err}")
    try:
        summary = generate_dataset(args.out, **options, progress=sys.stderr.isatty())
    except ValueError as err:
        return fail("data synth", str(err))
    print(f"dataset in {summary['root']}: {summary}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from cvae.core.data import load_split, load_test, size_problems
    from cvae.core.layout import DatasetError, check_layout, frame_folders, list_frames

    size = (args.frame_H, args.frame_W)
    try:
        check_layout(args.DR)
        # Training resizes a frame of another size with a warning, as the lab's loader does; a check reports it.
        problems = [p for folder in frame_folders(args.DR) if folder.is_dir()
                    for p in size_problems(list_frames(folder), size)]
        if problems:
            more = f" ({len(problems) - 1} more problem(s) of size)" if len(problems) > 1 else ""
            return fail("data check", problems[0] + more)
        train = load_split(args.DR, "train", size)
        val = load_split(args.DR, "val", size)
        tests = load_test(args.DR, size, expected_len=args.test_vi_len)
    except DatasetError as err:
        return fail("data check", str(err))
    print(f"{args.DR}: train {len(train)} frames, val {len(val)} frames, {len(tests)} test sequences "
          f"({', '.join(str(len(t.poses)) for t in tests)} poses); decoded at {size[0]}x{size[1]}")
    return 0


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out = {k: v for k, v in vars(args).items() if k in FLAT_KEYS}
    for key, value in out.items():
        # `wandb agent` passes a swept list as one argument: --lr_milestones=[2, 5].
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str) and value[0].startswith("["):
            out[key] = value[0]
    return out


class _WandbTraining(WandbCallback):
    """The W&B callback of ``cvae train --wandb``, whose run starts once the data and the checkpoint are known
    to be good (no empty run for a bad ``DR``), resuming the same run when training resumes."""

    ID_FILE = "wandb_run_id"
    """In save_root: the W&B run id, so that a resumed training continues its run."""

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg

    def on_train_start(self, cfg: Any, start_epoch: int) -> None:
        from pathlib import Path

        from cvae.tracking import WandbRun, resolve_wandb_mode

        t = cfg.track
        mode = resolve_wandb_mode(t.wandb_mode)
        if mode == "disabled":
            return
        save_root = Path(cfg.run.save_root)
        id_file = save_root / self.ID_FILE
        # An agent's run id comes from its environment (wandb.init reads WANDB_RUN_ID itself).
        run_id = None
        if start_epoch > 0 and id_file.is_file() and not os.environ.get("WANDB_RUN_ID"):
            run_id = id_file.read_text().strip() or None
        self.run = WandbRun(project=t.wandb_project, entity=t.wandb_entity, group=t.wandb_group,
                            name=save_root.name, run_id=run_id, config=cfg.to_flat(), tags=list(t.wandb_tags),
                            mode=mode, job_type="train", log_model=t.wandb_log_model,
                            log_every_n_steps=t.wandb_log_every_n_steps)
        id_file.write_text(self.run.run_id + "\n")
        log.info("W&B %s run %s%s", mode, self.run.path, f" ({self.run.url})" if self.run.url else "")
        super().on_train_start(cfg, start_epoch)

    def finish(self, state: str, reason: str = "", **summary: Any) -> None:
        if self.run is not None:
            self.run.finish(state=state, summary=summary, reason=reason)


def _cmd_train(args: argparse.Namespace) -> int:
    from cvae.core.checkpoint import DISK_FULL_ERRNOS, CheckpointError
    from cvae.core.data import DatasetError
    from cvae.core.trainer import DivergenceError, fit

    from cvae.tracking import TrackingError

    _configure_logging(args.log_level)
    try:
        cfg = resolve_config(args.config, _train_overrides(args))
        for _, message in cfg.warnings():
            print(f"cvae train: warning: {message}", file=sys.stderr, flush=True)
        if args.test:
            if cfg.run.ckpt_path is None:
                raise ConfigError("--test needs --ckpt_path")
            from cvae.core.baselines import summary_line
            from cvae.core.tester import evaluation_line, run_test
            from cvae.core.trainer import eval_every, resolve_device

            # The lab's --test validates once: its one rollout, unless the full evaluation is asked for
            # (val_eval_every N) or is free enough (auto on a GPU).
            full = eval_every(cfg, resolve_device(cfg.run.device)) > 0
            samples = cfg.run.val_samples if full else 1
            result = run_test(
                cfg.data.DR, cfg.run.save_root or ".", cfg.run.ckpt_path, frame_H=cfg.data.frame_H,
                frame_W=cfg.data.frame_W, dims=cfg.model,
                device=cfg.run.device, seed=cfg.run.val_seed, val_vi_len=cfg.data.val_vi_len,
                num_workers=cfg.data.num_workers, cache_dir=cfg.data.cache_dir, progress=cfg.run.progress,
                do_test=False, channels_last=cfg.run.channels_last, samples=samples,
                diagnostics=full and cfg.run.val_diagnostics, frame_stride=cfg.run.val_frame_stride,
            )
            print(f"validation: {summary_line(result.val_psnr, result.val_baselines)}")
            print(f"  {evaluation_line(result.evaluations['val'], samples)}")
            return 0
        from tqdm.contrib.logging import logging_redirect_tqdm

        # `wandb agent` runs `cvae train ${args}` with its sweep in the environment: that run is always tracked.
        cfg = _agent_run_folder(cfg)
        tracking = _WandbTraining(cfg) if cfg.track.wandb or os.environ.get("WANDB_SWEEP_ID") else None
        with logging_redirect_tqdm():
            try:
                run = fit(cfg, [tracking] if tracking else [])
            except BaseException as err:
                if tracking is not None:
                    reason = "interrupted (Ctrl-C)" if isinstance(err, KeyboardInterrupt) else str(err)
                    tracking.finish("failed", reason=reason.splitlines()[0] if reason else type(err).__name__)
                raise
        closing = _closing_lines(cfg, run)
        print("\n".join(closing), flush=True)  # before the W&B run ends: its Logs tab keeps them too
        if tracking is not None:
            tracking.finish("complete" if run.status == "completed" else "pruned", reason=run.reason,
                            best_epoch=run.best_epoch)
    except (ConfigError, DatasetError, CheckpointError, TrackingError) as err:
        return fail("train", str(err))
    except DivergenceError as err:
        # Bad input in effect (a learning rate far too high, a schedule that blows up): exit 2, like the rest.
        return fail("train", str(err))
    except OSError as err:
        if err.errno not in DISK_FULL_ERRNOS:
            raise
        return fail("train", str(err))  # a fault of the machine; names the file: see core.checkpoint.atomic_save
    return 0


def _agent_run_folder(cfg: Any) -> Any:
    """Under ``wandb agent`` (``WANDB_SWEEP_ID`` set), each run writes in a folder of its own named after its W&B
    run id, inside ``save_root`` (by default ``runs/<sweep id>``): W&B's command macros have no per-run
    placeholder, so a ``save_root`` given as a sweep parameter is every run's. A run whose folder exists (the
    agent runs the same run id again) continues from its last checkpoint."""
    sweep = os.environ.get("WANDB_SWEEP_ID")
    if not sweep:
        return cfg
    import secrets
    from pathlib import Path

    run_id = os.environ.get("WANDB_RUN_ID") or secrets.token_hex(4)  # the agent sets it; W&B's id form else
    os.environ["WANDB_RUN_ID"] = run_id  # this process's W&B run, which wandb.init reads
    folder = Path(cfg.run.save_root or Path("runs", sweep)) / run_id
    log.info("W&B sweep %s: run %s writes in %s", sweep, run_id, folder)
    return cfg.replace(save_root=str(folder), resume=True)


def _closing_lines(cfg: Any, run: Any) -> list[str]:
    """What a finished ``cvae train`` says: the best epoch against the trivial predictors, and its evaluation."""
    best = f"best val PSNR {run.best_val_psnr:.3f} dB at epoch {run.best_epoch}"
    copy_first = run.baselines.get("copy_first", math.nan)
    if not math.isnan(copy_first):
        best += (f" ({run.best_val_psnr - copy_first:+.2f} dB over copy-first-frame, {copy_first:.2f} dB; "
                 f"mean frame {run.baselines['mean_frame']:.2f} dB)")
    lines = [f"{run.status}: {run.epochs_run} epoch(s) in {run.save_root}; {best}"]
    at_best = next((r for r in run.history if r.epoch == run.best_epoch), None)
    if at_best is not None and not math.isnan(at_best.val_ssim):
        from cvae.core.tester import EVALUATION_KEYS, evaluation_line

        samples = cfg.run.val_samples if not math.isnan(at_best.val_psnr_best_of_k) else 1
        lines.append(f"  epoch {run.best_epoch}: " + evaluation_line(
            {key: float(getattr(at_best, f"val_{key}")) for key in EVALUATION_KEYS}, samples))
    return lines


def _cmd_test(args: argparse.Namespace) -> int:
    from cvae.core.baselines import summary_line
    from cvae.core.checkpoint import DISK_FULL_ERRNOS, CheckpointError
    from cvae.core.data import DatasetError
    from cvae.core.tester import evaluation_line, run_test

    _configure_logging(args.log_level)
    if args.samples is not None and args.samples < 1:
        return fail("test", f"--samples must be >= 1 (got {args.samples})")
    if args.val_frame_stride < 1:
        return fail("test", f"--val_frame_stride must be >= 1 (got {args.val_frame_stride})")
    given = [getattr(args, k) for k in ("F_dim", "L_dim", "N_dim", "D_out_dim")]
    dims = None
    if any(v is not None for v in given):
        if not all(v is not None for v in given):
            return fail("test", "give all of --F_dim --L_dim --N_dim --D_out_dim, or none (inferred)")
        dims = ModelConfig(*given)
    try:
        from cvae.core.trainer import resolve_device

        # The lab's Tester rolls out the test set: by default so do we, plus the validation video's one rollout
        # (with SSIM and the baselines). The full evaluation is asked for, or free enough on a GPU.
        full = args.full or resolve_device(args.device).type == "cuda"
        samples = args.samples if args.samples is not None else (5 if full else 1)
        diagnostics = args.diagnostics if args.diagnostics is not None else full
        result = run_test(
            args.DR, args.save_root, args.ckpt_path, frame_H=args.frame_H, frame_W=args.frame_W, dims=dims,
            device=args.device, seed=args.seed, test_vi_len=args.test_vi_len, val_vi_len=args.val_vi_len,
            num_workers=args.num_workers, progress=args.progress, do_test=args.do_test, do_val=args.do_val,
            channels_last=args.channels_last, samples=samples, diagnostics=diagnostics,
            frame_stride=args.val_frame_stride,
        )
    except (ConfigError, DatasetError, CheckpointError) as err:
        return fail("test", str(err))
    except OSError as err:
        if err.errno not in DISK_FULL_ERRNOS:
            raise
        return fail("test", str(err))  # a fault of the machine: exit 2, as for a training
    if result.submission:
        print(f"wrote {result.submission} and {len(result.gifs)} GIF(s) in {args.save_root}")
    for index, (value, baselines) in sorted(result.test_scores.items()):
        print(f"test sequence {index}: {summary_line(value, baselines)}")
        print(f"  {evaluation_line(result.evaluations[f'test{index}'], samples)}")
    if result.val_csv:
        print(f"validation: {summary_line(result.val_psnr, result.val_baselines)} ({result.val_csv})")
        print(f"  {evaluation_line(result.evaluations['val'], samples)}")
    if result.evaluation_csv:
        print(f"every evaluated video: {result.evaluation_csv}")
    return 0
