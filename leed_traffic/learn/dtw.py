"""Dynamic time warping between an agent's trajectory and its expert's.

LEED weights the expert loss by how far the agent's behaviour has drifted from the
demonstrator's; two signal-timing trajectories rarely line up step for step (the same phase
sequence shifted by one cycle is "the same behaviour"), so the distance is DTW, not a per-step
norm. The distance is the optimal warping path's total cost divided by the path's length, so it
is a *mean per aligned step* cost, comparable across episode lengths.

Feature sequences (``TrainConfig.dtw_features``):

- ``phase``: one-hot of the chosen phase, scaled by 1/sqrt(2) so that two different phases cost
  exactly 1 and equal phases 0. The distance is then the fraction of mismatched aligned steps, in
  [0, 1]: interpretable, independent of the observation design, and it measures the *behaviour*
  (what LEED imitates) rather than the traffic it produced. Default.
- ``obs``: observations z-scored with the demonstrations' per-feature mean/std and divided by
  sqrt(dim), so the cost is the RMS per-feature difference. Compares the *situations* the agent
  drives the intersection into; scale depends on the observation design.
"""

from __future__ import annotations

import numpy as np


def dtw_distance(a: np.ndarray, b: np.ndarray, band: float | None = None) -> float:
    """Path-length-normalised DTW distance between sequences ``a`` [n, d] and ``b`` [m, d].

    Local cost: Euclidean distance between rows. Steps: (1,1), (1,0), (0,1). Ties prefer the
    diagonal (shorter path). ``band`` is a Sakoe-Chiba constraint as a fraction of the sequence
    in normalised time: cell (i, j) is allowed iff |i/n - j/m| <= band + 1/min(n, m) (the slack
    keeps a path feasible for any lengths; band=0 with n == m allows |i - j| <= 1).
    O(nm) time, vectorised over anti-diagonals; memory O(nm).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if b.ndim == 1:
        b = b[:, None]
    n, m = a.shape[0], b.shape[0]
    if n == 0 or m == 0:
        raise ValueError("DTW needs two non-empty sequences")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    # pairwise Euclidean costs (n x m)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    cost = np.sqrt(np.maximum(sq, 0.0))
    if band is not None:
        ii = (np.arange(1, n + 1) / n)[:, None]
        jj = (np.arange(1, m + 1) / m)[None, :]
        cost = np.where(np.abs(ii - jj) <= band + 1.0 / min(n, m) + 1e-12, cost, np.inf)

    acc = np.full((n + 1, m + 1), np.inf)
    length = np.zeros((n + 1, m + 1))
    acc[0, 0] = 0.0
    for k in range(2, n + m + 1):  # anti-diagonal i + j = k, 1-based cells
        i = np.arange(max(1, k - m), min(n, k - 1) + 1)
        j = k - i
        cands = np.stack([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]])  # diag, up, left
        lens = np.stack([length[i - 1, j - 1], length[i - 1, j], length[i, j - 1]])
        best = np.argmin(cands, axis=0)  # argmin returns the first: diagonal wins ties
        cols = np.arange(i.size)
        acc[i, j] = cost[i - 1, j - 1] + cands[best, cols]
        length[i, j] = lens[best, cols] + 1.0
    total = acc[n, m]
    if not np.isfinite(total):
        raise ValueError("no warping path inside the band")
    return float(total / length[n, m])


def subsample(seq: np.ndarray, max_len: int) -> np.ndarray:
    """Uniformly subsample a sequence to at most ``max_len`` rows (caps DTW's O(nm) cost)."""
    if max_len <= 0 or len(seq) <= max_len:
        return seq
    idx = np.linspace(0, len(seq) - 1, max_len).round().astype(np.int64)
    return seq[idx]


def phase_features(actions: np.ndarray, n_actions: int) -> np.ndarray:
    """One-hot phase sequence scaled so that two different phases are at distance exactly 1."""
    actions = np.asarray(actions, dtype=np.int64)
    out = np.zeros((actions.shape[0], n_actions))
    out[np.arange(actions.shape[0]), actions] = 1.0 / np.sqrt(2.0)
    return out


def obs_features(obs: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Observations z-scored by the demo statistics, divided by sqrt(dim) (RMS cost)."""
    obs = np.asarray(obs, dtype=np.float64)
    z = (obs - mean) / np.maximum(std, 1e-6)
    return z / np.sqrt(max(obs.shape[1], 1))


def trajectory_features(
    kind: str,
    obs: np.ndarray,
    actions: np.ndarray,
    n_actions: int,
    obs_mean: np.ndarray | None = None,
    obs_std: np.ndarray | None = None,
) -> np.ndarray:
    """Feature sequence of one trajectory for ``kind`` in {"phase", "obs"}."""
    if kind == "phase":
        return phase_features(actions, n_actions)
    if kind == "obs":
        if obs_mean is None or obs_std is None:
            obs_mean, obs_std = np.zeros(obs.shape[1]), np.ones(obs.shape[1])
        return obs_features(obs, obs_mean, obs_std)
    raise ValueError(f"unknown DTW feature kind {kind!r} (phase | obs)")
