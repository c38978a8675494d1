"""Full-MNIST kNN (k=3, 10,000 test x 60,000 train), side by side in one run.

Competitors: digitrec's KNNClassifier (uint8 pixels, exact search), scikit-learn's
KNeighborsClassifier (brute force, float64 pixels / 255, as the tutorials use it), and
faiss-cpu's IndexFlatL2 (float32) when installed. Each runs in its own fresh process so its
peak memory is its own. Prints one table and exits 0.

    python benchmarks/knn_mnist.py [--k 3] [--repeat 1]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import numpy as np


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _mnist():
    from digitrec.data.datasets import load_mnist

    data = load_mnist()
    return (
        data.X_train.reshape(60000, -1),
        data.y_train,
        data.X_test.reshape(10000, -1),
        data.y_test,
    )


def run_digitrec(k):
    from digitrec import KNNClassifier

    X_train, y_train, X_test, y_test = _mnist()
    base = _peak_mb()
    start = time.perf_counter()
    clf = KNNClassifier(n_neighbors=k).fit(X_train, y_train)
    fit = time.perf_counter() - start
    clf.predict(X_test[:10])  # compile the numba kernels outside the timing
    start = time.perf_counter()
    predicted = clf.predict(X_test)
    predict = time.perf_counter() - start
    return np.mean(predicted == y_test), fit, predict, _peak_mb(), _peak_mb() - base


def run_sklearn(k):
    from sklearn.neighbors import KNeighborsClassifier

    X_train, y_train, X_test, y_test = _mnist()
    X_train, X_test = X_train / 255.0, X_test / 255.0  # float64, as in the tutorials
    base = _peak_mb()
    start = time.perf_counter()
    clf = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(X_train, y_train)
    fit = time.perf_counter() - start
    start = time.perf_counter()
    predicted = clf.predict(X_test)
    predict = time.perf_counter() - start
    return np.mean(predicted == y_test), fit, predict, _peak_mb(), _peak_mb() - base


def run_faiss(k):
    import faiss

    X_train, y_train, X_test, y_test = _mnist()
    X_train, X_test = X_train.astype(np.float32), X_test.astype(np.float32)
    base = _peak_mb()
    start = time.perf_counter()
    index = faiss.IndexFlatL2(X_train.shape[1])
    index.add(X_train)
    fit = time.perf_counter() - start
    start = time.perf_counter()
    _, neighbors = index.search(X_test, k)
    votes = np.zeros((len(X_test), 10))
    np.add.at(votes, (np.arange(len(X_test))[:, None], y_train[neighbors]), 1)
    predicted = votes.argmax(axis=1)  # ties to the lower digit, as scikit-learn does
    predict = time.perf_counter() - start
    return np.mean(predicted == y_test), fit, predict, _peak_mb(), _peak_mb() - base


def _in_child(name, k, queue):
    queue.put(globals()[name](k))


def measure(name, k):
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_in_child, args=(name, k, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=1, help="runs each; medians reported")
    args = parser.parse_args()
    _mnist()  # fetch into the cache before timing anything

    competitors = [
        ("digitrec KNNClassifier (uint8)", "run_digitrec"),
        ("scikit-learn brute (float64)", "run_sklearn"),
    ]
    try:
        import faiss  # noqa: F401

        competitors.append(("faiss IndexFlatL2 (float32)", "run_faiss"))
    except ImportError:
        print("faiss-cpu not installed: skipping it (pip install faiss-cpu)")

    rows = {}
    for label, name in competitors:
        runs = [measure(name, args.k) for _ in range(args.repeat)]
        rows[label] = [float(np.median([r[i] for r in runs])) for i in range(5)]
    reference = sum(rows["scikit-learn brute (float64)"][1:3])
    print(
        f"\nfull MNIST, k={args.k}, 10,000 queries x 60,000 references, "
        f"median of {args.repeat} run(s)"
    )
    print(
        f"{'what':<32} {'accuracy':>8} {'fit s':>7} {'predict s':>9} {'total s':>8} "
        f"{'peak MB':>8} {'+MB':>7} {'time vs sklearn':>15}"
    )
    for label, (accuracy, fit, predict, peak, extra) in rows.items():
        print(
            f"{label:<32} {accuracy:>8.4f} {fit:>7.2f} {predict:>9.2f} {fit + predict:>8.2f} "
            f"{peak:>8.0f} {extra:>7.0f} {(fit + predict) / reference:>15.3f}"
        )


if __name__ == "__main__":
    main()
