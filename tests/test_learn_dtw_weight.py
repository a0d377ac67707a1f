"""DTW distance and the expert-weight forms on hand-computable cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from leed_traffic.learn.dtw import (
    dtw_distance,
    dtw_distances,
    phase_features,
    subsample,
    trajectory_features,
)
from leed_traffic.learn.expert_weight import (
    base_weight,
    discounted_returns,
    expert_weight,
    neighbour_volatility,
    reled_mask,
    return_decay,
    volatility_factor,
)


def naive_dtw(a: np.ndarray, b: np.ndarray, band: float | None = None) -> float:
    """Textbook O(nm) double loop, for reference (same tie-break: diagonal first)."""
    a, b = np.atleast_2d(a.T).T, np.atleast_2d(b.T).T
    n, m = len(a), len(b)
    D = np.full((n + 1, m + 1), np.inf)
    L = np.zeros((n + 1, m + 1))
    D[0, 0] = 0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            if band is not None and abs(i / n - j / m) > band + 1 / min(n, m) + 1e-12:
                continue
            c = float(np.linalg.norm(a[i - 1] - b[j - 1]))
            opts = [(D[i - 1, j - 1], L[i - 1, j - 1]), (D[i - 1, j], L[i - 1, j]),
                    (D[i, j - 1], L[i, j - 1])]
            k = int(np.argmin([o[0] for o in opts]))
            D[i, j], L[i, j] = c + opts[k][0], opts[k][1] + 1
    return D[n, m] / L[n, m]


def test_dtw_batch_matches_naive_for_mixed_shapes_and_bands() -> None:
    """The batched banded solver groups pairs by shape; every pair must equal the textbook DP."""
    rng = np.random.default_rng(1)
    shapes = [(12, 12), (12, 12), (15, 6), (6, 15), (20, 17), (12, 12), (1, 5), (5, 1)]
    pairs = [(rng.random((n, 2)), rng.random((m, 2))) for n, m in shapes]
    for band in (None, 0.0, 0.05, 0.3):
        got = dtw_distances(pairs, band)
        want = [naive_dtw(a, b, band) for a, b in pairs]
        assert got == pytest.approx(want, abs=1e-12)


def test_dtw_hand_cases() -> None:
    assert dtw_distance([0, 1, 2], [0, 1, 2]) == 0.0
    assert dtw_distance([0, 1, 2], [0, 1, 1, 2]) == 0.0  # a repeat is warped away
    assert dtw_distance([0, 0, 0], [1, 1, 1]) == pytest.approx(1.0)  # 3 x cost 1 / 3 steps
    assert dtw_distance([0, 2], [1]) == pytest.approx(1.0)  # (1+1) / 2 steps
    # [0, 3] vs [0, 1, 3]: path (1,1)=0, (1,2)=1 or (2,2)=2 -> take 1, (2,3)=0: total 1 over 3 steps
    assert dtw_distance([0, 3], [0, 1, 3]) == pytest.approx(1 / 3)


def test_dtw_matches_naive_reference_with_and_without_band() -> None:
    rng = np.random.default_rng(0)
    for n, m in [(7, 7), (9, 5), (4, 11)]:
        a, b = rng.random((n, 3)), rng.random((m, 3))
        for band in (None, 0.0, 0.2):
            assert dtw_distance(a, b, band) == pytest.approx(naive_dtw(a, b, band), abs=1e-12)
    # a tight band can only increase the distance (fewer admissible paths)
    a, b = rng.random((30, 2)), rng.random((30, 2))
    assert dtw_distance(a, b, 0.0) >= dtw_distance(a, b, None) - 1e-12


def test_phase_features_cost_one_per_mismatch() -> None:
    f = phase_features(np.array([0, 1]), 3)
    assert np.linalg.norm(f[0] - f[1]) == pytest.approx(1.0)
    a = phase_features(np.array([0, 1, 0, 1]), 2)
    b = phase_features(np.array([0, 1, 0, 0]), 2)
    assert dtw_distance(a, b) == pytest.approx(0.25)  # one mismatched step out of four
    assert dtw_distance(a, phase_features(np.array([1, 0, 1, 0]), 2)) < 1.0  # shift is warped
    obs = np.array([[1.0, 2.0], [3.0, 2.0]])
    z = trajectory_features("obs", obs, np.zeros(2, int), 2, obs.mean(0), np.array([1.0, 1.0]))
    assert np.allclose(z, [[-1 / np.sqrt(2), 0], [1 / np.sqrt(2), 0]])
    assert len(subsample(np.arange(1000)[:, None], 100)) == 100


def test_weight_forms_hand_values() -> None:
    assert base_weight("similarity", 0.25, 2.0, 0.5, 0, 1) == pytest.approx(2 * math.exp(-0.5))
    assert base_weight("distance", 0.25, 2.0, 0.5, 0, 1) == pytest.approx(2 * (1 - math.exp(-0.5)))
    assert base_weight("distance", 0.0, 2.0, 0.5, 0, 1) == 0.0
    assert base_weight("annealed", 9.9, 2.0, 0.5, 25, 100) == pytest.approx(1.5)
    assert base_weight("annealed", 9.9, 2.0, 0.5, 500, 100) == 0.0
    assert base_weight("constant", 9.9, 2.0, 0.5, 500, 100) == 2.0
    with pytest.raises(ValueError):
        base_weight("nope", 0, 1, 1, 0, 1)


def test_return_decay_lets_the_agent_surpass_the_expert() -> None:
    assert return_decay(-12.0, -10.0, 0.1) == 1.0  # below the expert: full imitation
    assert return_decay(-10.0, -10.0, 0.1) == 1.0
    # 2 above the expert, margin 0.1 * 10 = 1 -> exp(-2)
    assert return_decay(-8.0, -10.0, 0.1) == pytest.approx(math.exp(-2))
    info = expert_weight("similarity", 0.5, w0=1.0, tau=0.5, agent_return=-9.0,
                         expert_return=-10.0, beta=0.1, relative_volatility=1.0, kappa=1.0)
    assert info.weight == pytest.approx(math.exp(-1) * math.exp(-1) * 0.5)
    assert (info.base, info.decay, info.volatility) == pytest.approx(
        (math.exp(-1), math.exp(-1), 0.5))


def test_reled_pieces_hand_values() -> None:
    assert volatility_factor(0.0, 2.0) == 1.0
    assert volatility_factor(1.5, 2.0) == pytest.approx(0.25)
    rewards = {"x": np.array([0.0, 2.0]), "y": np.array([1.0, 1.0]), "z": np.array([0.0, 4.0])}
    # stds: x=1, y=0, z=2; neighbours: x->[y, z] mean 1, y->[x] 1, z->[x, y] 0.5; median 1
    v = neighbour_volatility(rewards, {"x": ["y", "z"], "y": ["x"], "z": ["x", "y"]})
    assert v == pytest.approx({"x": 1.0, "y": 1.0, "z": 0.5})
    g = discounted_returns(np.array([1.0, 1.0, 1.0, 2.0]), np.array([0, 0, 0, 1]), 0.5)
    assert g == pytest.approx([1.75, 1.5, 1.0, 2.0])  # trajectory boundary stops the sum
    assert reled_mask(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0])).tolist() == [0, 0, 1]
