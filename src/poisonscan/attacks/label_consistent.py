"""Label-consistent backdoor (Turner, Tsipras, Madry 2019) with PGD on a clean proxy model.

``n = round(p * n_target)`` target-class training images (drawn without
replacement: ``p`` is the share of the target class that is perturbed, as in
Turner et al. and the reference study, *not* the dirty-label definition
``p * n / (1 - p)``) are made hard to classify by projected gradient ascent
on the proxy model's cross-entropy for their true label; then the trigger is
added and the label is kept. At test time the full-amplitude trigger goes on
every non-target test image, so the per-class attack success rates and their
mean (mAER) come out of :func:`poisonscan.inference.attack_success_rates`.

PGD works in pixel units (0..255) for ``eps`` and ``step_size``, without a
random start, on the proxy in eval mode (its :class:`~poisonscan.inference.Normalization`
is applied inside the loss):

- ``linf``: ``delta += step_size * sign(grad)``, then ``delta`` is clipped to [-eps, eps];
- ``l2``: ``delta += step_size * grad / ||grad||_2``, then ``delta *= min(1, eps / ||delta||_2)``
  per image (the projection onto the eps ball; the reference code divided the
  *image* by its norm instead);

after each step ``x + delta`` is clipped to 0..255. The result is quantised to
uint8 without leaving the eps ball: l-inf rounds to the nearest integer within
``floor(eps)``; l2 rounds to the nearest integer and, where that pushes the
norm over ``eps``, rounds the coordinates that rounding enlarged most back
towards zero until the norm fits. So the stored perturbation (poisoned image
before the trigger minus the clean image) has norm <= eps exactly.

Torch is imported inside the functions, so importing :mod:`poisonscan.attacks`
(done by config validation) does not need it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from poisonscan.attacks.base import (
    Attack,
    AttackParameterError,
    check_class,
    check_count,
    check_rate,
    choose,
    poisoned_dataset,
    register_attack,
)
from poisonscan.attacks.stamp import StickerFields
from poisonscan.attacks.triggers import Box, Checkerboard, Sticker
from poisonscan.storage import ImageDataset

__all__ = [
    "DEFAULT_EPS",
    "NORMS",
    "TRIGGERS",
    "LabelConsistentAttack",
    "Proxy",
    "perturbation_norms",
    "pgd_perturb",
    "quantize_perturbation",
]

NORMS: tuple[str, ...] = ("l2", "linf")
TRIGGERS: tuple[str, ...] = ("checkerboard", "sticker")
DEFAULT_EPS: dict[str, float] = {"l2": 300.0, "linf": 8.0}
"""eps when none is given: Turner et al.'s l2 300 and the common l-inf 8 (pixel units)."""


@dataclass(frozen=True)
class Proxy:
    """A clean model to attack with PGD.

    Attributes
    ----------
    model : torch.nn.Module
    normalization : poisonscan.inference.Normalization
        Input normalisation of the model.
    info : dict
        Provenance recorded in the poisoned dataset's meta (checkpoint hash ...).
    """

    model: Any
    normalization: Any
    info: dict[str, Any] = field(default_factory=dict)


def perturbation_norms(adversarial: np.ndarray, clean: np.ndarray, norm: str) -> np.ndarray:
    """Per-image ``norm`` of ``adversarial - clean`` (both (n, H, W, C)), float64 (n,)."""
    d = adversarial.astype(np.float64) - clean.astype(np.float64)
    d = d.reshape(len(d), -1)
    if norm == "l2":
        return np.sqrt(np.sum(d * d, axis=1))
    if norm == "linf":
        return np.abs(d).max(axis=1, initial=0.0)
    raise AttackParameterError("norm", f"unknown norm {norm!r}; allowed: {list(NORMS)}")


def quantize_perturbation(
    images: np.ndarray, delta: np.ndarray, norm: str, eps: float
) -> np.ndarray:
    """uint8 ``images + delta`` whose perturbation stays inside the ``norm`` ball of radius ``eps``.

    Parameters
    ----------
    images : ndarray of shape (n, H, W, C), uint8
    delta : ndarray of shape (n, H, W, C), float
        With ``images + delta`` in 0..255 and norm at most (about) ``eps``.
    norm : {'l2', 'linf'}
    eps : float

    Returns
    -------
    ndarray of shape (n, H, W, C), uint8
    """
    n = len(images)
    d = delta.astype(np.float64).reshape(n, -1)
    if norm == "linf":
        bound = math.floor(eps)
        q = np.clip(np.rint(d), -bound, bound)
    elif norm == "l2":
        # re-project in float64 (the float32 PGD may sit a hair outside the ball)
        lengths = np.sqrt(np.sum(d * d, axis=1))
        d = d * np.minimum(1.0, eps / np.maximum(lengths, 1e-300))[:, None]
        q, t = np.rint(d), np.trunc(d)  # |t| <= |d| coordinate-wise, so ||t|| <= eps
        for i in range(n):
            excess = float(np.sum(q[i] ** 2)) - eps * eps
            if excess <= 0:
                continue
            cand = np.flatnonzero(q[i] != t[i])  # rounded away from zero
            order = cand[np.argsort(np.abs(d[i, cand]) - np.abs(q[i, cand]), kind="stable")]
            gain = np.cumsum(q[i, order] ** 2 - t[i, order] ** 2)
            k = int(np.searchsorted(gain, excess)) + 1
            q[i, order[:k]] = t[i, order[:k]]
    else:
        raise AttackParameterError("norm", f"unknown norm {norm!r}; allowed: {list(NORMS)}")
    x = images.reshape(n, -1).astype(np.float64)
    return np.clip(x + q, 0, 255).astype(np.uint8).reshape(images.shape)


def pgd_perturb(
    model: Any,
    normalization: Any,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    norm: str,
    eps: float,
    step_size: float,
    steps: int,
    batch_size: int = 128,
) -> np.ndarray:
    """PGD ascent on ``model``'s cross-entropy for ``labels``, quantised to uint8.

    Parameters
    ----------
    model : torch.nn.Module
        Run in eval mode (its mode is restored afterwards).
    normalization : poisonscan.inference.Normalization
    images : ndarray of shape (n, H, W, 3), uint8
    labels : ndarray of shape (n,), int
    norm : {'l2', 'linf'}
    eps, step_size : float
        Pixel units (0..255).
    steps : int
    batch_size : int

    Returns
    -------
    ndarray of shape (n, H, W, 3), uint8
        The perturbed images (see the module docstring for the exact steps).
    """
    import torch
    from torch.nn import functional

    if norm not in NORMS:
        raise AttackParameterError("norm", f"unknown norm {norm!r}; allowed: {list(NORMS)}")
    device = next(model.parameters()).device
    mean = torch.tensor(normalization.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(normalization.std, device=device).view(1, -1, 1, 1)
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(images), batch_size):
            xb = images[start : start + batch_size]
            x = torch.as_tensor(xb, device=device).permute(0, 3, 1, 2).float()
            y = torch.as_tensor(labels[start : start + batch_size], device=device).long()
            delta = torch.zeros_like(x)
            for _ in range(steps):
                delta.requires_grad_(True)
                logits = model(((x + delta) / 255.0 - mean) / std)
                loss = functional.cross_entropy(logits, y, reduction="sum")
                (grad,) = torch.autograd.grad(loss, delta)
                with torch.no_grad():
                    if norm == "linf":
                        delta = (delta + step_size * grad.sign()).clamp(-eps, eps)
                    else:
                        g = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                        delta = delta + step_size * grad / g
                        d = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
                        delta = delta * (eps / d).clamp(max=1.0).view(-1, 1, 1, 1)
                    delta = (x + delta).clamp(0.0, 255.0) - x
            d_np = delta.detach().permute(0, 2, 3, 1).cpu().numpy()
            out.append(quantize_perturbation(xb, d_np, norm, eps))
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else images.copy()


@register_attack
@dataclass(frozen=True, kw_only=True)
class LabelConsistentAttack(StickerFields, Attack):
    """Label-consistent backdoor: PGD on a proxy model, then a trigger, labels kept.

    Parameters
    ----------
    target : int
    poison_rate : float
        Share of the target class that is perturbed and triggered, in (0, 1).
    norm : {'l2', 'linf'}
    eps : float or None
        Radius in pixel units; None -> :data:`DEFAULT_EPS` of ``norm``.
    step_size : float or None
        Pixel units; None -> ``2.5 * eps / steps``.
    steps : int
    batch_size : int
        Images per PGD batch.
    trigger : {'checkerboard', 'sticker'}
        ``checkerboard``: ``sticker_size`` x ``sticker_size`` +-``amplitude``
        checkerboard at ``distance`` from the bottom-right corner or at all four
        ``corners`` (the recorded position is the bottom-right copy);
        ``sticker``: the colour sticker with the placement fields.
    amplitude, distance, corners
        Checkerboard only; at test time the amplitude is 255.
    sticker_size, color, placement, window, position
        As for the sticker attack (only ``sticker_size`` for the checkerboard).
    seed : int
        Which images, and sticker positions.
    """

    name: ClassVar[str] = "label_consistent"
    needs_proxy: ClassVar[bool] = True
    rate_definition: ClassVar[str] = (
        "n_poison = round(p * n_target) target-class images (without replacement) are "
        "perturbed and triggered, labels kept"
    )
    target: int
    poison_rate: float
    norm: str = "l2"
    eps: float | None = None
    step_size: float | None = None
    steps: int = 10
    batch_size: int = 128
    trigger: str = "checkerboard"
    amplitude: int = 255
    distance: int = 10
    corners: str = "bottom_right"
    seed: int = 0

    def __post_init__(self) -> None:
        # record the effective values, so the dataset's meta holds them
        if self.eps is None and self.norm in DEFAULT_EPS:
            object.__setattr__(self, "eps", DEFAULT_EPS[self.norm])
        ok = isinstance(self.eps, int | float) and isinstance(self.steps, int) and self.steps > 0
        if self.step_size is None and ok:
            object.__setattr__(self, "step_size", 2.5 * float(self.eps) / self.steps)

    def make_trigger(self) -> Sticker | Checkerboard:
        if self.trigger == "sticker":
            return self.sticker
        if self.trigger == "checkerboard":
            return Checkerboard(self.sticker_size, self.amplitude, self.distance, self.corners)
        raise AttackParameterError(
            "trigger", f"unknown trigger {self.trigger!r}; allowed: {list(TRIGGERS)}"
        )

    def check(self, n_classes: int, image_size: tuple[int, int]) -> None:
        check_class("target", self.target, n_classes)
        check_rate(self.poison_rate)
        if self.norm not in NORMS:
            raise AttackParameterError(
                "norm", f"unknown norm {self.norm!r}; allowed: {list(NORMS)}"
            )
        for key in ("steps", "batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise AttackParameterError(key, f"{value!r} must be an integer >= 1")
        for key in ("eps", "step_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise AttackParameterError(key, f"{value!r} is not a number")
            if not value > 0 or not math.isfinite(value):
                raise AttackParameterError(key, f"{value} must be a finite number > 0")
        self.make_trigger().check(image_size)

    def n_poison(self, class_counts: np.ndarray) -> int:
        n_target = int(class_counts[self.target])
        n = round(check_rate(self.poison_rate) * n_target)
        return check_count(n, n_target, f"target-class ({self.target})")

    def trigger_boxes(self, position: np.ndarray, image_size: tuple[int, int]) -> list[Box]:
        return self.make_trigger().boxes(position, image_size)

    def perturb(self, proxy: Proxy, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The PGD images (before the trigger) of this attack's parameters."""
        assert self.eps is not None and self.step_size is not None
        return pgd_perturb(
            proxy.model, proxy.normalization, images, labels, norm=self.norm,
            eps=float(self.eps), step_size=float(self.step_size), steps=self.steps,
            batch_size=self.batch_size,
        )  # fmt: skip

    def poison(self, clean: ImageDataset, proxy: Any = None) -> ImageDataset:
        size = clean.image_shape[:2]
        self.check(clean.n_classes, size)
        if not isinstance(proxy, Proxy):
            raise ValueError(
                "the label-consistent attack needs a clean proxy model (attacks.Proxy), "
                f"got {type(proxy).__name__}"
            )
        n_proxy = proxy.info.get("n_classes")
        if n_proxy is not None and n_proxy != clean.n_classes:
            raise ValueError(
                f"the proxy model has {n_proxy} classes, the dataset {clean.n_classes}"
            )
        n = self.n_poison(np.bincount(clean.y_train, minlength=clean.n_classes))
        rng = np.random.default_rng(self.seed)
        chosen = choose(rng, np.flatnonzero(clean.y_train == self.target), n)
        trigger = self.make_trigger()
        positions = trigger.positions(n, rng, size)
        adversarial = self.perturb(proxy, clean.x_train[chosen], clean.y_train[chosen])
        x_train = clean.x_train.copy()
        x_train[chosen] = trigger.apply(adversarial, positions)
        pnorm = np.zeros(clean.y_train.size, dtype=np.float64)
        pnorm[chosen] = perturbation_norms(adversarial, clean.x_train[chosen], self.norm)

        test_index = np.flatnonzero(clean.y_test != self.target)
        test_positions = trigger.positions(test_index.size, rng, size)
        if isinstance(trigger, Checkerboard):  # full amplitude at test time
            x_test_triggered = trigger.apply(clean.x_test[test_index], test_positions, 255)
        else:
            x_test_triggered = trigger.apply(clean.x_test[test_index], test_positions)
        return poisoned_dataset(
            clean, self, x_train=x_train, y_train=clean.y_train.copy(), chosen=chosen,
            positions=positions, test_index=test_index, x_test_triggered=x_test_triggered,
            test_positions=test_positions, meta={"proxy": dict(proxy.info)},
            extra={"perturbation_norm": pnorm},
        )  # fmt: skip
