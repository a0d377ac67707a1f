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
    """
    return float(dtw_distances([(a, b)], band)[0])


def dtw_distances(pairs: list[tuple[np.ndarray, np.ndarray]], band: float | None = None) -> np.ndarray:
    """``dtw_distance`` of many (a, b) pairs at once (one per agent and expert trajectory).

    Why batched: one LEED update compares every agent with its demonstrations (tens of pairs of
    ~500-step sequences); pairs of the same shape are solved together, one vectorised step per
    anti-diagonal, and only the cells inside the band are computed, so the cost is
    O(n * band_width) per pair instead of O(n * m) and the Python overhead is paid once per
    diagonal, not once per pair. Memory: two diagonals per pair.
    """
    out = np.empty(len(pairs))
    groups: dict[tuple[int, int, int], list[int]] = {}
    arrays = []
    for k, (a, b) in enumerate(pairs):
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        a = a[:, None] if a.ndim == 1 else a
        b = b[:, None] if b.ndim == 1 else b
        if a.shape[0] == 0 or b.shape[0] == 0:
            raise ValueError("DTW needs two non-empty sequences")
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
        arrays.append((a, b))
        groups.setdefault((a.shape[0], b.shape[0], a.shape[1]), []).append(k)
    for (n, m, _d), idx in groups.items():
        A = np.stack([arrays[k][0] for k in idx])  # [B, n, d]
        Bm = np.stack([arrays[k][1] for k in idx])  # [B, m, d]
        out[idx] = _dtw_same_shape(A, Bm, band)
    return out


def _band_rows(n: int, m: int, band: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Per anti-diagonal k = i + j (1-based cells), the first and last admissible row i."""
    k = np.arange(n + m + 1)
    lo = np.maximum(1, k - m)
    hi = np.minimum(n, k - 1)
    if band is not None:
        # |i/n - (k-i)/m| <= r  <=>  (k/m - r) / (1/n + 1/m) <= i <= (k/m + r) / (1/n + 1/m)
        r = band + 1.0 / min(n, m) + 1e-12
        s = 1.0 / n + 1.0 / m
        lo = np.maximum(lo, np.ceil((k / m - r) / s - 1e-9).astype(np.int64))
        hi = np.minimum(hi, np.floor((k / m + r) / s + 1e-9).astype(np.int64))
        # the 1e-9 slack may admit a boundary cell the exact test rejects: re-check both ends
        def ok(i: np.ndarray) -> np.ndarray:
            return np.abs(i / n - (k - i) / m) <= r
        lo = np.where((lo <= hi) & ~ok(lo), lo + 1, lo)
        hi = np.where((lo <= hi) & ~ok(hi), hi - 1, hi)
    return lo, hi


def _dtw_same_shape(A: np.ndarray, Bm: np.ndarray, band: float | None) -> np.ndarray:
    """Banded anti-diagonal DTW for a batch of equal-shape pairs; returns [B] distances."""
    nb, n, _ = A.shape
    m = Bm.shape[1]
    lo, hi = _band_rows(n, m, band)
    inf = np.inf
    # diagonals indexed by row i in 0..n; prev2 = diagonal k-2, prev1 = k-1
    acc2 = np.full((nb, n + 1), inf)
    len2 = np.zeros((nb, n + 1))
    acc1 = np.full((nb, n + 1), inf)
    len1 = np.zeros((nb, n + 1))
    acc2[:, 0] = 0.0  # cell (0, 0) lies on diagonal 0
    for k in range(2, n + m + 1):
        acc0 = np.full((nb, n + 1), inf)
        len0 = np.zeros((nb, n + 1))
        i0, i1 = int(lo[k]), int(hi[k])
        if i0 <= i1:
            rows = slice(i0, i1 + 1)
            prev = slice(i0 - 1, i1)
            # cells (i, k - i): a[i - 1] against b[k - i - 1], j descending as i ascends
            diff = A[:, i0 - 1:i1, :] - Bm[:, k - i1 - 1:k - i0, :][:, ::-1, :]
            cost = np.sqrt((diff * diff).sum(-1))
            diag, up, left = acc2[:, prev], acc1[:, prev], acc1[:, rows]
            best = np.minimum(diag, np.minimum(up, left))
            # tie-break as argmin over (diag, up, left): the first minimum wins
            ln = np.where(diag == best, len2[:, prev],
                          np.where(up == best, len1[:, prev], len1[:, rows]))
            acc0[:, rows] = cost + best
            len0[:, rows] = ln + 1.0
        acc2, len2, acc1, len1 = acc1, len1, acc0, len0
    total = acc1[:, n]
    if not np.all(np.isfinite(total)):
        raise ValueError("no warping path inside the band")
    return total / len1[:, n]


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
