"""Rules cluster_distances, cluster_gw_kmeans, cluster_activations, spectral_signatures,
cluster_raw, evaluate and summary.

Every clustering rule writes one ``.npz`` per method (see :func:`write_clusters`):
``labels``, ``flagged``, ``score`` (continuous, higher = more suspicious; how
it is made in ``score_name``), ``k`` (-1: not a clustering), ``decision_rule``,
``method`` and method-specific extras (SpRAy: ``eigenvalues``, ``embedding``,
``gaps``, ``n_groups``, ``eigengap``; GW k-means: ``center_distances``,
``barycenters`` (k, s, s) padded with NaN to the largest centre, and
``barycenter_sizes``). The explanation inputs are the zarr group
of the analysed class (``explain.zarr/<class id>``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from poisonscan import baselines, clustering, distances, evaluate
from poisonscan.clustering import decision as rules
from poisonscan.steps.common import PathLike, log, write_json
from poisonscan.storage import atomic_path, read_array, read_dataset

__all__ = [
    "class_array",
    "cluster_activations",
    "cluster_distances",
    "cluster_gw_kmeans",
    "cluster_raw",
    "evaluate_scenario",
    "read_clusters",
    "spectral_signatures",
    "summarize",
    "write_clusters",
]

SUMMARY_TABLE = ("scenario", "method", "decision_rule", "k_chosen", "n", "n_poison", "tn", "fp",
                 "fn", "tp", "acc", "tpr", "tnr", "f1", "auroc", "clean_acc", "asr")  # fmt: skip


CLUSTER_SCORE = "1 - cluster share, ties by distance from the largest cluster"
CENTRE_SCORE = "distance from the largest cluster's centre (reduced space)"


def class_array(group: PathLike, name: str) -> np.ndarray:
    """Read the array ``name`` of a class group of the explanation store.

    Raises
    ------
    ValueError
        If the group has no such array (the message lists those it has).
    """
    g = zarr.open_group(str(group), mode="r")
    if name not in g.array_keys():
        raise ValueError(f"{group} has no array {name!r}; it has {sorted(g.array_keys())}")
    return read_array(g, name)


def write_clusters(
    out: PathLike,
    method: str,
    labels: np.ndarray,
    flagged: np.ndarray,
    score: np.ndarray,
    k: int | None,
    decision_rule: str,
    **extra: Any,
) -> None:
    """Write one method's result as ``.npz`` (atomically).

    Parameters
    ----------
    labels : ndarray of shape (n,)
        Cluster labels (Spectral Signatures: the flags as 0/1).
    flagged : ndarray of shape (n,), bool
    score : ndarray of shape (n,)
        Continuous poison score, higher = more suspicious.
    k : int or None
        Number of clusters used (None = not a clustering); stored as -1.
    decision_rule : str
        Name of the rule that turned clusters into flags.
    """
    labels, flagged = np.asarray(labels), np.asarray(flagged, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    if not labels.shape == flagged.shape == score.shape:
        raise ValueError(
            f"shapes differ: labels {labels.shape}, flagged {flagged.shape}, score {score.shape}"
        )
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, labels=labels, flagged=flagged, score=score, k=np.int64(-1 if k is None else k),
                 decision_rule=np.str_(decision_rule), method=np.str_(method),
                 **extra)  # fmt: skip
    sizes = np.unique(labels, return_counts=True)[1].tolist()
    log.info("%s: k=%s, cluster sizes %s, rule %s flags %d of %d",
             method, k, sizes, decision_rule, int(flagged.sum()), flagged.size)  # fmt: skip


def read_clusters(path: PathLike) -> dict[str, Any]:
    """Read a file of :func:`write_clusters`; ``k`` is None for -1, strings are ``str``."""
    with np.load(path) as f:
        out: dict[str, Any] = {name: f[name] for name in f.files}
    out["k"] = None if int(out["k"]) < 0 else int(out["k"])
    for name in ("decision_rule", "method", "score_name"):
        if name in out:
            out[name] = str(out[name])
    return out


def _rule(decision: Mapping[str, Any]) -> tuple[str, dict[str, float]]:
    rule = str(decision.get("decision_rule", "size-gap"))
    thresholds = {
        "size_threshold": float(decision.get("size_threshold", 0.35)),
        "silhouette_threshold": float(decision.get("silhouette_threshold", 0.1)),
    }
    return rule, thresholds


def _estimator_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Config section -> estimator keyword arguments (``seed`` -> ``random_state``)."""
    p = dict(params)
    if "seed" in p:
        p["random_state"] = p.pop("seed")
    return p


def cluster_distances(
    distance_store: PathLike,
    out: PathLike,
    clusterer: str,
    params: Mapping[str, Any],
    decision: Mapping[str, Any],
    method: str | None = None,
) -> None:
    """Cluster a precomputed distance matrix and flag the poison.

    Parameters
    ----------
    distance_store : path
        Zarr distance store (``+inf`` = pair not evaluated).
    clusterer : str
        A key of :data:`poisonscan.clustering.CLUSTERERS` (``spectral`` = SpRAy).
    params : mapping
        The clusterer's hyper-parameters (``seed`` is passed as
        ``random_state``). SpRAy also takes ``single_group_no_flag`` (default
        True): flag nothing when the eigengap finds one group and k is automatic.
    decision : mapping
        ``decision_rule``, ``size_threshold``, ``silhouette_threshold``.
    """
    method = method or f"{clusterer}_{Path(str(distance_store)).stem}"
    d = distances.read_distance_store(str(distance_store))
    p = _estimator_params(params)
    single_group_no_flag = bool(p.pop("single_group_no_flag", True))
    if clusterer != "spectral":
        p.pop("random_state", None)
    est = clustering.make_clusterer(clusterer, p).fit(d)
    labels = est.labels_
    rule, thresholds = _rule(decision)
    sil = rules.silhouette(labels, distances=d)
    flagged = rules.decide(labels, rule, silhouette=sil, **thresholds)
    extra: dict[str, Any] = {"silhouette": np.float64(sil), "score_name": np.str_(CLUSTER_SCORE)}
    score = rules.cluster_score(labels, rules.distance_to_cluster_score(d, labels))
    if clusterer == "spectral":
        extra.update(
            eigenvalues=est.eigenvalues_,
            embedding=est.embedding_,
            gaps=est.gaps_,
            n_groups=np.int64(est.n_groups_),
            eigengap=np.float64(est.eigengap_),
        )
        log.info("smallest eigenvalues of L_sym: %s", np.round(est.eigenvalues_[:12], 4).tolist())
        log.info("eigengap: k=%d (largest gap in [1, k_max] after %d)",
                 est.n_clusters_, est.n_groups_)  # fmt: skip
        if single_group_no_flag and est.n_groups_ == 1 and est.n_clusters is None:
            log.info("the spectrum shows one group: nothing is flagged")
            flagged = np.zeros_like(flagged)
            rule = f"{rule} (one group: none)"
    write_clusters(out, method, labels, flagged, score, est.n_clusters_, rule, **extra)


def cluster_gw_kmeans(
    distance_store: PathLike,
    explanations: PathLike,
    out: PathLike,
    params: Mapping[str, Any],
    gw: Mapping[str, Any],
    decision: Mapping[str, Any],
) -> None:
    """The reference study's GW k-means: k-means++ on the GW matrix, barycentre centres.

    Parameters
    ----------
    distance_store : path
        The GW distance store (for the k-means++ seeding and the silhouette).
    explanations : path
        Zarr group of the analysed class (``heatmaps``).
    params : mapping
        ``n_clusters``, ``support_size``, ``barycenter_epsilon``, ``max_iter``,
        ``barycenter_max_iter``, ``barycenter_tol``, ``seed``.
    gw : mapping
        The ``distances.gw`` section: ``pool``, ``mass``, ``metric`` build the
        metric measure spaces and ``epsilon`` the assignment GW, as for the matrix.
    """
    d = distances.read_distance_store(str(distance_store))
    heatmaps = class_array(str(explanations), "heatmaps")
    spaces = clustering.spaces_from_heatmaps(
        heatmaps, pool=int(gw.get("pool", 4)), mass=gw.get("mass", 0.99),
        metric=str(gw.get("metric", "euclidean")),
    )  # fmt: skip
    p = _estimator_params(params)
    est = clustering.GromovWassersteinKMeans(epsilon=float(gw.get("epsilon", 0.0)), **p)
    est.fit(spaces, distances=d)
    log.info("GW k-means: %d iterations, converged %s", est.n_iter_, est.converged_)
    labels = est.labels_
    rule, thresholds = _rule(decision)
    sil = rules.silhouette(labels, distances=d)
    flagged = rules.decide(labels, rule, silhouette=sil, **thresholds)
    score = rules.cluster_score(
        labels, est.center_distances_[:, int(rules.largest_cluster(labels))]
    )
    # centres differ in size (a seed's own space, or support_size points): pad with NaN
    sizes = np.array([len(c) for c in est.barycenters_], dtype=np.int64)
    barycenters = np.full((len(sizes), sizes.max(), sizes.max()), np.nan)
    for j, c in enumerate(est.barycenters_):
        barycenters[j, : len(c), : len(c)] = c
    write_clusters(out, "gw_kmeans", labels, flagged, score, est.n_clusters, rule,
                   silhouette=np.float64(sil), center_distances=est.center_distances_,
                   barycenters=barycenters, barycenter_sizes=sizes,
                   score_name=np.str_(CLUSTER_SCORE),
                   n_iter=np.int64(est.n_iter_), converged=np.bool_(est.converged_),
                   init=np.asarray(est.init_indices_))  # fmt: skip


def _sibling_medians(group: Path, params: Mapping[str, Any]) -> list[np.ndarray]:
    """Medians of the reduced activations of every other class group of the store."""
    from poisonscan.explain.store import class_group_path, store_classes

    store, own = group.parent, group.name
    feats = []
    for cls in store_classes(store):
        if str(cls) == own:
            continue
        act = class_array(class_group_path(store, cls), "activations")
        if len(act) > 1:
            feats.append(act)
    if not feats:
        raise ValueError(f"the 'distance' analysis needs other classes; {store} has none")
    return baselines.class_medians(
        feats, int(params.get("nb_dims", 10)), str(params.get("reduce", "PCA")),
        params.get("seed", 0),
    )  # fmt: skip


def cluster_activations(explanations: PathLike, out: PathLike, params: Mapping[str, Any]) -> None:
    """Activation Clustering (ART's options) of the class's penultimate activations.

    ``params`` is the ``activation_clustering`` section: ``nb_dims``, ``reduce``,
    ``nb_clusters``, ``cluster_analysis``, ``size_threshold``,
    ``silhouette_threshold``, ``n_init``, ``seed``. The ``distance`` analysis
    reads the other class groups of the same store.
    """
    group = Path(str(explanations))
    act = class_array(str(group), "activations")
    est = baselines.ActivationClustering(**_estimator_params(params))
    others = _sibling_medians(group, params) if est.cluster_analysis == "distance" else None
    est.fit(act, other_medians=others)
    write_clusters(out, "ac", est.labels_, est.flagged_, est.score_, est.nb_clusters,
                   est.cluster_analysis, silhouette=np.float64(est.silhouette_),
                   embedding=est.reduced_, score_name=np.str_(CENTRE_SCORE))  # fmt: skip


def spectral_signatures(explanations: PathLike, out: PathLike, params: Mapping[str, Any]) -> None:
    """Spectral Signatures of the class's activations.

    ``params`` is the ``baselines.ss`` section: ``expected_poison_rate``, ``eps_multiplier``.
    """
    act = class_array(str(explanations), "activations")
    est = baselines.SpectralSignatures(**dict(params)).fit(act)
    q = 1.0 - est.eps_multiplier * est.expected_poison_rate
    write_clusters(out, "ss", est.labels_, est.flagged_, est.score_, None,
                   f"score > quantile {q:.3g}", threshold=np.float64(est.threshold_),
                   score_name=np.str_("squared projection on the top singular vector"))  # fmt: skip


def cluster_raw(
    dataset: PathLike,
    explanations: PathLike,
    out: PathLike,
    params: Mapping[str, Any],
    decision: Mapping[str, Any],
) -> None:
    """Raw-pixel control: grayscale images of the class -> PCA/FastICA -> k-means.

    The images are the training images at the class group's ``index``.
    """
    index = class_array(str(explanations), "index")
    images = read_dataset(dataset).x_train[index]
    rule, thresholds = _rule(decision)
    est = baselines.RawPixelClustering(cluster_analysis=rule, **thresholds,
                                       **_estimator_params(params)).fit(images)  # fmt: skip
    write_clusters(out, "raw", est.labels_, est.flagged_, est.score_, est.nb_clusters, rule,
                   silhouette=np.float64(est.silhouette_),
                   score_name=np.str_(CENTRE_SCORE))  # fmt: skip


def evaluate_scenario(
    explanations: PathLike,
    metrics: PathLike,
    clusters: Mapping[str, PathLike],
    out: PathLike,
    context: Mapping[str, Any],
    art_out: PathLike | None = None,
) -> None:
    """Score every method's flags and scores against the ground truth; one row per method.

    Parameters
    ----------
    explanations : path
        Zarr group of the analysed class (``poison``; the group's name is the class id).
    metrics : path
        The trained model's metrics JSON (``clean_acc``, ``asr``).
    clusters : mapping of method name to ``.npz`` path
    out : path
        JSON list of summary rows.
    context : mapping
        Descriptive columns added to every row.
    art_out : path, optional
        JSON in the shape of ART's ``evaluate_defence``, per method:
        ``{method: {"class_<id>": {...}}}``.
    """
    group = Path(str(explanations))
    poison = class_array(str(group), "poison").astype(bool)
    cls = int(group.name) if group.name.isdigit() else 0
    train_metrics = json.loads(Path(metrics).read_text())
    rows, art = [], {}
    for method, path in sorted(clusters.items()):
        res = read_clusters(path)
        if res["flagged"].shape != poison.shape:
            raise ValueError(
                f"{path} has {res['flagged'].size} samples but {group} has {poison.size}"
            )
        rows.append({
            **context,
            "method": method,
            "decision_rule": res["decision_rule"],
            "k_chosen": res["k"],
            "n": int(poison.size),
            "n_poison": int(poison.sum()),
            **evaluate.detection_metrics(res["flagged"], poison, res["score"]),
            "clean_acc": train_metrics["clean_acc"],
            "asr": train_metrics["asr"],
        })  # fmt: skip
        art[method] = evaluate.art_report({cls: (res["flagged"], poison)})
    write_json(out, rows)
    if art_out is not None:
        write_json(art_out, art)


def summarize(evaluations: Sequence[PathLike], out: PathLike) -> str:
    """Collect the per-scenario evaluations into one CSV; return it as a text table."""
    rows = [row for path in evaluations for row in json.loads(Path(path).read_text())]
    evaluate.write_summary(out, rows)
    return evaluate.format_table(rows, SUMMARY_TABLE)
