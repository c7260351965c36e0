"""Variant assignment: stable, proportional to the weights, and minimal moves on re-weighting."""

from __future__ import annotations

from collections import Counter

import pytest

from featurestream.udfs.scoring.variants import (
    Arm,
    VariantAssigner,
    parse_experiment,
    parse_version,
    user_point,
)

USERS = [f"user-{i}" for i in range(40_000)]


def test_parse_experiment_and_versions() -> None:
    assert parse_experiment("v3:90, v4:10") == (Arm(3, 90), Arm(4, 10))
    assert parse_experiment("3:1") == (Arm(3, 1),)
    assert parse_experiment("") == ()
    assert parse_version("v12") == 12


@pytest.mark.parametrize("bad", ["v3", "v3:0", "v3:x", "vx:5", "v3:50,v3:50", "v0:1"])
def test_parse_experiment_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_experiment(bad)


def test_user_point_is_a_fixed_function_of_the_id() -> None:
    # blake2b-64 of the UTF-8 id / 2**64: any process, any language, any restart.
    assert user_point("user-1") == pytest.approx(0.6041924073669338, rel=1e-12)
    assert all(0 <= user_point(u) < 1 for u in USERS[:1000])


@pytest.mark.parametrize("weights", [(90, 10), (50, 50), (70, 20, 10), (1, 3)])
def test_split_follows_the_weights(weights: tuple[int, ...]) -> None:
    arms = tuple(Arm(v + 1, w) for v, w in enumerate(weights))
    counts = Counter(VariantAssigner(arms).assign(u).version for u in USERS)
    for arm in arms:
        share = counts[arm.version] / len(USERS)
        assert share == pytest.approx(arm.weight / sum(weights), abs=0.01), (arm, share)


def test_assignment_is_stable_and_reweighting_moves_few_users() -> None:
    before = VariantAssigner(parse_experiment("v3:90,v4:10"))
    again = VariantAssigner(parse_experiment("v3:90,v4:10"))
    after = VariantAssigner(parse_experiment("v3:80,v4:20"))
    assert all(before.assign(u) == again.assign(u) for u in USERS)
    moved = [u for u in USERS if before.assign(u).version != after.assign(u).version]
    assert len(moved) / len(USERS) == pytest.approx(0.10, abs=0.01)
    assert all(before.assign(u).version == 3 and after.assign(u).version == 4 for u in moved)
