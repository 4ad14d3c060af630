"""Batched conditional-gradient GW for small supports (many pairs per call, CPU or CUDA).

POT's exact GW solver (``ot.gromov.gromov_wasserstein2``) is a conditional gradient
(Frank-Wolfe) method: from ``T0 = p q^T`` it repeatedly solves a linear OT problem on the
gradient ``2 constC - 4 C1 T C2`` (the linear minimisation oracle, LMO; one network-simplex
``emd`` per step, about 85 % of its time on the 8x8 grids) and moves towards its solution
with an exact quadratic line search. On the 8x8 pooled supports every one of its steps was
a unit step (measured), so its path is ``T_{k+1} = LMO(T_k)`` from vertex to vertex until
the LMO returns the current plan. This module runs that path on B pairs at once in torch:

* **First step exact.** At ``T0 = p q^T`` the gradient is, up to separable terms,
  ``-4 (C1 p)(C2 q)^T``: its LMO is the comonotone coupling of ``C1 p`` and ``C2 q``
  (sort both, couple their quantiles), so the first step is POT's own, for the price of
  two sorts.
* **Later LMOs entropic.** Each further LMO is the entropic OT plan of the gradient at a
  small ``epsilon`` (the kernel ``exp(4 C1 T C2 / epsilon)`` of POT's entropic GW), by
  over-relaxed Sinkhorn warm-started from the dual potentials of the previous LMO, with a
  fixed budget of iterations (so a pair's value does not depend on its batch), then
  rounded onto the marginals (Altschuler et al.: scale rows and columns down, add the
  missing mass as a product), so that every iterate is a feasible plan. A unit step
  follows. Without the exact first step this is POT's entropic GW iteration
  (``entropic_gromov_wasserstein``, PGD), stopped early: starting from POT's first vertex
  keeps the path near POT's exact one (measured: closer ranks with fewer steps).
* **Value.** The smallest GW loss ``<constC - 2 C1 T C2, T>`` of the plans visited, the
  first (exact, sharp) one included: where POT stops after its first step (a space against
  itself, for one) that is POT's value. Unit steps from LMO to LMO can cycle (a pair's loss
  going up and down by 3x from step to step was seen on synthetic heatmaps), so the best
  plan, not the last, counts. It is the exact GW loss of a feasible plan near POT's local
  minimum, not an entropic loss; the blur of the entropic plans makes it somewhat larger
  than POT's. The product ``C1 T C2`` of each plan serves both its loss (summed in
  float64) and the next gradient.

A pair stops when a step changes its loss by at most ``tol`` (relative) or after
``max_iter`` steps. On supports of a few dozen points a batch fits in cache: the gradient
``C1 T C2`` is two dense batched matrix products, and every pass over the (B, N, M) plans
is cheap.

Float32 safety: the log-kernel of each LMO is shifted row-wise to a maximum of 0 (and a
column whose maximum would underflow is shifted up); inside Sinkhorn the scalings are
clamped to ``[exp(-40), exp(40)]``, so nothing overflows, and absorbed into the kernel and
the potentials once they leave ``exp(+-20)`` (tested every ``check_every`` iterations).
The first LMO, whose potentials are cold, runs in float64. Zero-mass padding points get a
tiny mass inside the solver and none after the rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from poisonscan.distances._batched_gw import _as_tensor, _flush_denormal, _keep_freed_memory

__all__ = ["BatchedCGOptions", "batched_cg_gw", "comonotone_coupling"]

_DTYPES = ("float32", "float64")
# mass given to zero-mass (padding) points inside the solver, relative to 1
_PAD_MASS = 1e-12


@dataclass(frozen=True)
class BatchedCGOptions:
    """Options of :func:`batched_cg_gw`.

    Attributes
    ----------
    epsilon : float
        Entropic regularisation of the linear minimisation oracle, in POT's convention
        (kernel ``exp(-grad / epsilon)`` with ``grad = 2 constC - 4 C1 T C2`` on costs in
        [0, 1]). Smaller follows POT's exact path more closely but needs more Sinkhorn
        iterations.
    max_iter : int
        Frank-Wolfe steps after the exact first one, at most.
    tol : float
        A pair stops once a step changes its GW loss by at most ``tol`` times the loss.
    inner_iter : int
        Sinkhorn iterations per LMO after the first (a fixed budget, so that a pair's
        iterations do not depend on the other pairs of its batch; its padding must not
        either, see ``_solve_batched_cg``).
    first_iter : int
        Sinkhorn iterations of the first LMO, whose potentials start cold.
    omega : float
        Over-relaxation of the Sinkhorn updates, in [1, 2) (1: plain Sinkhorn; 1.7 and
        more diverged on some pairs).
    check_every : int
        The size of the scalings is tested every ``check_every`` Sinkhorn iterations.
    dtype : {"float32", "float64"}
        Working precision (the losses are summed in float64).
    device : str
        Torch device, e.g. ``"cpu"`` or ``"cuda"``.
    """

    epsilon: float = 0.003
    # Budgets measured one thread, on 1024 pairs of 300 real GTSRB class-5 heatmaps and of
    # the 96 synthetic ones of ``bench gw`` (8x8 grid, 99 % of the mass) against POT exact
    # (fastest of 3, CPU time), pairs/s and Spearman, real / synthetic, for
    # (max_iter, inner_iter, first_iter): (8, 20, 10) 2258 / 3651, 0.989 / 0.995;
    # (7, 12, 10) 3483 / 5921, 0.985 / 0.986; (6, 14, 8) 3469 / 5980, 0.983 / 0.985;
    # (6, 12, 8) 3566 / 6179, 0.981 / 0.982; (6, 12, 10) 3431 / 5885, 0.979 / 0.982;
    # (5, 20, 10) 3174 / 5828, 0.973 / 0.986; omega 1 instead of 1.5 at (7, 12, 10): 0.966
    # / 0.952. These runs vary by about 5 % from run to run.
    max_iter: int = 6
    tol: float = 1e-4
    inner_iter: int = 14
    first_iter: int = 8
    omega: float = 1.5
    check_every: int = 5
    dtype: str = "float32"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"epsilon must be > 0, got {self.epsilon!r}")
        for name in ("max_iter", "inner_iter", "first_iter", "check_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.tol > 0:
            raise ValueError(f"tol must be > 0, got {self.tol!r}")
        if not 1.0 <= self.omega < 2.0:
            raise ValueError(f"omega must be in [1, 2), got {self.omega!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {self.dtype!r}")


def comonotone_coupling(a: Any, p: Any, b: Any, q: Any) -> Any:
    """The coupling of ``p`` and ``q`` that maximises ``sum_ij a_i b_j X_ij``, per batch row.

    Both sides are ordered by their score and their quantiles are matched (the north-west
    corner rule on the sorted supports), which is optimal for a product cost. Each point
    owns the interval ``[lo, hi)`` of the cumulative weight in score order; ``X_ij`` is the
    length of the overlap of the intervals of ``i`` and ``j``.

    Parameters
    ----------
    a, p : tensors of shape (B, N)
        Scores and weights of the first side (weights may be 0).
    b, q : tensors of shape (B, M)

    Returns
    -------
    tensor of shape (B, N, M)
        Non-negative, with row sums ``p`` and column sums ``q`` (when both sum to the same).
    """
    import torch

    def intervals(score: Any, weight: Any) -> tuple[Any, Any]:
        order = score.argsort(1)
        upper = weight.gather(1, order).cumsum(1)
        hi = torch.empty_like(weight).scatter_(1, order, upper)
        return hi - weight, hi

    lo_p, hi_p = intervals(a, p)
    lo_q, hi_q = intervals(b, q)
    overlap = torch.minimum(hi_p[:, :, None], hi_q[:, None, :])
    overlap -= torch.maximum(lo_p[:, :, None], lo_q[:, None, :])
    return overlap.clamp_min_(0.0)


def batched_cg_gw(
    c1: Any,
    p1: Any,
    c2: Any,
    p2: Any,
    options: BatchedCGOptions,
    *,
    c1p: Any = None,
    c2q: Any = None,
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
    """GW losses of B pairs of metric measure spaces by batched conditional gradient.

    Parameters
    ----------
    c1 : array of shape (B, N, N)
        Cost matrices of the first space of each pair (symmetric; padding rows and
        columns may hold anything).
    p1 : array of shape (B, N)
        Its weights (each row sums to 1; zeros mark padding).
    c2 : array of shape (B, M, M)
    p2 : array of shape (B, M)
    options : BatchedCGOptions
    c1p, c2q : array of shape (B, N) and (B, M), optional
        ``(C1 * C1) @ p1`` and ``(C2 * C2) @ p2`` (computed if not given).
    return_info : bool, default False
        Also return a dict with the Frank-Wolfe steps ``n_iter`` (the exact first one
        included), the Sinkhorn iterations ``n_inner`` and ``converged`` (bool) per pair.

    Returns
    -------
    values : ndarray of shape (B,), float64
        The smallest GW loss ``<constC - 2 C1 T C2, T>`` of the feasible plans each pair visited.
    info : dict, only if ``return_info``

    Raises
    ------
    ValueError
        For inconsistent shapes.
    FloatingPointError
        If a plan became NaN.
    """
    import torch

    device = torch.device(options.device)
    c1t, c2t = _as_tensor(c1, torch.float64, device), _as_tensor(c2, torch.float64, device)
    p1t, p2t = _as_tensor(p1, torch.float64, device), _as_tensor(p2, torch.float64, device)
    if (
        c1t.ndim != 3 or c2t.ndim != 3 or c1t.shape[1] != c1t.shape[2]
        or c2t.shape[1] != c2t.shape[2] or p1t.shape != c1t.shape[:2]
        or p2t.shape != c2t.shape[:2] or c1t.shape[0] != c2t.shape[0]
    ):  # fmt: skip
        raise ValueError(
            f"expected c1 (B, N, N), p1 (B, N), c2 (B, M, M), p2 (B, M); got "
            f"{tuple(c1t.shape)}, {tuple(p1t.shape)}, {tuple(c2t.shape)}, {tuple(p2t.shape)}"
        )
    n_pairs = c1t.shape[0]
    info: dict[str, np.ndarray] = {
        "n_iter": np.zeros(n_pairs, dtype=np.int64),
        "n_inner": np.zeros(n_pairs, dtype=np.int64),
        "converged": np.zeros(n_pairs, dtype=bool),
    }
    if n_pairs == 0:
        return (np.zeros(0), info) if return_info else np.zeros(0)
    c1p = (c1t * c1t @ p1t[..., None])[..., 0] if c1p is None else c1p
    c2q = (c2t * c2t @ p2t[..., None])[..., 0] if c2q is None else c2q
    c1p = _as_tensor(c1p, torch.float64, device)
    c2q = _as_tensor(c2q, torch.float64, device)
    if device.type == "cpu":
        _keep_freed_memory()
    with _flush_denormal(), torch.inference_mode():
        values = _solve(c1t, c2t, p1t, p2t, c1p, c2q, options, info)
    if not np.isfinite(values).all():
        bad = np.flatnonzero(~np.isfinite(values)).tolist()
        raise FloatingPointError(
            f"batched CG GW produced a NaN plan for pair(s) {bad[:5]} at epsilon="
            f"{options.epsilon}, dtype={options.dtype}; use dtype='float64' or a larger epsilon"
        )
    return (values, info) if return_info else values


def _dot(a: Any, b: Any) -> Any:
    """Frobenius inner products of (B, N, M) tensors, shape (B,), in float64."""
    import torch

    return (a * b).sum((1, 2), dtype=torch.float64)


class _Work:
    """The state of the pairs still being solved (all tensors share dim 0)."""

    def __init__(self, **tensors: Any) -> None:
        self.__dict__.update(tensors)

    def select(self, keep: Any) -> _Work:
        return _Work(**{k: v[keep] for k, v in self.__dict__.items()})


def _solve(
    c1: Any,
    c2: Any,
    p: Any,
    q: Any,
    c1p: Any,
    c2q: Any,
    opt: BatchedCGOptions,
    info: dict[str, np.ndarray],
) -> np.ndarray:
    """Frank-Wolfe on every pair; returns the GW losses (B,) in float64."""
    import torch

    n_pairs, n, _ = c1.shape
    m = c2.shape[1]
    dtype = getattr(torch, opt.dtype)
    device = c1.device
    # <constC, T> of any plan with marginals (p, q)
    const = (c1p * p).sum(1) + (c2q * q).sum(1)
    # the exact first step (see the module docstring), from float64 scores
    first = comonotone_coupling((c1 @ p[..., None])[..., 0], p, (c2 @ q[..., None])[..., 0], q)
    first = first.to(dtype)
    w = _Work(
        idx=torch.arange(n_pairs, device=device),
        c1=c1.to(dtype),
        c2=c2.to(dtype),
        p0=p.to(dtype),
        q0=q.to(dtype),
        # zero-mass padding gets a tiny mass: Sinkhorn then needs no masks
        p=torch.where(p > 0, p, _PAD_MASS).to(dtype)[:, None, :],
        q=torch.where(q > 0, q, _PAD_MASS).to(dtype)[:, None, :],
        const=const,
        alpha=torch.zeros(n_pairs, n, 1, dtype=dtype, device=device),
        beta=torch.zeros(n_pairs, 1, m, dtype=dtype, device=device),
    )
    w.grad = torch.bmm(torch.bmm(w.c1, first), w.c2)  # C1 T C2
    first_loss = w.const - 2.0 * _dot(w.grad, first)
    w.loss = w.best = first_loss
    values = torch.empty_like(first_loss)
    scale = 4.0 / opt.epsilon
    n_inner = torch.zeros(n_pairs, dtype=torch.int64, device=device)
    info["n_iter"][:] = 1
    for it in range(1, opt.max_iter + 1):
        plan = _rounded(_lmo(w, scale, opt, n_inner, cold=it == 1), w.p0, w.q0)
        w.grad = torch.bmm(torch.bmm(w.c1, plan), w.c2)
        loss = w.const - 2.0 * _dot(w.grad, plan)
        w.best = torch.minimum(loss, w.best)
        done = (loss - w.loss).abs() <= opt.tol * loss.abs()
        w.loss = loss
        ids = w.idx.cpu().numpy()
        info["n_iter"][ids] = it + 1
        if it == opt.max_iter:
            info["converged"][ids] = done.cpu().numpy()
            done = torch.ones_like(done)
        else:
            info["converged"][ids[done.cpu().numpy()]] = True
        if bool(done.any()):
            values[w.idx[done]] = w.best[done]
            keep = ~done
            if not bool(keep.any()):
                break
            w = w.select(keep)
    info["n_inner"][:] = n_inner.cpu().numpy()
    return values.cpu().numpy()


def _rounded(plan: Any, p: Any, q: Any) -> Any:
    """Each plan rounded onto its marginals (p, q) (Altschuler et al.), in place.

    Rows and then columns are scaled down to their marginals and the missing mass is added
    as a product: the plan stays non-negative and meets (p, q) up to rounding, so its loss
    is that of a feasible plan (with a fixed Sinkhorn budget an unrounded plan misses its
    marginals, and one that lost mass looks better than it is: taking the best of the
    unrounded plans ranked real pairs at Spearman 0.84 instead of 0.99).
    """
    import torch

    tiny = torch.finfo(plan.dtype).tiny
    plan *= torch.where(p > 0, p / plan.sum(2).clamp_min(tiny), 0.0).clamp_(max=1.0)[:, :, None]
    plan *= torch.where(q > 0, q / plan.sum(1).clamp_min(tiny), 0.0).clamp_(max=1.0)[:, None, :]
    # (>= 0 but for rounding; clamped, so that miss_p / its sum stays in [0, 1])
    miss_p, miss_q = (p - plan.sum(2)).clamp_min_(0.0), (q - plan.sum(1)).clamp_min_(0.0)
    miss_q /= miss_p.sum(1, keepdim=True).clamp_min(tiny)
    return plan.baddbmm_(miss_p[:, :, None], miss_q[:, None, :])


def _lmo(w: _Work, scale: float, opt: BatchedCGOptions, n_inner: Any, cold: bool) -> Any:
    """Entropic LMO: ``diag(u) exp(scale * C1 T C2 + alpha + beta) diag(v)`` with marginals
    (p, q), by warm-started over-relaxed Sinkhorn; updates ``w.alpha`` and ``w.beta``.

    ``cold``: the potentials are not warm yet (first LMO); its scalings span about
    exp(+-400), beyond float32, so this one LMO runs in float64.
    """
    import torch

    dtype = getattr(torch, opt.dtype)
    work = torch.float64 if cold else dtype
    # Scalings stay in [exp(-limit), exp(limit)] (clamped, so that nothing overflows
    # between two checks) and are absorbed once they leave exp(+-limit / 2).
    limit = 300.0 if work == torch.float64 else 40.0  # exp(88) overflows float32
    big, small = math.exp(limit), math.exp(-limit)
    alpha, beta = w.alpha.to(work), w.beta.to(work)
    logk = torch.add(alpha, w.grad.to(work), alpha=scale)
    logk += beta
    row_max = _max_along(logk, 2)
    logk -= row_max
    alpha -= row_max
    # a column whose largest entry would underflow is shifted up (v then stays in range)
    low = _max_along(logk, 1).add_(limit).clamp_(max=0.0)
    logk -= low
    beta -= low
    kern = logk.exp_()
    kern_t = kern.transpose(1, 2)  # a view: bmm reads it as a transposed matrix
    p, q, omega = w.p.to(work), w.q.to(work), opt.omega
    u = torch.ones_like(p)
    v = torch.ones_like(q)
    for k in range(1, (opt.first_iter if cold else opt.inner_iter) + 1):
        # over-relaxed updates u <- u^(1 - omega) r^omega = r (r / u)^(omega - 1) with
        # r = p / (K v) (the plain update), the same for v (fewest element-wise passes)
        r = torch.div(p, torch.bmm(v, kern_t))
        u = r if k == 1 else r.div(u).pow_(omega - 1.0).mul_(r)
        u.clamp_(small, big)
        r = torch.div(q, torch.bmm(u, kern))
        v = r if k == 1 else r.div(v).pow_(omega - 1.0).mul_(r)
        v.clamp_(small, big)
        if k % opt.check_every == 0:
            lo = torch.minimum(u.amin(), v.amin()).log()
            hi = torch.maximum(u.amax(), v.amax()).log()
            if bool(torch.maximum(hi, -lo) > limit / 2):
                kern.mul_(u.transpose(1, 2)).mul_(v)
                alpha += u.log().transpose(1, 2)
                beta += v.log()
                u, v = torch.ones_like(p), torch.ones_like(q)
    n_inner[w.idx] += k
    w.alpha = (alpha + u.log().transpose(1, 2)).to(dtype)
    w.beta = (beta + v.log()).to(dtype)
    return kern.mul_(u.transpose(1, 2)).mul_(v).to(dtype)


def _max_along(x: Any, dim: int) -> Any:
    """``x.amax(dim, keepdim=True)`` by halving (torch's float32 ``amax`` over one short
    dimension runs a scalar loop: 1.7-5x slower on these plans, measured)."""
    import torch

    if x.shape[dim] == 1:
        return x.clone()  # never x itself: the callers shift x in place by the result
    while (size := x.shape[dim]) > 1:
        half = size // 2
        y = torch.maximum(x.narrow(dim, 0, half), x.narrow(dim, half, half))
        if size % 2:
            head = y.narrow(dim, 0, 1)
            torch.maximum(head, x.narrow(dim, size - 1, 1), out=head)
        x = y
    return x
