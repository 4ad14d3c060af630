"""SCAn and SPECTRE (poisonscan.baselines): known answers on constructed data, the
reference's formulas transcribed, bad input."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import scipy.linalg

from poisonscan.baselines import SPECTRE, SCAn, que_scores
from poisonscan.baselines._scan_tang import (
    _two_subgroups,
    scan_global_model,
    scan_statistic,
)
from poisonscan.baselines._spectre import robust_covariance_filter
from poisonscan.codehash import module_closure


def classes(
    seed: int,
    n_classes: int = 10,
    n: int = 150,
    d: int = 20,
    planted: int | None = None,
    frac: float = 0.1,
    shift: float = 10.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian classes with equal-norm orthogonal means (as a trained network's penultimate
    layer tends to have), a shared anisotropic variation; class ``planted`` has a subgroup of
    ``frac`` shifted by ``shift`` along a random direction. Rows are interleaved."""
    rng = np.random.default_rng(seed)
    means = 12.0 * np.linalg.qr(rng.normal(size=(d, n_classes)))[0].T
    mix = np.eye(d) + rng.normal(size=(d, d)) / (2 * np.sqrt(d))
    x, y, poison = [], [], []
    for c in range(n_classes):
        xc = means[c] + rng.normal(size=(n, d)) @ mix.T
        pc = np.zeros(n, dtype=bool)
        if c == planted:
            pc[: round(frac * n)] = True
            direction = rng.normal(size=d)
            xc[pc] += shift * direction / np.linalg.norm(direction)
        x.append(xc)
        y.append(np.full(n, c))
        poison.append(pc)
    order = rng.permutation(n_classes * n)
    return np.vstack(x)[order], np.concatenate(y)[order], np.concatenate(poison)[order]


# --- SCAn -----------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "frac"), [(0, 0.05), (1, 0.1), (2, 0.15)])
def test_scan_flags_exactly_the_planted_class_and_its_subgroup(seed: int, frac: float) -> None:
    x, y, poison = classes(seed, planted=3, frac=frac)
    est = SCAn().fit(x, y)
    assert est.classes_.tolist() == list(range(10))
    assert est.statistic_.shape == est.z_.shape == est.flagged_classes_.shape == (10,)
    assert est.flagged_classes_.tolist() == [c == 3 for c in range(10)]
    assert est.z_[3] > est.threshold == pytest.approx(np.exp(2))
    assert np.array_equal(est.flagged_, poison)  # every planted sample, nothing else
    assert est.suspicious_size_[3] == poison.sum()
    assert est.score_[poison].min() > 0 > est.score_[(y == 3) & ~poison].max()
    assert set(np.unique(est.labels_)) <= {0, 1} and est.labels_.shape == (len(x),)


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_scan_says_clean_on_clean_data(seed: int) -> None:
    x, y, _ = classes(seed)
    est = SCAn().fit(x, y)
    assert not est.flagged_classes_.any()
    assert not est.flagged_.any()
    assert est.z_.max() < est.threshold
    greater = SCAn(alternative="greater").fit(x, y)  # one-sided: never above two-sided
    assert np.all(greater.z_ <= est.z_ + 1e-12)


def test_scan_with_a_trusted_clean_set() -> None:
    x, y, poison = classes(3, planted=5, frac=0.1)
    clean_x, clean_y, _ = classes(3, n=20)  # the same classes (same seed: same means)
    est = SCAn().fit(x, y, X_clean=clean_x, y_clean=clean_y)
    assert est.flagged_classes_.tolist() == [c == 5 for c in range(10)]
    assert np.array_equal(est.flagged_, poison)  # outputs cover the inspected set only
    assert est.covariance_identity_.shape == est.covariance_variation_.shape == (20, 20)


def test_scan_takes_one_array_per_class() -> None:
    x, y, _ = classes(4, planted=2)
    by_label = SCAn().fit(x, y)
    order = np.argsort(y, kind="stable")
    per_class = SCAn().fit([x[y == c] for c in range(10)])
    np.testing.assert_allclose(per_class.statistic_, by_label.statistic_, rtol=1e-6)
    assert np.array_equal(per_class.flagged_, by_label.flagged_[order])


def test_scan_identity_estimates_differ_by_a_class_geometry_term() -> None:
    """J = mean d(x, mu) - mean d(x, u_g) = d(x_bar, mu) + (terms without mu), so the two
    identity estimates differ by d(x_bar, mu_ref) - d(x_bar, mu_post). The reference's mu is
    not the class identity: that difference is about the Mahalanobis norm of the class mean
    and swamps the subgroup term."""
    x, y, _ = classes(5)
    post = SCAn(n_init=1).fit(x, y)
    ref = SCAn(n_init=1, identity_estimate="reference").fit(x, y)  # the same splits
    Su, Se = post.covariance_identity_, post.covariance_variation_
    F = np.linalg.pinv(Se)
    centred = x - x.mean(axis=0)
    gap = []
    for c in range(10):
        total, m = centred[y == c].sum(axis=0), np.sum(y == c)
        mean = total / m
        mu_post = Su @ np.linalg.solve(m * Su + Se, total)  # the posterior identity
        mu_ref = Se @ np.linalg.pinv(m * Su + Se) @ total  # the reference's calc_test
        gap.append((mean - mu_ref) @ F @ (mean - mu_ref) - (mean - mu_post) @ F @ (mean - mu_post))
    np.testing.assert_allclose(ref.statistic_ - post.statistic_, gap, rtol=1e-6)
    assert np.min(gap) > 10 * post.statistic_.max()


# The reference (TDteach/Demon-in-the-Variant pysrc/SCAn.py, copied by BackdoorBench and
# backdoor-toolbox), transcribed loop by loop.


def ref_global_model(X: np.ndarray, labels: np.ndarray, L: int, eps: float) -> tuple:
    N, M = X.shape
    X = X - X.mean(axis=0)
    cnt = np.array([np.sum(labels == k) for k in range(L)])
    mean_f = np.array([X[labels == k].mean(axis=0) for k in range(L)])
    u = np.array([mean_f[labels[i]] for i in range(N)])
    e = X - u
    Su, Se = np.cov(u.T), np.cov(e.T)
    dist, n_iters = 1e5, 0
    while dist > eps and n_iters < 100:
        n_iters += 1
        last_Su, last_Se = Su, Se
        F = np.linalg.pinv(Se)
        G_set = [-np.linalg.pinv(cnt[k] * Su + Se) @ Su @ F for k in range(L)]
        u_m = np.zeros((L, M))
        for i in range(N):
            u_m[labels[i]] -= Se @ G_set[labels[i]] @ X[i]
        u = np.array([u_m[labels[i]] for i in range(N)])
        e = X - u
        Su, Se = np.cov(u.T), np.cov(e.T)
        dist = np.linalg.norm(Su - last_Su) + np.linalg.norm(Se - last_Se)
    return Su, Se, n_iters


def ref_find_split(X: np.ndarray, F: np.ndarray, rng: np.random.Generator) -> tuple:
    N = X.shape[0]
    subg = rng.random(N)  # the reference: np.random.rand(N)
    if np.sum(subg >= 0.5) == 0:
        subg[0] = 1
    if np.sum(subg < 0.5) == 0:
        subg[0] = 0
    last, steps, EPS = -np.ones(N), 0, 1e-5
    while (
        np.linalg.norm(subg - last) > EPS
        and np.linalg.norm((1 - subg) - last) > EPS
        and steps < 100
    ):
        steps += 1
        last = subg.copy()
        idx1, idx2 = subg >= 0.5, subg < 0.5
        u1, u2 = X[idx1].mean(axis=0), X[idx2].mean(axis=0)
        bias = u1 @ F @ u1 - u2 @ F @ u2
        for i in range(N):
            subg[i] = 1 if bias - 2 * (X[i] @ F @ (u1 - u2)) < 0 else 0
    return subg, u1, u2


def ref_calc_test(
    X: np.ndarray,
    Su: np.ndarray,
    Se: np.ndarray,
    F: np.ndarray,
    subg: np.ndarray,
    u1: np.ndarray,
    u2: np.ndarray,
) -> float:
    N, M = X.shape
    G = -np.linalg.pinv(N * Su + Se)
    mu = np.zeros(M)
    for i in range(N):
        mu = mu - Se @ G @ X[i]
    b1 = mu @ F @ mu - u1 @ F @ u1
    b2 = mu @ F @ mu - u2 @ F @ u2
    n1 = np.sum(subg >= 0.5)
    sc = n1 * b1 + (N - n1) * b2
    for i in range(N):
        sc -= 2 * X[i] @ F @ (mu - (u1 if subg[i] >= 0.5 else u2))
    return sc / N


def ref_anomaly_index(J: np.ndarray) -> np.ndarray:
    a = J / np.max(J)
    b = np.abs(a - np.median(a))
    return b / (np.median(b) * 1.4826)


def test_scan_matches_the_reference_transcription() -> None:
    x, y, _ = classes(6, n_classes=4, n=40, d=6, planted=1)
    Su, Se, n_iter, converged = scan_global_model(x, y, tol=1e-5)
    rSu, rSe, r_iter = ref_global_model(x, y, 4, 1e-5)
    assert converged and n_iter == r_iter
    np.testing.assert_allclose(Su, rSu, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(Se, rSe, rtol=1e-8, atol=1e-10)
    F = np.linalg.pinv(Se)
    xc = x - x.mean(axis=0)
    J = []
    for c in range(4):
        cx = xc[y == c]
        z, u1, u2 = _two_subgroups(cx, F, np.random.default_rng(c), 100)
        rz, ru1, ru2 = ref_find_split(cx, F, np.random.default_rng(c))
        assert np.array_equal(z, rz >= 0.5)
        np.testing.assert_allclose([u1, u2], [ru1, ru2], rtol=1e-10)
        J.append(scan_statistic(cx, z, u1, u2, Su, Se, identity_estimate="reference"))
        assert J[-1] == pytest.approx(ref_calc_test(cx, Su, Se, F, rz, ru1, ru2), rel=1e-8)
    # the estimator, one start per class: the reference's J and anomaly index
    est = SCAn(identity_estimate="reference", n_init=1, random_state=7).fit(x, y)
    rng = np.random.default_rng(7)
    ref_J = np.array(
        [
            ref_calc_test(xc[y == c], Su, Se, F, *ref_find_split(xc[y == c], F, rng))
            for c in range(4)
        ]
    )
    np.testing.assert_allclose(est.statistic_, ref_J, rtol=1e-8)
    np.testing.assert_allclose(est.z_, ref_anomaly_index(ref_J), rtol=1e-8)


@pytest.mark.parametrize(
    ("kwargs", "fit", "match"),
    [
        ({}, {"two_classes": True}, "at least 3 classes, got 2"),
        ({}, {"tiny_class": True}, "class 7 has 1 samples; SCAn needs at least min_class_size = 2"),
        ({"min_class_size": 200}, {}, "class 0 has 150 samples"),
        ({"threshold": 0}, {}, "threshold must be > 0, got 0"),
        ({"alternative": "less"}, {}, "alternative must be one of .* got 'less'"),
        ({"identity_estimate": "mean"}, {}, "identity_estimate must be one of"),
        ({"n_init": 0}, {}, "n_init must be >= 1, got 0"),
        ({}, {"bad_y": True}, r"y must have shape \(1500,\)"),
        ({}, {"clean_d": True}, r"X_clean must have shape \(m, 20\) like X, got \(10, 19\)"),
        ({}, {"clean_label": True}, r"y_clean has labels that X has not: \[99\]"),
        ({}, {"clean_one_class": True}, "at least 2 classes, got \\[0\\]"),
        ({}, {"clean_no_y": True}, "give both X_clean and y_clean"),
    ],
)
def test_scan_rejects_bad_input(kwargs: dict, fit: dict, match: str) -> None:
    x, y, _ = classes(8)
    X_clean = y_clean = None
    if fit.get("two_classes"):
        x, y = x[y < 2], y[y < 2]
    if fit.get("tiny_class"):
        keep = (y != 7) | (np.cumsum(y == 7) == 1)
        x, y = x[keep], y[keep]
    if fit.get("bad_y"):
        y = y[:-1]
    if fit.get("clean_d"):
        X_clean, y_clean = x[:10, :19], y[:10]
    if fit.get("clean_label"):
        X_clean, y_clean = x[:10], np.full(10, 99)
    if fit.get("clean_one_class"):
        X_clean, y_clean = x[y == 0][:10], np.zeros(10, dtype=int)
    if fit.get("clean_no_y"):
        X_clean = x[:10]
    with pytest.raises(ValueError, match=match):
        SCAn(**kwargs).fit(x, y, X_clean=X_clean, y_clean=y_clean)
    with pytest.raises(ValueError, match=r"expected features of shape \(n >= 1, d\)"):
        SCAn().fit(x[:, 0], y)


# --- SPECTRE ----------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "frac", "d"), [(0, 0.05, 10), (1, 0.1, 10), (2, 0.1, 16)])
def test_spectre_ranks_and_flags_the_planted_samples(seed: int, frac: float, d: int) -> None:
    x, y, poison = classes(seed, n_classes=3, n=300, d=d, planted=1, frac=frac)
    eps = int(poison.sum())
    est = SPECTRE(target_class=1, eps=eps).fit(x, y)
    target = y == 1
    assert np.array_equal(est.in_target_, target)
    assert np.isnan(est.score_[~target]).all() and not est.flagged_[~target].any()
    top = np.argsort(-np.where(target, est.score_, -np.inf))[:eps]
    assert poison[top].all()  # the planted samples rank first
    assert est.flagged_[poison].all()
    assert est.flagged_.sum() == round(1.5 * eps)  # "1.5 eps", whatever the data
    assert est.threshold_ == est.score_[est.flagged_].min()
    assert est.n_components_ in est.n_components_grid_
    assert est.objective_.shape == est.n_components_grid_.shape
    assert est.n_components_grid_[0] == 1 and est.n_components_grid_[-1] == d


def test_spectre_is_told_the_answer() -> None:
    params = inspect.signature(SPECTRE).parameters
    assert params["target_class"].default is inspect.Parameter.empty
    assert params["eps"].default is inspect.Parameter.empty
    x, y, _ = classes(3, n_classes=3, n=100, d=6)  # no poison at all: still flags 1.5 eps
    assert SPECTRE(target_class=0, eps=10).fit([x[y == c] for c in range(3)]).flagged_.sum() == 15


def test_que_scores_match_the_reference_formula() -> None:
    """Julia: M = exp(α (Σ′ - I) / (opnorm(Σ′) - 1)), M /= tr(M), τ_i = x_i' M x_i, with
    Σ′ = cov(x) and exp the matrix exponential."""
    rng = np.random.default_rng(0)
    white = rng.normal(size=(50, 4)) @ np.diag([2.0, 1.2, 1.0, 0.8])
    for alpha in (0.0, 4.0, 10.0):
        sigma = np.cov(white, rowvar=False)
        M = scipy.linalg.expm(alpha * (sigma - np.eye(4)) / (np.linalg.norm(sigma, 2) - 1))
        M /= np.trace(M)
        expected = np.array([w @ M @ w for w in white])
        np.testing.assert_allclose(que_scores(white, alpha), expected, rtol=1e-10)
    np.testing.assert_allclose(que_scores(white, 0.0), np.sum(white**2, axis=1) / 4)


def test_robust_covariance_filter_removes_far_outliers_only() -> None:
    rng = np.random.default_rng(1)
    S = rng.normal(size=(400, 5))
    assert robust_covariance_filter(S, 0.01, 0.1, 20).all()  # Gaussian: nothing removed
    S[:4] *= 40.0  # far beyond C d log(n / tau): the reference's early filter
    kept = robust_covariance_filter(S - S.mean(axis=0), 0.01, 0.1, 20)
    assert not kept[:4].any() and kept[4:].all()
    assert robust_covariance_filter(S, 0.01, 0.1, 2).sum() == 398  # at most `limit` removed


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": 0}, "eps = 0 is out of range for class 0 of 100 samples"),
        ({"eps": 50}, "eps = 50 is out of range for class 0 of 100 samples"),
        ({"eps": 2.5}, "eps must be an integer poison count, got 2.5"),
        ({"eps": True}, "eps must be an integer poison count, got True"),
        ({"eps": 5, "target_class": 9}, r"target_class 9 is not a class of the data"),
        ({"eps": 5, "tau": 1.5}, "tau must lie in"),
        ({"eps": 5, "alpha": -1.0}, "alpha must be >= 0, got -1.0"),
    ],
)
def test_spectre_rejects_bad_input(kwargs: dict, match: str) -> None:
    x, y, _ = classes(9, n_classes=3, n=100, d=6)
    with pytest.raises(ValueError, match=match):
        SPECTRE(**{"target_class": 0, **kwargs}).fit(x, y)
    with pytest.raises(ValueError, match="per-class arrays"):
        SPECTRE(0, 5).fit(x)


# --- the package -------------------------------------------------------------------------


def test_scan_and_spectre_load_on_first_use() -> None:
    """The package loads SCAn and SPECTRE on first use, so the code hashes of the AC, SS and
    raw-pixel detectors (``from poisonscan import baselines``) do not change with them."""
    for module in ("poisonscan.baselines", "poisonscan.detectors.activations"):
        closure = module_closure(module)
        assert "poisonscan.baselines._activation_clustering" in closure
        assert not {"poisonscan.baselines._scan_tang", "poisonscan.baselines._spectre"} & closure
