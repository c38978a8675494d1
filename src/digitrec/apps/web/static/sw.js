// digitrec's service worker: keeps the page, its assets and the on-device model, so that after
// one visit the page opens and reads drawings with no network (and /docs, once opened). The API is never cached:
// answers come live from the server, or from the on-device model in the page.
"use strict";

const CACHE = "__CACHE_NAME__"; // the server writes the release and model digest here
const ORT = "/static/vendor/onnxruntime-web";
const SWAGGER = "/static/vendor/swagger-ui";
const PAGE = [
  "/",
  "/static/style.css",
  "/static/app.js",
  "/static/ondevice.js",
  "/manifest.webmanifest",
  "/static/icon-192.png",
  "/static/icon-512.png",
];
// Named for the release and model (the cache is), so they can be served from the cache first.
const FIXED = [
  "/model.onnx",
  "/model.json",
  `${ORT}/ort.wasm.min.js`,
  `${ORT}/ort-wasm-simd-threaded.mjs`,
  `${ORT}/ort-wasm-simd-threaded.wasm`,
  `${SWAGGER}/swagger-ui-bundle.js`,
  `${SWAGGER}/swagger-ui.css`,
];
// Kept on install: what the page needs to read drawings offline. /docs and Swagger UI (1.9 MB)
// are kept once visited, not downloaded to every phone in advance.
const INSTALL = [...PAGE, ...FIXED.filter((path) => !path.startsWith(SWAGGER))];
// How long the page waits for a server that neither answers nor fails before the cached copy.
const NETWORK_WAIT_MS = 3000;

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(INSTALL))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin) return;
  if (url.pathname.startsWith("/api/")) return;
  event.respondWith(
    FIXED.includes(url.pathname) ? cacheFirst(event.request) : networkFirst(event.request),
  );
});

async function cacheFirst(request) {
  const hit = await caches.match(request, { ignoreSearch: true });
  return hit || fetchAndKeep(request);
}

// The page and its scripts from the server while it runs (so changes show at once), else
// the copy from the last visit.
async function networkFirst(request) {
  const network = fetchAndKeep(request);
  const waited = new Promise((resolve) => setTimeout(resolve, NETWORK_WAIT_MS, null));
  try {
    const response = await Promise.race([network, waited]);
    if (response) return response;
  } catch (error) {
    // No network or no server: the cache below.
  }
  const hit = await caches.match(request, { ignoreSearch: true });
  return hit || network;
}

async function fetchAndKeep(request) {
  const response = await fetch(request);
  if (response.ok) {
    const copy = response.clone();
    caches.open(CACHE).then((cache) => cache.put(request, copy));
  }
  return response;
}
