"""The tutorials' kNN grid on the 60,000 MNIST training images, 5-fold CV, timed.

Grid: n_neighbors 2..18 step 2 x p 1..3 x weights uniform/distance (54 points), stratified
5-fold cross-validation. digitrec runs the whole grid. scikit-learn's GridSearchCV would need
most of a day here, so its time is extrapolated: one fold per p is timed on part of the
validation images, and GridSearchCV repeats that search for each of the 18 (k, weights)
points of a p in each of the 5 folds.

Equality of the search itself is shown on a subsample where GridSearchCV can run whole:
both pick the same best parameters with the same score.

    python benchmarks/tune_mnist.py [--subsample 2000] [--sklearn-queries 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier

from digitrec.data.datasets import Dataset, load_mnist
from digitrec.evaluation import tuning

GRID = {"n_neighbors": list(range(2, 19, 2)), "p": [1, 2, 3], "weights": ["uniform", "distance"]}


def sklearn_fold_seconds(X, y, p, n_queries):
    """Time scikit-learn's brute-force kNN on part of the first fold's validation images."""
    train, valid = next(StratifiedKFold(5).split(X, y))
    clf = KNeighborsClassifier(n_neighbors=18, p=p, algorithm="brute").fit(X[train], y[train])
    start = time.perf_counter()
    clf.predict(X[valid[:n_queries]])
    return (time.perf_counter() - start) * len(valid) / n_queries


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--subsample",
        type=int,
        default=6000,
        help="training images for the GridSearchCV equality check",
    )
    parser.add_argument(
        "--sklearn-queries",
        type=int,
        default=1000,
        help="validation images timed per scikit-learn fold (extrapolated)",
    )
    args = parser.parse_args()

    mnist = load_mnist()
    X = mnist.X_train.reshape(60000, -1)

    print(
        "1) equality with GridSearchCV on a stratified subsample "
        f"of {args.subsample} training images"
    )
    small = mnist.subset(args.subsample, None, seed=0)
    start = time.perf_counter()
    ours = tuning.tune("knn", small, GRID, refit=False, progress=False)
    ours_seconds = time.perf_counter() - start
    start = time.perf_counter()
    theirs = GridSearchCV(KNeighborsClassifier(algorithm="brute"), GRID, cv=5)
    theirs.fit(small.X_train.reshape(len(small.X_train), -1) / 255.0, small.y_train)
    theirs_seconds = time.perf_counter() - start
    same_best = ours.best.params == theirs.best_params_
    print(f"   digitrec   best {ours.best.params} CV {ours.best.mean:.4f} in {ours_seconds:.1f} s")
    print(
        f"   sklearn    best {theirs.best_params_} CV {theirs.best_score_:.4f} "
        f"in {theirs_seconds:.1f} s"
    )
    differing = sum(
        not np.isclose(pt.mean, theirs.cv_results_["mean_test_score"][j])
        for j, params in enumerate(theirs.cv_results_["params"])
        for pt in ours.results
        if pt.params == params
    )
    print(
        f"   same best parameters: {same_best}; grid points whose mean differs "
        f"(distance ties): {differing} of {len(GRID['n_neighbors']) * 3 * 2}"
    )

    print("\n2) the full grid on all 60,000 training images")
    full = Dataset("mnist", mnist.X_train, mnist.y_train, mnist.X_test, mnist.y_test)
    start = time.perf_counter()
    result = tuning.tune("knn", full, GRID, refit=True, progress=True)
    seconds = time.perf_counter() - start
    print(
        f"   digitrec: best {result.best.params}, CV {result.best.mean:.4f}, "
        f"test accuracy of the refit model {result.test_accuracy:.4f}, {seconds:.0f} s"
    )

    print("\n3) scikit-learn's GridSearchCV, extrapolated from measured folds")
    per_fold = {
        p: sklearn_fold_seconds(X / 255.0, mnist.y_train, p, args.sklearn_queries)
        for p in (1, 2, 3)
    }
    # GridSearchCV refits and predicts for each of the 18 (k, weights) points per p and fold.
    total = sum(per_fold.values()) * 18 * 5
    for p, s in per_fold.items():
        print(f"   p={p}: {s:.0f} s per fold ({args.sklearn_queries} of 12,000 queries timed)")
    # GridSearchCV(n_jobs=-1) runs two fits at a time on these two cores.
    parallel = total / 2
    print(f"   full grid: 54 points x 5 folds = {total / 3600:.1f} hours one at a time, "
          f"{parallel / 3600:.1f} hours with n_jobs=-1 on 2 cores")

    print(f"\n{'what':<48} {'seconds':>10} {'ratio':>8}")
    print(f"{'digitrec tune, full MNIST grid':<48} {seconds:>10.0f} {1.0:>8.2f}")
    print(f"{'GridSearchCV n_jobs=-1, same grid (extrapolated)':<48} {parallel:>10.0f} "
          f"{parallel / seconds:>8.1f}")


if __name__ == "__main__":
    main()
