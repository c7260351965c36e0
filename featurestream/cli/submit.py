"""``featurestream submit JOB``: submit a job to the configured Flink cluster with ``flink run``.

The job's code travels with it (``--pyFiles``: a staged copy of this distribution's packages),
so the same command works against a remote cluster whose TaskManagers have the package's
dependencies installed; with ``--ship-deps`` those travel too (:mod:`ship`). The job's
``main()`` runs in the client (this Python) and reads the same ``FEATURESTREAM_*`` settings as
this command; the TaskManagers run FEATURESTREAM_PYTHON_EXECUTABLE.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from featurestream.cli import ship
from featurestream.cli.plan import refuse_unresumable_state
from featurestream.devstack import submissions
from featurestream.devstack.endpoints import LOOPBACK
from featurestream.devstack.flink_home import pyflink_dir
from featurestream.devstack.paths import StackPaths
from featurestream.errors import UserFacingError
from featurestream.flink_rest import FlinkRest
from featurestream.jobs import JOB_NAMES
from featurestream.settings import Settings
from featurestream.settings.handover import job_environment

JOB_MODULES = {"features": "featurestream.jobs.features.job",
               "scoring": "featurestream.jobs.scoring.job"}
# What the jobs import, and nothing else: the CLI, the reader and the local-stack tooling stay
# behind. Beside the ``featurestream`` package's own ``__init__``: modules or whole packages.
SHIPPED = ("featurestream.settings", "featurestream.errors", "featurestream.jdk",
           "featurestream.udfs", "featurestream.jobs", "featurestream.schemas")


def stage_python_files(settings: Settings) -> Path:
    """Copy what the jobs import into one directory for ``--pyFiles``, laid out as the
    ``featurestream`` namespace (``udfs/`` as ``featurestream/udfs``, ...)."""
    staged = settings.home / "pyfiles" / "featurestream-src"
    if staged.exists():
        shutil.rmtree(staged)
    (staged / "featurestream").mkdir(parents=True)
    shutil.copyfile(_source("featurestream"), staged / "featurestream" / "__init__.py")
    for name in SHIPPED:
        source, target = _source(name), staged / Path(*name.split("."))
        if source.name == "__init__.py":
            shutil.copytree(source.parent, target,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copyfile(source, target.with_suffix(".py"))
    return staged


def _source(module: str) -> Path:
    """The file of an installed module (``__init__.py`` for a package)."""
    return Path(str(importlib.import_module(module).__file__))


def flink_run_command(settings: Settings, job: str, flink_bin: Path, staged: Path,
                      savepoint: str | None = None, shipped: Sequence[str] = ()) -> list[str]:
    """The ``flink run`` command line submitting ``job`` detached (resuming ``savepoint``;
    with the ``shipped`` dependency options)."""
    module = staged / Path(*JOB_MODULES[job].split("."))
    return flink_run_program(settings, Path(f"{module}.py"), flink_bin, staged, savepoint,
                             shipped=shipped)


def flink_run_program(settings: Settings, script: Path, flink_bin: Path, staged: Path,
                      savepoint: str | None = None, args: Sequence[str] = (),
                      shipped: Sequence[str] = ()) -> list[str]:
    """The ``flink run`` command line running the PyFlink program ``script`` (given ``args``)
    detached, with the staged packages shipped beside it (the benchmark's ceiling jobs too).
    The program's ``main()`` runs in this Python (it has the package); the TaskManagers' in
    ``settings.python_executable``."""
    rest = urlparse(settings.flink_rest_url)
    resume = [] if savepoint is None else ["--fromSavepoint", savepoint]
    return [
        str(flink_bin), "run", "--detached", *resume,
        "--jobmanager", f"{rest.hostname}:{rest.port or 8081}",
        "--python", str(script),
        "--pyFiles", str(staged),
        *shipped,
        "--pyExecutable", settings.python_executable,
        "--pyClientExecutable", sys.executable,
        *args,
    ]


def flink_client(settings: Settings) -> Path:
    """The ``flink`` client: the local stack's clean FLINK_HOME, else the pyflink package's."""
    local = StackPaths(settings.home).flink_home / "bin" / "flink"
    return local if local.exists() else pyflink_dir() / "bin" / "flink"


def submit_job(settings: Settings, job: str, savepoint: str | None = None,
               reset_source_positions: bool = False, with_deps: bool = False,
               echo: ship.Echo = print) -> str:
    """Submit ``job`` (resuming from ``savepoint``, if given; without its Kafka source
    positions if ``reset_source_positions``: a new source epoch; ``with_deps``: shipping its
    third-party dependencies, see :mod:`ship`) and return its Flink job id."""
    settings.load_definitions()  # a mistake is one line here, not a trace from flink run
    if job == "features" and savepoint is not None:
        refuse_unresumable_state(settings)
    if reset_source_positions:
        settings = submissions.next_source_epoch(settings)
    client, staged = flink_client(settings), stage_python_files(settings)
    shipped = (ship.ship_deps(staged, JOB_MODULES[job], settings.home, echo).flink_options()
               if with_deps else [])
    cmd = flink_run_command(settings, job, client, staged, savepoint, shipped)
    if reset_source_positions:
        cmd = submissions.dropping_old_sources(cmd)
    # The job's main() runs in this client and reads exactly these settings (the secret ones
    # from a private file: Flink's client logs the environment it starts Python with).
    with job_environment(settings) as env:
        job_id = submissions.run_flink(cmd, env, settings.flink_rest_url)
    # What `featurestream up` resumes from the job's checkpoints if the JobManager is lost.
    submissions.record(settings.home, submissions.Submission(
        job, job_id, settings.flink_rest_url, tuple(flink_run_command(settings, job, client,
                                                                      staged, shipped=shipped)),
        submissions.public_env(settings), settings.effective_checkpoint_dir))
    return job_id


def submit(settings: Settings, args: argparse.Namespace) -> int:
    """CLI handler: submit, then print the job id and the web UI link."""
    if args.reset_source_positions and not args.from_savepoint:
        raise UserFacingError("--reset-source-positions resumes a savepoint without its Kafka "
                              "positions: add --from-savepoint PATH")
    resume = f" from {args.from_savepoint}" if args.from_savepoint else ""
    resume += " with its source positions reset" if args.reset_source_positions else ""
    print(f"submitting the {args.job} job to {settings.flink_rest_url}{resume} ...", flush=True)
    if args.job == "scoring" and (note := registry_note(settings)):
        print(note)
    job_id = submit_job(settings, args.job, args.from_savepoint, args.reset_source_positions,
                        args.ship_deps)
    print(f"job id: {job_id}")
    print(f"web UI: {settings.flink_rest_url.rstrip('/')}/#/job/running/{job_id}/overview")
    return 0


def registry_note(settings: Settings) -> str | None:
    """A warning when a remote cluster's TaskManagers would look for models in the default
    registry, a directory on this machine's disk."""
    if settings.models_dir or urlparse(settings.flink_rest_url).hostname in LOOPBACK:
        return None
    return (f"note: FEATURESTREAM_MODELS_DIR is unset, so the TaskManagers read models from "
            f"{settings.effective_models_dir} on their own disks; set it to shared storage "
            "every TaskManager and the reader see at the same path")


def running_job_id(settings: Settings, job: str) -> tuple[FlinkRest, str | None]:
    """Flink's REST client and the id of ``job``'s running job (None: it is not running); an
    error naming the setting when Flink cannot be reached."""
    rest = FlinkRest(settings.flink_rest_url)
    try:
        return rest, rest.running_job(JOB_NAMES[job])
    except OSError as exc:
        raise UserFacingError(f"cannot reach Flink at {settings.flink_rest_url} ({exc}); check "
                              "FEATURESTREAM_FLINK_REST_URL or run `featurestream up`") from None


def stop(settings: Settings, args: argparse.Namespace) -> int:
    """CLI handler: stop a running job, with a savepoint when asked (then print its path, for
    ``featurestream submit JOB --from-savepoint PATH``)."""
    name = JOB_NAMES[args.job]
    rest, job_id = running_job_id(settings, args.job)
    if job_id is None:
        raise UserFacingError(f"no {name} job is running at {settings.flink_rest_url}")
    if not args.savepoint:
        print(f"cancelling {name} ({job_id}) ...", flush=True)
        rest.cancel(job_id)
        print("cancelled")
        return 0
    directory = settings.effective_savepoint_dir
    print(f"stopping {name} ({job_id}) with a savepoint in {directory} ...", flush=True)
    try:
        location = rest.stop_with_savepoint(job_id, directory)
    except RuntimeError as exc:  # Flink refused the savepoint (e.g. tasks still deploying)
        raise UserFacingError(f"{exc}\n{name} keeps running: retry once all its tasks run "
                              "(featurestream status)") from None
    print(f"savepoint: {location}")
    print(f"resume with: featurestream submit {args.job} --from-savepoint {location}")
    return 0
