"""The on-device model next to the server's (issue 20): size, accuracy, in-browser latency.

    python benchmarks/on_device.py --server-model DIR     # DIR: the server's model
    python benchmarks/on_device.py                         # the default model directory

The on-device model is the one the web app ships (``nets/ondevice/model.onnx``) and
runs in onnxruntime-web when the server cannot be reached. Measured here:

- download: every file the service worker keeps, as the server sends it (the WebAssembly
  runtime gzipped), and the model file alone;
- MNIST test accuracy (10,000 images) of the ONNX file in onnxruntime, and of the server's
  model; the browser's answers are checked to equal onnxruntime's on the first 500;
- drawings: the generated canvas drawings of ``benchmarks/real_world.py`` (held-out seed
  1003, one digit each), read by the page's own JavaScript in headless Chromium (framing,
  then the network) and by the server's model through ``recognize.read_image``;
- latency: wall time of the page's ``readGrey`` per drawing (framing and inference, not
  the transfer of the test image into the page), median and p99, after one warm-up read;
- the same network written by hand in JavaScript (convolutions with batch norm folded in),
  to compare with onnxruntime-web's size and speed on the same tiles.

Goals (issue 20): download under 5 MB, p99 under 50 ms, drawings accuracy within 1 point of
the server's model.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from conftest import CHROMIUM, CHROMIUM_ARGS, serving  # noqa: E402
from real_world import single_digit_drawings  # noqa: E402

from digitrec import config, models  # noqa: E402
from digitrec.apps.web import offline  # noqa: E402
from digitrec.data import datasets  # noqa: E402
from digitrec.data.images import load_image  # noqa: E402
from digitrec.reading.recognize import read_image  # noqa: E402

READ_AND_TIME = """async ([b64, w, h]) => {
  const grey = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const started = performance.now();
  const reading = await DigitrecOnDevice.readGrey(grey, w, h);
  return { text: reading.text, ms: performance.now() - started };
}"""

RUN_ORT = """async ([b64, n]) => {
  const input = new Float32Array(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)).buffer);
  const session = await DigitrecOnDevice.load();
  const out = await session.run({ image: new ort.Tensor("float32", input, [n, 1, 28, 28]) });
  return Array.from(out.probabilities.data);
}"""

# The same network by hand: three conv 3x3 (batch norm folded in) -> ReLU -> max-pool 2
# blocks, then a linear layer and softmax. Weights come in as one Float32Array per layer.
HANDWRITTEN = """(layers) => {
  const conv = (x, c, s, w, b, out) => {
    const y = new Float32Array(out * s * s);
    for (let o = 0; o < out; o++) for (let i = 0; i < s; i++) for (let j = 0; j < s; j++) {
      let sum = b[o];
      for (let k = 0; k < c; k++) for (let di = -1; di <= 1; di++) {
        const ii = i + di; if (ii < 0 || ii >= s) continue;
        for (let dj = -1; dj <= 1; dj++) {
          const jj = j + dj; if (jj < 0 || jj >= s) continue;
          sum += x[(k * s + ii) * s + jj] * w[((o * c + k) * 3 + di + 1) * 3 + dj + 1];
        }
      }
      y[(o * s + i) * s + j] = sum > 0 ? sum : 0;
    }
    const h = s >> 1, p = new Float32Array(out * h * h);
    for (let o = 0; o < out; o++) for (let i = 0; i < h; i++) for (let j = 0; j < h; j++) {
      const at = (a, b2) => y[(o * s + 2 * i + a) * s + 2 * j + b2];
      p[(o * h + i) * h + j] = Math.max(at(0, 0), at(0, 1), at(1, 0), at(1, 1));
    }
    return p;
  };
  const f32 = (a) => Float32Array.from(a);
  const convs = layers.convs.map(([w, b, out]) => [f32(w), f32(b), out]);
  const fw = Float32Array.from(layers.fc[0]), fb = Float32Array.from(layers.fc[1]);
  window.handwritten = (tile) => {
    let x = Float32Array.from(tile, (v) => (v / 255 - 0.1307) / 0.3081);
    let c = 1, s = 28;
    for (const [w, b, out] of convs) {
      x = conv(x, c, s, w, b, out); c = out; s >>= 1;
    }
    const n = fb.length, logits = new Float32Array(n);
    for (let o = 0; o < n; o++) {
      let sum = fb[o];
      for (let k = 0; k < x.length; k++) sum += fw[o * x.length + k] * x[k];
      logits[o] = sum;
    }
    const top = Math.max(...logits), e = logits.map((v) => Math.exp(v - top));
    const z = e.reduce((a, b) => a + b);
    return Array.from(e, (v) => v / z);
  };
}"""

TIME_BOTH = """async ([b64, n, repeats]) => {
  const all = new Float32Array(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)).buffer);
  const session = await DigitrecOnDevice.load();
  const ortMs = [], handMs = [];
  let agree = 0;
  for (let r = 0; r < repeats; r++) for (let i = 0; i < n; i++) {
    const tile = all.slice(i * 784, (i + 1) * 784);
    let t = performance.now();
    const out = await session.run({ image: new ort.Tensor("float32", tile, [1, 1, 28, 28]) });
    ortMs.push(performance.now() - t);
    t = performance.now();
    const mine = handwritten(tile);
    handMs.push(performance.now() - t);
    const a = Array.from(out.probabilities.data);
    if (a.indexOf(Math.max(...a)) === mine.indexOf(Math.max(...mine))) agree++;
  }
  return { ortMs, handMs, agree, total: n * repeats };
}"""


def b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()


def download_bytes(url: str) -> tuple[int, list[tuple[str, int]]]:
    """Bytes on the wire of every file the service worker keeps on install (gzip where the
    server sends it so)."""
    script = httpx.get(f"{url}/sw.js").text
    paths = ["/sw.js"]
    for name in ("PAGE", "FIXED"):
        block = script.split(f"const {name} = [", 1)[1].split("];", 1)[0]
        for item in block.split(","):
            item = item.strip().strip('"').strip("`")
            if item:
                paths.append(
                    item.replace("${ORT}", "/static/vendor/onnxruntime-web").replace(
                        "${SWAGGER}", "/static/vendor/swagger-ui"
                    )
                )
    sizes = []
    with httpx.Client() as client:
        # What the worker keeps on install (INSTALL in sw.js): Swagger UI only once visited.
        for path in (p for p in paths if not p.startswith("/static/vendor/swagger-ui")):
            response = client.get(url + path)
            response.raise_for_status()
            sizes.append((path, response.num_bytes_downloaded))
    return sum(size for _, size in sizes), sizes


def folded_layers(model_dir: Path | None) -> dict | None:
    """The on-device network's weights with batch norm folded into the convolutions, from
    the saved cnn-robust model directory (None if not given)."""
    if model_dir is None:
        return None
    network = models.load(model_dir).estimator.network_
    state = {k: v.detach().numpy().astype(np.float64) for k, v in network.state_dict().items()}
    convs = []
    for i in (1, 2, 3):
        bn = f"features.bn{i}."
        scale = state[bn + "weight"] / np.sqrt(state[bn + "running_var"] + 1e-5)
        weight = state[f"features.conv{i}.weight"] * scale[:, None, None, None]
        bias = state[bn + "bias"] - state[bn + "running_mean"] * scale
        convs.append([weight.ravel().tolist(), bias.tolist(), int(len(bias))])
    fc = [state["classifier.fc.weight"].ravel().tolist(), state["classifier.fc.bias"].tolist()]
    return {"convs": convs, "fc": fc}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server-model", type=Path, default=None, help="default: the default")
    parser.add_argument("--cnn-model", type=Path, help="the cnn-robust directory behind the "
                        "ONNX file, for the hand-written comparison")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1000, help="drawings use seed + 3")
    parser.add_argument("--count", type=int, default=300, help="drawings to read")
    parser.add_argument("--mnist-size", type=int, default=10_000, help="MNIST test images")
    args = parser.parse_args(argv)

    server_dir = args.server_model or config.default_model_dir()
    server_model = models.load(server_dir)
    about = offline.on_device_model()
    mnist = datasets.load("mnist")
    if args.mnist_size < len(mnist.y_test):
        mnist = mnist.subset(None, args.mnist_size, seed=0)

    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(offline.ON_DEVICE / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (proba,) = session.run(None, {"image": mnist.X_test[:, None].astype(np.float32)})
    device_mnist = float((proba.argmax(1) == mnist.y_test).mean())
    started = time.perf_counter()
    server_mnist = float((server_model.predict(mnist.X_test) == mnist.y_test).mean())
    server_mnist_seconds = time.perf_counter() - started
    print(f"MNIST test: on-device {device_mnist:.4f}, server {server_mnist:.4f} "
          f"({server_mnist_seconds:.0f} s)", flush=True)  # fmt: skip

    drawings = single_digit_drawings(args.seed + 3, args.count)
    greys = [load_image(data) for data, _, _ in drawings]
    labels = [label for _, label, _ in drawings]
    pairs = zip(greys, labels, strict=True)
    server_right = sum(read_image(server_model, g).text == y for g, y in pairs)

    from playwright.sync_api import sync_playwright

    home = Path(tempfile.mkdtemp(prefix="on-device-"))
    with serving(server_dir, home) as (url, _), sync_playwright() as playwright:
        total_bytes, files = download_bytes(url)
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        page = browser.new_page()
        page.goto(url)
        page.evaluate("DigitrecOnDevice.load().then(() => true)")
        first = mnist.X_test[:500].astype(np.float32)  # fewer with a small --mnist-size
        browser_proba = np.asarray(page.evaluate(RUN_ORT, [b64(first), len(first)]))
        same = int((browser_proba.reshape(len(first), -1).argmax(1) == proba[:500].argmax(1)).sum())
        checked = len(first)
        page.evaluate(READ_AND_TIME, [b64(greys[0]), greys[0].shape[1], greys[0].shape[0]])
        device_right, latencies = 0, []
        for grey, label in zip(greys, labels, strict=True):
            result = page.evaluate(READ_AND_TIME, [b64(grey), grey.shape[1], grey.shape[0]])
            device_right += result["text"] == label
            latencies.append(result["ms"])
        handwritten = None
        layers = folded_layers(args.cnn_model)
        if layers is not None:
            page.evaluate(HANDWRITTEN, layers)
            tiles = mnist.X_test[:100].astype(np.float32)
            handwritten = page.evaluate(TIME_BOTH, [b64(tiles), len(tiles), 2])
        browser.close()

    device_drawings = device_right / len(labels)
    server_drawings = server_right / len(labels)
    latency = np.asarray(latencies)
    p50, p99 = np.percentile(latency, 50), np.percentile(latency, 99)
    model_bytes = (offline.ON_DEVICE / "model.onnx").stat().st_size
    print()
    print(f"on-device: {about['kind']} in onnxruntime-web 1.30.0 (WebAssembly, 1 thread); "
          f"server: {server_model.kind}")  # fmt: skip
    rows = [
        ("model file", f"{model_bytes / 1e6:.2f} MB", "", ""),
        ("download, all files kept on install", f"{total_bytes / 1e6:.2f} MB", "", "< 5 MB"),
        (
            f"MNIST test accuracy ({len(mnist.y_test)})",
            f"{device_mnist:.4f}",
            f"{server_mnist:.4f}",
            "",
        ),
        (
            f"drawings accuracy ({len(labels)}, seed {args.seed + 3})",
            f"{device_drawings:.3f}",
            f"{server_drawings:.3f}",
            "within 0.010",
        ),  # fmt: skip
        (f"latency per drawing, median ({len(latency)})", f"{p50:.1f} ms", "", ""),
        (f"latency per drawing, p99 ({len(latency)})", f"{p99:.1f} ms", "", "< 50 ms"),
        (f"browser = onnxruntime (MNIST, first {checked})", f"{same}/{checked}", "", ""),
    ]
    print(f"{'what':<44}{'on-device':>12}{'server':>10}{'goal':>14}")
    for what, device, server, goal in rows:
        print(f"{what:<44}{device:>12}{server:>10}{goal:>14}")
    print(f"drawings gap: {100 * (server_drawings - device_drawings):+.1f} points "
          f"(server minus on-device)")  # fmt: skip
    print("files cached: " + ", ".join(f"{p} {n / 1e3:.0f} kB" for p, n in files))
    if handwritten is not None:
        ort_ms, hand_ms = np.asarray(handwritten["ortMs"]), np.asarray(handwritten["handMs"])
        runtime = sum(n for p, n in files if "onnxruntime-web" in p)
        print()
        print("network only, one 28x28 tile, 200 runs (100 MNIST tiles twice):")
        print(
            f"  onnxruntime-web: median {np.median(ort_ms):.2f} ms, p99 "
            f"{np.percentile(ort_ms, 99):.2f} ms, runtime download {runtime / 1e6:.2f} MB"
        )
        print(f"  hand-written JS: median {np.median(hand_ms):.2f} ms, p99 "
              f"{np.percentile(hand_ms, 99):.2f} ms, code about 3 kB; same answer "
              f"{handwritten['agree']}/{handwritten['total']}")  # fmt: skip
    print(json.dumps({"device_drawings": device_drawings, "server_drawings": server_drawings}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
