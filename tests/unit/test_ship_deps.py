"""What ``featurestream submit --ship-deps`` ships: the pinned closure of what the staged code
imports beyond PyFlink's own requirements, built once per lock."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement

from featurestream.cli import build_parser, ship
from featurestream.cli.ship import (
    Lock,
    closure,
    imported_modules,
    job_requirements,
    lock_for,
    ship_deps,
)
from featurestream.cli.submit import JOB_MODULES, registry_note, stage_python_files
from featurestream.errors import UserFacingError
from featurestream.settings import Settings

JOB = JOB_MODULES["features"]


class FakeDistributions:
    """Installed distributions as a dict: name -> (version, requirement lines)."""

    def __init__(self, dists: dict[str, tuple[str, list[str]]]) -> None:
        self.dists = dists

    def version(self, name: str) -> str:
        return self.dists[name][0]

    def requires(self, name: str) -> list[str]:
        return self.dists[name][1]


DISTS = FakeDistributions({
    "app": ("1.0", ["redis[hiredis]>=5", "lib", 'pytest; extra == "test"']),
    "redis": ("5.2", ['hiredis>=3; extra == "hiredis"', 'async-timeout; python_version < "3"']),
    "hiredis": ("3.1", []),
    "lib": ("2.0", ["base", "app"]),  # a cycle back to app
    "base": ("0.3", []),
    "pytest": ("8.0", []),
})


def test_closure_follows_extras_and_markers_once() -> None:
    assert closure([Requirement("app")], DISTS) == {
        "app": "1.0", "base": "0.3", "hiredis": "3.1", "lib": "2.0", "redis": "5.2"}
    assert closure([Requirement("redis")], DISTS) == {"redis": "5.2"}
    assert closure([Requirement("redis"), Requirement("redis[hiredis]")], DISTS) == {
        "hiredis": "3.1", "redis": "5.2"}


def test_job_requirements_keep_imported_distributions_but_not_pyflinks() -> None:
    own = ["apache-flink==2.0.2", "flink-jars==2.0", "redis[hiredis]>=5", "tqdm>=4",
           'pytest>=8; extra == "test"', "Pydantic-Settings>=2"]
    providers = {"pyflink": ["apache-flink", "flink-jars"], "redis": ["redis"],
                 "tqdm": ["tqdm"], "pytest": ["pytest"], "pydantic_settings":
                 ["pydantic_settings"]}
    kept = job_requirements({"pyflink", "redis", "pytest", "pydantic_settings", "json"},
                            own, providers)
    assert [str(r) for r in kept] == ["redis[hiredis]>=5", "Pydantic-Settings>=2"]


def test_imported_modules_are_those_the_job_reaches_lazy_ones_included(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("import orjson\n")
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "job.py").write_text("import os.path\nfrom pkg.sub import a\n")
    (tmp_path / "pkg" / "sub" / "a.py").write_text(
        "from msgspec import Struct\ndef f():\n    import lightgbm.basic\n")
    (tmp_path / "pkg" / "unreached.py").write_text("import scipy\n")
    assert imported_modules(tmp_path, "pkg.job") == {"os", "pkg", "msgspec", "lightgbm",
                                                     "orjson"}


def test_the_lock_names_its_pins_and_the_key_changes_with_them() -> None:
    lock = Lock({"hiredis": "3.1"}, {"hiredis": "3.1", "numpy": "2.1.3"})
    assert lock.requirements_text() == "hiredis==3.1\n"
    assert lock.key == Lock({}, dict(lock.wheels)).key
    assert lock.key != Lock(lock.shipped, {"hiredis": "3.1", "numpy": "2.1.2"}).key


def test_the_jobs_lock_ships_their_dependencies_beyond_pyflink(tmp_path: Path) -> None:
    lock = lock_for(stage_python_files(Settings().replace(home=tmp_path)), JOB)
    assert {"pydantic-settings", "msgspec", "lightgbm", "hiredis"} <= lock.shipped.keys()
    # PyFlink's (the cluster has them), the jars and this package itself never ship.
    assert not {"apache-flink", "apache-beam", "pandas", "pyarrow",
                "shigawire-apache-flink-libraries", "featurestream"} & lock.shipped.keys()
    assert lock.shipped.items() <= lock.wheels.items()
    assert "numpy" in lock.wheels  # lightgbm's: pip --ignore-installed installs it too
    # Beam (PyFlink's) requires redis too, but any 5.x: this package's exact pin ships.
    assert lock.shipped["redis"] == "5.3.1"


def test_an_exact_pin_ships_even_when_pyflink_requires_the_distribution(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dists = FakeDistributions({  # redis through a PyFlink requirement, beam its own
        ship.PACKAGE: ("1.0", ["redis==5.2", "lib>=2", "beam==2.6"]),
        ship.PYFLINK: ("2.0", ["beam", "lib"]),
        "beam": ("2.6", ["redis>=5"]), "redis": ("5.2", []), "lib": ("2.0", []),
    })
    (tmp_path / "job.py").write_text("import redis\nimport lib\nimport beam\n")
    monkeypatch.setattr(ship.importlib.metadata, "packages_distributions",
                        lambda: {"redis": ["redis"], "lib": ["lib"], "beam": ["beam"]})
    assert lock_for(tmp_path, "job", dists).shipped == {"redis": "5.2"}


def test_a_second_ship_reuses_the_wheelhouse(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Path] = []

    def fake_pip_wheel(pins: dict[str, str], directory: Path) -> None:
        built.append(directory)
        for name, version in pins.items():
            (directory / f"{name}-{version}-py3-none-any.whl").write_text("wheel")

    monkeypatch.setattr(ship, "_pip_wheel", fake_pip_wheel)
    staged = stage_python_files(Settings().replace(home=tmp_path))
    lines: list[str] = []
    first = ship_deps(staged, JOB, tmp_path, lines.append)
    second = ship_deps(staged, JOB, tmp_path, lines.append)
    assert first == second and len(built) == 1
    assert "cached wheelhouse" in lines[-1]
    assert first.flink_options() == ["--pyRequirements",
                                     f"{first.requirements}#{first.wheelhouse}"]
    assert first.requirements.read_text() == lock_for(staged, JOB).requirements_text()


def test_remote_scoring_without_a_models_dir_gets_a_note() -> None:
    remote = Settings().replace(flink_rest_url="http://flink.internal:8081")
    assert "FEATURESTREAM_MODELS_DIR" in (registry_note(remote) or "")
    assert registry_note(remote.replace(models_dir="/mnt/models")) is None
    assert registry_note(Settings().replace(flink_rest_url="http://127.0.0.1:8081")) is None


def test_a_failed_build_leaves_nothing_to_reuse(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_pip_wheel(pins: dict[str, str], directory: Path) -> None:
        (directory / "half.whl").write_text("half")
        raise UserFacingError("pip wheel could not fetch the pinned dependencies")

    monkeypatch.setattr(ship, "_pip_wheel", failing_pip_wheel)
    staged = stage_python_files(Settings().replace(home=tmp_path))
    with pytest.raises(UserFacingError):
        ship_deps(staged, JOB, tmp_path, lambda line: None)
    assert list((tmp_path / ship.CACHE_DIR).iterdir()) == []


def test_the_cli_takes_ship_deps_and_leaves_it_off_by_default() -> None:
    parser = build_parser()
    assert parser.parse_args(["submit", "features", "--ship-deps"]).ship_deps is True
    assert parser.parse_args(["submit", "scoring"]).ship_deps is False
