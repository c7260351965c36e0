"""``featurestream submit JOB --ship-deps``: the jobs' third-party dependencies travel with the
job, for clusters whose TaskManager Python has PyFlink but not this package's dependencies.

What ships: the distributions the job's code imports (its module and every staged module it
reaches; as this package requires them, extras included) and all they require, pinned to the
versions installed here, minus what PyFlink requires (every PyFlink TaskManager has those, at
versions of its own) unless this package pins it exactly and PyFlink does not require it
directly (redis: ``jobs/node_pipelines.py`` uses its internals, and Beam's ``redis<6`` would
leave a TaskManager any 5.x; Beam itself, PyFlink's own, is the cluster's).
Flink installs them on each TaskManager with ``pip install --ignore-installed --prefix <dir>
-r requirements.txt --no-index --find-links <wheelhouse>`` (``--pyRequirements
requirements.txt#wheelhouse``). As pip ignores what is installed there, the wheelhouse holds
the whole closure of the requirements (numpy too), so no TaskManager needs a package index.
The code itself still travels as ``--pyFiles``.

The wheelhouse is built once per lock (the pins, this Python and platform) under
``<home>/ship-deps/<key>``: a second submit reuses it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from featurestream.errors import UserFacingError

PACKAGE = "featurestream"
PYFLINK = "apache-flink"
PYFLINK_MODULE = "pyflink"  # its jars' distributions ship it too: none of them is shipped
CACHE_DIR = "ship-deps"
REQUIREMENTS = "requirements.txt"
WHEELHOUSE = "wheelhouse"
BUILD_TIMEOUT_S = 1800
Echo = Callable[[str], None]


class Distributions(Protocol):
    """What the installed environment says about a distribution (a port: tests use a dict)."""

    def version(self, name: str) -> str: ...

    def requires(self, name: str) -> list[str]: ...


class InstalledDistributions:
    """The environment running this command (``importlib.metadata``)."""

    def version(self, name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            raise UserFacingError(f"{name} is required but not installed here: "
                                  f"pip install -e . installs it") from None

    def requires(self, name: str) -> list[str]:
        return importlib.metadata.requires(name) or []


def closure(requirements: Iterable[Requirement], dists: Distributions) -> dict[str, str]:
    """Every distribution ``requirements`` need, transitively (each with the extras asked of
    it, markers evaluated for this Python), by canonical name -> installed version."""
    extras: dict[str, set[str]] = {}
    pending = list(requirements)
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        asked = set(requirement.extras)
        if name in extras and asked <= extras[name]:
            continue
        extras[name] = extras.get(name, set()) | asked
        for line in dists.requires(name):
            needed = Requirement(line)
            if needed.marker is None or any(needed.marker.evaluate({"extra": extra})
                                            for extra in ("", *extras[name])):
                pending.append(needed)
    return {name: dists.version(name) for name in sorted(extras)}


def imported_modules(staged: Path, root: str) -> set[str]:
    """The top-level modules imported by ``root`` and every staged module it reaches (lazy
    imports in functions included; the code imports absolutely): the features job needs
    neither lightgbm nor llvmlite, which the scoring job loads."""
    found: set[str] = set()
    seen: set[str] = set()
    pending = [root]
    while pending:
        module = pending.pop()
        source = _module_file(staged, module)
        if module in seen or source is None:
            continue
        seen.add(module)
        parts = module.split(".")
        pending += [".".join(parts[:i]) for i in range(1, len(parts))]  # parents' __init__
        for name in _imports(source):
            found.add(name.split(".")[0])
            pending.append(name)
    return found


def _module_file(staged: Path, module: str) -> Path | None:
    """The staged file of ``module`` (``__init__.py`` for a package), if staged."""
    base = staged / Path(*module.split("."))
    return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()), None)


def _imports(source: Path) -> set[str]:
    """What a file imports: ``a.b`` for ``import a.b``; ``a`` and ``a.x`` for ``from a import
    x`` (``a.x`` may be a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return names


def job_requirements(modules: Iterable[str], own: Iterable[str],
                     providers: Mapping[str, list[str]]) -> list[Requirement]:
    """This package's requirements (``own``) whose distribution provides one of ``modules``,
    except PyFlink's own distributions (given by the cluster, jars included)."""
    pyflink = {canonicalize_name(d) for d in providers.get(PYFLINK_MODULE, [])}
    imported = {canonicalize_name(d) for module in modules for d in providers.get(module, [])}
    requirements = [Requirement(line) for line in own]
    return [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})
            if canonicalize_name(r.name) in imported - pyflink]


@dataclass(frozen=True)
class Lock:
    """What the TaskManagers install (``shipped``) and what the wheelhouse must hold for it
    (``wheels``: the shipped pins' whole closure), both name -> version."""

    shipped: dict[str, str]
    wheels: dict[str, str]

    @property
    def key(self) -> str:
        """Names the wheelhouse: the pins, this Python's version and platform."""
        text = "\n".join([sys.implementation.cache_tag or "", sysconfig.get_platform(),
                          *(f"{n}=={v}" for n, v in self.wheels.items())])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def requirements_text(self) -> str:
        """``requirements.txt`` for the TaskManagers: the shipped pins."""
        return "".join(f"{name}=={version}\n" for name, version in self.shipped.items())


def lock_for(staged: Path, job_module: str, dists: Distributions | None = None) -> Lock:
    """The lock of what the job's staged code needs beyond PyFlink, at the versions installed
    here."""
    dists = dists or InstalledDistributions()
    wanted = job_requirements(imported_modules(staged, job_module), dists.requires(PACKAGE),
                              importlib.metadata.packages_distributions())
    given = closure([Requirement(PYFLINK)], dists)
    pyflinks = {canonicalize_name(Requirement(line).name) for line in dists.requires(PYFLINK)}
    exact = {canonicalize_name(r.name) for r in wanted  # the code needs this very version
             if any(spec.operator in ("==", "===") for spec in r.specifier)} - pyflinks
    shipped = {n: v for n, v in closure(wanted, dists).items() if n not in given or n in exact}
    wheels = closure([Requirement(f"{n}=={v}") for n, v in shipped.items()], dists)
    return Lock(shipped, wheels)


@dataclass(frozen=True)
class ShippedDeps:
    """A built wheelhouse and the requirements file naming what to install from it."""

    requirements: Path
    wheelhouse: Path

    def flink_options(self) -> list[str]:
        """The ``flink run`` options shipping both."""
        return ["--pyRequirements", f"{self.requirements}#{self.wheelhouse}"]

    def size_bytes(self) -> int:
        """What ships: the wheels and the requirements file."""
        return sum(p.stat().st_size for p in (self.requirements,
                                              *self.wheelhouse.iterdir()))


def ship_deps(staged: Path, job_module: str, home: Path, echo: Echo = print) -> ShippedDeps:
    """The wheelhouse for the dependencies of the job ``job_module`` (staged), built (one line
    per step) unless the cache under ``home`` has it for the same lock."""
    echo("ship-deps 1/3: pinning the job's dependencies beyond PyFlink's ...")
    lock = lock_for(staged, job_module)
    target = home / CACHE_DIR / lock.key
    built = ShippedDeps(target / REQUIREMENTS, target / WHEELHOUSE)
    echo(f"ship-deps 2/3: {len(lock.shipped)} distributions to install, {len(lock.wheels)} "
         f"wheels with their requirements (lock {lock.key})")
    if built.requirements.exists():
        echo(f"ship-deps 3/3: cached wheelhouse {target} ({_mb(built.size_bytes())})")
        return built
    echo(f"ship-deps 3/3: building the wheelhouse in {target} (pip wheel) ...")
    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f"{lock.key}.partial-", dir=target.parent))
    try:
        (partial / WHEELHOUSE).mkdir()
        _pip_wheel(lock.wheels, partial / WHEELHOUSE)
        (partial / REQUIREMENTS).write_text(lock.requirements_text())
        partial.rename(target)  # complete or absent: an interrupted build is never reused
    except OSError:
        if not built.requirements.exists():  # else a concurrent submit built it first
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    echo(f"ship-deps: wheelhouse ready in {time.monotonic() - started:.1f} s "
         f"({_mb(built.size_bytes())})")
    return built


def _pip_wheel(pins: Mapping[str, str], directory: Path) -> None:
    """Download (or build) one wheel per pin, without their dependencies (pinned already)."""
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
               "--wheel-dir", str(directory), *(f"{n}=={v}" for n, v in pins.items())]
    result = subprocess.run(command, capture_output=True, text=True, check=False,
                            timeout=BUILD_TIMEOUT_S)
    if result.returncode != 0:
        lines = (result.stdout + result.stderr).strip().splitlines()
        raise UserFacingError("pip wheel could not fetch the pinned dependencies; check the "
                              "package index pip uses here (pip config list):\n"
                              + "\n".join(lines[-12:]))


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
