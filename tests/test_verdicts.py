"""The verdicts (poisonscan.verdicts): constructed classes with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from poisonscan.verdicts import (
    ClassData,
    VerdictParams,
    audit,
    benjamini_hochberg,
    class_test,
    empirical_p,
    paste,
    peak_shares,
    recover_trigger,
    robust_z,
    trigger_scores,
)

SIZE = 16
YELLOW = np.array([245, 255, 0], dtype=np.uint8)
SPOT = (10, 11)  # top-left of the 3x3 trigger


def diffuse(rng: np.random.Generator, n: int) -> np.ndarray:
    """Heatmaps spreading relevance over a blob in the middle (a sign)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    h = np.exp(-((yy - 8) ** 2 + (xx - 8) ** 2) / 18.0)[None] * rng.uniform(0.5, 1.5, (n, 1, 1))
    h = h + rng.uniform(0, 0.6, (n, SIZE, SIZE))
    return h / h.sum(axis=(1, 2), keepdims=True)


def spotted(rng: np.random.Generator, n: int) -> np.ndarray:
    h = diffuse(rng, n) * 0.3
    r, c = SPOT
    h[:, r : r + 3, c : c + 3] += 0.7 / 9
    return h


def dataset(
    n_classes: int = 8,
    n: int = 200,
    poisoned: int | None = 5,
    share: float = 0.05,
    duplicates: int | None = None,
    seed: int = 0,
) -> tuple[dict[int, ClassData], np.ndarray, np.ndarray]:
    """Classes of diffuse heatmaps; class ``poisoned`` holds a ``share`` of spotted ones whose
    images carry the yellow trigger. ``duplicates``: every class comes in groups of that many
    near-identical images instead of independent ones."""
    rng = np.random.default_rng(seed)
    classes, images, poison = {}, [], []
    start = 0
    for c in range(n_classes):
        m = round(share * n) if c == poisoned else 0
        h = np.concatenate([diffuse(rng, n - m), spotted(rng, m)])
        x = rng.integers(60, 200, (n, SIZE, SIZE, 3)).astype(np.uint8)
        groups = np.arange(start, start + n)
        if duplicates:
            groups = start + np.arange(n) // duplicates
            h = h[(np.arange(n) // duplicates) * duplicates]
        r, col = SPOT
        x[n - m :, r : r + 3, col : col + 3] = YELLOW
        index = np.arange(start, start + n)
        classes[c] = ClassData(h, index, np.full(n, c), groups)
        images.append(x)
        poison.append(np.arange(n) >= n - m)
        start += n
    return classes, np.concatenate(images), np.concatenate(poison)


def fake_model(target: int | None):
    """Predicts ``target`` where the yellow trigger sits, else the true class (the test
    images' class is encoded in their first pixel)."""

    def predict(x: np.ndarray) -> np.ndarray:
        label = x[:, 0, 0, 0].astype(int) % 16
        r, c = SPOT
        has = np.all(x[:, r : r + 3, c : c + 3] == YELLOW, axis=-1).mean(axis=(1, 2)) > 0.5
        return np.where(has & (target is not None), target if target is not None else 0, label)

    return predict


def reference_images(
    n_classes: int = 8, per_class: int = 40, seed: int = 1
) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per_class)
    x = rng.integers(60, 200, (y.size, SIZE, SIZE, 3)).astype(np.uint8)
    x[:, 0, 0, 0] = y  # the fake model reads the class here
    return x, y


def test_a_planted_group_is_poisoned_and_its_images_flagged() -> None:
    classes, x, poison = dataset(poisoned=5, share=0.05)
    xt, yt = reference_images()
    r = audit(classes, x, xt, yt, fake_model(5), VerdictParams())
    assert r.poisoned_classes == [5]
    assert r.verdict[5] == "poisoned" and all(r.verdict[c] == "clean" for c in r.verdict if c != 5)
    np.testing.assert_array_equal(r.flagged, poison)  # every planted image, nothing else
    trig = r.triggers[5]
    assert trig.size == 3 and tuple(trig.region[:2]) == SPOT
    np.testing.assert_allclose(trig.pattern, np.broadcast_to(YELLOW, (3, 3, 3)))
    assert r.flips[5].trigger_rate == 1.0 and r.flips[5].control_rate == 0.0
    assert set(r.signal[poison]) <= {
        "relevance+trigger",
        "trigger",
        "relevance",
        "relevance+trigger+trigger_added",
        "trigger+trigger_added",
    }


def test_one_group_everywhere_is_clean() -> None:
    classes, x, _ = dataset(poisoned=None)
    xt, yt = reference_images()
    r = audit(classes, x, xt, yt, fake_model(None), VerdictParams())
    assert r.poisoned_classes == [] and not r.flagged.any()
    assert set(r.verdict.values()) == {"clean"}


def test_near_duplicate_groups_alone_are_clean() -> None:
    """A class whose images come in tight groups of 20 near-duplicates (GTSRB's tracks) is not
    a poisoned class: groups, not images, are counted."""
    classes, x, _ = dataset(poisoned=None, duplicates=20)
    # one concentrated sign in class 3, repeated in its 20 frames
    h = classes[3].heatmaps.copy()
    h[:20] = spotted(np.random.default_rng(5), 1)
    classes[3] = ClassData(h, classes[3].index, classes[3].prediction, classes[3].groups)
    xt, yt = reference_images()
    r = audit(classes, x, xt, yt, fake_model(None), VerdictParams())
    assert r.verdict[3] == "clean" and r.test.extreme_groups[3] <= 1


def test_a_candidate_without_a_causal_trigger_is_clean() -> None:
    """Relevance concentrated in a class (a feature of the class, not a trigger): the causal
    check turns it down, because pasting it flips nothing."""
    classes, x, _ = dataset(poisoned=5, share=0.1)
    xt, yt = reference_images()
    r = audit(classes, x, xt, yt, fake_model(None), VerdictParams())  # the model has no backdoor
    assert r.test.verdict[5] == "poisoned"  # the class test's candidate...
    assert r.verdict[5] == "clean" and not r.flagged.any()  # ...turned down


def test_a_small_class_is_too_small() -> None:
    classes, x, _ = dataset(poisoned=None)
    small = classes[2]
    classes[2] = ClassData(small.heatmaps[:6], small.index[:6], small.prediction[:6],
                           small.groups[:6])  # fmt: skip
    xt, yt = reference_images()
    r = audit(classes, x, xt, yt, fake_model(None), VerdictParams())
    assert r.verdict[2] == "too_small" and math.isnan(r.test.q[2])


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("alpha", 0.0, r"verdicts.alpha must lie in \(0, 1\), got 0.0"),
     ("sample_alpha", 1.5, r"verdicts.sample_alpha must lie in \(0, 1\), got 1.5"),
     ("quantile", 0.2, r"verdicts.quantile must lie in \(0.5, 1\), got 0.2")],
)  # fmt: skip
def test_bad_parameters_name_the_key(key: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VerdictParams(**{key: value})


def test_bad_reference_set_and_heatmaps_are_named() -> None:
    classes, x, _ = dataset(poisoned=5)
    xt, yt = reference_images()
    with pytest.raises(ValueError, match=r"test images of shape \(4, 4, 3\) but training"):
        audit(classes, x, xt[:, :4, :4], yt, fake_model(5))
    with pytest.raises(ValueError, match=r"test labels \[99\] are not classes of the training"):
        audit(classes, x, xt, np.where(yt == 0, 99, yt), fake_model(5))
    with pytest.raises(ValueError, match=r"320 test images but 10 test labels"):
        audit(classes, x, xt, yt[:10], fake_model(5))
    with pytest.raises(ValueError, match="at least 3 classes"):
        two = yt < 2
        audit({c: classes[c] for c in (0, 1)}, x, xt[two], yt[two], fake_model(5))


def test_class_test_counts_groups_against_the_other_classes() -> None:
    rng = np.random.default_rng(0)
    shares = {c: rng.uniform(0, 0.2, 300) for c in range(6)}
    shares[4][:30] = 0.9  # 10 % extreme images
    groups = {c: np.arange(300) for c in range(6)}
    t = class_test(shares, groups)
    assert t.verdict.tolist() == ["clean"] * 4 + ["poisoned", "clean"]
    assert 30 <= t.extreme_groups[4] <= 32 and t.q[4] < 1e-10
    one_group = {**groups, 4: np.zeros(300, dtype=int)}  # all 30 in one near-duplicate group
    assert class_test(shares, one_group).verdict[4] == "too_small"


def test_statistics_helpers_against_their_definitions() -> None:
    v = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    z = robust_z(v)
    assert z[2] == 0.0 and z[4] == pytest.approx((100 - 3) / (1.4826 * 1.0))
    p = np.array([0.01, 0.04, 0.03, 0.5, np.nan])
    q = benjamini_hochberg(p)
    np.testing.assert_allclose(q[:4], [0.04, 0.16 / 3, 0.16 / 3, 0.5])  # p m / rank, monotone
    assert math.isnan(q[4])
    assert empirical_p(np.array([5.0, 0.0]), np.arange(10.0)).tolist() == [6 / 11, 1.0]


def test_trigger_recovery_paste_and_scores() -> None:
    rng = np.random.default_rng(3)
    h = spotted(rng, 20)
    x = rng.integers(60, 200, (20, SIZE, SIZE, 3)).astype(np.uint8)
    x[:, SPOT[0] : SPOT[0] + 3, SPOT[1] : SPOT[1] + 3] = YELLOW
    trig = recover_trigger(h, x)
    assert trig.size == 3 and trig.spread == 0.0 and trig.relevance_share > 0.5
    clean = rng.integers(60, 200, (10, SIZE, SIZE, 3)).astype(np.uint8)
    pasted = paste(clean, trig.pattern, trig.positions, rng)
    assert (trigger_scores(pasted, trig)[0] == 0).all()
    assert (trigger_scores(clean, trig)[0] < -20).all()
    # an additive trigger: a +-60 checkerboard added to varied images
    checker = np.where((np.indices((3, 3)).sum(axis=0) % 2)[..., None] == 0, 60.0, -60.0)
    checker = np.broadcast_to(checker, (3, 3, 3))
    added = paste(clean, checker, trig.positions, rng, additive=True)
    windows = np.stack([added[i, SPOT[0] : SPOT[0] + 3, SPOT[1] : SPOT[1] + 3] for i in range(10)])
    h2 = spotted(rng, 10)
    t2 = recover_trigger(h2, added)
    assert t2.size == 3 and np.corrcoef(t2.delta.ravel(), checker.ravel())[0, 1] > 0.9
    assert (trigger_scores(added, t2)[1] > 0.75).all() and windows.std() > 30
    assert peak_shares(h, 3).min() > 0.5 and peak_shares(diffuse(rng, 5), 3).max() < 0.2
