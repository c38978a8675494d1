// digitrec's page: draw or photograph digits, see what the model read and why, correct it.
// Plain DOM code, no libraries, so the page works offline from the installed package.
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  strokes: [],          // each stroke: array of [x, y] in canvas pixels
  drawing: null,        // the stroke being drawn
  pointerId: null,
  timer: null,
  controller: null,     // aborts a prediction that a newer one replaces
  sequence: 0,
  last: null,           // {kind: "drawing" | "photo", body} to repeat after a correction
  learns: true,
  serverModel: null,    // the server's model kind, once it has answered
  pageRows: null,       // the grid of a page read as lines or a table
  csvUrl: null,         // the last CSV downloaded, released at the next
};

// --- small helpers -------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function percent(p) {
  return `${Math.round(p * 100)}%`;
}

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
  status.setAttribute("role", isError ? "alert" : "status");
}

// Who you are is a random identity the server keeps in an HttpOnly cookie; the page never
// sees it. A server on a network address also wants its write token, printed at start as
// http://host:port/?token=...: kept here and sent with every request, then taken out of
// the address bar so it does not end up in bookmarks or screenshots.
const writeToken = (() => {
  const url = new URL(window.location.href);
  const given = url.searchParams.get("token");
  if (given) {
    localStorage.setItem("digitrec-token", given);
    url.searchParams.delete("token");
    history.replaceState(null, "", url);
  }
  return localStorage.getItem("digitrec-token");
})();

// The server could not be asked at all (no network, or it is not running), as opposed to a
// server that answered with an error.
class Unreachable extends Error {}

async function api(path, options = {}) {
  if (navigator.onLine === false) throw new Unreachable("no network");
  if (writeToken) {
    options.headers = { ...(options.headers || {}), Authorization: `Bearer ${writeToken}` };
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new Unreachable("the server is not reachable");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    body = null;
  }
  if (!response.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : response.statusText;
    throw new Error(detail || `request failed (${response.status})`);
  }
  return body;
}

// --- the drawing pad -----------------------------------------------------------------------

const pad = $("pad");
const ctx = pad.getContext("2d");
const PEN = 18; // canvas pixels on a 280 px tall pad: about MNIST's stroke-to-height ratio

function paint() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  ctx.strokeStyle = "#000";
  ctx.fillStyle = "#000";
  ctx.lineWidth = PEN;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  const strokes = state.drawing ? [...state.strokes, state.drawing] : state.strokes;
  for (const stroke of strokes) {
    if (stroke.length === 1) {
      ctx.beginPath();
      ctx.arc(stroke[0][0], stroke[0][1], PEN / 2, 0, 2 * Math.PI);
      ctx.fill();
      continue;
    }
    ctx.beginPath();
    ctx.moveTo(stroke[0][0], stroke[0][1]);
    for (const [x, y] of stroke.slice(1)) ctx.lineTo(x, y);
    ctx.stroke();
  }
}

function padPoint(event) {
  const rect = pad.getBoundingClientRect();
  return [
    ((event.clientX - rect.left) * pad.width) / rect.width,
    ((event.clientY - rect.top) * pad.height) / rect.height,
  ];
}

pad.addEventListener("pointerdown", (event) => {
  if (state.drawing) return; // a second finger does not start a second stroke
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  state.pointerId = event.pointerId;
  state.drawing = [padPoint(event)];
  paint();
});

pad.addEventListener("pointermove", (event) => {
  if (!state.drawing || event.pointerId !== state.pointerId) return;
  // Coalesced events keep fast pen strokes smooth on devices that report them.
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const e of events.length ? events : [event]) state.drawing.push(padPoint(e));
  paint();
  schedulePrediction(400);
});

function endStroke(event) {
  if (!state.drawing || event.pointerId !== state.pointerId) return;
  state.strokes.push(state.drawing);
  state.drawing = null;
  state.pointerId = null;
  paint();
  schedulePrediction(150);
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

$("undo").addEventListener("click", () => {
  state.strokes.pop();
  paint();
  schedulePrediction(0);
});

$("clear").addEventListener("click", () => {
  state.strokes = [];
  paint();
  schedulePrediction(0);
});

function schedulePrediction(delay) {
  clearTimeout(state.timer);
  state.timer = setTimeout(predictDrawing, delay);
}

function predictDrawing() {
  const strokes = state.drawing ? [...state.strokes, state.drawing] : state.strokes;
  if (strokes.length === 0) {
    cancelPrediction();
    state.last = null;
    showEmpty("Draw a digit or choose a photo.");
    return;
  }
  const body = JSON.stringify({ image: shrunkPad().toDataURL("image/png") });
  $("photo-view").hidden = true;
  predict({ kind: "drawing", body });
}

// The pad at half size: still far above the model's 28 pixels, and the server finds the
// digits in a quarter of the pixels several times faster.
function shrunkPad() {
  const small = document.createElement("canvas");
  small.width = pad.width / 2;
  small.height = pad.height / 2;
  const smallCtx = small.getContext("2d");
  smallCtx.imageSmoothingQuality = "high";
  smallCtx.drawImage(pad, 0, 0, small.width, small.height);
  return small;
}

// --- photos --------------------------------------------------------------------------------

$("photo-button").addEventListener("click", () => $("photo-input").click());

// The server analyses photos at 1200 px at most; a phone's 12-megapixel photo is sent at
// 1600 px on its longer side, which keeps every detail it uses and uploads several times less.
const MAX_PHOTO_SIDE = 1600;

$("photo-input").addEventListener("change", async () => {
  const file = $("photo-input").files[0];
  if (!file) return;
  $("photo-input").value = ""; // choosing the same file again still fires "change"
  const img = $("photo-img");
  if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
  img.dataset.url = URL.createObjectURL(file);
  $("boxes").replaceChildren();
  $("photo-name").textContent = file.name;
  $("photo-view").hidden = false;
  img.src = img.dataset.url;
  let upload = file;
  try {
    await img.decode();
    upload = await shrunkPhoto(img, file);
  } catch (error) {
    // Not decodable here (for example HEIC in some browsers): send it as it is, and let the
    // server say what it is.
  }
  const form = new FormData();
  form.append("file", upload, file.name);
  form.append("layout", $("layout").value);
  predict({ kind: "photo", body: form });
});

async function shrunkPhoto(img, file) {
  const { naturalWidth: width, naturalHeight: height } = img;
  const scale = MAX_PHOTO_SIDE / Math.max(width, height);
  $("photo-name").textContent = `${file.name}, ${width}×${height}`;
  if (scale >= 1) return file;
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(width * scale);
  canvas.height = Math.round(height * scale);
  const context = canvas.getContext("2d");
  context.imageSmoothingQuality = "high";
  // drawImage uses the upright picture (EXIF orientation applied), as the <img> shows it.
  context.drawImage(img, 0, 0, canvas.width, canvas.height);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
  if (!blob) return file;
  $("photo-name").textContent += `, sent at ${canvas.width}×${canvas.height}`;
  return blob;
}

function drawBoxes(reading) {
  const boxes = $("boxes");
  boxes.replaceChildren();
  const { width, height } = reading.image;
  reading.digits.forEach((digit) => {
    const [x, y, w, h] = digit.box;
    const box = el("div", { class: "box" }, el("span", { text: String(digit.digit) }));
    // Percentages keep the boxes on the digits however wide the photo is shown.
    box.style.left = `${(100 * x) / width}%`;
    box.style.top = `${(100 * y) / height}%`;
    box.style.width = `${(100 * w) / width}%`;
    box.style.height = `${(100 * h) / height}%`;
    boxes.append(box);
  });
}

// --- predictions ---------------------------------------------------------------------------

function cancelPrediction() {
  if (state.controller) state.controller.abort();
  state.controller = null;
}

async function predict(request) {
  cancelPrediction();
  const controller = new AbortController();
  state.controller = controller;
  const sequence = ++state.sequence;
  state.last = request;
  const options = { method: "POST", body: request.body, signal: controller.signal };
  if (request.kind === "drawing") options.headers = { "Content-Type": "application/json" };
  setStatus(request.kind === "photo" ? "Reading the photo…" : "Reading…");
  try {
    const reading = await api("/api/predict", options);
    if (sequence !== state.sequence) return; // a newer request has been sent meanwhile
    showReading(reading, request.kind, { device: false, model: state.serverModel });
  } catch (error) {
    if (error.name === "AbortError" || sequence !== state.sequence) return;
    if (!(error instanceof Unreachable)) {
      showEmpty(`Could not read it: ${error.message}`, true);
    } else if (request.kind === "drawing") {
      await readOnDevice(sequence);
    } else {
      showEmpty(
        "Photos need the server, which cannot be reached now. Drawings are read on this device.",
        true,
      );
    }
  }
}

// The drawing read by the on-device model (the server could not be reached).
async function readOnDevice(sequence) {
  setStatus("Reading on this device…");
  try {
    const reading = await DigitrecOnDevice.readCanvas(shrunkPad());
    if (sequence !== state.sequence) return;
    for (const digit of reading.digits) digit.tile = DigitrecOnDevice.tileDataURL(digit.tile);
    showReading(reading, "drawing", { device: true, model: DigitrecOnDevice.about().kind });
  } catch (error) {
    if (sequence !== state.sequence) return;
    showEmpty(`The server cannot be reached, and the on-device model failed: ${error.message}`, true);
  }
}

function showEmpty(message, isError = false) {
  showPage(null);
  setStatus(message, isError);
  $("number").hidden = true;
  $("answered-by").hidden = true;
  $("pad-answer").textContent = "";
  $("digits").replaceChildren();
}

function showReading(reading, kind, source) {
  if (kind === "photo") drawBoxes(reading);
  showPage(reading);
  if (!reading.digits.length) {
    showEmpty(`Nothing read: ${reading.diagnosis || "no digits found"}.`);
    return;
  }
  const count = reading.digits.length;
  setStatus(`Read ${count} digit${count === 1 ? "" : "s"}:`);
  const number = $("number");
  number.textContent = reading.text;
  number.hidden = false;
  const by = $("answered-by");
  by.dataset.source = source.device ? "device" : "server";
  by.textContent = source.device
    ? `Read on this device by ${source.model}: the server cannot be reached.`
    : `Read by the server${source.model ? ` (${source.model})` : ""}.`;
  by.hidden = false;
  // On a phone the result section is below the pad: repeat the answer beside the buttons.
  $("pad-answer").textContent = kind === "drawing" ? `Reads: ${reading.text}` : "";
  const cards = reading.digits.map((digit, i) => digitCard(digit, i, count, source));
  if (count === 1) {
    $("digits").replaceChildren(...cards);
    return;
  }
  $("digits").replaceChildren(digitStrip(reading.digits, cards), ...cards);
}

// Below this probability a digit is marked as doubtful in the strip.
const DOUBTFUL = 0.9;

// Several digits: a compact strip of them, the doubtful ones marked, and one card open at a
// time (the first doubtful one, else the first), so a long number stays short on a phone.
function digitStrip(digits, cards) {
  const strip = el("div", { class: "strip", role: "group", "aria-label": "Digits read" });
  const doubtful = digits.findIndex((d) => d.probability < DOUBTFUL);
  const chips = digits.map((digit, i) => {
    const unsure = digit.probability < DOUBTFUL;
    const chip = el(
      "button",
      {
        type: "button",
        class: unsure ? "chip doubtful" : "chip",
        title: `Digit ${i + 1}: ${digit.digit} (${percent(digit.probability)})`,
      },
      el("span", { class: "chip-digit", text: String(digit.digit) }),
      el("span", { class: "chip-pct", text: percent(digit.probability) }),
    );
    chip.addEventListener("click", () => open(i));
    return chip;
  });
  function open(index) {
    cards.forEach((card, i) => (card.hidden = i !== index));
    chips.forEach((chip, i) => chip.setAttribute("aria-pressed", String(i === index)));
  }
  open(Math.max(0, doubtful));
  strip.append(...chips);
  const note =
    doubtful < 0 ? "Tap a digit to see it." : "Tap a digit to see it; doubtful ones are marked.";
  return el("div", {}, strip, el("p", { class: "muted", text: note }));
}

function digitCard(digit, index, count, source) {
  const name = count === 1 ? "The digit" : `Digit ${index + 1}`;
  const card = el("article", { class: "digit", "data-digit": String(digit.digit) });
  card.append(el("h3", { text: `${name}: ${digit.digit} (${percent(digit.probability)})` }));

  const seen = el(
    "figure",
    { class: "seen" },
    el("img", { class: "tile", src: digit.tile, alt: `The 28 by 28 tile the model saw` }),
    el("figcaption", { text: "what the model saw" }),
  );
  card.append(seen);

  const bars = el("ol", { class: "bars", "aria-label": "Probability of each digit" });
  digit.probabilities.forEach((p, d) => {
    const fill = el("span");
    fill.style.width = percent(p);
    bars.append(
      el(
        "li",
        { class: d === digit.digit ? "best" : "" },
        el("span", { text: String(d) }),
        el("span", { class: "bar" }, fill),
        el("span", { class: "pct", text: percent(p) }),
      ),
    );
  });
  card.append(bars);

  if (digit.explanation) card.append(whyPanel(digit.explanation));

  card.append(
    source.device
      ? el("p", { class: "muted", text: "Corrections need the server." })
      : correctionForm(digit, index),
  );
  return card;
}

// Why the model answered so (the server's digitrec.explanation): one sentence, the evidence
// the model decided on, and what its numbers mean.
function whyPanel(why) {
  const body = [el("p", { class: "why-summary", text: why.summary })];
  if (why.method === "occlusion" && why.heatmap) {
    body.push(
      el(
        "figure",
        { class: "heat" },
        el("img", { src: why.heatmap, alt: `Occlusion map: the parts ${why.answer} relied on, in red` }),
        el("figcaption", { text: "red: hiding it lowers the answer most" }),
      ),
    );
  }
  // "IDM distance" is shown as "IDM", a plain distance as "dist".
  const short = why.distance_name === "IDM distance" ? "IDM" : "dist";
  if (why.method === "vote") {
    body.push(
      el("p", {
        class: "why-head",
        text: `The ${why.voters.length} that voted (label, ${why.distance_name}, vote weight):`,
      }),
      referenceList(why.voters, (r) => [`${short} ${distance(r.distance)}`, `vote ${weight(r.weight)}`]),
    );
    const shown = new Set(why.voters.map((r) => r.image));
    const others = why.classes.filter((c) => c.nearest && !shown.has(c.nearest.image));
    if (others.length) {
      body.push(
        el("p", { class: "why-head", text: "Nearest of the other classes (no vote):" }),
        referenceList(others.map((c) => c.nearest), (r) => [`${short} ${distance(r.distance)}`]),
      );
    }
    const votes = why.classes.filter((c) => c.vote > 0).map((c) => `${c.label}: ${percent(c.vote)}`);
    body.push(el("p", { class: "why-votes", text: `Vote: ${votes.join(" · ")}` }));
  }
  if (why.method === "hybrid") {
    body.push(
      el("p", { class: "why-head", text: "Best classes, lowest score first; each with its nearest training image:" }),
      referenceList(
        why.classes.map((c) => ({ ...c.nearest, hyperplane: c.hyperplane, network: c.network, score: c.score })),
        (r) => [
          `score ${distance(r.score)}`,
          `IDM distance ${distance(r.distance)}`,
          `hyperplane distance ${distance(r.hyperplane)}`,
          ...(r.network == null ? [] : [`network ${percent(r.network)}`]),
        ],
        "neighbors rows",
      ),
    );
  }
  body.push(el("p", { class: "why-meaning", text: why.meaning }));
  return el(
    "details",
    { class: "why" },
    el("summary", { text: `Why ${why.answer}?` }),
    ...body,
  );
}

function distance(value) {
  if (value === null || value === undefined) return "–";
  return Math.abs(value) >= 100 ? value.toFixed(0) : value.toPrecision(3);
}

function weight(value) {
  if (value === null || value === undefined) return "–";
  return Number.isInteger(value) ? String(value) : value.toPrecision(2);
}

// References as thumbnails, each with its label and the lines `describe` gives for it.
function referenceList(references, describe, css = "neighbors") {
  const list = el("ul", { class: css });
  for (const r of references) {
    const fromSample = r.sample_id !== null && r.sample_id !== undefined;
    const what = fromSample ? `your sample: ${r.label}` : `training image: ${r.label}`;
    list.append(
      el(
        "li",
        { class: fromSample ? "from-sample" : "" },
        r.image ? el("img", { src: r.image, alt: what }) : null,
        el(
          "div",
          {},
          el("strong", { text: fromSample ? `${r.label} (yours)` : String(r.label) }),
          ...describe(r).map((line) => el("span", { text: line })),
        ),
      ),
    );
  }
  return list;
}

function correctionForm(digit, index) {
  const id = `correct-${index}`;
  // No digit is chosen in advance: a correction is only saved once the user picks one.
  const select = el("select", { id, name: "label", required: "" });
  select.append(el("option", { value: "", text: "…" }));
  for (let d = 0; d <= 9; d++) {
    if (d !== digit.digit) select.append(el("option", { value: String(d), text: String(d) }));
  }
  const form = el(
    "form",
    { class: "correct" },
    el("label", { for: id }, document.createTextNode("That's wrong, it is a"), select),
    el("button", { type: "submit", text: "Save" }),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const label = Number(select.value);
      await api("/api/samples", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ image: digit.tile, label }),
      });
      await loadSamples();
      if (state.last) await predict(state.last); // show what the model says now
      setStatus(`Saved as a ${label}. ${$("status").textContent}`);
    } catch (error) {
      setStatus(`Could not save the correction: ${error.message}`, true);
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

// --- pages of numbers ----------------------------------------------------------------------

// A photo read as lines or a table comes back with its lines of fields (numbers). The grid
// and its CSV are built here from that answer rather than by another request: the file is
// exactly the grid on screen, with no second upload or reading of the photo, and it can be
// saved however long ago the photo was read.

$("layout").addEventListener("change", () => {
  if (!state.last || state.last.kind !== "photo") return;
  state.last.body.set("layout", $("layout").value);
  predict(state.last);
});

$("download-csv").addEventListener("click", () => {
  if (!state.pageRows) return;
  if (state.csvUrl) URL.revokeObjectURL(state.csvUrl);
  const blob = new Blob([csvText(state.pageRows)], { type: "text/csv" });
  state.csvUrl = URL.createObjectURL(blob);
  const link = el("a", { href: state.csvUrl, download: "numbers.csv", hidden: "" });
  document.body.append(link);
  link.click();
  link.remove();
});

// The fields as rows: one per line, one cell per table column (fields of one line in one
// column share the cell), or the fields in order when not read as a table; as
// Reading.grid() and `digitrec predict --csv` do.
function pageGrid(lines) {
  const columns = lines.flat().map((field) => field.column);
  const width = 1 + Math.max(-1, ...columns.map((c) => c ?? 0));
  return lines.map((line) => {
    if (line.some((field) => field.column === null)) return line.map((field) => field.text);
    const row = new Array(width).fill("");
    for (const field of line) row[field.column] = `${row[field.column]} ${field.text}`.trim();
    return row;
  });
}

// CSV as Python's csv module writes it (the CLI's --csv): a cell holding a comma, a quote
// or a line break is quoted ("1,250" is one number), and so is a row of one empty cell.
function csvText(rows) {
  const cell = (text) => (/[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text);
  const line = (row) => (row.length === 1 && row[0] === "" ? '""' : row.map(cell).join(","));
  return rows.map(line).join("\n") + "\n";
}

// A number's text with its doubtful digits marked, the whole marked if a person should
// check it, and the reason on hover.
function fieldView(field) {
  const view = el("span", { class: field.needs_review ? "field review" : "field" });
  if (field.diagnosis) view.title = field.diagnosis;
  const digits = field.digits[Symbol.iterator]();
  for (const ch of field.text || "?") {
    const digit = /[0-9]/.test(ch) ? digits.next().value : null;
    const doubtful = digit && digit.confidence < DOUBTFUL;
    view.append(doubtful ? el("mark", { class: "doubtful-digit", text: ch }) : ch);
  }
  return view;
}

function pageTable(lines) {
  const rows = lines.map((line) => {
    const width = 1 + Math.max(...line.map((f) => f.column ?? 0));
    const cells = Array.from({ length: width }, () => el("td"));
    for (const field of line) cells[field.column ?? 0].append(fieldView(field));
    return el("tr", {}, ...cells);
  });
  const width = Math.max(...rows.map((row) => row.children.length));
  for (const row of rows) while (row.children.length < width) row.append(el("td"));
  return el("table", { class: "grid" }, el("tbody", {}, ...rows));
}

function pageList(lines) {
  return el(
    "ol",
    { class: "lines" },
    ...lines.map((line) => el("li", {}, ...line.map(fieldView))),
  );
}

// Why each flagged number should be checked, in words a phone shows (no hover there).
function pageChecks(lines) {
  const checks = [];
  lines.forEach((line, i) =>
    line.forEach((field, j) => {
      if (!field.needs_review) return;
      const where = `Line ${i + 1}, number ${j + 1} (${field.text || "?"})`;
      checks.push(el("li", { text: `${where}: check it, ${field.diagnosis || "unsure"}.` }));
    }),
  );
  return checks;
}

function showPage(reading) {
  const lines = (reading && reading.lines) || [];
  state.pageRows = lines.length ? pageGrid(lines) : null;
  $("page-view").hidden = !lines.length;
  const table = lines.some((line) => line.some((field) => field.column !== null));
  const shown = !lines.length ? [] : [table ? pageTable(lines) : pageList(lines)];
  $("page-lines").replaceChildren(...shown);
  $("page-checks").replaceChildren(...pageChecks(lines));
}

// --- stored samples ------------------------------------------------------------------------

async function loadSamples() {
  const list = $("sample-list");
  try {
    const { samples } = await api("/api/samples");
    list.replaceChildren(...samples.map(sampleItem));
    const note = state.learns
      ? "Digits you corrected. The model compares new drawings with them at once."
      : "Digits you corrected. This kind of model does not use them; a kNN model would.";
    $("samples-note").textContent = samples.length ? note : `${note} None yet.`;
  } catch (error) {
    $("samples-note").textContent =
      error instanceof Unreachable
        ? "Your samples are kept by the server, which cannot be reached now."
        : `Could not load the samples: ${error.message}`;
  }
}

function sampleItem(sample) {
  const when = new Date(sample.created);
  const button = el("button", {
    type: "button",
    class: "danger",
    text: "Delete",
    "aria-label": `Delete sample ${sample.id} (a ${sample.label})`,
  });
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api(`/api/samples/${sample.id}`, { method: "DELETE" });
      await loadSamples();
      if (state.last) await predict(state.last);
    } catch (error) {
      setStatus(`Could not delete the sample: ${error.message}`, true);
      button.disabled = false;
    }
  });
  return el(
    "li",
    { "data-id": String(sample.id) },
    el("img", { src: sample.tile, alt: `Sample ${sample.id}` }),
    el(
      "div",
      {},
      el("div", { class: "label", text: String(sample.label) }),
      el("div", { class: "when", text: when.toLocaleDateString() }),
    ),
    button,
  );
}

// --- start ---------------------------------------------------------------------------------

async function loadModel() {
  try {
    const info = await api("/api/model");
    state.serverModel = info.kind;
    state.learns = info.learns_from_samples;
    const accuracy =
      info.accuracy === null ? "" : `, test accuracy ${(info.accuracy * 100).toFixed(1)}%`;
    const size = info.training_size === null ? "" : ` on ${info.training_size} images`;
    $("model-info").textContent = `Model: ${info.kind}${size}${accuracy}.`;
  } catch (error) {
    if (!(error instanceof Unreachable)) {
      $("model-info").textContent = `Could not reach the server: ${error.message}`;
      return;
    }
    $("model-info").textContent =
      "The server cannot be reached: drawings are read on this device; photos and corrections need the server.";
    try {
      await DigitrecOnDevice.load(); // now, so the first drawing does not wait for it
      const about = DigitrecOnDevice.about();
      const accuracy = `MNIST test accuracy ${(about.mnist_test_accuracy * 100).toFixed(1)}%`;
      $("model-info").textContent =
        `The server cannot be reached. On this device: ${about.kind}, ${accuracy}. ` +
        "Photos and corrections need the server.";
    } catch (loadError) {
      $("model-info").textContent =
        `The server cannot be reached, and the on-device model did not load: ${loadError.message}`;
    }
  }
}

// The service worker keeps the page and the on-device model for visits with no network.
if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("/sw.js").catch((error) => {
    console.warn(`no offline copy: ${error.message}`);
  });
}

paint();
loadModel().then(loadSamples);
