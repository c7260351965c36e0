"""A realistic synthetic event stream: pure, and deterministic for a seed.

Users have Zipf-skewed activity and run sessions that walk a funnel (views -> clicks ->
add_to_cart -> purchase) over a Zipf-skewed catalogue with log-normal prices. Event time advances
as a Poisson process at a simulated rate; a small fraction of events arrive out of order (their
ts lies up to a bound behind the newest ts already emitted).

Per-user latent traits live in :class:`UserProfile` and drive behaviour. One is a planted,
learnable fraud signal: a few users have a ``risk`` (a taken-over account); each of their sessions
is fraudulent with that probability (a quarter of it outside the odd hours, 00-06 UTC). A fraud
session rushes the funnel with few views, buys expensive items and keeps buying (bursts). Its
purchases are the positives of :func:`generate_labelled_events`, the training labels.

A :class:`Shift` moves the stream's distribution mid-way, for the drift demo: after a number of
events, the purchase amounts of a fixed, seeded share of users are multiplied by a factor, and the
model's input ``amount`` no longer looks like its training data.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from featurestream.udfs.contract.events import Event

DEVICES: tuple[tuple[str, float], ...] = (("mobile", 0.60), ("desktop", 0.32), ("tablet", 0.08))
COUNTRIES: tuple[tuple[str, float], ...] = (
    ("US", 0.30), ("DE", 0.12), ("GB", 0.10), ("IN", 0.10), ("FR", 0.08),
    ("BR", 0.08), ("JP", 0.07), ("CA", 0.05), ("ES", 0.05), ("NL", 0.05),
)

_END = "end"
# Funnel: the step after each step, with base weights. Steps into add_to_cart and purchase are
# scaled by the user's purchase propensity; a session always starts with a view.
_NEXT_STEPS: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "view": (("view", "click", _END), (0.55, 0.30, 0.15)),
    "click": (("view", "add_to_cart", _END), (0.50, 0.22, 0.28)),
    "add_to_cart": (("purchase", "view", _END), (0.40, 0.35, 0.25)),
    "purchase": (("view", _END), (0.30, 0.70)),
}
_PROPENSITY_STEPS = frozenset({"add_to_cart", "purchase"})
# A fraud session rushes to checkout and keeps buying; its views pick the dearest of a few items.
_FRAUD_NEXT_STEPS: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "view": (("click", "view", _END), (0.85, 0.10, 0.05)),
    "click": (("add_to_cart", "view", _END), (0.85, 0.10, 0.05)),
    "add_to_cart": (("purchase", _END), (0.95, 0.05)),
    "purchase": (("view", _END), (0.75, 0.25)),
}
_FRAUD_ITEM_DRAWS = 4
RISKY_USER_SHARE = 0.02
ODD_HOURS = range(0, 6)  # UTC hours when a risky user's sessions are most often fraudulent
_PRICE_MEDIAN = 30.0
_PRICE_SIGMA = 0.9


class ShiftError(ValueError):
    """A :class:`Shift` field out of its range: which field, the value and what it must be."""

    def __init__(self, field: str, value: float, requirement: str) -> None:
        super().__init__(f"{field} must be {requirement}, got {value}")
        self.field, self.value, self.requirement = field, value, requirement


@dataclass(frozen=True)
class Shift:
    """From event ``after_events`` on, multiply the purchase amounts of ``user_share`` of the
    users (the same users for a seed) by ``amount_factor``: a distribution shift on purpose."""

    amount_factor: float
    user_share: float = 0.1
    after_events: int = 0

    def __post_init__(self) -> None:
        if not (self.amount_factor > 0 and math.isfinite(self.amount_factor)):
            raise ShiftError("amount_factor", self.amount_factor, "a finite number > 0, e.g. 2")
        if not 0 < self.user_share <= 1:
            raise ShiftError("user_share", self.user_share, "in (0, 1], e.g. 0.1")
        if self.after_events < 0:
            raise ShiftError("after_events", self.after_events, ">= 0")


@dataclass(frozen=True)
class StreamConfig:
    """Shape of the synthetic stream; ``seed=None`` draws a fresh stream each time."""

    users: int = 1_000
    items: int = 10_000
    events_per_second: float = 100.0  # simulated event-time rate, not wall-clock pacing
    start_ts: int = 1_700_000_000_000  # epoch ms of the first event
    out_of_order_fraction: float = 0.02
    max_out_of_order_ms: int = 3_000
    concurrent_sessions: int = 50
    user_skew: float = 0.9  # Zipf exponent of user activity
    item_skew: float = 1.0  # Zipf exponent of item popularity
    seed: int | None = None
    shift: Shift | None = None

    def __post_init__(self) -> None:
        for name in ("users", "items", "max_out_of_order_ms", "concurrent_sessions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.events_per_second > 0:
            raise ValueError(f"events_per_second must be > 0, got {self.events_per_second}")
        if not 0 <= self.out_of_order_fraction <= 1:
            raise ValueError(
                f"out_of_order_fraction must be in [0, 1], got {self.out_of_order_fraction}"
            )


@dataclass(frozen=True)
class UserProfile:
    """A user's fixed attributes and latent behavioural traits."""

    user_id: str
    device: str
    country: str
    purchase_propensity: float  # scales the odds of add_to_cart and purchase steps
    risk: float = 0.0  # chance that a session (in the odd hours) is fraudulent


@dataclass
class _Session:
    user: UserProfile
    session_id: str
    step: str = ""  # the last emitted event type ("" before the first)
    item: int = 0  # catalogue index of the item in focus (set by every view)
    fraud: bool = False


def user_id(index: int, count: int) -> str:
    """The id of user ``index`` of ``count`` (zero-padded, so ids sort by index)."""
    return f"user-{index:0{len(str(count - 1))}d}"


def make_users(count: int, rng: random.Random) -> list[UserProfile]:
    """``count`` user profiles, most active first (ids sort in the same order)."""
    devices, device_weights = zip(*DEVICES, strict=True)
    countries, country_weights = zip(*COUNTRIES, strict=True)
    return [
        UserProfile(
            user_id=user_id(index, count),
            device=rng.choices(devices, device_weights)[0],
            country=rng.choices(countries, country_weights)[0],
            purchase_propensity=rng.lognormvariate(0.0, 0.5),
            risk=rng.uniform(0.1, 0.4) if rng.random() < RISKY_USER_SHARE else 0.0,
        )
        for index in range(count)
    ]


class _ZipfSampler:
    """Draws indexes 0..n-1 with probability proportional to 1 / (index + 1) ** skew."""

    def __init__(self, n: int, skew: float) -> None:
        self._cumulative = list(itertools.accumulate((i + 1) ** -skew for i in range(n)))

    def draw(self, rng: random.Random) -> int:
        point = rng.random() * self._cumulative[-1]
        return min(bisect.bisect_right(self._cumulative, point), len(self._cumulative) - 1)


def shifted_users(config: StreamConfig) -> frozenset[str]:
    """The ids of the users :attr:`StreamConfig.shift` applies to (none without a shift).

    Drawn by their own generator from the seed, so the stream's other draws stay the same with
    and without a shift; a share of the users, whatever their activity.
    """
    if config.shift is None:
        return frozenset()
    count = max(1, round(config.shift.user_share * config.users))
    chosen = random.Random(config.seed).sample(range(config.users), count)
    return frozenset(user_id(index, config.users) for index in chosen)


def generate_events(config: StreamConfig) -> Iterator[Event]:
    """An endless stream of events shaped by ``config`` (use ``itertools.islice`` to cut it)."""
    return (event for event, _ in generate_labelled_events(config))


def generate_labelled_events(config: StreamConfig) -> Iterator[tuple[Event, bool]]:
    """The stream of :func:`generate_events`, each event with its fraud label.

    The label is True exactly for the purchases of fraud sessions.
    """
    events = _unshifted(config)
    if config.shift is None:
        return events
    return _shift(events, config.shift, shifted_users(config))


def _shift(events: Iterator[tuple[Event, bool]], shift: Shift,
           users: frozenset[str]) -> Iterator[tuple[Event, bool]]:
    for index, (event, label) in enumerate(events):
        if index >= shift.after_events and event.amount is not None and event.user_id in users:
            event = event._replace(amount=round(event.amount * shift.amount_factor, 2))
        yield event, label


def _unshifted(config: StreamConfig) -> Iterator[tuple[Event, bool]]:
    rng = random.Random(config.seed)
    users = make_users(config.users, rng)
    pick_user = _ZipfSampler(config.users, config.user_skew)
    pick_item = _ZipfSampler(config.items, config.item_skew)
    prices = [round(rng.lognormvariate(math.log(_PRICE_MEDIAN), _PRICE_SIGMA), 2)
              for _ in range(config.items)]
    session_numbers = itertools.count()
    active: list[_Session] = []
    clock_ms = float(config.start_ts)
    newest_ts: int | None = None
    while True:
        while len(active) < config.concurrent_sessions:
            user = users[pick_user.draw(rng)]
            active.append(_Session(user, f"s-{next(session_numbers)}",
                                   fraud=_starts_fraud(user, clock_ms, rng)))
        index = rng.randrange(len(active))
        session = active[index]
        step = _next_step(session, rng)
        if step == _END:
            active[index] = active[-1]
            active.pop()
            continue
        if step == "view":
            session.item = pick_item.draw(rng)
            if session.fraud:
                draws = [session.item, *(pick_item.draw(rng) for _ in range(_FRAUD_ITEM_DRAWS - 1))]
                session.item = max(draws, key=prices.__getitem__)
        session.step = step
        clock_ms += rng.expovariate(config.events_per_second) * 1000.0
        ts = int(clock_ms)
        if newest_ts is not None and rng.random() < config.out_of_order_fraction:
            ts = newest_ts - rng.randint(1, config.max_out_of_order_ms)
        else:
            newest_ts = ts if newest_ts is None else max(newest_ts, ts)
        yield Event(
            event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            user_id=session.user.user_id,
            event_type=step,
            item_id=f"item-{session.item}",
            amount=prices[session.item] if step == "purchase" else None,
            ts=ts,
            context={"device": session.user.device, "country": session.user.country,
                     "session_id": session.session_id},
        ), step == "purchase" and session.fraud


def _starts_fraud(user: UserProfile, clock_ms: float, rng: random.Random) -> bool:
    if not user.risk:
        return False
    odd_hour = int(clock_ms // 3_600_000 % 24) in ODD_HOURS
    return rng.random() < user.risk * (1.0 if odd_hour else 0.25)


def _next_step(session: _Session, rng: random.Random) -> str:
    if not session.step:
        return "view"
    if session.fraud:
        return rng.choices(*_FRAUD_NEXT_STEPS[session.step])[0]
    steps, weights = _NEXT_STEPS[session.step]
    propensity = session.user.purchase_propensity
    scaled = [w * propensity if s in _PROPENSITY_STEPS else w
              for s, w in zip(steps, weights, strict=True)]
    return rng.choices(steps, scaled)[0]
