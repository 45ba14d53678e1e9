"""docker/ and examples/ without a Docker engine: the compose file's services, volumes, secrets and commands,
the Dockerfile's stages, the GPU-claim wrapper, the Slurm array script, and `cvae sweep init` (compose's
init service). Every command line they run must parse with the real `cvae` parser."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from cvae.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
CLAIM_GPU = DOCKER / "cvae-claim-gpu"
SBATCH = ROOT / "examples" / "slurm" / "sweep-workers.sbatch"
STORAGE = "postgresql+psycopg2://cvae@postgres:5432/sweeps"
CVAE_SERVICES = ("init", "worker", "worker-cpu", "dashboard")

_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def substitute(text: str) -> str:
    """Compose's interpolation with an empty environment: ``${VAR:-default}`` -> default, ``$$`` -> ``$``."""
    def repl(m: re.Match) -> str:
        if m[2] is None:
            raise AssertionError(f"{m[0]} has no default: compose would need it set")
        return m[2]
    return _VAR.sub(repl, text).replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def _env(service: dict) -> dict:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def _volume_pairs(service: dict) -> dict[str, str]:
    """container path -> source, after interpolation (short syntax)."""
    out = {}
    for v in service.get("volumes", []):
        source, target, *_ = substitute(v).split(":")
        out[target] = source
    return out


def _image_entrypoint() -> list[str]:
    line = next(ln for ln in DOCKERFILE.read_text().splitlines() if ln.startswith("ENTRYPOINT"))
    return yaml.safe_load(line.removeprefix("ENTRYPOINT").strip())


# --------------------------------------------------------------------------------------------- compose
def test_services(services: dict) -> None:
    assert {"postgres", "worker", "dashboard"} <= set(services)
    assert set(CVAE_SERVICES) <= set(services)


def test_postgres_has_a_named_volume_a_healthcheck_and_a_password_file(compose: dict, services: dict) -> None:
    pg = services["postgres"]
    volumes = _volume_pairs(pg)
    assert volumes["/var/lib/postgresql/data"] in compose["volumes"]  # a named volume, not a host path
    test = pg["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL") and "pg_isready" in " ".join(test)
    env = _env(pg)
    assert "POSTGRES_PASSWORD" not in env
    assert env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/db_password"
    assert "db_password" in pg["secrets"]
    assert re.fullmatch(r"postgres:\d+(\.\d+)*-\w+", pg["image"]), pg["image"]  # pinned, not :latest
    assert "ports" not in pg  # not published: workers reach it on the compose network


def test_worker_scales_with_one_gpu_each(services: dict) -> None:
    worker = services["worker"]
    assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert worker["depends_on"]["init"]["condition"] == "service_completed_successfully"
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] and d.get("driver") == "nvidia" for d in devices)
    # --scale worker=N: nothing that two replicas could not share.
    assert "container_name" not in worker and "ports" not in worker and "hostname" not in worker
    # compose gives every replica the same GPUs: the wrapper picks one per worker, and the image has it.
    assert worker["entrypoint"] == ["cvae-claim-gpu", "cvae"]
    assert "/usr/local/bin/cvae-claim-gpu" in DOCKERFILE.read_text()
    assert _volume_pairs(worker)[_env(worker)["CVAE_GPU_LOCK_DIR"]] == "gpu-locks"
    cpu = services["worker-cpu"]
    assert cpu["profiles"] == ["cpu"] and "deploy" not in cpu
    assert cpu["command"] == worker["command"]


def test_cvae_services_share_runs_data_and_the_secret(compose: dict, services: dict) -> None:
    named = set(compose["volumes"])
    for name in CVAE_SERVICES:
        service = services[name]
        volumes = _volume_pairs(service)
        assert volumes["/work/runs"] == "runs" and volumes["/work/data"] == "data", name
        assert {"runs", "data"} <= named
        assert _env(service)["CVAE_DB_PASSWORD_FILE"] == "/run/secrets/db_password", name
        assert "db_password" in service["secrets"], name
        assert service.get("init") is True, name  # signals reach cvae (SIGTERM re-queues the running trial)
    for name in ("worker", "worker-cpu"):
        env = _env(services[name])
        assert "WANDB_API_KEY" in env and env["WANDB_API_KEY"] is None  # passed through from the shell
        assert "WANDB_MODE" in env and "CVAE_THREADS" in env
    assert substitute(compose["secrets"]["db_password"]["file"]) == "./secrets/db_password"
    assert (DOCKER / "secrets" / ".gitignore").read_text().splitlines()[1:] == ["*", "!.gitignore"]


def test_dashboard_is_published_on_loopback_only(services: dict) -> None:
    dashboard = services["dashboard"]
    ports = [substitute(p) for p in dashboard["ports"]]
    assert ports and all(p.startswith("127.0.0.1:") for p in ports)
    args = build_parser().parse_args(_cvae_args(dashboard))
    assert args.sweep_command == "dashboard" and args.storage == STORAGE
    assert {p.split(":")[-1] for p in ports} == {str(args.port)}
    assert dashboard["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_no_password_in_the_file(services: dict) -> None:
    password_in_url = re.compile(r"://[^/\s:@]+:[^/\s@]+@")  # user:password@
    for path in (COMPOSE, SBATCH, *sorted((ROOT / "sweeps" / "configs").glob("*.yaml"))):
        assert not password_in_url.search(path.read_text()), path
    for name, service in services.items():
        for key, value in _env(service).items():
            if "PASSWORD" in key or "SECRET" in key or key.endswith("_KEY"):
                assert key.endswith("_FILE") or value is None, f"{name}: {key}={value!r}"


def _cvae_args(service: dict) -> list[str]:
    command = service["command"]
    command = shlex.split(command) if isinstance(command, str) else list(command)
    return [substitute(str(a)) for a in command]


def test_every_cvae_command_parses(services: dict) -> None:
    assert _image_entrypoint() == ["cvae"]
    parser = build_parser()
    expected = {"init": "init", "worker": "worker", "worker-cpu": "worker", "dashboard": "dashboard"}
    for name, sub in expected.items():
        service = services[name]
        entrypoint = service.get("entrypoint", _image_entrypoint())
        assert entrypoint[-1] == "cvae", name
        args = parser.parse_args(_cvae_args(service))
        assert args.command == "sweep" and args.sweep_command == sub, name
        assert args.storage == STORAGE, name
        assert args.spec == "specs/search.yaml", name
        assert callable(args.func)
    # The default spec exists where the specs folder is mounted from.
    specs = _volume_pairs(services["worker"])["/work/specs"]
    assert (DOCKER / specs / "search.yaml").is_file()


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed "
                    "(`apt-get install docker-compose`; .ci/run installs it)")
def test_docker_compose_config_validates(tmp_path: Path) -> None:
    secret = tmp_path / "db_password"
    secret.write_text("not-a-real-password\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CVAE_", "WANDB_", "SPEC"))}
    env["CVAE_DB_PASSWORD_FILE"] = str(secret)
    run = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config"], capture_output=True, text=True,
                         env=env, timeout=60, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    resolved = yaml.safe_load(run.stdout)
    assert set(resolved["services"]) == {"postgres", *CVAE_SERVICES}
    assert resolved["secrets"]["db_password"]["file"] == str(secret)
    assert "not-a-real-password" not in run.stdout
    parser = build_parser()
    for name in CVAE_SERVICES:
        parser.parse_args([str(a) for a in resolved["services"][name]["command"]])


# --------------------------------------------------------------------------------------------- Dockerfile
def test_dockerfile_is_multi_stage_pinned_and_non_root() -> None:
    lines = [ln.strip() for ln in DOCKERFILE.read_text().splitlines()]
    args = {}
    for ln in lines:
        m = re.fullmatch(r"ARG (\w+)=(\S+)", ln)
        if m:
            args[m[1]] = m[2]
    froms = [ln.split()[1] for ln in lines if ln.startswith("FROM ")]
    assert len(froms) >= 2
    stages = {ln.split()[-1] for ln in lines if ln.startswith("FROM ") and " AS " in ln}
    for image in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], image)
        if image in stages:
            continue
        name, _, tag = image.partition(":")
        assert tag and tag != "latest", image
        assert re.search(r"\d", tag), f"{image}: pin a versioned tag"
    assert any(ln.startswith("COPY --from=builder") for ln in lines)
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert _image_entrypoint() == ["cvae"]
    assert "WORKDIR /work" in lines
    volume = next(ln for ln in lines if ln.startswith("VOLUME"))
    assert "/work/runs" in volume and "/work/data" in volume
    assert any("TORCH_INDEX_URL" in ln for ln in lines if ln.startswith("ARG"))  # the CPU variant


def test_dockerfile_run_steps_are_valid_sh(tmp_path: Path) -> None:
    """Each RUN (continuation lines joined, as Docker does) parses with sh; the requirements step works."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    runs = [ln.strip().removeprefix("RUN ") for ln in text.splitlines() if ln.strip().startswith("RUN ")]
    assert len(runs) >= 3
    for cmd in runs:
        check = subprocess.run(["sh", "-n", "-c", cmd], capture_output=True, text=True)
        assert check.returncode == 0, f"{cmd}: {check.stderr}"
    if sys.version_info < (3, 11):
        return  # the image's Python has tomllib; this one does not
    # The step that turns pyproject.toml's dependencies into requirements.txt, run for real (in a copy).
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    step = next(c for c in runs if "tomllib" in c).split(" && ")[0]
    out = subprocess.run(["sh", "-c", step.replace("python ", f"{sys.executable} ", 1)], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    requirements = (tmp_path / "requirements.txt").read_text().splitlines()
    assert any(r.startswith("torch==") for r in requirements) and "optuna-dashboard==0.21.0" in requirements


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    entries = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")}
    assert {".venv", "runs", "data", "wandb", ".git", "docker/secrets"} <= entries
    # ... but not what the image needs
    assert not entries & {"docker", "sweeps", "core", "cvae", "configs", "pyproject.toml", "README.md"}


# --------------------------------------------------------------------------------------------- cvae-claim-gpu
@pytest.fixture
def fake_gpus(tmp_path: Path) -> dict[str, str]:
    """An environment whose nvidia-smi lists two GPUs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: Fake (UUID: GPU-a)'\necho 'GPU 1: Fake (UUID: GPU-b)'\n")
    smi.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "CVAE_THREADS")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", CVAE_GPU_LOCK_DIR=str(tmp_path / "locks"))
    return env


def _claim(env: dict[str, str], *command: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(["sh", str(CLAIM_GPU), *command], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_claim_gpu_gives_each_worker_its_own_gpu(fake_gpus: dict[str, str]) -> None:
    hold = ("sh", "-c", 'echo "$CUDA_VISIBLE_DEVICES $CVAE_THREADS"; exec sleep 30')
    holders = []
    try:
        for expected in ("0", "1"):
            p = _claim(fake_gpus, *hold)
            holders.append(p)
            gpu, threads = p.stdout.readline().split()
            assert gpu == expected and int(threads) >= 1
        third = _claim(fake_gpus, "true")
        _, err = third.communicate(timeout=10)
        assert third.returncode == 75 and "all 2 GPU(s)" in err
    finally:
        for p in holders:
            p.kill()
            p.wait()
    # Killed workers release their GPU: a restarted one gets GPU 0 again.
    again = _claim(fake_gpus, "sh", "-c", 'echo "$CUDA_VISIBLE_DEVICES"')
    assert again.communicate(timeout=10)[0].strip() == "0"


def test_claim_gpu_leaves_cpu_hosts_and_preset_gpus_alone(fake_gpus: dict[str, str], tmp_path: Path) -> None:
    show = ("sh", "-c", 'echo "[${CUDA_VISIBLE_DEVICES:-unset}]"')
    preset = _claim({**fake_gpus, "CUDA_VISIBLE_DEVICES": "3"}, *show)
    assert preset.communicate(timeout=10)[0].strip() == "[3]"
    no_smi = {**fake_gpus, "PATH": "/usr/bin:/bin"}
    if shutil.which("nvidia-smi", path=no_smi["PATH"]) is None:
        cpu = _claim(no_smi, *show)
        assert cpu.communicate(timeout=10)[0].strip() == "[unset]" and cpu.returncode == 0
    assert subprocess.run(["sh", "-n", str(CLAIM_GPU)]).returncode == 0


# --------------------------------------------------------------------------------------------- Slurm
def test_sbatch_example_is_valid_bash_and_runs_a_parsable_worker(tmp_path: Path) -> None:
    assert subprocess.run(["bash", "-n", str(SBATCH)]).returncode == 0
    directives = [ln.split(None, 1)[1] for ln in SBATCH.read_text().splitlines() if ln.startswith("#SBATCH ")]
    assert "--gres=gpu:1" in directives and any(d.startswith("--array=") for d in directives)
    assert any(d.startswith("--signal=TERM@") for d in directives)

    # Run it with stand-ins for srun (runs its command) and cvae (records its arguments).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n')
    (bin_dir / "cvae").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGV_FILE"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    argv = tmp_path / "argv"
    storage = "postgresql+psycopg2://cvae@db.example.org:5432/sweeps"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "ARGV_FILE": str(argv),
           "SLURM_SUBMIT_DIR": str(tmp_path), "SLURM_CPUS_PER_TASK": "6", "SLURM_ARRAY_JOB_ID": "42",
           "SLURM_ARRAY_TASK_ID": "3", "CUDA_VISIBLE_DEVICES": "0", "CVAE_STORAGE": storage}
    run = subprocess.run(["bash", str(SBATCH)], env=env, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    args = build_parser().parse_args(argv.read_text().splitlines())
    assert (args.command, args.sweep_command) == ("sweep", "worker")
    assert (args.spec, args.storage, args.threads) == ("sweeps/configs/search.yaml", storage, 6)
    assert (ROOT / args.spec).is_file()
    assert "CUDA_VISIBLE_DEVICES=0" in run.stdout

    # Without the study URL it stops with a message instead of starting a worker on a default.
    del env["CVAE_STORAGE"]
    argv.unlink()
    run = subprocess.run(["bash", str(SBATCH)], env=env, capture_output=True, text=True, timeout=30)
    assert run.returncode != 0 and "CVAE_STORAGE" in run.stderr and not argv.exists()


# --------------------------------------------------------------------------------------------- cvae sweep init
SYNTH = {"train_frames": 16, "train_video_len": 8, "val_frames": 8, "test_sequences": 1, "test_frames": 8,
         "size": "32x64"}


def test_init_prepares_data_and_queue_without_running_a_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    spec = {"name": "init-test", "method": "grid", "parameters": {"N_dim": {"values": [4, 8]}},
            "synth": SYNTH, "replicates": 2, "wandb": {"mode": "disabled"},
            "base": {"DR": "data/tiny", "num_epoch": 2, "tfr_sde": 1, "frame_H": 32, "frame_W": 64}}
    Path("spec.yaml").write_text(yaml.safe_dump(spec))

    assert main(["sweep", "init", "spec.yaml", "--data-only"]) == 0
    assert (tmp_path / "data/tiny/synth.json").is_file() and not (tmp_path / "runs").exists()

    t0 = time.monotonic()
    assert main(["sweep", "init", "spec.yaml"]) == 0
    assert "4 trial(s) queued" in capsys.readouterr().out
    study = optuna.load_study(study_name="init-test", storage="sqlite:///runs/init-test/study.db")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.WAITING] * 4
    assert (tmp_path / "runs/init-test/spec.yaml").is_file()
    assert main(["sweep", "init", "spec.yaml"]) == 0  # again: nothing added
    assert len(study.trials) == 4
    assert time.monotonic() - t0 < 30

    assert main(["sweep", "init", "spec.yaml", "--storage", "postgresql+psycopg2://u:secret@127.0.0.1:1/x"]) == 2
    err = capsys.readouterr().err
    assert "u:***@" in err and "secret" not in err


def test_cvae_threads_empty_is_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compose passes CVAE_THREADS through; set but empty it must not break every cvae command."""
    monkeypatch.setenv("CVAE_THREADS", "")
    args = build_parser().parse_args(["sweep", "worker", "s.yaml", "--storage", STORAGE])
    assert args.threads is None
