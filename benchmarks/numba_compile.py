"""How long each numba kernel takes to compile, and to load from numba's cache.

Runs the work that a new user's first commands do (kNN on the UCI digits with every metric,
the default model's fit and one prediction) twice, each in a fresh process sharing one empty
cache directory: the first process compiles every kernel, the second loads them from the cache.
Numba's compile events give the seconds per kernel (nested kernels count within their caller).

    .venv/bin/python benchmarks/numba_compile.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time


def workload() -> None:
    """The kernels' real call paths, on small data (the signatures are those of full data)."""
    import numba.core.event as event

    from digitrec import models
    from digitrec.data import datasets

    timings: dict[str, float] = {}
    starts: dict[int, float] = {}

    class Timer(event.Listener):
        def on_start(self, ev):
            starts[id(ev.data["dispatcher"])] = time.perf_counter()

        def on_end(self, ev):
            dispatcher = ev.data["dispatcher"]
            spent = time.perf_counter() - starts.pop(id(dispatcher))
            # numba's own helpers compile inside digitrec's kernels: counted there
            if dispatcher.py_func.__module__.startswith("digitrec"):
                name = dispatcher.py_func.__qualname__
                timings[name] = timings.get(name, 0.0) + spent

    listener = Timer()
    event.register("numba:compile", listener)
    start = time.perf_counter()
    uci = datasets.load("uci-digits")
    for params in ({}, {"p": 1}, {"p": 3}, {"metric": "cosine"}):
        model = models.train("knn", uci, params)
        model.predict(uci.X_test[:50])
    mnist = datasets.load("mnist").subset(600, 20, seed=0)
    model = models.train(models.DEFAULT_KIND, mnist, {"hyperplane_k": 20})
    model.predict_proba(mnist.X_test[:1])
    model.predict_proba(mnist.X_test)
    event.unregister("numba:compile", listener)
    total = time.perf_counter() - start
    print(json.dumps({"kernels": timings, "total": total}))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--workload":
        workload()
        return 0
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        runs = []
        for _ in ("first", "second"):
            out = subprocess.run(
                [sys.executable, __file__, "--workload"],
                env=env, capture_output=True, text=True, check=True,
            ).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
    first, second = runs
    print(f"{'kernel':<28} {'compile s':>10} {'from cache s':>13}")
    for name in sorted(first["kernels"], key=first["kernels"].get, reverse=True):
        print(f"{name:<28} {first['kernels'][name]:>10.2f} {second['kernels'].get(name, 0):>13.2f}")
    print(f"{'whole workload':<28} {first['total']:>10.2f} {second['total']:>13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
