"""biopost.metrics.multilabel: hand-computed curves, and cafaeval's own confusion-matrix code on
random dense matrices as the oracle (no ontology involved)."""
import math

import numpy as np
import pytest

from biopost.metrics.multilabel import (best_index, max_by_pair, set_scores, threshold_curves,
                                     threshold_grid, unique_pairs)


def test_threshold_grid_is_cafaevals_arange():
    grid = threshold_grid()
    assert grid.size == 99
    assert np.array_equal(grid, np.arange(0.01, 1, 0.01))  # bit-identical, e.g. 0.07000000000000001
    assert grid[6] != 0.07 and grid[6] == np.arange(0.01, 1, 0.01)[6]
    with pytest.raises(ValueError):
        threshold_grid(1.5)


def test_hand_computed_two_items():
    # item 0: gold {0, 1}; predicts 0 @0.9, 2 @0.4.  item 1: gold {2}; predicts 2 @0.5, 1 @0.95
    # item 2: gold {3}; predicts nothing (counts in ne, never covered)
    t = np.array([0.3, 0.45, 0.6, 0.92])
    c = threshold_curves(3, [0, 0, 1, 2], [0, 1, 2, 3], [0, 0, 1, 1], [0, 2, 2, 1], [0.9, 0.4, 0.5, 0.95],
                         thresholds=t, n_labels=4)
    # tau 0.3: item0 P={0,2} TP=1 -> p=1/2, r=1/2; item1 P={1,2} TP=1 -> p=1/2, r=1; item2 r=0
    assert c.n.tolist() == [2, 2, 2, 1]
    assert c.pr[0] == pytest.approx((0.5 + 0.5) / 2) and c.rc[0] == pytest.approx((0.5 + 1 + 0) / 3)
    # tau 0.45: item0 P={0} p=1 r=1/2; item1 P={1,2} p=1/2 r=1
    assert c.pr[1] == pytest.approx(0.75) and c.rc[1] == pytest.approx(0.5)
    # tau 0.6: item0 P={0}; item1 P={1}: p = (1 + 0)/2, r = (1/2 + 0 + 0)/3
    assert c.pr[2] == pytest.approx(0.5) and c.rc[2] == pytest.approx(1 / 6)
    # tau 0.92: only item1 P={1} (wrong): p = 0/1, r = 0
    assert c.pr[3] == 0 and c.rc[3] == 0 and c.cov[3] == pytest.approx(1 / 3)
    f = 2 * 0.75 * 0.5 / 1.25
    assert c.f[1] == pytest.approx(f) and best_index(c.f) == 1
    # misinformation / remaining uncertainty at tau 0.3: FP = 1 + 1, FN = 1 + 0 + 1, over ne = 3
    assert c.mi[0] == pytest.approx(2 / 3) and c.ru[0] == pytest.approx(2 / 3)
    assert c.s[0] == pytest.approx(math.hypot(2 / 3, 2 / 3))
    # weighted: label 1 weighs 3, the rest 1
    w = threshold_curves(3, [0, 0, 1, 2], [0, 1, 2, 3], [0, 0, 1, 1], [0, 2, 2, 1], [0.9, 0.4, 0.5, 0.95],
                         weights=np.array([1.0, 3.0, 1.0, 1.0]), thresholds=t)
    # tau 0.45: item0 P={0}: p=1, r=1/4; item1 P={1 (w3), 2}: p=1/4, r=1
    assert w.pr[1] == pytest.approx((1 + 0.25) / 2) and w.rc[1] == pytest.approx((0.25 + 1) / 3)


def test_best_index_takes_the_first_of_equal_values_among_kept():
    v = np.array([0.2, 0.5, 0.5, 0.1])
    assert best_index(v) == 1
    assert best_index(v, np.array([True, False, True, True])) == 2
    assert best_index(v, maximize=False) == 3
    assert best_index(v, np.zeros(4, bool)) is None


def test_pair_helpers_and_set_scores():
    r, c, s = max_by_pair(np.array([1, 0, 1, 1]), np.array([2, 3, 2, 0]), np.array([0.1, 0.5, 0.7, 0.2]), 5)
    assert list(zip(r.tolist(), c.tolist(), s.tolist())) == [(0, 3, 0.5), (1, 0, 0.2), (1, 2, 0.7)]
    r, c = unique_pairs([2, 2, 0], [1, 1, 4], 5)
    assert r.tolist() == [0, 2] and c.tolist() == [4, 1]
    w = np.array([0.0, 1.0, 2.0, 4.0])
    p, rc, f = set_scores(np.array([1, 2]), np.array([2, 3]), w)
    assert (p, rc) == pytest.approx((2 / 3, 2 / 6)) and f == pytest.approx(2 * p * rc / (p + rc))
    assert set_scores(np.array([0]), np.array([1]), w) == (0.0, 0.0, 0.0)  # nothing of weight predicted
    assert set_scores(np.array([1, 2]), np.array([1]), None) == pytest.approx((0.5, 1.0, 2 / 3))


@pytest.mark.parametrize("norm", ["cafa", "pred", "gt"])
@pytest.mark.parametrize("weighted", [False, True])
def test_equals_cafaevals_confusion_matrix_code(norm, weighted):
    """cafaeval.evaluation.compute_metrics + normalize on dense matrices are the oracle."""
    ev = pytest.importorskip("cafaeval.evaluation")
    from cafaeval.graph import GroundTruth, Prediction

    rng = np.random.default_rng(7 if weighted else 3)
    n_items, n_labels = 40, 60
    gt = rng.random((n_items, n_labels)) < 0.15
    gt[0] = False
    gt[0, 5] = True  # an item whose only gold label may weigh 0
    scores = np.where(rng.random((n_items, n_labels)) < 0.3, rng.random((n_items, n_labels)), 0.0)
    scores[3] = 0.0  # an item without predictions
    scores[4, :5] = np.round(rng.random(5), 2)  # scores equal to grid values
    ic = rng.gamma(1.0, 2.0, n_labels) * (rng.random(n_labels) < 0.8) if weighted else None
    if weighted:
        ic[5] = 0.0
    tau = np.arange(0.01, 1, 0.01)
    toi = np.flatnonzero(ic > 0) if weighted else np.arange(n_labels)
    m = ev.compute_metrics(Prediction({}, scores), GroundTruth({}, gt), tau, toi, ic, n_cpu=1)
    ref = ev.normalize(m, "x", tau, np.full(tau.size, n_items), norm)

    tr, tc = np.nonzero(gt)
    pr_, pc = np.nonzero(scores)
    c = threshold_curves(n_items, tr, tc, pr_, pc, scores[pr_, pc], weights=ic, thresholds=tau,
                         norm=norm, n_labels=n_labels)
    for ours, theirs in [("n", "n"), ("pr", "pr"), ("rc", "rc"), ("f", "f"), ("mi", "mi"), ("ru", "ru"),
                         ("s", "s"), ("cov", "cov"), ("f_micro", "f_micro")]:
        np.testing.assert_allclose(getattr(c, ours), ref[theirs].to_numpy(), rtol=0, atol=1e-12, err_msg=ours)
    assert ref["f"].max() > 0.1  # the comparison is not between two zero curves
