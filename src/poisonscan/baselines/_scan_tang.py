"""SCAn (Tang, Wang, Tang, Zhang, "Demon in the Variant", USENIX Security 2021).

Reference code: TDteach/Demon-in-the-Variant (``msrc/SCAn.m``, ``global_model.m``,
``local_model.m``, ``calc_anomaly_index.m``; ``pysrc/SCAn.py``) and its ports in
SCLBD/BackdoorBench (``detection_pretrain/scan.py``) and vtu81/backdoor-toolbox
(``cleansers_tool_box/scan.py``), which copy ``pysrc/SCAn.py``.

1. **Global model** (``build_global_model``): every centred representation is
   ``r = mu_c + e``, an identity ``mu_c ~ N(0, Su)`` of its class plus a variation
   ``e ~ N(0, Se)`` whose covariance all classes share. EM as in the reference:
   start from the class means; E-step: the identity of a class of ``m`` samples
   with sum ``s`` is ``Se (m Su + Se)^+ Su Se^+ s`` (= ``Su (m Su + Se)^-1 s``,
   its posterior mean); M-step: ``Su``, ``Se`` = sample covariances of the
   per-sample identities and residuals; stop when ``||dSu||_F + ||dSe||_F <= tol``
   or after ``max_iter`` iterations.
2. **Local model** (``build_local_model``): per class, two subgroups by 2-means in
   the Mahalanobis metric ``Se^+`` from a random assignment (``find_split``), and
   the log-likelihood ratio of "two identities" against "one"
   (``calc_test``): ``J = mean_i [d(x_i, mu) - d(x_i, mu_g(i))]`` with
   ``d(x, m) = (x - m)' Se^+ (x - m)`` (the reference's ``sc / N``, expanded).
3. **Class test** (``calc_anomaly_index``): ``z = |J - median(J)| / (1.4826 MAD(J))``
   over the classes: the reference takes the absolute value (two-sided; its
   MATLAB keeps the one-sided ``max(0, J - median)`` as a comment, available here
   as ``alternative="greater"``). It divides J by ``max(J)`` first, which leaves z
   unchanged and is omitted. A class is flagged when ``z > threshold``.

Deviations from the reference, each for a reason:

* ``identity_estimate="posterior"`` (default): the one-identity mean ``mu`` in J is
  the class's identity as the global E-step computes it. The reference's
  ``calc_test`` builds the same expression without the factor ``Su Se^+``
  (``G = -pinv(N Su + Se)`` there, ``G = -pinv(m Su + Se) Su F`` in
  ``global_model``), so its ``mu`` is not an estimate of the class identity: since
  ``J = d(x_bar, mu) + (terms without mu)``, its J carries ``d(x_bar, mu)``, about
  the Mahalanobis norm of the class mean, a class-geometry term that swamps the
  subgroup term unless all class means have the same norm (on the constructed
  data of the tests it is over 10 times the whole posterior J).
  ``identity_estimate="reference"`` reproduces the reference's J exactly.
* The two-subgroup split takes the best of ``n_init`` random starts (highest J,
  i.e. the lowest within-subgroup scatter); the reference runs one (``n_init=1``).
  Its means are those of the final assignment, and an update that would empty a
  subgroup keeps the last split with two subgroups (the reference breaks there with
  one subgroup empty).
* Per-sample output is ours where the reference has none: without a clean set the
  reference does not say which subgroup is poison; here it is the smaller one.
  With a clean set it is, as in BackdoorBench and backdoor-toolbox, the subgroup
  holding fewer clean samples (ties: the smaller subgroup; the reference flags the
  subgroup it happened to label 1).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning

from poisonscan.baselines._features import labelled_features

__all__ = ["ALTERNATIVES", "IDENTITY_ESTIMATES", "SCAn", "scan_global_model", "scan_statistic"]

MAD_TO_SD = 1.4826
ALTERNATIVES = ("two-sided", "greater")
IDENTITY_ESTIMATES = ("posterior", "reference")


def _cov(a: np.ndarray) -> np.ndarray:
    """Sample covariance of the rows (ddof 1, as ``np.cov`` in the reference), always 2-D."""
    return np.atleast_2d(np.cov(a, rowvar=False))


def _mahalanobis_sq(diff: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """``diff_i' P diff_i`` for every row ``i``."""
    return np.sum((diff @ precision) * diff, axis=1)  # BLAS, unlike a 3-operand einsum


def scan_global_model(
    x: np.ndarray, y: np.ndarray, *, max_iter: int = 100, tol: float = 1e-5
) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """Fit SCAn's global model: identity covariance ``Su`` and variation covariance ``Se``.

    Parameters
    ----------
    x : ndarray of shape (n, d)
        Representations (centred here on their mean).
    y : ndarray of shape (n,)
        Class labels; at least 2 classes.
    max_iter : int, default 100
    tol : float, default 1e-5
        Stop when ``||Su_new - Su||_F + ||Se_new - Se||_F <= tol``.

    Returns
    -------
    Su : ndarray of shape (d, d)
    Se : ndarray of shape (d, d)
    n_iter : int
    converged : bool
    """
    _, idx, counts = np.unique(y, return_inverse=True, return_counts=True)
    xc = x - x.mean(axis=0)
    sums = np.zeros((len(counts), x.shape[1]))
    np.add.at(sums, idx, xc)
    identity = (sums / counts[:, None])[idx]  # start: every sample's class mean
    Su, Se = _cov(identity), _cov(xc - identity)
    n_iter, change = 0, np.inf
    while change > tol and n_iter < max_iter:
        n_iter += 1
        su_f = Su @ np.linalg.pinv(Se)
        # E-step, the reference's form: Se (m Su + Se)^+ Su Se^+ times the class sum
        means = np.stack(
            [
                Se @ np.linalg.pinv(m * Su + Se) @ (su_f @ s)
                for m, s in zip(counts, sums, strict=True)
            ]
        )
        identity = means[idx]
        Su_new, Se_new = _cov(identity), _cov(xc - identity)
        change = float(np.linalg.norm(Su_new - Su) + np.linalg.norm(Se_new - Se))
        Su, Se = Su_new, Se_new
    return Su, Se, n_iter, bool(change <= tol)


def _one_identity(
    total: np.ndarray, m: int, Su: np.ndarray, Se: np.ndarray, precision: np.ndarray, estimate: str
) -> np.ndarray:
    """The identity of a class of ``m`` samples with sum ``total`` under "one identity"."""
    if estimate == "posterior":
        return Se @ np.linalg.pinv(m * Su + Se) @ (Su @ (precision @ total))
    return Se @ np.linalg.pinv(m * Su + Se) @ total  # the reference's calc_test


def _two_subgroups(
    xc: np.ndarray, precision: np.ndarray, rng: np.random.Generator, max_iter: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference's ``find_split``: 2-means in the metric ``precision`` from a random
    assignment. Returns the assignment (bool, True = subgroup 1) and the two means."""
    z = rng.random(len(xc)) >= 0.5
    if not z.any():
        z[0] = True
    if z.all():
        z[0] = False
    for _ in range(max_iter):
        u1, u2 = xc[z].mean(axis=0), xc[~z].mean(axis=0)
        bias = u1 @ precision @ u1 - u2 @ precision @ u2
        new = bias - 2.0 * (xc @ (precision @ (u1 - u2))) < 0  # nearer u1 than u2
        if new.all() or not new.any():
            break  # keep the last split with two subgroups
        done = np.array_equal(new, z) or np.array_equal(new, ~z)
        z = new
        if done:
            break
    return z, xc[z].mean(axis=0), xc[~z].mean(axis=0)


def scan_statistic(
    xc: np.ndarray,
    z: np.ndarray,
    u1: np.ndarray,
    u2: np.ndarray,
    Su: np.ndarray,
    Se: np.ndarray,
    *,
    identity_estimate: str = "posterior",
) -> float:
    """SCAn's log-likelihood ratio J of one class: two subgroups against one identity.

    ``J = mean_i [d(x_i, mu) - d(x_i, u_g(i))]``, ``d(x, m) = (x - m)' Se^+ (x - m)``,
    ``mu`` the class's single identity (see ``identity_estimate``), ``u_g(i)`` the
    mean of sample ``i``'s subgroup.

    Parameters
    ----------
    xc : ndarray of shape (m, d)
        The class's representations, centred as in the local model.
    z : ndarray of shape (m,), bool
        Subgroup assignment (True = subgroup 1, mean ``u1``).
    u1, u2 : ndarray of shape (d,)
    Su, Se : ndarray of shape (d, d)
        The global model.
    identity_estimate : {"posterior", "reference"}, default "posterior"

    Returns
    -------
    float
    """
    precision = np.linalg.pinv(Se)
    mu = _one_identity(xc.sum(axis=0), len(xc), Su, Se, precision, identity_estimate)
    return _statistic(xc, mu, z, u1, u2, precision)


def _statistic(
    xc: np.ndarray,
    mu: np.ndarray,
    z: np.ndarray,
    u1: np.ndarray,
    u2: np.ndarray,
    precision: np.ndarray,
) -> float:
    own = np.where(np.asarray(z, dtype=bool)[:, None], u1, u2)
    return float(
        np.mean(_mahalanobis_sq(xc - mu, precision) - _mahalanobis_sq(xc - own, precision))
    )


def _robust_z(values: np.ndarray, alternative: str) -> np.ndarray:
    """The reference's ``calc_anomaly_index``: deviation from the median over 1.4826 MAD."""
    dev = values - np.median(values)
    mad = MAD_TO_SD * np.median(np.abs(dev))
    dev = np.abs(dev) if alternative == "two-sided" else np.maximum(dev, 0.0)
    if mad == 0:  # half the classes tie: any deviation is infinitely far out
        return np.where(dev > 0, np.inf, 0.0)
    return dev / mad


class SCAn(BaseEstimator):
    """SCAn (Tang et al. 2021): a likelihood-ratio test per class, calibrated over classes.

    Fits a global model of the representations of all classes (identity + shared
    variation, EM), splits every class into two subgroups, computes the statistic
    J of "two subgroups" against "one", and flags the classes whose robust z over
    the classes exceeds ``threshold``. In a flagged class the suspicious subgroup
    is flagged. Details, the reference code and every deviation from it: the
    module docstring of ``poisonscan.baselines._scan_tang``.

    Parameters
    ----------
    threshold : float, default e^2 (7.389)
        A class is flagged when ``z_ > threshold``. e^2 is BackdoorBench's
        (``detection_pretrain/scan.py``: ``threshold = np.exp(2)``);
        backdoor-toolbox uses e; the original repository reports ROC curves only.
    alternative : {"two-sided", "greater"}, default "two-sided"
        ``z = |J - median| / (1.4826 MAD)`` as the reference, or
        ``max(0, J - median) / (1.4826 MAD)`` (only unusually high J counts).
    identity_estimate : {"posterior", "reference"}, default "posterior"
        The single identity in J: the class's posterior identity under the global
        model, or the reference's ``calc_test`` expression (reproduces its J).
    n_init : int, default 10
        Random starts of the two-subgroup split per class; the one with the highest
        J is kept (the reference: 1; one start missed a planted 5 % or 10 % subgroup
        in 1 of 5 constructed runs; AC's k-means here restarts 10 times too).
    max_iter : int, default 100
        Iterations of the global EM and of each split (the reference: 100 each).
    tol : float, default 1e-5
        Convergence of the global EM on ``||dSu||_F + ||dSe||_F`` (BackdoorBench's and
        backdoor-toolbox's ``EPS``; the original: 0.01). Absolute, so it depends on the
        scale of the features.
    min_class_size : int, default 2
        Fewer samples in a class raise ValueError (2: the split needs two).
    random_state : int or None, default 0
        Seeds the random starts of the splits.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The sorted class labels; the order of every per-class attribute.
    covariance_identity_ : ndarray of shape (d, d)
        ``Su`` of the global model.
    covariance_variation_ : ndarray of shape (d, d)
        ``Se`` of the global model.
    n_iter_ : int
        Iterations of the global EM.
    statistic_ : ndarray of shape (n_classes,)
        J per class.
    z_ : ndarray of shape (n_classes,)
        The robust z of J over the classes.
    flagged_classes_ : ndarray of shape (n_classes,), bool
        ``z_ > threshold``.
    suspicious_size_ : ndarray of shape (n_classes,), int
        Samples of ``X`` in each class's suspicious subgroup (every class has one).
    labels_ : ndarray of shape (n,), int
        1 if the sample is in its class's suspicious subgroup, else 0 (every class).
    flagged_ : ndarray of shape (n,), bool
        ``labels_ == 1`` in flagged classes; False in every other class.
    score_ : ndarray of shape (n,)
        ``d(x, u_other) - d(x, u_suspicious)`` with the subgroup means of the
        sample's class: positive exactly for the suspicious subgroup (the split's
        own rule), larger = further towards it. Every class.
    """

    def __init__(
        self,
        threshold: float = float(np.exp(2)),
        alternative: str = "two-sided",
        identity_estimate: str = "posterior",
        n_init: int = 10,
        max_iter: int = 100,
        tol: float = 1e-5,
        min_class_size: int = 2,
        random_state: int | None = 0,
    ) -> None:
        self.threshold = threshold
        self.alternative = alternative
        self.identity_estimate = identity_estimate
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.min_class_size = min_class_size
        self.random_state = random_state

    def _check_params(self) -> None:
        if not self.threshold > 0:
            raise ValueError(f"threshold must be > 0, got {self.threshold}")
        if self.alternative not in ALTERNATIVES:
            raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {self.alternative!r}")
        if self.identity_estimate not in IDENTITY_ESTIMATES:
            raise ValueError(
                f"identity_estimate must be one of {IDENTITY_ESTIMATES}, "
                f"got {self.identity_estimate!r}"
            )
        for name in ("n_init", "max_iter"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.tol >= 0:
            raise ValueError(f"tol must be >= 0, got {self.tol}")
        if int(self.min_class_size) < 2:
            raise ValueError(f"min_class_size must be >= 2, got {self.min_class_size}")

    def fit(
        self,
        X: np.ndarray | Sequence[np.ndarray],
        y: np.ndarray | None = None,
        *,
        X_clean: np.ndarray | None = None,
        y_clean: np.ndarray | None = None,
    ) -> SCAn:
        """Test every class of ``X`` and flag the suspicious subgroup of flagged classes.

        Parameters
        ----------
        X : ndarray of shape (n, d), or sequence of ndarray of shape (n_c, d)
            Representations of the inspected set with labels ``y``, or one array per
            class (class = position) with ``y=None``. At least 3 classes.
        y : ndarray of shape (n,), optional
        X_clean : ndarray of shape (m, d), optional
            A small trusted clean set (with ``y_clean``). As in BackdoorBench and
            backdoor-toolbox, the global model is fitted on it alone, the local
            model on ``X`` and the clean set together, and in each class the
            subgroup with fewer clean samples is the suspicious one. Without it the
            global model is fitted on ``X`` (untrusted; the original MATLAB fits it
            on a random 10 % of the samples known to be clean).
        y_clean : ndarray of shape (m,), optional
            Labels of ``X_clean``: classes of ``X``, at least 2 distinct.

        Raises
        ------
        ValueError
            Bad parameters, shapes or labels; fewer than 3 classes; a class with
            fewer than ``min_class_size`` samples.
        """
        self._check_params()
        x, y_arr, classes = labelled_features(X, y)
        if len(classes) < 3:
            raise ValueError(
                f"SCAn's robust z over classes needs at least 3 classes, got {len(classes)}"
            )
        idx = np.searchsorted(classes, y_arr)
        sizes = np.bincount(idx, minlength=len(classes))
        for c, size in zip(classes, sizes, strict=True):
            if size < self.min_class_size:
                raise ValueError(
                    f"class {c} has {size} samples; SCAn needs at least "
                    f"min_class_size = {self.min_class_size}"
                )
        clean_idx = self._check_clean(X_clean, y_clean, x.shape[1], classes)
        if clean_idx is None:
            Su, Se, self.n_iter_, converged = scan_global_model(
                x, y_arr, max_iter=self.max_iter, tol=self.tol
            )
            local_x, local_idx = x, idx
        else:
            xc = np.asarray(X_clean, dtype=np.float64)
            Su, Se, self.n_iter_, converged = scan_global_model(
                xc, clean_idx, max_iter=self.max_iter, tol=self.tol
            )
            local_x, local_idx = np.vstack([x, xc]), np.concatenate([idx, clean_idx])
        if not converged:
            warnings.warn(
                f"SCAn's global EM did not converge in max_iter = {self.max_iter} iterations "
                f"(tol = {self.tol})",
                ConvergenceWarning,
                stacklevel=2,
            )
        self.classes_ = classes
        self.covariance_identity_, self.covariance_variation_ = Su, Se
        self._local_model(local_x, local_idx, len(x), Su, Se)
        self.z_ = _robust_z(self.statistic_, self.alternative)
        self.flagged_classes_ = self.z_ > self.threshold
        self.flagged_ = (self.labels_ == 1) & self.flagged_classes_[idx]
        return self

    def _check_clean(
        self, X_clean: Any, y_clean: Any, d: int, classes: np.ndarray
    ) -> np.ndarray | None:
        """Class positions of the clean samples, or None without a clean set."""
        if X_clean is None and y_clean is None:
            return None
        if X_clean is None or y_clean is None:
            raise ValueError("give both X_clean and y_clean, or neither")
        xc, yc = np.asarray(X_clean, dtype=np.float64), np.asarray(y_clean)
        if xc.ndim != 2 or xc.shape[1] != d:
            raise ValueError(f"X_clean must have shape (m, {d}) like X, got {xc.shape}")
        if yc.shape != (xc.shape[0],):
            raise ValueError(f"y_clean must have shape ({xc.shape[0]},), got {yc.shape}")
        if not np.isfinite(xc).all():
            raise ValueError("X_clean contains NaN or infinite values")
        unknown = np.setdiff1d(yc, classes)
        if unknown.size:
            raise ValueError(f"y_clean has labels that X has not: {unknown.tolist()}")
        if np.unique(yc).size < 2:
            raise ValueError(
                f"the clean set needs samples of at least 2 classes, got {np.unique(yc).tolist()}"
            )
        return np.searchsorted(classes, yc)

    def _local_model(
        self, x: np.ndarray, idx: np.ndarray, n: int, Su: np.ndarray, Se: np.ndarray
    ) -> None:
        """Split every class, J per class, and the per-sample attributes (first ``n`` rows:
        the inspected set; the rest: clean samples)."""
        precision = np.linalg.pinv(Se)
        xc = x - x.mean(axis=0)  # the reference centres the local data on its own mean
        rng = np.random.default_rng(self.random_state)
        n_classes = len(self.classes_)
        inspected = np.arange(len(x)) < n
        self.statistic_ = np.zeros(n_classes)
        self.suspicious_size_ = np.zeros(n_classes, dtype=int)
        self.labels_ = np.zeros(n, dtype=int)
        self.score_ = np.zeros(n)
        for k in range(n_classes):
            rows = np.flatnonzero(idx == k)
            cx = xc[rows]
            mu = _one_identity(cx.sum(axis=0), len(cx), Su, Se, precision, self.identity_estimate)
            best: tuple[float, np.ndarray, np.ndarray, np.ndarray] | None = None
            for _ in range(int(self.n_init)):
                z, u1, u2 = _two_subgroups(cx, precision, rng, int(self.max_iter))
                stat = _statistic(cx, mu, z, u1, u2, precision)
                if best is None or stat > best[0]:
                    best = (stat, z, u1, u2)
            assert best is not None
            stat, z, u1, u2 = best
            self.statistic_[k] = stat
            mine = inspected[rows]
            clean_in = (int(np.sum(z & ~mine)), int(np.sum(~z & ~mine)))
            size_in = (int(np.sum(z & mine)), int(np.sum(~z & mine)))
            if clean_in[0] != clean_in[1]:  # fewer clean samples: suspicious
                one_suspicious = clean_in[0] < clean_in[1]
            else:  # no clean evidence: the smaller subgroup
                one_suspicious = size_in[0] <= size_in[1]
            sus, other = (u1, u2) if one_suspicious else (u2, u1)
            in_sus = z if one_suspicious else ~z
            score = _mahalanobis_sq(cx - other, precision) - _mahalanobis_sq(cx - sus, precision)
            self.labels_[rows[mine]] = in_sus[mine]
            self.score_[rows[mine]] = score[mine]
            self.suspicious_size_[k] = int(np.sum(in_sus & mine))
