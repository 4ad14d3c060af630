"""SpRAy: spectral analysis of a precomputed distance matrix with an automatic eigengap.

Pipeline (Lapuschkin et al. 2019; defaults as CoRelAy's ``SpectralEmbedding``):
distances -> affinity ``A`` (binary symmetric kNN, or Gaussian) -> the
normalised Laplacian ``L_sym = I - D^-1/2 A D^-1/2`` -> its smallest
eigenvalues -> the **eigengap** picks the number of clusters -> spectral
embedding (first k eigenvectors, rows scaled to unit length, Ng-Jordan-Weiss)
-> k-means (k-means++, several inits).

Distance matrices may hold ``+inf`` for pairs that were never evaluated (the
sparse mode of the GW distances); such a pair is never a neighbour and has
affinity 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans
from sklearn.neighbors import kneighbors_graph

__all__ = [
    "AFFINITIES",
    "BANDWIDTHS",
    "SpectralRelevanceAnalysis",
    "check_distances",
    "eigengap",
    "finite_distances",
    "gaussian_affinity",
    "knn_affinity",
    "normalized_laplacian",
    "smallest_eigenpairs",
]

AFFINITIES = ("knn", "gaussian")
BANDWIDTHS = ("median", "local")
_SOLVERS = ("auto", "dense", "sparse")

Affinity = np.ndarray | scipy.sparse.csr_array


def check_distances(distances: np.ndarray) -> np.ndarray:
    """Validate a precomputed distance matrix and return it as float64.

    Parameters
    ----------
    distances : array-like of shape (n, n)
        Non-negative, symmetric up to round-off; ``+inf`` marks a pair that was
        not evaluated.

    Returns
    -------
    ndarray of shape (n, n), float64

    Raises
    ------
    ValueError
        If the matrix is not square or holds NaN, ``-inf`` or negative values.
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"distance matrix must be square, got shape {d.shape}")
    if np.isnan(d).any():
        raise ValueError("distance matrix contains NaN values")
    if (d < 0).any():
        raise ValueError(
            "distance matrix contains negative values (or -inf); "
            "allowed: finite values >= 0 and +inf for pairs not evaluated"
        )
    return d


def finite_distances(distances: np.ndarray) -> np.ndarray:
    """Replace ``+inf`` (pairs not evaluated) by a value above every finite distance.

    For estimators that need finite input (agglomerative clustering,
    silhouette, k-means++ seeding): ``+inf`` becomes ``2 * max + 1`` of the
    finite entries, so such a pair is farther apart than any evaluated one.

    Parameters
    ----------
    distances : ndarray of shape (n, n)

    Returns
    -------
    ndarray of shape (n, n), float64, all finite
    """
    d = check_distances(distances)
    inf = np.isinf(d)
    if not inf.any():
        return d
    finite = d[~inf]
    big = 2.0 * (float(finite.max()) if finite.size else 0.0) + 1.0
    return np.where(inf, big, d)


def knn_affinity(distances: np.ndarray, n_neighbors: int = 10, *, sparse: bool = False) -> Affinity:
    """Binary symmetric kNN affinity from a precomputed distance matrix.

    ``A[i, j] = 1`` if j is among the ``n_neighbors`` nearest neighbours of i or
    i among those of j (self excluded). A pair at distance ``+inf`` is never a
    neighbour, so a sample with fewer than ``n_neighbors`` evaluated partners
    gets fewer edges.

    Parameters
    ----------
    distances : ndarray of shape (n, n)
    n_neighbors : int, default 10
    sparse : bool, default False
        Return a ``scipy.sparse.csr_array`` instead of a dense array.

    Returns
    -------
    ndarray or csr_array of shape (n, n), float64
    """
    d = check_distances(distances)
    n = d.shape[0]
    if not 1 <= n_neighbors < n:
        raise ValueError(f"n_neighbors must lie in [1, {n - 1}] for {n} samples, got {n_neighbors}")
    knn = scipy.sparse.csr_array(
        kneighbors_graph(
            finite_distances(d),
            n_neighbors,
            mode="connectivity",
            metric="precomputed",
            include_self=False,
        )
    )
    if np.isinf(d).any():
        coo = knn.tocoo()
        keep = np.isfinite(d[coo.row, coo.col])
        knn = scipy.sparse.csr_array(
            (coo.data[keep], (coo.row[keep], coo.col[keep])), shape=knn.shape
        )
    sym = knn.maximum(knn.T).tocsr()
    sym.setdiag(0.0)
    sym.eliminate_zeros()
    return sym if sparse else sym.toarray()


def gaussian_affinity(
    distances: np.ndarray, bandwidth: str | float = "median", n_neighbors: int = 10
) -> np.ndarray:
    """Gaussian (RBF) affinity from a precomputed distance matrix.

    Bandwidth rules:

    * ``"median"``: one global ``sigma`` = the median of the finite off-diagonal
      distances; ``A_ij = exp(-d_ij^2 / (2 sigma^2))``.
    * ``"local"`` (self-tuning, Zelnik-Manor & Perona 2004): ``sigma_i`` = the
      distance of i to its ``n_neighbors``-th nearest neighbour;
      ``A_ij = exp(-d_ij^2 / (sigma_i sigma_j))``.
    * a positive float: that global ``sigma``.

    The diagonal is 0 and ``+inf`` distances give affinity 0.

    Parameters
    ----------
    distances : ndarray of shape (n, n)
    bandwidth : {"median", "local"} or float, default "median"
    n_neighbors : int, default 10
        Used by ``"local"`` only.

    Returns
    -------
    ndarray of shape (n, n), float64
    """
    d = check_distances(distances)
    n = d.shape[0]
    off = ~np.eye(n, dtype=bool)
    finite = d[off & np.isfinite(d)]
    positive = finite[finite > 0]
    floor = float(positive.min()) if positive.size else 1.0
    if isinstance(bandwidth, str):
        if bandwidth == "median":
            sigma = float(np.median(finite)) if finite.size else 1.0
            scale = np.full((n, n), 2.0 * max(sigma, floor) ** 2)
        elif bandwidth == "local":
            if not 1 <= n_neighbors < n:
                raise ValueError(
                    f"n_neighbors must lie in [1, {n - 1}] for {n} samples, got {n_neighbors}"
                )
            masked = np.where(off, d, np.inf)
            kth = np.partition(masked, n_neighbors - 1, axis=1)[:, n_neighbors - 1]
            largest = float(finite.max()) if finite.size else 1.0
            sig = np.where(np.isfinite(kth), kth, largest)
            sig = np.maximum(sig, floor)
            scale = np.outer(sig, sig)
        else:
            raise ValueError(
                f"bandwidth must be one of {BANDWIDTHS} or a float > 0, got {bandwidth!r}"
            )
    else:
        if not float(bandwidth) > 0:
            raise ValueError(
                f"bandwidth must be one of {BANDWIDTHS} or a float > 0, got {bandwidth!r}"
            )
        scale = np.full((n, n), 2.0 * float(bandwidth) ** 2)
    with np.errstate(over="ignore"):
        a = np.exp(-(d**2) / scale)
    np.fill_diagonal(a, 0.0)
    return a


def _inv_sqrt_degree(affinity: Affinity) -> np.ndarray:
    degree = np.asarray(affinity.sum(axis=1)).ravel()
    return np.where(degree > 0, 1.0 / np.sqrt(np.where(degree > 0, degree, 1.0)), 0.0)


def normalized_laplacian(affinity: Affinity) -> Affinity:
    """``L_sym = I - D^-1/2 A D^-1/2`` for a symmetric affinity ``A``.

    An isolated node (degree 0) keeps ``L_ii = 1``. Dense in, dense out;
    sparse in, sparse (CSR) out.
    """
    inv = _inv_sqrt_degree(affinity)
    n = affinity.shape[0]
    if scipy.sparse.issparse(affinity):
        dm = scipy.sparse.dia_array((inv[None, :], [0]), shape=(n, n))
        return (scipy.sparse.eye_array(n) - dm @ affinity @ dm).tocsr()
    return np.eye(n) - inv[:, None] * affinity * inv[None, :]


def smallest_eigenpairs(
    affinity: Affinity,
    n_eigenvalues: int,
    solver: str = "auto",
    dense_max: int = 2000,
    random_state: int | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Smallest eigenpairs of ``L_sym`` of ``affinity``.

    ``"dense"``: LAPACK ``eigh`` on the dense Laplacian (only the requested
    range). ``"sparse"``: ARPACK ``eigsh`` for the *largest* eigenvalues ``mu``
    of ``D^-1/2 A D^-1/2`` (fast to converge) and ``lambda = 1 - mu``.
    ``"auto"``: dense when ``n <= dense_max`` (or when nearly all eigenpairs are
    asked for), else sparse.

    Returns
    -------
    eigenvalues : ndarray of shape (m,), ascending, m = min(n_eigenvalues, n)
    eigenvectors : ndarray of shape (n, m)
    """
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {_SOLVERS}, got {solver!r}")
    n = affinity.shape[0]
    m = min(int(n_eigenvalues), n)
    if m < 1:
        raise ValueError(f"n_eigenvalues must be >= 1, got {n_eigenvalues}")
    use_dense = solver == "dense" or m >= n - 1 or (solver == "auto" and n <= dense_max)
    if use_dense:
        dense = affinity.toarray() if scipy.sparse.issparse(affinity) else affinity
        values, vectors = scipy.linalg.eigh(normalized_laplacian(dense), subset_by_index=(0, m - 1))
        return np.clip(values, 0.0, 2.0), vectors
    inv = _inv_sqrt_degree(affinity)
    dm = scipy.sparse.dia_array((inv[None, :], [0]), shape=(n, n))
    norm_a = (dm @ scipy.sparse.csr_array(affinity) @ dm).tocsr()
    v0 = np.random.default_rng(random_state).uniform(0.5, 1.5, size=n)
    mu, vectors = scipy.sparse.linalg.eigsh(norm_a, k=m, which="LA", v0=v0)
    order = np.argsort(-mu)
    return np.clip(1.0 - mu[order], 0.0, 2.0), vectors[:, order]


def eigengap(eigenvalues: np.ndarray, k_max: int) -> tuple[int, int, np.ndarray]:
    """Number of clusters from the largest gap between consecutive eigenvalues.

    ``gap_i = lambda_{i+1} - lambda_i`` for ``i = 1 .. k_max`` (1-based, ascending
    eigenvalues of ``L_sym``). A graph with c well-separated groups has c
    eigenvalues near 0 and then a jump, i.e. its largest gap is at ``i = c``.

    Parameters
    ----------
    eigenvalues : ndarray of shape (m,), ascending
    k_max : int >= 2
        Largest number of clusters considered; clipped to ``m - 1``.

    Returns
    -------
    k : int
        The number of clusters in ``[2, k_max]`` with the largest gap.
    n_groups : int
        The number of groups in ``[1, k_max]`` with the largest gap; 1 means the
        spectrum gives no evidence of more than one group.
    gaps : ndarray of shape (k_max,)
        ``gaps[i - 1] = lambda_{i+1} - lambda_i``.
    """
    vals = np.asarray(eigenvalues, dtype=np.float64)
    if k_max < 2:
        raise ValueError(f"k_max must be >= 2, got {k_max}")
    if vals.size < 3:
        raise ValueError(f"need at least 3 eigenvalues for an eigengap, got {vals.size}")
    k_max = min(int(k_max), vals.size - 1)
    gaps = np.diff(vals[: k_max + 1])
    # round-off: gaps within 1e-10 are ties, broken towards the smaller k
    rounded = np.round(gaps, 10)
    n_groups = int(np.argmax(rounded)) + 1
    k = int(np.argmax(rounded[1:])) + 2
    return k, n_groups, gaps


class SpectralRelevanceAnalysis(ClusterMixin, BaseEstimator):
    """SpRAy: spectral clustering of a precomputed distance matrix.

    Parameters
    ----------
    affinity : {"knn", "gaussian"}, default "knn"
        Binary symmetric kNN graph, or a Gaussian kernel (see
        :func:`gaussian_affinity` for the bandwidth rules).
    n_neighbors : int, default 10
        Neighbours of the kNN graph (and of the ``"local"`` bandwidth).
    bandwidth : {"median", "local"} or float, default "median"
        Gaussian affinity only.
    n_clusters : int or None, default None
        None chooses k by the eigengap within ``[2, k_max]``; an int fixes it.
    k_max : int, default 10
        Largest k the eigengap considers.
    n_eigenvalues : int, default 32
        Number of smallest eigenvalues computed and stored.
    solver : {"auto", "dense", "sparse"}, default "auto"
    dense_max : int, default 2000
        ``"auto"`` uses the dense solver up to this many samples.
    n_init : int, default 10
        k-means restarts (k-means++ seeding).
    random_state : int or None, default 0

    Attributes
    ----------
    affinity_ : ndarray or csr_array of shape (n, n)
    eigenvalues_ : ndarray of shape (m,)
        Smallest eigenvalues of ``L_sym``, ascending.
    gaps_ : ndarray of shape (k_max,)
        Consecutive eigenvalue gaps (see :func:`eigengap`).
    n_clusters_ : int
        k used for k-means (eigengap choice in ``[2, k_max]`` or ``n_clusters``).
    n_groups_ : int
        Eigengap estimate in ``[1, k_max]``; 1 = one group (nothing to flag).
    eigengap_ : float
        ``lambda_{k+1} - lambda_k`` at ``k = n_clusters_``.
    embedding_ : ndarray of shape (n, n_clusters_)
    labels_ : ndarray of shape (n,)
    """

    def __init__(
        self,
        affinity: str = "knn",
        n_neighbors: int = 10,
        bandwidth: str | float = "median",
        n_clusters: int | None = None,
        k_max: int = 10,
        n_eigenvalues: int = 32,
        solver: str = "auto",
        dense_max: int = 2000,
        n_init: int = 10,
        random_state: int | None = 0,
    ) -> None:
        self.affinity = affinity
        self.n_neighbors = n_neighbors
        self.bandwidth = bandwidth
        self.n_clusters = n_clusters
        self.k_max = k_max
        self.n_eigenvalues = n_eigenvalues
        self.solver = solver
        self.dense_max = dense_max
        self.n_init = n_init
        self.random_state = random_state

    def _affinity(self, d: np.ndarray) -> Affinity:
        if self.affinity == "knn":
            sparse = self.solver == "sparse" or (self.solver == "auto" and len(d) > self.dense_max)
            return knn_affinity(d, self.n_neighbors, sparse=sparse)
        if self.affinity == "gaussian":
            return gaussian_affinity(d, self.bandwidth, self.n_neighbors)
        raise ValueError(f"affinity must be one of {AFFINITIES}, got {self.affinity!r}")

    def fit(self, X: np.ndarray, y: Any = None) -> SpectralRelevanceAnalysis:
        """Cluster the samples of the distance matrix ``X`` of shape (n, n)."""
        d = check_distances(X)
        n = d.shape[0]
        if n < 3:
            raise ValueError(f"SpRAy needs at least 3 samples, got {n}")
        if self.n_clusters is not None and not 2 <= self.n_clusters <= n:
            raise ValueError(f"n_clusters must be None or lie in [2, {n}], got {self.n_clusters}")
        if self.k_max < 2:
            raise ValueError(f"k_max must be >= 2, got {self.k_max}")
        self.affinity_ = self._affinity(d)
        n_eig = min(max(self.n_eigenvalues, self.k_max + 1, self.n_clusters or 0), n)
        values, vectors = smallest_eigenpairs(
            self.affinity_, n_eig, self.solver, self.dense_max, self.random_state
        )
        self.eigenvalues_ = values
        k_auto, self.n_groups_, self.gaps_ = eigengap(values, self.k_max)
        k = self.n_clusters if self.n_clusters is not None else k_auto
        self.n_clusters_ = int(k)
        self.eigengap_ = float(values[k] - values[k - 1]) if k < values.size else float("nan")
        emb = vectors[:, :k]
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        self.embedding_ = emb / np.where(norms > 0, norms, 1.0)
        km = KMeans(k, init="k-means++", n_init=self.n_init, random_state=self.random_state)
        self.labels_ = km.fit_predict(self.embedding_)
        return self
