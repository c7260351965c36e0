"""Model rollout as a registry record: which versions serve, with which weights, and the shadow.

``featurestream models promote | canary | shadow | rollback`` write an :class:`Experiment` into
the registry directory, in ``<name>-experiments.json`` (a :class:`History`: every record still in
effect or restorable, the last one current). The file is written to a temporary file and renamed,
so a reader sees the old history or the new one, never half of one; the rename changes the
directory, which is the registry's change marker, so the scoring job's next poll picks it up.

Precedence: the current record when the file has one, else the settings
(``FEATURESTREAM_EXPERIMENT``, ``FEATURESTREAM_SHADOW_MODEL``): teams that never write a record
keep configuring the split as before. :func:`resolve` is the one rule that turns either into the
live versions; the scoring job, the drift endpoint and ``featurestream status`` all use it, so
they agree after a ``promote``.
"""

from __future__ import annotations

import fcntl
import getpass
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import msgspec

from featurestream.udfs.scoring.model_registry import ModelRegistry
from featurestream.udfs.scoring.variants import (
    Arm,
    parse_experiment,
    parse_version,
    version_label,
)

_ID = re.compile(r"^exp-([1-9][0-9]*)$")


class ExperimentError(ValueError):
    """A record or history that cannot be used, or a change that cannot be made; the message
    names the fix."""


class Experiment(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One rollout decision: the arms (version and relative weight; users split by
    :class:`~udfs.scoring.variants.VariantAssigner`), the shadow version or None, who made it,
    when (epoch ms) and the command that did (``canary v2 10``)."""

    id: str
    arms: tuple[Arm, ...]
    shadow: int | None
    who: str
    when: int
    note: str = ""

    def validate(self) -> None:
        """Raise ExperimentError naming the first inconsistency."""
        if not _ID.match(self.id):
            raise ExperimentError(f"experiment id {self.id!r}: expected exp-<n>")
        if not self.arms:
            raise ExperimentError(f"{self.id}: an experiment needs at least one arm")
        for arm in self.arms:
            if type(arm.version) is not int or arm.version < 1:
                raise ExperimentError(f"{self.id}: version {arm.version!r} is not >= 1")
            if type(arm.weight) is not int or arm.weight < 1:
                raise ExperimentError(f"{self.id}: weight {arm.weight!r} of "
                                      f"{version_label(arm.version)} is not a positive integer")
        if len({arm.version for arm in self.arms}) != len(self.arms):
            raise ExperimentError(f"{self.id}: each version may be one arm only")
        if self.shadow is not None and (type(self.shadow) is not int or self.shadow < 1):
            raise ExperimentError(f"{self.id}: shadow {self.shadow!r} is not a version >= 1")
        if self.shadow in {arm.version for arm in self.arms}:
            raise ExperimentError(f"{self.id}: shadow {version_label(self.shadow or 0)} is "
                                  "also served; a shadow is a version that is not")

    @property
    def number(self) -> int:
        """``exp-7`` -> 7."""
        match = _ID.match(self.id)
        return int(match.group(1)) if match else 0


class History(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The records that can still be restored, oldest first (the last is current), and the
    number the next one takes (ids only increase, also after a rollback)."""

    next_id: int = 1
    records: tuple[Experiment, ...] = ()

    @property
    def current(self) -> Experiment | None:
        """The record in effect (None: the settings decide)."""
        return self.records[-1] if self.records else None

    def validate(self) -> None:
        """Raise ExperimentError naming the first inconsistency."""
        for record in self.records:
            record.validate()
        numbers = [record.number for record in self.records]
        if numbers != sorted(set(numbers)) or any(n >= self.next_id for n in numbers):
            raise ExperimentError(f"ids {[r.id for r in self.records]} must increase and stay "
                                  f"below next_id {self.next_id}")

    def add(self, arms: Sequence[Arm], shadow: int | None, note: str, who: str,
            when_ms: int) -> History:
        """This history with a new current record (validated)."""
        record = Experiment(f"exp-{self.next_id}", tuple(arms), shadow, who, when_ms, note)
        record.validate()
        return History(self.next_id + 1, (*self.records, record))

    def rolled_back(self) -> History:
        """This history without its current record: the previous one (or, without one, the
        settings) is in effect again."""
        if not self.records:
            raise ExperimentError("nothing to roll back: no experiment record is in effect "
                                  "(the settings decide the split)")
        return History(self.next_id, self.records[:-1])


_decoder = msgspec.json.Decoder(History)
_encoder = msgspec.json.Encoder()


def history_path(registry: ModelRegistry) -> Path:
    """Where ``registry``'s model keeps its experiment records."""
    return registry.directory / f"{registry.name}-experiments.json"


def read_history(registry: ModelRegistry) -> History:
    """The model's history (empty when none was written; ExperimentError when unreadable)."""
    path = history_path(registry)
    try:
        history = _decoder.decode(path.read_bytes())
        history.validate()
    except FileNotFoundError:
        return History()
    except (OSError, msgspec.DecodeError, msgspec.ValidationError, ExperimentError) as exc:
        raise ExperimentError(f"{path}: {exc}; fix or remove the file (then the settings "
                              "decide the split)") from None
    return history


def history_marker(registry: ModelRegistry) -> tuple[int, int, int]:
    """Changes at every write of the history (a rename: a new inode), also within one tick of
    the clock that stamps the directory's mtime, which alone could miss a quick second write."""
    try:
        stat = history_path(registry).stat()
    except OSError:  # none yet (or unreadable: read_history says why)
        return 0, 0, 0
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def write_history(registry: ModelRegistry, history: History) -> None:
    """Replace the model's history atomically (a temporary file renamed into place)."""
    history.validate()
    path = history_path(registry)
    registry.directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=registry.directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(msgspec.json.format(_encoder.encode(history), indent=2))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_held = threading.local()  # the history locks this thread holds (by path): re-entrant


@contextmanager
def changing(registry: ModelRegistry) -> Iterator[None]:
    """Hold the model's history lock (``flock`` on a file beside it) for a read-decide-write:
    two ``featurestream models`` commands at once must not both decide from the same history
    (one's change lost). Re-entrant within a thread: :func:`record` inside it takes it too."""
    registry.directory.mkdir(parents=True, exist_ok=True)
    lock = registry.directory / f".{history_path(registry).name}.lock"
    held: set[Path] = _held.__dict__.setdefault("paths", set())
    if lock in held:
        yield
        return
    with open(lock, "a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)  # released when closed
        held.add(lock)
        try:
            yield
        finally:
            held.discard(lock)


def record(registry: ModelRegistry, arms: Sequence[Arm], shadow: int | None, note: str,
           who: str | None = None, when_ms: int | None = None) -> Experiment:
    """Make ``arms`` and ``shadow`` the model's current record (written by ``who``, default the
    OS user, at ``when_ms``, default now); returns it."""
    with changing(registry):
        history = read_history(registry).add(
            arms, shadow, note, who or _os_user(),
            int(time.time() * 1000) if when_ms is None else when_ms)
        write_history(registry, history)
    return history.records[-1]


def _os_user() -> str:
    """The login name; a container user without a passwd entry is its uid."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid {os.getuid()}"


def roll_back(registry: ModelRegistry) -> Experiment | None:
    """Drop the current record; returns the one in effect again (None: the settings)."""
    with changing(registry):
        history = read_history(registry).rolled_back()
        write_history(registry, history)
    return history.current


@dataclass(frozen=True)
class Split:
    """The settings' split: ``FEATURESTREAM_EXPERIMENT`` arms (none: the latest version) and
    ``FEATURESTREAM_SHADOW_MODEL``; in effect while the registry holds no record."""

    arms: tuple[Arm, ...] = ()
    shadow: int | None = None

    @classmethod
    def parse(cls, experiment: str, shadow_model: str) -> Split:
        """From the settings' texts (``v3:90,v4:10``, ``v5``; ValueError if malformed)."""
        return cls(parse_experiment(experiment),
                   parse_version(shadow_model) if shadow_model else None)


@dataclass(frozen=True)
class Rollout:
    """Which versions of a model are live: the arms splitting users (none: every user gets the
    ``latest`` published version), the shadow, the experiment record that decided (None: the
    settings) and, when the record could not be read, why (the settings decided instead)."""

    arms: tuple[Arm, ...]
    shadow: int | None
    latest: int | None
    experiment: str | None
    problem: str | None = None

    @property
    def shares(self) -> dict[int, float]:
        """The served versions and the share of users each serves (empty: nothing to serve)."""
        if self.arms:
            total = sum(arm.weight for arm in self.arms)
            return {arm.version: arm.weight / total for arm in self.arms}
        return {} if self.latest is None else {self.latest: 1.0}

    @property
    def live(self) -> set[int]:
        """The served versions and the shadow."""
        live = set(self.shares)
        if self.shadow is not None:
            live.add(self.shadow)
        return live


def resolve(current: Experiment | None, default: Split, published: Sequence[int]) -> Rollout:
    """The live versions: the current record's when there is one, else the settings' arms and
    shadow; without arms, the latest of ``published`` (oldest first)."""
    latest = published[-1] if published else None
    if current is not None:
        return Rollout(current.arms, current.shadow, latest, current.id)
    return Rollout(default.arms, default.shadow, latest, None)


def live_rollout(registry: ModelRegistry, default: Split) -> Rollout:
    """:func:`resolve` on what ``registry`` holds now; an unreadable record counts as none,
    with its error as the rollout's ``problem``."""
    try:
        current, problem = read_history(registry).current, None
    except ExperimentError as exc:
        current, problem = None, str(exc)
    return replace(resolve(current, default, registry.versions()), problem=problem)
