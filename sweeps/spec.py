"""The sweep spec: a YAML file a W&B Sweeps user reads at a glance, validated whole before anything runs.

W&B's keys keep W&B's meaning (``name``, ``description``, ``method``, ``metric``, ``run_cap``, ``parameters``,
``early_terminate``, ``program``, ``command``, ``project``, ``entity``): a stock W&B sweep file runs unchanged
when its parameters name ``cvae train`` keys, and what of it cannot be honoured is refused by name or, for
``program`` and ``command``, ignored with one warning. The rest are ours (``base``, ``replicates``, ``workers``, ``launcher``, ``slurm``, ``storage``,
``wandb``, ``output_dir``, ``pruner``, ``sampler``, ``synth``, ``heartbeat``, ``max_retry``, ``seed``,
``grid_order``, and a parameter's ``when``). Paths are relative to the working directory, as the lab's
flags are; a ``base`` given as a path is relative to the spec file.

The ``metric``, ``wandb``, ``pruner`` (or ``early_terminate``), ``sampler``, ``heartbeat``, ``synth``, ``slurm`` sections and
``program``/``command`` are typed (:mod:`cvae.sweeps.spec_types`); the ``parameters`` are read by
:mod:`cvae.sweeps.params` into the search space (:mod:`cvae.sweeps.space`), which the spec checks its trials with.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from cvae.core.config import FLAT_KEYS, ConfigError, ExperimentConfig, load_yaml_config, read_yaml_mapping
from cvae.sweeps import space
from cvae.sweeps.params import OWNED_KEYS, ParamSpec, SpecError, owned_message, parse_params, spec_error
from cvae.sweeps.space import NumEpoch, Param
from cvae.sweeps.spec_types import (
    LAUNCHERS,
    Command,
    EarlyTerminate,
    HeartbeatSpec,
    MetricSpec,
    PrunerSpec,
    SamplerSpec,
    Section,
    SlurmSpec,
    SynthSpec,
    Text,
    WandbSpec,
    at_least,
    ignored_command,
    one_of,
    problems,
)
from pydantic import ConfigDict, ValidationError, WithJsonSchema

from cvae.secrets import has_password

METHODS = ("grid", "random", "bayes", "tpe", "cmaes", "gp", "qmc")
GRID_ORDERS = ("listed", "shuffled")
"""``grid_order``: the grid runs as its parameters list it (W&B's order), or shuffled with ``seed`` (Optuna's)."""

MAX_TRIALS = 10_000
"""The most trials a sweep may queue (parameter sets x replicates): each is a training run, and the queue is
written to the study up front."""

MAX_NAME = 100
"""The longest sweep name (its slug): it names the study, the W&B group and runs (W&B run ids stop at 128
characters)."""
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
"""A name that is its own slug (kept as it is: studies made before names were slugged keep their name)."""


def slugify(text: str) -> str:
    """``text`` as a study and folder name: ASCII, lower case, each run of other characters one ``-``
    ("My KL sweep #2" -> "my-kl-sweep-2")."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9_.]+", "-", ascii_text.lower()).strip("-_.")


def load_spec(path: str | os.PathLike, *, storage: str | None = None, workers: int | None = None) -> SweepSpec:
    """Read and validate a sweep spec; ``storage``/``workers`` override the file's.

    Raises:
        SpecError: every problem found, in one message naming the file and the keys.
    """
    path = Path(path)
    try:
        raw = read_yaml_mapping(path, "sweep spec")
    except ConfigError as err:
        raise SpecError(str(err)) from None
    if not raw:
        raise spec_error(str(path), "the file is empty: a sweep spec must be a mapping of keys to values")
    return parse_spec(raw, source=str(path), base_dir=path.parent, storage=storage, workers=workers,
                      default_name=path.stem)


class SpecFile(Section):
    """A sweep spec as written: W&B's sweep keys (``name``, ``description``, ``method``, ``metric``,
    ``run_cap``, ``parameters``, ``early_terminate``, ``program``, ``command``, ``project``, ``entity``) and
    ours. Its JSON Schema is ``cvae sweep schema``'s."""

    model_config = ConfigDict(json_schema_extra={"required": ["method", "parameters"]})

    name: Annotated[Any, WithJsonSchema({"type": "string"})] = None
    """The sweep's name, free text: its slug names the study, the W&B group and the output folder."""
    description: Annotated[Any, WithJsonSchema({"type": "string"})] = ""
    method: one_of(*METHODS)
    """grid, random, bayes (Optuna's TPE here), tpe, cmaes, gp or qmc."""
    metric: MetricSpec = MetricSpec()
    run_cap: at_least(1) = None
    """The parameter sets to try (a search without it runs until stopped, as in W&B; a grid's first run_cap
    points)."""
    parameters: dict[str, ParamSpec] = None  # type: ignore[assignment]  # read by parse_params
    """cvae train keys (or named choices with sets) -> their values or distribution."""
    early_terminate: EarlyTerminate = None  # type: ignore[assignment]
    pruner: PrunerSpec = PrunerSpec()
    sampler: SamplerSpec = SamplerSpec()
    base: Annotated[Any, WithJsonSchema({"anyOf": [{"type": "object"}, {"type": "string"}]})] = None
    """The trials' common cvae train config: its keys, or a path to a YAML file of them (relative to the spec)."""
    replicates: at_least(1, optional=False) = 1
    """Trainings of each parameter set, with seeds seed, seed+1, ..."""
    workers: at_least(1, optional=False) = 1
    launcher: one_of(*LAUNCHERS) = "local"
    """How `cvae sweep run` starts the workers: local processes, or the tasks of a Slurm job array (``slurm``)."""
    slurm: SlurmSpec = SlurmSpec()
    storage: Text = None
    """The Optuna storage URL: sqlite:///PATH (default: OUTPUT_DIR/study.db), postgresql+psycopg2://..., journal:PATH, grpc://HOST:PORT (a `cvae sweep proxy`)."""
    wandb: WandbSpec = WandbSpec()
    output_dir: Text = None
    """Where the trials' folders go (default: a save_root parameter's value, which wandb agent runs make their
    folders in, else runs/NAME)."""
    synth: SynthSpec = None  # type: ignore[assignment]
    heartbeat: HeartbeatSpec = HeartbeatSpec()
    max_retry: at_least(0, optional=False) = 3
    """How many times a trial whose worker died is retried."""
    seed: at_least(0, optional=False) = 0
    grid_order: one_of(*GRID_ORDERS) = "listed"
    program: Text = None
    """W&B's: the script its agent runs (see command)."""
    command: Command = None
    """W&B's: how its agent starts a run. Each trial runs ``cvae train`` with the swept values as its flags: what
    ``[cvae, train, ${args}]`` does, and W&B's default ``[${env}, ${interpreter}, ${program}, ${args}]`` does when the
    program is our trainer (``cvae train``, ``python -m cvae train``, or the lab's ``Trainer.py``); ``--config
    ${args_json_file}`` after it is honoured too. Anything else is ignored, with one warning."""
    project: Text = None
    entity: Text = None


class SweepSpec(SpecFile):
    """A validated sweep spec (:func:`parse_spec` makes it): the file's keys, as the sweep reads them."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str = "sweep"
    """The spec's ``name`` slugged: the study's name, the W&B group and the default output folder's."""
    method: str = "grid"
    """As written, but ``bayes``, read as ``tpe``."""
    pruner: PrunerSpec = PrunerSpec()
    """The spec's ``pruner``, or its W&B ``early_terminate`` as Optuna's HyperbandPruner."""
    synth: SynthSpec | None = None
    """None where the spec gives no (or an empty) ``synth`` section."""
    params: tuple[Param, ...] = ()
    """The ``parameters``, read."""
    base: Mapping[str, Any] = {}
    """The ``base`` config's keys (read from its file where it is a path)."""
    storage: str = ""
    """The Optuna storage URL (``--storage``, else the spec's, else a SQLite file in ``output_dir``)."""
    output_dir: Path = Path(".")
    source: str = "spec"
    """Where the spec came from (its file), for messages."""
    display_name: str = ""
    """The spec's ``name`` as written, when it is not its own slug (``name``); else empty."""
    warnings: tuple[str, ...] = ()
    """What the sweep does otherwise than the spec asks (ignored ``program``/``command``, ``method: bayes``
    as TPE, probabilities a method does not draw with), then what `cvae train` would warn about in the sweep's
    trials (odd but accepted settings); the CLI prints each."""
    written: Mapping[str, Any] = {}
    """The spec as its file says it (W&B's ``project`` and ``entity`` moved into ``wandb``): distributions as
    written, what the W&B summary run's config keeps."""

    @property
    def title(self) -> str:
        """The sweep's name as the spec wrote it (for display)."""
        return self.display_name or self.name

    @property
    def data_root(self) -> str | None:
        """The dataset root every trial reads: ``base.DR``, or a constant ``DR`` parameter (a stock W&B file
        has no ``base``, and says ``parameters: {DR: {value: PATH}}``); None when neither gives it."""
        for p in self.params:
            if p.name == "DR" and p.distribution == "constant" and not p.when:
                return str(p.values[0])
        root = self.base.get("DR")
        return str(root) if root else None

    @property
    def num_epoch(self) -> NumEpoch:
        """How many epochs the trials run: the base's, or the range of a swept ``num_epoch``."""
        return space.num_epoch(self.params, self.base)

    def grid(self) -> list[dict[str, Any]]:
        """Every parameter combination of the grid, conditional branches expanded, duplicates removed."""
        return space.grid(self.params)

    def grid_points(self) -> list[tuple[int, dict[str, Any]]]:
        """The grid points the sweep runs, in run order, each with its index in ``grid()`` (its queue slot)."""
        return space.grid_points(self)

    @property
    def until_stopped(self) -> bool:
        """A search without ``run_cap``: it draws parameter sets until it is stopped, as a W&B sweep does."""
        return self.method != "grid" and self.run_cap is None

    def n_configs(self) -> int:
        """Parameter sets the sweep runs (each ``replicates`` times); 0 for a search that runs until stopped."""
        return len(self.grid_points()) if self.method == "grid" else int(self.run_cap or 0)

    @property
    def ignored(self) -> tuple[str, ...]:
        """What of W&B's ``program`` and ``command`` the sweep does not do (empty: all honoured)."""
        return ignored_command(self.program, self.command)

    def trial_config(self, params: Mapping[str, Any], *, save_root: str | os.PathLike, replicate: int = 0,
                     num_threads: int | None = None) -> ExperimentConfig:
        """The full training config of one trial: base < params < what the sweep owns."""
        return space.trial_config(self, params, save_root=save_root, replicate=replicate, num_threads=num_threads)


def schema() -> dict[str, Any]:
    """The JSON Schema of a spec file (``cvae sweep schema``), for editors and validators."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            **SpecFile.model_json_schema(), "title": "cvae sweep spec"}


def parse_spec(raw: Mapping[str, Any], *, source: str = "spec", base_dir: Path = Path("."),
               storage: str | None = None, workers: int | None = None, default_name: str | None = None,
               ) -> SweepSpec:
    """Validate a spec already read from YAML (see :func:`load_spec`); every problem is raised at once, one line
    each: the file's types (pydantic), then what the sweep makes of them, then what `cvae train` would say of
    the trials and whether the sampler and pruner build (for the sections they need, once those are clean).

    Args:
        default_name: The name of a spec without ``name`` (W&B's is optional): :func:`load_spec` gives the
            file's stem.
    """
    errors: list[str] = []
    order = {key: i for i, key in enumerate(raw)}

    def failure(*more: str) -> SpecError:  # the problems in the order of the keys in the file
        return spec_error(source, sorted([*errors, *more], key=lambda line: order.get(
            re.match(r"\w*", line).group(), len(order))))

    raw = {**raw, **({"workers": workers} if workers is not None else {})}
    _wandb_top_level(raw, errors)
    try:
        file, failed = SpecFile.model_validate({k: v for k, v in raw.items() if k != "parameters"}), set()
    except ValidationError as err:
        errors += problems(err)
        failed = {e["loc"][0] for e in err.errors() if e["loc"]}
        if "method" in failed or "method" not in raw:
            raise failure() from None
        file = SpecFile.model_validate({k: v for k, v in raw.items() if k in SpecFile.model_fields
                                        and k not in failed | {"parameters"}})
    name, display_name = _parse_name(raw.get("name", default_name), errors)
    parameters, runs_in = _runs_folder(raw.get("parameters"))
    before = len(errors)
    params = parse_params(parameters, file.method, errors)
    params_clean = len(errors) == before
    before = len(errors)
    if file.run_cap is not None and file.run_cap > MAX_TRIALS:
        errors.append(f"run_cap={file.run_cap} is over {MAX_TRIALS}: a sweep queues every trial up front")
    if "grid_order" in raw and file.method != "grid" and "grid_order" not in failed:
        errors.append(f"grid_order applies to method grid only, not {file.method}")
    counts_clean = len(errors) == before and not failed & {"run_cap", "replicates", "workers", "seed", "max_retry"}
    pruner, both = file.pruner, "early_terminate" in raw and "pruner" in raw
    if both:
        errors.append("give early_terminate (W&B) or pruner (Optuna), not both")
    elif file.early_terminate is not None:
        pruner = file.early_terminate.pruner()
    output_dir, storage_url = _parse_storage(file, name, runs_in, storage, errors)
    before = len(errors)
    base = _parse_base(raw.get("base"), base_dir, errors)
    if not params or not counts_clean or len(errors) > before:
        raise failure()
    if file.method == "grid":
        upper = math.prod(p.n_values() for p in params)  # before `when` drops branches; cheap to compute
        if upper > 10 * MAX_TRIALS:
            raise failure(f"parameters: the grid has up to {upper:.3g} points: at most {MAX_TRIALS} (use method "
                          "random or tpe with a run_cap)")
    spec = SweepSpec.model_construct(**{
        **dict(file), "name": name, "method": "tpe" if file.method == "bayes" else file.method, "pruner": pruner,
        "synth": file.synth if file.synth is not None and file.synth.keys() else None,  # an empty section: none
        "description": str(file.description), "params": params, "base": base, "storage": storage_url,
        "output_dir": output_dir, "source": source, "display_name": display_name, "written": raw})
    trials = spec.n_configs() * spec.replicates
    if trials > MAX_TRIALS:
        raise failure(f"{spec.n_configs()} parameter set(s) x {spec.replicates} replicate(s) = {trials} trials: "
                      f"at most {MAX_TRIALS} (cut the grid or run_cap)")
    try:
        rejected, warned = space.check_trial_configs(spec)
    except Exception:  # noqa: BLE001 - a condition (`when`) on a parameter left out: wait for its fix
        if params_clean:
            raise
        raise failure() from None
    errors += rejected
    if not failed & {"pruner", "early_terminate", "sampler"} and not both:
        errors += _check_buildable(spec)
    if errors:
        raise failure()
    return spec.model_copy(update={"warnings": _spec_warnings(spec, file.method) + warned})


def _wandb_top_level(raw: dict[str, Any], errors: list[str]) -> None:
    """W&B's top-level ``project`` and ``entity`` moved into the ``wandb`` section, unless it sets them too: the
    same value is fine, two values an error."""
    section = raw.get("wandb")
    for key in ("project", "entity"):
        if key not in raw:
            continue
        value = raw.pop(key)
        if not isinstance(value, str) or not value:
            errors.append(f"{key}={value!r} must be a non-empty string")
        elif isinstance(section, Mapping) and section.get(key, value) != value:
            errors.append(f"{key}={value!r} and wandb.{key}={section[key]!r} disagree: give one (W&B writes "
                          f"{key} at the top level)")
        elif section is None or isinstance(section, Mapping):
            section = raw["wandb"] = {**(section or {}), key: value}


def _parse_name(name: Any, errors: list[str]) -> tuple[str, str]:
    """``name`` -> (its slug, the study and folder name; the name as written when that differs, else "").

    W&B's name is free text; a name that is already a slug (letters, digits, '_', '-', '.') is kept as it is.
    """
    if name is None:
        errors.append("name is required: the sweep's name (free text; its slug names the study and output folder)")
        return "sweep", ""
    if isinstance(name, bool) or not isinstance(name, str | int | float):
        errors.append(f"name={name!r} must be text")
        return "sweep", ""
    text = str(name).strip()
    slug = text if re.fullmatch(NAME_PATTERN, text) else slugify(text)
    if not slug:
        errors.append(f"name={text[:60]!r} has no letter or digit to name the study and output folder by "
                      "(a name is slugged: 'My KL sweep #2' -> 'my-kl-sweep-2')")
        return "sweep", ""
    if len(slug) > MAX_NAME:
        errors.append(f"name={text[:40]!r}... makes a study name of {len(slug)} characters: at most {MAX_NAME} (it "
                      "names the study, the W&B group and runs)")
        return "sweep", ""
    return slug, "" if slug == text else text


def _spec_warnings(spec: SweepSpec, method: str) -> tuple[str, ...]:
    """What the spec asks for that the sweep does otherwise, or that is odd: a search without run_cap (it runs until
    stopped), ignored ``program``/``command`` (one warning), ``method: bayes`` (TPE here), and W&B probabilities a
    method does not draw with."""
    warnings = [f"no run_cap: method {method} draws parameter sets until the sweep is stopped (Ctrl-C; running "
                "trials are re-queued, and cvae sweep run goes on from there) or a trial reaches metric.target, as a "
                "W&B sweep does: set run_cap to bound it"] if spec.until_stopped else []
    warnings += [f"{', '.join(spec.ignored)} ignored: each trial runs `cvae train` with the swept values as its "
                 "flags, as `command: [cvae, train, ${args}]` does"] if spec.ignored else []
    if method == "bayes":
        warnings.append("method: bayes runs Optuna's TPE sampler here (W&B's bayes is a Gaussian-process search): "
                        "write method: gp for a Gaussian-process sampler, or method: tpe to keep TPE without "
                        "this warning")
    for p in spec.params:
        if not p.probabilities or spec.method == "random":
            continue
        if p.is_quantized_log:
            if spec.method != "grid":
                warnings.append(f"parameters.{p.name}: method {method} samples {p.declared} as {len(p.values)} "
                                "unordered choices, the multiples of q (Optuna has no quantized log distribution); "
                                "only method random draws them with W&B's probabilities")
        elif spec.method == "grid":
            warnings.append(f"parameters.{p.name}.probabilities ignored: a grid runs every value")
        else:
            warnings.append(f"parameters.{p.name}.probabilities ignored: method {method} chooses values by its own "
                            "model; only method random draws them with these probabilities (as in W&B)")
    return tuple(warnings)


GRPC_URL = re.compile(r"grpc://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>\d{1,5})/?")
"""A gRPC storage proxy's URL (``cvae sweep proxy``), whole: ``grpc://HOST:PORT``, an IPv6 host in brackets."""


def grpc_address(url: str) -> tuple[str, int] | None:
    """(host, port) of a ``grpc://HOST:PORT`` URL with a port in 1..65535 (an IPv6 host keeps its brackets, as
    gRPC wants it), else None."""
    match = GRPC_URL.fullmatch(url)
    return (match["host"], int(match["port"])) if match and 0 < int(match["port"]) < 65536 else None


def _runs_folder(parameters: Any) -> tuple[Any, str | None]:
    """A constant ``save_root`` parameter, which a W&B file gives for ``wandb agent`` (each agent run makes its
    folder in it), read as ``output_dir``: (the parameters without it, its folder), else (them, None)."""
    root = parameters.get("save_root") if isinstance(parameters, Mapping) else None
    if not (isinstance(root, Mapping) and set(root) == {"value"} and isinstance(root["value"], str) and root["value"]):
        return parameters, None
    return {k: v for k, v in parameters.items() if k != "save_root"}, root["value"]


def _parse_storage(file: SpecFile, name: str, runs_in: str | None, storage: str | None, errors: list[str],
                   ) -> tuple[Path, str]:
    """``output_dir`` (or a constant ``save_root`` parameter: ``runs_in``) and ``storage`` (``storage``
    overrides it; by default a SQLite file in output_dir)."""
    if runs_in is not None and file.output_dir is not None and Path(runs_in) != Path(file.output_dir):
        errors.append(f"output_dir={file.output_dir!r} and parameters.save_root={runs_in!r} disagree: give one (the "
                      "runs' folders go in it)")
    if file.storage and has_password(file.storage):
        errors.append("storage: the spec must not hold a password (it is committed with the spec); set "
                      "CVAE_DB_PASSWORD or CVAE_DB_PASSWORD_FILE, or use PGPASSWORD / ~/.pgpass")
    output_dir = Path(file.output_dir or runs_in or f"runs/{name}")
    existing = next((p for p in (output_dir, *output_dir.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "is a file" if existing == output_dir else f"is inside {existing}, a file"
        errors.append(f"output_dir={str(output_dir)!r} {where}, not a folder (the sweep's records go in it)")
    url = storage or file.storage or f"sqlite:///{output_dir / 'study.db'}"
    if not re.match(r"^(sqlite|postgresql(\+\w+)?|mysql(\+\w+)?|journal|grpc):", url):
        errors.append(f"storage={url!r} must be sqlite:///PATH, postgresql+psycopg2://..., journal:PATH or "
                      "grpc://HOST:PORT")
    elif url.startswith("grpc:") and grpc_address(url) is None:
        errors.append(f"storage={url!r}: a gRPC storage proxy's URL is grpc://HOST:PORT with a port in 1..65535 "
                      "(the address `cvae sweep proxy` listens on)")
    return output_dir, url


def _check_buildable(spec: SweepSpec) -> list[str]:
    """Build the sampler and pruner once, so a wrong option fails here, not when the first trial starts; returns
    the problems."""
    problems = []
    for what, build in (("sampler", space.make_sampler), ("pruner", space.make_pruner)):
        try:
            build(spec)
        except (TypeError, ValueError, ImportError) as err:
            problems.append(f"{what} for method {spec.method}: {err}")
    return problems


def _parse_base(raw: Any, base_dir: Path, errors: list[str]) -> dict[str, Any]:
    """``base``: cvae train's keys, or a path to a YAML file of them (relative to the spec's folder)."""
    if isinstance(raw, str):
        try:
            raw = load_yaml_config(Path(raw) if Path(raw).is_absolute() else base_dir / raw)
        except ConfigError as err:
            errors.append(f"base: {err}")
            return {}
    if not isinstance(raw, Mapping | None):
        errors.append(f"base must be a mapping of cvae train keys or a path to one, got {raw!r}")
        return {}
    raw = dict(raw or {})
    if unknown := sorted(map(str, set(raw) - set(FLAT_KEYS))):
        errors.append(f"base: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(FLAT_KEYS))}")
    if owned := sorted(set(raw) & set(OWNED_KEYS)):
        errors.append(f"base: {owned_message(owned)}")
    return {k: v for k, v in raw.items() if k in FLAT_KEYS and k not in OWNED_KEYS}


