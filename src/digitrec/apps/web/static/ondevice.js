// Reading drawings on this device, for when the server cannot be reached: the ink is found and
// framed as the server frames it (digitrec.preprocess: each digit's strokes brought to MNIST's
// width, its longer side scaled to 20 px, its centre of mass put on pixel (14, 14)), then the
// exported network (/model.onnx) runs in onnxruntime-web's WebAssembly backend.
//
// Left out of the server's path, because canvas drawings do not need them: adaptive
// thresholds for shadows and uneven paper, halo trimming of blurred strokes, and splitting
// digits that touch (touching digits are read as one).
"use strict";

const DigitrecOnDevice = (() => {
  const TILE = 28;
  const BOX = 20;
  const CANON = 4 * BOX; // digits are normalised at 4x the final size, as on the server
  const STROKE_WIDTH = 2.4; // MNIST's median stroke width at 28x28
  const MAX_DIGITS = 64;
  const PERIMETER_PER_EDGE = 0.83;
  const ORT_PATH = "/static/vendor/onnxruntime-web/";

  // --- small image helpers -----------------------------------------------------------------

  // Python's round(): halves go to the even neighbour, as the server's arithmetic does.
  function roundEven(x) {
    const floor = Math.floor(x);
    const rest = x - floor;
    if (rest < 0.5) return floor;
    if (rest > 0.5) return floor + 1;
    return floor % 2 === 0 ? floor : floor + 1;
  }

  // cv2.resize's (width, height) of an h x w image scaled by factor.
  function scaledSize(h, w, factor) {
    return [Math.max(1, roundEven(w * factor)), Math.max(1, roundEven(h * factor))];
  }

  // Weights of an area-averaging shrink along one axis (cv2.INTER_AREA): output pixel i
  // averages the input interval [i * scale, (i + 1) * scale).
  function areaWeights(from, to) {
    const scale = from / to;
    const rows = [];
    for (let i = 0; i < to; i++) {
      const start = i * scale;
      const end = Math.min(from, start + scale);
      const taps = [];
      for (let j = Math.floor(start); j < Math.ceil(end - 1e-9); j++) {
        const overlap = Math.min(end, j + 1) - Math.max(start, j);
        if (overlap > 1e-9) taps.push([j, overlap / scale]);
      }
      rows.push(taps);
    }
    return rows;
  }

  // Bilinear weights along one axis (cv2.INTER_LINEAR: pixel centres aligned, edges clamped).
  function linearWeights(from, to) {
    const scale = from / to;
    const rows = [];
    for (let i = 0; i < to; i++) {
      const x = (i + 0.5) * scale - 0.5;
      let x0 = Math.floor(x);
      let a = x - x0;
      if (x0 < 0) [x0, a] = [0, 0];
      if (x0 >= from - 1) [x0, a] = [from - 1, 0];
      rows.push(a > 0 ? [[x0, 1 - a], [x0 + 1, a]] : [[x0, 1]]);
    }
    return rows;
  }

  // Separable resize of a float image (w x h) to (outW x outH) with per-axis weights.
  function resize(src, w, h, outW, outH, weights) {
    const wx = weights(w, outW);
    const wy = weights(h, outH);
    const rows = new Float32Array(outW * h);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < outW; x++) {
        let sum = 0;
        for (const [j, k] of wx[x]) sum += src[y * w + j] * k;
        rows[y * outW + x] = sum;
      }
    }
    const out = new Float32Array(outW * outH);
    for (let y = 0; y < outH; y++) {
      for (const [j, k] of wy[y]) {
        for (let x = 0; x < outW; x++) out[y * outW + x] += rows[j * outW + x] * k;
      }
    }
    return out;
  }

  function boundingBox(mask, w, h) {
    let x0 = w, y0 = h, x1 = -1, y1 = -1;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        if (!mask[y * w + x]) continue;
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
    return x1 < 0 ? null : [x0, y0, x1 - x0 + 1, y1 - y0 + 1];
  }

  function crop(src, w, [x0, y0, cw, ch], Type = Uint8Array) {
    const out = new Type(cw * ch);
    for (let y = 0; y < ch; y++) {
      for (let x = 0; x < cw; x++) out[y * cw + x] = src[(y0 + y) * w + x0 + x];
    }
    return out;
  }

  // Typical pen width: 2 * area / perimeter. The server measures the perimeter with OpenCV's
  // contours; here it is the count of ink/paper pixel edges times 0.83, their ratio on MNIST
  // digits drawn at 60-140 px (0.83 +- 0.02).
  function strokeWidth(mask, w, h) {
    let area = 0;
    let edges = 0;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const ink = mask[y * w + x];
        area += ink;
        if (x + 1 < w && ink !== mask[y * w + x + 1]) edges++;
        if (y + 1 < h && ink !== mask[(y + 1) * w + x]) edges++;
        if (ink && (x === 0 || x === w - 1)) edges++;
        if (ink && (y === 0 || y === h - 1)) edges++;
      }
    }
    return Math.max(1, (2 * area) / Math.max(1, edges * PERIMETER_PER_EDGE));
  }

  // cv2.getStructuringElement(MORPH_ELLIPSE, (2r+1, 2r+1)) as [dy, dx] offsets.
  function disc(radius) {
    const offsets = [];
    for (let dy = -radius; dy <= radius; dy++) {
      const dx = Math.round(Math.sqrt(radius * radius - dy * dy));
      for (let x = -dx; x <= dx; x++) offsets.push([dy, x]);
    }
    return offsets;
  }

  function dilate(mask, w, h, radius) {
    const out = new Uint8Array(w * h);
    const offsets = disc(radius);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        if (!mask[y * w + x]) continue;
        for (const [dy, dx] of offsets) {
          const yy = y + dy, xx = x + dx;
          if (yy >= 0 && yy < h && xx >= 0 && xx < w) out[yy * w + xx] = 1;
        }
      }
    }
    return out;
  }

  function erode(mask, w, h, radius) {
    const out = new Uint8Array(w * h);
    const offsets = disc(radius);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        if (!mask[y * w + x]) continue;
        let keep = 1;
        for (const [dy, dx] of offsets) {
          const yy = y + dy, xx = x + dx;
          // Outside the image counts as ink, as in cv2.erode's default border.
          if (yy >= 0 && yy < h && xx >= 0 && xx < w && !mask[yy * w + xx]) {
            keep = 0;
            break;
          }
        }
        out[y * w + x] = keep;
      }
    }
    return out;
  }

  // Connected components (4- or 8-connected) of the pixels equal to `value`.
  function components(mask, w, h, value, eight) {
    const labels = new Int32Array(w * h).fill(-1);
    const stats = []; // [x0, y0, x1, y1, area]
    const stack = [];
    const steps = eight
      ? [[-1, -1], [-1, 0], [-1, 1], [0, -1], [0, 1], [1, -1], [1, 0], [1, 1]]
      : [[-1, 0], [0, -1], [0, 1], [1, 0]];
    for (let start = 0; start < w * h; start++) {
      if (mask[start] !== value || labels[start] >= 0) continue;
      const id = stats.length;
      const s = [w, h, -1, -1, 0];
      labels[start] = id;
      stack.push(start);
      while (stack.length) {
        const p = stack.pop();
        const y = (p / w) | 0, x = p - y * w;
        s[0] = Math.min(s[0], x);
        s[1] = Math.min(s[1], y);
        s[2] = Math.max(s[2], x);
        s[3] = Math.max(s[3], y);
        s[4]++;
        for (const [dy, dx] of steps) {
          const yy = y + dy, xx = x + dx;
          if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
          const q = yy * w + xx;
          if (mask[q] === value && labels[q] < 0) {
            labels[q] = id;
            stack.push(q);
          }
        }
      }
      stats.push(s);
    }
    return { labels, stats };
  }

  // --- one digit to one tile (digitrec.preprocess._tile_from_mask) ---------------------------

  function canonical(mask, w, h) {
    const factor = CANON / Math.max(h, w);
    const [cw, ch] = scaledSize(h, w, factor);
    const src = Float32Array.from(mask);
    // Shrinking, any ink in a pixel keeps it (thin strokes must not vanish); enlarging,
    // a pixel is ink where the interpolated mask is at least half ink.
    const scaled =
      factor < 1 ? resize(src, w, h, cw, ch, areaWeights) : resize(src, w, h, cw, ch, linearWeights);
    const pad = CANON / 4;
    const pw = cw + 2 * pad, ph = ch + 2 * pad;
    const canon = new Uint8Array(pw * ph);
    for (let y = 0; y < ch; y++) {
      for (let x = 0; x < cw; x++) {
        const v = scaled[y * cw + x];
        canon[(y + pad) * pw + x + pad] = factor < 1 ? v > 1e-3 : v >= 0.5;
      }
    }
    return { canon, w: pw, h: ph };
  }

  // Thicken or thin the strokes so that, once scaled to 20 px, they are MNIST's width:
  // growing a stroke by d also grows the digit by d, so (stroke + d) * 20 / (80 + d) = 2.4.
  function normaliseStroke(canon, w, h) {
    const stroke = strokeWidth(canon, w, h);
    const change = (CANON * STROKE_WIDTH - BOX * stroke) / (BOX - STROKE_WIDTH);
    let radius = roundEven(Math.abs(change) / 2);
    if (radius < 1) return canon;
    if (change > 0) return keepLoopsOpen(canon, dilate(canon, w, h, radius), w, h);
    radius = Math.min(radius, Math.floor(stroke / 3)); // junctions must stay joined
    if (radius < 1) return canon;
    const thinned = erode(canon, w, h, radius);
    return thinned.some((v) => v) ? thinned : canon;
  }

  // Loops that the thickening narrowed below one tile pixel get their opening back: a narrow
  // loop (the top of a slanted 8) is what tells an 8 from a 0. A loop is closed when none of
  // its pixels is 2 or more (cv2's 3x3 chamfer distance) from the thickened ink: every pixel
  // has ink among its 8 neighbours or two straight steps away.
  function keepLoopsOpen(canon, thick, w, h) {
    const { labels, stats } = components(canon, w, h, 0, false);
    const outside = labels[0];
    const near = [[-1, -1], [-1, 0], [-1, 1], [0, -1], [0, 1], [1, -1], [1, 0], [1, 1],
                  [-2, 0], [2, 0], [0, -2], [0, 2]]; // prettier-ignore
    const open = new Uint8Array(stats.length);
    open[outside] = 1;
    for (let p = 0; p < w * h; p++) {
      const id = labels[p];
      if (id < 0 || open[id] || thick[p]) continue;
      const y = (p / w) | 0, x = p - y * w;
      let inkNear = false;
      for (const [dy, dx] of near) {
        const yy = y + dy, xx = x + dx;
        if (yy >= 0 && yy < h && xx >= 0 && xx < w && thick[yy * w + xx]) {
          inkNear = true;
          break;
        }
      }
      if (!inkNear) open[id] = 1;
    }
    for (let p = 0; p < w * h; p++) {
      if (labels[p] >= 0 && !open[labels[p]]) thick[p] = 0;
    }
    return thick;
  }

  // Place a digit (values 0..1, at most 20x20) in a 28x28 tile of 0..255 with its centre of
  // mass on pixel (14, 14), shifting by whole pixels as MNIST did.
  function centreByMass(digit, w, h) {
    let total = 0, sy = 0, sx = 0;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const v = digit[y * w + x];
        total += v;
        sy += v * y;
        sx += v * x;
      }
    }
    const top = roundEven(TILE / 2 - sy / total);
    const left = roundEven(TILE / 2 - sx / total);
    const tile = new Float32Array(TILE * TILE);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const ty = y + top, tx = x + left;
        if (ty < 0 || ty >= TILE || tx < 0 || tx >= TILE) continue;
        tile[ty * TILE + tx] = Math.min(255, Math.max(0, Math.round(digit[y * w + x] * 255)));
      }
    }
    return tile;
  }

  function tileFromMask(mask, w, h) {
    const { canon: padded, w: pw, h: ph } = canonical(mask, w, h);
    const canon = normaliseStroke(padded, pw, ph);
    const box = boundingBox(canon, pw, ph);
    const [, , bw, bh] = box;
    const cropped = Float32Array.from(crop(canon, pw, box));
    const factor = BOX / Math.max(bh, bw);
    const [dw, dh] = scaledSize(bh, bw, factor);
    const weights = factor < 1 ? areaWeights : linearWeights;
    const digit = resize(cropped, bw, bh, dw, dh, weights).map((v) => Math.min(1, Math.max(0, v)));
    return centreByMass(digit, dw, dh);
  }

  // --- finding the digits (digitrec.preprocess.segment, for drawings) ----------------------

  // Ink coverage 0..1 from greyscale pixels: dark ink on light paper or light on dark,
  // decided by the border.
  function inkOf(grey, w, h) {
    let border = 0, count = 0;
    for (let x = 0; x < w; x++) {
      border += grey[x] + grey[(h - 1) * w + x];
      count += 2;
    }
    for (let y = 1; y < h - 1; y++) {
      border += grey[y * w] + grey[y * w + w - 1];
      count += 2;
    }
    const lightPaper = border / count > 127;
    const ink = new Float32Array(w * h);
    for (let i = 0; i < w * h; i++) ink[i] = (lightPaper ? 255 - grey[i] : grey[i]) / 255;
    return ink;
  }

  // Pieces of one digit: stacked (mostly overlapping in x, close in y), or a small piece
  // reaching into a bigger one's box (a 5's loose bar, a 4 written as '=' and a stroke).
  function sameDigit(a, b) {
    const [ax, ay, aw, ah] = a;
    const [bx, by, bw, bh] = b;
    const overlapX = Math.min(ax + aw, bx + bw) - Math.max(ax, bx);
    const overlapY = Math.min(ay + ah, by + bh) - Math.max(ay, by);
    if (overlapX >= 0.5 * Math.min(aw, bw) && -overlapY <= 0.6 * Math.max(ah, bh)) return true;
    const [small, big] = aw * ah <= bw * bh ? [a, b] : [b, a];
    return (
      overlapX > 0 &&
      overlapY > 0 &&
      small[3] <= 0.75 * big[3] &&
      overlapX * overlapY >= 0.05 * small[2] * small[3]
    );
  }

  function unionBox(boxes) {
    const x0 = Math.min(...boxes.map((b) => b[0]));
    const y0 = Math.min(...boxes.map((b) => b[1]));
    const x1 = Math.max(...boxes.map((b) => b[0] + b[2]));
    const y1 = Math.max(...boxes.map((b) => b[1] + b[3]));
    return [x0, y0, x1 - x0, y1 - y0];
  }

  function groupPieces(boxes) {
    let groups = boxes.map((box, i) => ({ members: [i], box }));
    let merged = true;
    while (merged) {
      merged = false;
      outer: for (let a = 0; a < groups.length; a++) {
        for (let b = a + 1; b < groups.length; b++) {
          if (!sameDigit(groups[a].box, groups[b].box)) continue;
          const members = [...groups[a].members, ...groups[b].members];
          groups[a] = { members, box: unionBox([groups[a].box, groups[b].box]) };
          groups.splice(b, 1);
          merged = true;
          break outer;
        }
      }
    }
    return groups;
  }

  // The digits in a greyscale image (Uint8 values, width x height), left to right:
  // { tiles: [Float32Array(784) of 0..255], boxes: [[x, y, w, h]], diagnosis }.
  function segment(grey, w, h) {
    const ink = inkOf(grey, w, h);
    const mask = new Uint8Array(w * h);
    for (let i = 0; i < w * h; i++) mask[i] = ink[i] >= 0.5 ? 1 : 0;
    const { labels, stats } = components(mask, w, h, 1, true);
    if (!stats.length) return { tiles: [], boxes: [], diagnosis: "no ink found" };
    // Specks: small in area for the pen, or small next to the typical digit height.
    const stroke = strokeWidth(mask, w, h);
    const boxes = stats.map(([x0, y0, x1, y1]) => [x0, y0, x1 - x0 + 1, y1 - y0 + 1]);
    const area = stats.map((s) => s[4]);
    const big = area.map((a) => a >= Math.max(4, 1.5 * stroke * stroke));
    const largest = Math.max(...area.filter((_, i) => big[i]), 0);
    if (!largest) return { tiles: [], boxes: [], diagnosis: "no ink found" };
    const heights = boxes.filter((_, i) => big[i] && area[i] >= 0.25 * largest).map((b) => b[3]);
    heights.sort((a, b) => a - b);
    const mid = heights.length >> 1;
    const typical = heights.length % 2 ? heights[mid] : (heights[mid - 1] + heights[mid]) / 2;
    const kept = boxes
      .map((box, id) => ({ box, id }))
      .filter(({ box, id }) => big[id] && Math.max(box[2], box[3]) >= 0.25 * typical);
    const groups = groupPieces(kept.map((k) => k.box));
    if (groups.length > MAX_DIGITS) {
      const n = groups.length;
      return { tiles: [], boxes: [], diagnosis: `found ${n} separate marks; expected a few handwritten digits` };
    }
    groups.sort((a, b) => a.box[0] + a.box[2] / 2 - (b.box[0] + b.box[2] / 2));
    const tiles = groups.map(({ members, box }) => {
      const ids = new Set(members.map((m) => kept[m].id));
      const [x0, y0, bw, bh] = box;
      const piece = new Uint8Array(bw * bh);
      for (let y = 0; y < bh; y++) {
        for (let x = 0; x < bw; x++) piece[y * bw + x] = ids.has(labels[(y0 + y) * w + x0 + x]) ? 1 : 0;
      }
      return tileFromMask(piece, bw, bh);
    });
    return { tiles, boxes: groups.map((g) => g.box), diagnosis: null };
  }

  // Greyscale (PIL's "L" weights) of a canvas, transparent pixels as white paper.
  function greyOf(canvas) {
    const { width, height } = canvas;
    const data = canvas.getContext("2d").getImageData(0, 0, width, height).data;
    const grey = new Uint8Array(width * height);
    for (let i = 0; i < width * height; i++) {
      const [r, g, b, a] = [data[4 * i], data[4 * i + 1], data[4 * i + 2], data[4 * i + 3]];
      const luma = (r * 299 + g * 587 + b * 114) / 1000;
      grey[i] = Math.round(255 - (a / 255) * (255 - luma));
    }
    return grey;
  }

  // --- the model ---------------------------------------------------------------------------

  let loading = null;
  let described = null;

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = src;
      script.onload = resolve;
      script.onerror = () => reject(new Error(`could not load ${src}`));
      document.head.append(script);
    });
  }

  // The onnxruntime session and the model's description, loaded once (again after a failure).
  function load() {
    if (!loading) {
      loading = (async () => {
        if (!window.ort) await loadScript(`${ORT_PATH}ort.wasm.min.js`);
        ort.env.wasm.wasmPaths = ORT_PATH;
        ort.env.wasm.numThreads = 1; // threads need cross-origin isolation; one is fast enough
        ort.env.wasm.proxy = false;
        const [session, about] = await Promise.all([
          ort.InferenceSession.create("/model.onnx", { executionProviders: ["wasm"] }),
          fetch("/model.json").then((r) => {
            if (!r.ok) throw new Error(`/model.json: ${r.status}`);
            return r.json();
          }),
        ]);
        described = about;
        return session;
      })();
      loading.catch(() => {
        loading = null;
      });
    }
    return loading;
  }

  // Read the digits of a greyscale image: the same shape of answer as the server's
  // /api/predict, tiles as Float32Array(784) of 0..255.
  async function readGrey(grey, width, height) {
    const found = segment(grey, width, height);
    const reading = { text: "", digit: null, probability: null, digits: [], diagnosis: found.diagnosis, image: { width, height } };
    if (found.diagnosis) return reading;
    const session = await load();
    const n = found.tiles.length;
    const input = new Float32Array(n * TILE * TILE);
    found.tiles.forEach((tile, i) => input.set(tile, i * TILE * TILE));
    const output = await session.run({ image: new ort.Tensor("float32", input, [n, 1, TILE, TILE]) });
    const all = output.probabilities.data;
    const classes = described.classes;
    reading.digits = found.tiles.map((tile, i) => {
      const row = Array.from(all.slice(i * classes.length, (i + 1) * classes.length));
      const best = row.indexOf(Math.max(...row));
      const probabilities = new Array(10).fill(0);
      classes.forEach((c, j) => (probabilities[c] = row[j]));
      return { digit: classes[best], probability: row[best], probabilities, box: found.boxes[i], tile, neighbors: [] };
    });
    reading.text = reading.digits.map((d) => d.digit).join("");
    if (n === 1) [reading.digit, reading.probability] = [reading.digits[0].digit, reading.digits[0].probability];
    return reading;
  }

  // A 28x28 tile (0..255, white ink on black) as a PNG data: URL, as the server shows tiles.
  function tileDataURL(tile) {
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = TILE;
    const context = canvas.getContext("2d");
    const image = context.createImageData(TILE, TILE);
    tile.forEach((v, i) => {
      image.data.set([v, v, v, 255], 4 * i);
    });
    context.putImageData(image, 0, 0);
    return canvas.toDataURL("image/png");
  }

  return {
    segment,
    greyOf,
    load,
    readGrey,
    readCanvas: (canvas) => readGrey(greyOf(canvas), canvas.width, canvas.height),
    tileDataURL,
    about: () => described,
  };
})();
