"""scikit-learn's 8x8 digits as a few-shot image set with disjoint train and test classes.

A small real image set that ships inside a PyPI wheel, so the metric learners are also checked
on data no one here made. Training classes are 0-4, each also rotated by 90/180/270 degrees
and mirrored as extra classes (the Omniglot practice of Vinyals et al. 2016 and Snell et al.
2017: 40 training classes); the test classes 5-9 are untouched.
"""

from __future__ import annotations

import numpy as np

TRAIN_DIGITS = (0, 1, 2, 3, 4)
TEST_DIGITS = (5, 6, 7, 8, 9)


def digits_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train [M, 64], y_train [M], x_test [N, 64], y_test [N]), pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    train = np.isin(y, TRAIN_DIGITS)
    imgs = x[train].reshape(-1, 8, 8)
    xs, ys = [], []
    for flip in (False, True):
        for rot in range(4):
            im = imgs[:, :, ::-1] if flip else imgs
            xs.append(np.rot90(im, rot, axes=(1, 2)).reshape(-1, 64))
            ys.append(y[train] + 10 * (4 * int(flip) + rot))
    test = np.isin(y, TEST_DIGITS)
    return np.concatenate(xs), np.concatenate(ys), x[test], y[test]
