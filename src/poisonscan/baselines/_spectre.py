"""SPECTRE (Hayase, Kong, Somani, Oh, "SPECTRE: Defending Against Backdoor Attacks Using
Robust Statistics", ICML 2021).

Reference code: SewoongLab/spectre-defense (Julia: ``quantum_filters.jl``
``rcov_quantum_filter`` / ``rcov_auto_quantum_filter``, ``dkk17.jl``
``cov_estimation_filter`` / ``cov_estimation_iterate``, ``util.jl``), run by its
``run_filters.jl`` on the target class with ``eps`` = the poison count. Python ports
read beside it: SCLBD/BackdoorBench (``detection_pretrain/spectre.py``,
``spectre_utils.py``) and vtu81/backdoor-toolbox (``cleansers_tool_box/spectre_python.py``).

For the ``n`` representations of the target class and an upper bound ``eps`` on
its poison count:

1. PCA to ``k_max = min(max_dim, d, ...)`` dimensions (the reference: 100).
2. For each ``k`` of ``round(linspace(1, sqrt(k_max), 10)^2)``
   (``rcov_quantum_filter``): the first ``k`` PCA coordinates; robust covariance by
   the filter of Diakonikolas et al. 2017 (``cov_estimation_iterate`` with
   ``epsilon = eps / n``, ``tau``, removing at most ``round(filter_multiplier * eps)``
   samples); the biased covariance ``Sigma`` of the samples it keeps; whiten every
   sample, ``x -> Sigma^(-1/2) x``; QUantum Entropy scores
   ``tau_i = x_i' M x_i`` with ``M = exp(alpha (S - I) / (||S||_2 - 1)) / tr(...)``,
   ``S`` the covariance of the whitened samples and ``exp`` the *matrix*
   exponential; the top ``round(eps_multiplier * eps)`` scores are the candidates
   (``k = 1``: no filter, score = squared first PCA coordinate, as the reference).
3. Keep the ``k`` whose candidates, removed, leave the set that whitens the full
   ``k_max``-dimensional data to the highest QUE objective ``tr(S M) / tr(M)``
   (``rcov_auto_quantum_filter``); flag its candidates.

Deviations from the Julia reference:

* ``k_max`` is also capped at ``n - round(filter_multiplier * eps) - 1`` and at the
  rank of the centred features, so that every covariance that is inverted has more
  samples than dimensions (the reference asserts ``100 <= min(d, n)``).
* The top eigenvector in the filter comes from ``scipy.sparse.linalg.eigsh``
  (largest algebraic, start vector of ones as the reference's ``eigsolve``), or a
  dense ``eigh`` for ``k <= 8``; the reference's ``eigsolve`` takes the largest
  magnitude (the same eigenvalue here: the operator is ``I + K`` plus outliers).
* A division by ``||S||_2 - 1 <= 0`` (no direction with excess variance) is
  replaced by a tiny positive number; inverse square roots floor eigenvalues at
  ``1e-12`` of the largest. Neither happens on data the reference runs.

The Python ports differ from the Julia reference, and this module follows Julia:
both use an elementwise ``exp`` for ``M`` (Julia's ``exp`` of a matrix is the
matrix exponential); BackdoorBench's objective uses ``trace(S * M)`` elementwise and
its tail test ``1 - i/n`` (Julia: ``i/n``); backdoor-toolbox replaces the filter
with another robust estimator (``BeingRobust``) and uses 2 dimensions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.sparse.linalg import LinearOperator, eigsh
from sklearn.base import BaseEstimator

from poisonscan.baselines._features import labelled_features

__all__ = ["SPECTRE", "que_scores", "robust_covariance_filter"]

_C = 10.0  # the reference's C in cov_estimation_filter
_SHIFT = 3.0  # its shift of the score deviations
_DENSE_EIG_DIMS = 8  # up to this k the (k^2 x k^2) operator is diagonalised densely


def _quadratic(x: np.ndarray, A: np.ndarray) -> np.ndarray:
    """``x_i' A x_i`` for every row ``i`` (through BLAS, unlike a 3-operand einsum)."""
    return np.sum((x @ A) * x, axis=1)


def _inv_sqrt(sigma: np.ndarray) -> np.ndarray:
    """``sigma^(-1/2)`` of a symmetric positive semi-definite matrix."""
    lam, vec = np.linalg.eigh(sigma)
    lam = np.maximum(lam, max(float(lam[-1]), np.finfo(float).tiny) * 1e-12)
    return (vec / np.sqrt(lam)) @ vec.T


def _que_matrix(sigma: np.ndarray, alpha: float) -> np.ndarray:
    """``exp(alpha (S - I) / (||S||_2 - 1))`` normalised to trace 1 (matrix exponential)."""
    if sigma.shape[0] == 1:
        return np.ones((1, 1))
    lam, vec = np.linalg.eigh(sigma)
    gap = max(float(lam[-1]) - 1.0, 1e-12)
    w = np.exp(alpha * (lam - 1.0) / gap)  # exponent <= alpha: no overflow
    return (vec * (w / w.sum())) @ vec.T


def que_scores(white: np.ndarray, alpha: float = 4.0) -> np.ndarray:
    """QUantum Entropy outlier scores of whitened samples (SPECTRE's QUE).

    ``tau_i = x_i' M x_i``, ``M = exp(alpha (S - I) / (||S||_2 - 1)) / tr(...)`` with
    ``S`` the sample covariance (ddof 1) of ``white`` and the matrix exponential.
    ``alpha = 0`` gives ``||x||^2 / k``; a large ``alpha`` the squared projection on
    the top eigenvector of ``S``.

    Parameters
    ----------
    white : ndarray of shape (n, k)
        Samples whitened with a (robust) estimate of the clean covariance.
    alpha : float, default 4.0

    Returns
    -------
    ndarray of shape (n,)
    """
    white = np.asarray(white, dtype=np.float64)
    if white.ndim != 2 or white.shape[0] < 2:
        raise ValueError(f"expected whitened samples of shape (n >= 2, k), got {white.shape}")
    M = _que_matrix(np.atleast_2d(np.cov(white, rowvar=False)), alpha)
    return _quadratic(white, M)


def _k_lowest(a: np.ndarray, k: int) -> np.ndarray:
    """The reference's ``k_lowest_ind``: ``a <= `` its k-th smallest value (ties included)."""
    if k <= 0:
        return np.zeros(a.shape, dtype=bool)
    return a <= np.partition(a, k - 1)[k - 1]


def _top_eigenpair(Y: np.ndarray) -> tuple[float, np.ndarray]:
    """Top eigenpair of ``T = (1/n) sum_i vec(y_i y_i') vec(y_i y_i')' - vec(I) vec(I)'``."""
    n, k = Y.shape
    eye = np.eye(k).ravel()
    if k <= _DENSE_EIG_DIMS:
        Z = np.einsum("ia,ib->iab", Y, Y).reshape(n, k * k)
        lam, vec = np.linalg.eigh(Z.T @ Z / n - np.outer(eye, eye))
        return float(lam[-1]), vec[:, -1]

    def matvec(v: np.ndarray) -> np.ndarray:
        V = np.asarray(v, dtype=np.float64).reshape(k, k)
        q = _quadratic(Y, V)
        return ((Y.T * q) @ Y / n - np.trace(V) * np.eye(k)).ravel()

    op = LinearOperator((k * k, k * k), matvec=matvec, dtype=np.float64)
    lam, vec = eigsh(op, k=1, which="LA", v0=np.ones(k * k))
    return float(lam[0]), vec[:, 0]


def _filter_step(S: np.ndarray, eps: float, tau: float, limit: int) -> np.ndarray | None:
    """One step of the reference's ``cov_estimation_filter``: the samples to keep, or
    None when it stops (the covariance passed the test, or nothing to remove)."""
    n, k = S.shape
    Y = S @ _inv_sqrt(S.T @ S / n)  # the second moment, not centred (as the reference)
    norms = np.sum(Y * Y, axis=1)
    far = norms >= _C * k * np.log(n / tau)
    if far.any():  # the reference's "early filter"
        return ~far | _k_lowest(norms, max(0, n - limit))
    lam, v = _top_eigenpair(Y)
    P = v.reshape(k, k)
    if lam <= (1.0 + _C * eps * np.log(1.0 / eps) ** 2) * (2.0 * np.sum(P * P)) / 2.0:
        return None  # success: the second moment looks Gaussian
    V = (P + P.T) / 2.0
    ps = (_quadratic(Y, V) - np.trace(V)) / np.sqrt(2.0)
    diffs = np.abs(ps - np.median(ps))
    s = np.sort(diffs)
    excess = s - _SHIFT  # the reference's T
    flat = 10.0 * np.log(1.0 / eps)  # cov_Tail is 1 up to here
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = np.where(excess <= flat, 1.0, 3.0 * eps / (excess * np.log(excess)) ** 2)
    # Julia, 1-based i: the first sorted deviation with T > 0 and i/n >= tail(T)
    hit = (s > _SHIFT) & (np.arange(1, n + 1) / n >= tail)
    if not hit.any():
        return None  # the reference's "fail": nothing to remove
    cut = s[np.argmax(hit)] - _SHIFT
    return (diffs <= cut) | _k_lowest(diffs, max(0, n - limit))


def robust_covariance_filter(S: np.ndarray, eps: float, tau: float, limit: int) -> np.ndarray:
    """The reference's ``cov_estimation_iterate``: filter outliers of the second moment.

    Parameters
    ----------
    S : ndarray of shape (n, k)
        Centred samples (PCA coordinates).
    eps : float in (0, 0.5)
        Assumed poison fraction (the reference passes ``eps / n``).
    tau : float
    limit : int
        Remove at most this many samples in all.

    Returns
    -------
    ndarray of shape (n,), bool
        The samples kept.
    """
    keep_idx = np.arange(len(S))
    while limit > 0:
        keep = _filter_step(S[keep_idx], eps, tau, limit)
        if keep is None:
            break
        removed = int(np.sum(~keep))
        if removed == 0:
            break  # ties in the limit kept everyone: nothing changes any more
        limit -= removed
        keep_idx = keep_idx[keep]
    out = np.zeros(len(S), dtype=bool)
    out[keep_idx] = True
    return out


class SPECTRE(BaseEstimator):
    """SPECTRE (Hayase et al. 2021) in one class: robust whitening and QUE scores.

    **Told the answer**: the caller names the poisoned class (``target_class``) and
    an upper bound ``eps`` on its poison count; SPECTRE then always flags
    ``round(eps_multiplier * eps)`` samples of that class and never says "clean".
    Neither has a default. Details, the reference code and the deviations from it:
    the module docstring of ``poisonscan.baselines._spectre``.

    Parameters
    ----------
    target_class : label
        The class to analyse (one of ``y``'s labels, or a position when ``fit`` gets
        one array per class).
    eps : int
        Upper bound on the number of poisoned samples in the target class (the
        reference's ``eps``); ``1 <= eps`` and ``round(filter_multiplier * eps) <=
        n - 2`` for a class of ``n`` samples.
    alpha : float, default 4.0
        QUE's alpha (the reference's ``α = 4``).
    tau : float, default 0.1
        The robust covariance filter's tau (the reference's ``τ = 0.1``).
    max_dim : int, default 100
        PCA dimensions of the search over ``k`` (the reference: 100; BackdoorBench 64).
    filter_multiplier : float, default 2.0
        The robust covariance filter removes at most ``round(filter_multiplier *
        eps)`` samples (the reference's ``limit1 = 2``).
    eps_multiplier : float, default 1.5
        Flag the top ``round(eps_multiplier * eps)`` scores (the reference's
        ``limit2 = 1.5``, "1.5 eps").

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    in_target_ : ndarray of shape (n,), bool
        The samples of the target class.
    n_components_grid_ : ndarray of shape (n_k,), int
        The dimensions ``k`` tried.
    objective_ : ndarray of shape (n_k,)
        The QUE objective ``tr(S M) / tr(M)`` of each ``k``.
    n_components_ : int
        The ``k`` chosen (highest objective).
    score_ : ndarray of shape (n,)
        QUE score at ``n_components_`` in the target class; NaN elsewhere.
    threshold_ : float
        The lowest flagged score.
    flagged_ : ndarray of shape (n,), bool
        The ``round(eps_multiplier * eps)`` highest scores of the target class (more
        on ties); False elsewhere.
    labels_ : ndarray of shape (n,), int
        ``flagged_`` as 0/1.
    """

    def __init__(
        self,
        target_class: Any,
        eps: int,
        alpha: float = 4.0,
        tau: float = 0.1,
        max_dim: int = 100,
        filter_multiplier: float = 2.0,
        eps_multiplier: float = 1.5,
    ) -> None:
        self.target_class = target_class
        self.eps = eps
        self.alpha = alpha
        self.tau = tau
        self.max_dim = max_dim
        self.filter_multiplier = filter_multiplier
        self.eps_multiplier = eps_multiplier

    def _check_params(self, n: int) -> int:
        eps = self.eps
        if isinstance(eps, bool) or not isinstance(eps, int | np.integer):
            raise ValueError(f"eps must be an integer poison count, got {eps!r}")
        if not self.alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if not 0 < self.tau < 1:
            raise ValueError(f"tau must lie in (0, 1), got {self.tau}")
        if int(self.max_dim) < 1:
            raise ValueError(f"max_dim must be >= 1, got {self.max_dim}")
        if not self.filter_multiplier > 0 or not self.eps_multiplier > 0:
            raise ValueError(
                f"filter_multiplier and eps_multiplier must be > 0, got "
                f"{self.filter_multiplier} and {self.eps_multiplier}"
            )
        limit = round(self.filter_multiplier * int(eps))
        if eps < 1 or limit > n - 2 or round(self.eps_multiplier * int(eps)) >= n:
            raise ValueError(
                f"eps = {eps} is out of range for class {self.target_class!r} of {n} samples: "
                f"need 1 <= eps, round(filter_multiplier * eps) <= n - 2 and "
                f"round(eps_multiplier * eps) < n"
            )
        return int(eps)

    def fit(self, X: np.ndarray | Sequence[np.ndarray], y: np.ndarray | None = None) -> SPECTRE:
        """Score and flag the samples of ``target_class``.

        Parameters
        ----------
        X : ndarray of shape (n, d), or sequence of ndarray of shape (n_c, d)
            Representations with labels ``y``, or one array per class (class =
            position) with ``y=None``. Only the target class is used.
        y : ndarray of shape (n,), optional

        Raises
        ------
        ValueError
            ``target_class`` not among the labels; ``eps`` or another parameter out
            of range; wrong shapes.
        """
        x, labels, classes = labelled_features(X, y)
        if not np.isin(self.target_class, classes):
            raise ValueError(
                f"target_class {self.target_class!r} is not a class of the data "
                f"(classes: {classes.tolist()})"
            )
        self.classes_ = classes
        self.in_target_ = labels == self.target_class
        reps = x[self.in_target_]
        eps = self._check_params(len(reps))
        scores, flagged, grid, objective = self._quantum_filter(reps, eps)
        self.n_components_grid_ = grid
        self.objective_ = objective
        self.n_components_ = int(grid[int(np.argmax(objective))])
        self.score_ = np.full(len(x), np.nan)
        self.score_[self.in_target_] = scores
        self.flagged_ = np.zeros(len(x), dtype=bool)
        self.flagged_[self.in_target_] = flagged
        self.threshold_ = float(scores[flagged].min())
        self.labels_ = self.flagged_.astype(int)
        return self

    def _quantum_filter(
        self, reps: np.ndarray, eps: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``rcov_auto_quantum_filter``: scores and flags of the best ``k``, the grid, the
        objective of each ``k``."""
        n, d = reps.shape
        limit = round(self.filter_multiplier * eps)
        budget = round(self.eps_multiplier * eps)
        centred = reps - reps.mean(axis=0)
        _, sv, vt = np.linalg.svd(centred, full_matrices=False)
        rank = int(np.sum(sv > sv[0] * 1e-10)) if sv[0] > 0 else 1
        k_max = max(1, min(int(self.max_dim), d, n - limit - 1, rank))
        proj = centred @ vt[:k_max].T
        grid = np.unique(np.round(np.linspace(1.0, np.sqrt(k_max), 10) ** 2).astype(int))
        objective = np.full(len(grid), -np.inf)
        best: tuple[np.ndarray, np.ndarray] | None = None
        for j, k in enumerate(grid):
            scores, flagged = self._scores_in(proj[:, :k], eps, limit, budget)
            # the objective: whiten the k_max-dim data with the covariance left after removal
            sigma = np.atleast_2d(np.cov(proj[~flagged], rowvar=False))
            white = proj @ _inv_sqrt(sigma)
            s_white = np.atleast_2d(np.cov(white, rowvar=False))
            M = _que_matrix(s_white, self.alpha)
            objective[j] = np.trace(s_white @ M) / np.trace(M)
            if best is None or objective[j] > objective[:j].max(initial=-np.inf):
                best = (scores, flagged)
        assert best is not None
        return best[0], best[1], grid, objective

    def _scores_in(
        self, reps_k: np.ndarray, eps: int, limit: int, budget: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``rcov_quantum_filter`` in the first ``k`` PCA coordinates: QUE scores and flags."""
        n, k = reps_k.shape
        if k == 1:
            scores = reps_k[:, 0] ** 2  # the reference: no whitening, M = 1
        else:
            kept = robust_covariance_filter(reps_k, eps / n, self.tau, limit)
            sigma = np.cov(reps_k[kept], rowvar=False, bias=True)
            scores = que_scores(reps_k @ _inv_sqrt(sigma), self.alpha)
        return scores, _k_lowest(-scores, budget)
