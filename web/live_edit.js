// Edit Live (PTI): while a strength slider is dragged, ask the server for the edited face and draw it on the node.
//
// After the node runs, its `ui` output carries a session token ("pti_live"). Each slider change posts the node's
// strengths with that token to /api/pti/live/render: one request in flight, at most ~30 per second, a request
// still running after STALE_MS is aborted for newer values; a full-quality PNG follows once the slider rests.
// Nothing here queues a prompt. Errors (an old session, a busy server) show the server's message on the node.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_TYPE = "PTI_EditLive";
const ROUTE = "/pti/live/render";
const MIN_INTERVAL_MS = 33; // ~30 Hz
const SETTLE_MS = 250; // no change for this long: render the final (PNG) image
const STALE_MS = 1000;
const PREVIEW_HEIGHT = 256;

function strengthValues(node, keys) {
  const values = {};
  for (const widget of node.widgets ?? []) {
    if (keys.includes(widget.name)) values[widget.name] = Number(widget.value);
  }
  return values;
}

class LivePreview {
  constructor(node) {
    this.node = node;
    this.session = null;
    this.keys = []; // the sliders whose direction is connected: the only ones the session knows
    this.image = null;
    this.message = "";
    this.inFlight = null; // {controller, startedAt}
    this.dirty = false;
    this.lastSentAt = 0;
    this.timer = null;
    this.settleTimer = null;
    this.stats = { sent: 0, received: 0, aborted: 0, errors: 0 };
  }

  start(session, keys) {
    this.inFlight?.controller.abort();
    this.inFlight = null;
    this.session = session;
    this.keys = keys;
    this.message = "";
    this.request("final");
  }

  changed() {
    if (!this.session) {
      if (!this.message) this.show(null, "queue once to preview the sliders live");
      return;
    }
    this.dirty = true;
    clearTimeout(this.settleTimer);
    this.settleTimer = setTimeout(() => this.request("final"), SETTLE_MS);
    this.pump();
  }

  pump() {
    if (!this.dirty || this.timer) return;
    if (this.inFlight) {
      if (performance.now() - this.inFlight.startedAt < STALE_MS) return; // sent again when it answers
      this.inFlight.controller.abort();
      this.stats.aborted++;
      this.inFlight = null;
    }
    const wait = this.lastSentAt + MIN_INTERVAL_MS - performance.now();
    if (wait > 0) {
      this.timer = setTimeout(() => {
        this.timer = null;
        this.pump();
      }, wait);
      return;
    }
    this.request("draft");
  }

  async request(quality) {
    if (!this.session) return;
    if (quality === "final" && this.inFlight) {
      this.inFlight.controller.abort(); // a stale draft: the final picture supersedes it
      this.stats.aborted++;
    }
    this.dirty = false;
    const controller = new AbortController();
    const flight = { controller, startedAt: performance.now() };
    this.inFlight = flight;
    this.lastSentAt = flight.startedAt;
    this.stats.sent++;
    const session = this.session;
    const body = JSON.stringify({
      session,
      values: strengthValues(this.node, this.keys),
      quality,
      client_id: api.clientId ?? api.initialClientId ?? null,
    });
    try {
      const response = await api.fetchApi(ROUTE, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body,
        signal: controller.signal,
        cache: "no-store",
      });
      if (!response.ok) {
        let message = `preview failed (${response.status})`;
        try {
          message = (await response.json()).error ?? message;
        } catch {}
        this.stats.errors++;
        this.show(null, message);
        if (response.status === 404 || response.status === 410) this.session = null;
        return;
      }
      const blob = await response.blob();
      const image = await createImageBitmap(blob);
      if (session === this.session && !controller.signal.aborted) {
        this.stats.received++;
        this.lastBlob = blob; // what the node shows, as the server sent it
        this.show(image, "", blob);
      }
    } catch (error) {
      if (error?.name !== "AbortError") {
        this.stats.errors++;
        this.show(null, `preview failed: ${error?.message ?? error}`);
      }
    } finally {
      if (this.inFlight === flight) this.inFlight = null;
      this.pump();
    }
  }

  show(image, message, blob = null) {
    if (image) this.image = image;
    this.message = message;
    if (this.element) {
      if (blob) {
        if (this.element.img.src) URL.revokeObjectURL(this.element.img.src);
        this.element.img.src = URL.createObjectURL(blob);
      }
      this.element.note.textContent = message;
    }
    this.node.setDirtyCanvas(true, true);
  }

  draw(ctx, width, y) {
    const size = Math.min(width - 20, PREVIEW_HEIGHT);
    const x = (width - size) / 2;
    if (this.image) {
      const smoothing = ctx.imageSmoothingEnabled;
      ctx.imageSmoothingEnabled = this.image.width >= size; // a small model's pixels stay crisp when enlarged
      ctx.drawImage(this.image, x, y + 4, size, size);
      ctx.imageSmoothingEnabled = smoothing;
    }
    if (this.message) {
      ctx.fillStyle = "#f66";
      ctx.font = "12px sans-serif";
      ctx.fillText(this.message.slice(0, 80), 10, y + 20, width - 20);
    }
  }
}

// The preview: a DOM widget (an <img>) where the frontend offers them, which both the classic canvas and the Vue
// node renderer show; otherwise a widget drawn on the canvas. Neither is saved in the workflow or sent in a prompt.
function previewElement() {
  const root = document.createElement("div");
  root.style.cssText = "display:flex;flex-direction:column;align-items:center;width:100%;height:100%;";
  const img = document.createElement("img");
  img.style.cssText = "flex:1;min-height:0;max-width:100%;object-fit:contain;image-rendering:pixelated;";
  img.alt = "";
  const note = document.createElement("div");
  note.style.cssText = "color:#f66;font:12px sans-serif;text-align:center;";
  root.append(img, note);
  return { root, img, note };
}

function addPreviewWidget(node) {
  const preview = new LivePreview(node);
  node.ptiLivePreview = preview;
  if (typeof node.addDOMWidget === "function") {
    preview.element = previewElement();
    const widget = node.addDOMWidget("pti_live_preview", "pti_live_preview", preview.element.root, {
      serialize: false,
      hideOnZoom: false,
      getMinHeight: () => PREVIEW_HEIGHT,
      getValue: () => "",
      setValue: () => {},
    });
    widget.serialize = false;
  } else {
    node.addCustomWidget({
      name: "pti_live_preview",
      type: "pti_live_preview",
      value: "",
      serialize: false,
      options: { serialize: false },
      draw(ctx, _node, width, y) {
        preview.draw(ctx, width, y);
      },
      computeSize(width) {
        return [width, PREVIEW_HEIGHT + 8];
      },
    });
  }
  for (const widget of node.widgets ?? []) {
    if (!widget.name.startsWith("strength_")) continue;
    const callback = widget.callback;
    widget.callback = function (...args) {
      const result = callback?.apply(this, args);
      preview.changed();
      return result;
    };
  }
  return preview;
}

app.registerExtension({
  name: "PTI.LiveEdit",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_TYPE) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function (...args) {
      const result = onNodeCreated?.apply(this, args);
      addPreviewWidget(this);
      return result;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message, ...rest) {
      const result = onExecuted?.apply(this, [message, ...rest]);
      const entry = message?.pti_live?.[0];
      if (entry?.session) {
        (this.ptiLivePreview ?? addPreviewWidget(this)).start(entry.session, Object.keys(entry.values ?? {}));
      }
      return result;
    };
    const onRemoved = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function (...args) {
      this.ptiLivePreview?.inFlight?.controller.abort();
      if (this.ptiLivePreview) this.ptiLivePreview.session = null;
      return onRemoved?.apply(this, args);
    };
  },
});
