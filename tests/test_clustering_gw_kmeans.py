"""GW k-means with GW barycentres (poisonscan.clustering.gw_kmeans)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from poisonscan.clustering.gw_kmeans import (
    GromovWassersteinKMeans,
    _assignment_params,
    kmeans_plus_plus,
)
from poisonscan.distances import GWParams, pot_pair


class Space(NamedTuple):
    cost: np.ndarray
    weights: np.ndarray


def space(points: np.ndarray) -> Space:
    c = cdist(points, points)
    return Space(c / c.max(), np.full(len(points), 1 / len(points)))


def shapes(n_line: int, n_blob: int, seed: int = 0) -> list[Space]:
    """Spaces shaped like a line segment, and like a blob with one far point (a 'sticker')."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_line):
        t = np.linspace(0, 1, 8) + rng.normal(0, 0.01, 8)
        out.append(space(np.column_stack([t, rng.normal(0, 0.01, 8)])))
    for _ in range(n_blob):
        blob = rng.normal(0, 0.03, (7, 2))
        out.append(space(np.vstack([blob, [[1.0, 0.3]]])))
    return out


def gw_matrix(spaces: list[Space]) -> np.ndarray:
    n = len(spaces)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            s, t = spaces[i], spaces[j]
            d[i, j] = d[j, i] = pot_pair(s, t, GWParams())
    return d


def test_the_assignment_uses_the_configured_solver() -> None:
    exact, entropic = GWParams(), GWParams(solver="pot_entropic", epsilon=0.1)
    assert _assignment_params(exact) == exact
    assert _assignment_params(entropic) == entropic
    # barycentres have no coordinates: the batched solver's problem goes to POT's entropic one
    batched = GWParams(solver="batched", epsilon=0.1)
    assert _assignment_params(batched) == entropic
    spaces = shapes(6, 2)
    for params in (exact, entropic):
        est = GromovWassersteinKMeans(gw=params, max_iter=1, random_state=0).fit(spaces)
        c = est.init_indices_[1]
        expected = [pot_pair(spaces[c], s, params) for s in spaces]
        np.testing.assert_allclose(est.center_distances_[:, 1], expected, rtol=1e-6, atol=1e-9)


def test_kmeans_plus_plus_seeds_distinct_groups() -> None:
    x = np.r_[np.zeros(20), np.full(5, 100.0)]
    d = np.abs(x[:, None] - x[None, :])
    for seed in range(10):
        c = kmeans_plus_plus(d, 2, np.random.default_rng(seed))
        assert len(set(c)) == 2 and {x[c[0]], x[c[1]]} == {0.0, 100.0}
    rows = []
    c = kmeans_plus_plus(lambda i: rows.append(i) or d[i], 2, np.random.default_rng(0), n=25)
    assert rows == c  # only the seeds' rows are computed
    d[0, 3] = d[3, 0] = np.inf  # unevaluated pairs are allowed
    assert len(kmeans_plus_plus(d, 3, np.random.default_rng(0))) == 3
    with pytest.raises(ValueError, match="n_clusters must lie in"):
        kmeans_plus_plus(d, 30, np.random.default_rng(0))


def test_gw_kmeans_separates_shapes_with_barycentres() -> None:
    spaces = shapes(10, 4)
    truth = np.arange(14) >= 10
    est = GromovWassersteinKMeans(support_size=6, random_state=0).fit(
        spaces, distances=gw_matrix(spaces)
    )
    small = np.argmin(np.bincount(est.labels_))
    assert np.array_equal(est.labels_ == small, truth)
    assert est.converged_ and 2 <= est.n_iter_ <= 20
    assert [b.shape for b in est.barycenters_] == [(6, 6), (6, 6)]
    assert est.center_distances_.shape == (14, 2)
    assert np.array_equal(np.argmin(est.center_distances_, axis=1), est.labels_)
    # without a precomputed matrix the seeding computes the rows it needs: same result
    again = GromovWassersteinKMeans(support_size=6, random_state=0).fit(spaces)
    assert again.init_indices_ == est.init_indices_
    assert np.array_equal(again.labels_, est.labels_)


def test_gw_kmeans_stops_after_max_iter() -> None:
    spaces = shapes(5, 3)
    est = GromovWassersteinKMeans(max_iter=1, random_state=1).fit(spaces)
    assert est.n_iter_ == 1 and not est.converged_
    # after one assignment the centres are still the seeds' own spaces
    assert [b.shape[0] for b in est.barycenters_] == [8, 8]
    for i, c in enumerate(est.init_indices_):
        assert est.labels_[c] == i
    with pytest.raises(ValueError, match="n_clusters must lie in"):
        GromovWassersteinKMeans(n_clusters=9).fit(spaces)
    with pytest.raises(ValueError, match="distances must have shape"):
        GromovWassersteinKMeans().fit(spaces, distances=np.zeros((3, 3)))


def test_entropic_barycentres_at_the_reference_epsilon_lose_the_structure() -> None:
    """Why exact barycentres are the default: at epsilon = 0.1 (reference study) on costs in
    [0, 1] the entropic barycentre's points are all at nearly the same distance."""
    spaces = shapes(6, 0)
    est = GromovWassersteinKMeans(n_clusters=2, support_size=6, random_state=0)
    off = ~np.eye(6, dtype=bool)
    entropic = GromovWassersteinKMeans(support_size=6, barycenter_epsilon=0.1)._barycentre(
        spaces, seed=0
    )[0]
    exact = est._barycentre(spaces, seed=0)[0]
    assert np.ptp(entropic[off]) < 0.05
    assert np.ptp(exact[off]) > 0.3  # a line: near and far points
