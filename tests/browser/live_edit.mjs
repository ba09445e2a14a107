// Drives ComfyUI's web UI in headless Chromium for tests/test_live_edit_browser.py (playwright-core from npm).
//
// node live_edit.mjs <playwright-core dir> <chromium> <server url> <workflow.json> <out dir>
// Loads the workflow, queues it once, drags Edit Live's strength_1 slider with the mouse in steps, queues again,
// and writes what it saw to <out dir>/result.json (plus the last preview PNG and screenshots) for the Python side.
import { createRequire } from "node:module";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";

const [playwrightDir, chromium, url, workflowPath, outDir] = process.argv.slice(2);
const { chromium: launcher } = createRequire(import.meta.url)(playwrightDir);
const workflow = JSON.parse(readFileSync(workflowPath, "utf8"));
const LIVE = "PTI_EditLive";
const RUN_TIMEOUT_MS = 240_000;

const browser = await launcher.launch({ executablePath: chromium, headless: true, args: ["--no-sandbox"] });
const result = { requests: [], previews: [], errors: [], frontendErrors: [] };
try {
  const page = await (await browser.newContext({ viewport: { width: 1600, height: 1000 } })).newPage();
  // Errors raised in this pack's extension fail the test; the frontend's own are only reported.
  page.on("pageerror", (error) => {
    const text = String(error?.stack ?? error);
    (text.includes("/extensions/") ? result.errors : result.frontendErrors).push(text);
  });
  // Live renders in flight at once (the extension allows one) and when each was sent (at most ~30 Hz).
  let rendering = 0;
  result.maxRendersInFlight = 0;
  result.renderSentAt = [];
  const isRender = (request) => request.url().endsWith("/pti/live/render");
  const renderDone = (request) => {
    if (isRender(request)) rendering--;
  };
  page.on("request", (request) => {
    if (request.url().includes("/api/")) {
      result.requests.push({ at: Date.now(), method: request.method(), path: new URL(request.url()).pathname });
    }
    if (isRender(request)) {
      result.maxRendersInFlight = Math.max(result.maxRendersInFlight, ++rendering);
      result.renderSentAt.push(Date.now());
    }
  });
  page.on("requestfinished", renderDone);
  page.on("requestfailed", renderDone);
  page.on("response", (response) => {
    if (!response.url().endsWith("/pti/live/render")) return;
    const type = response.headers()["content-type"] ?? "";
    result.previews.push({ at: Date.now(), status: response.status(), type });
  });
  // A fresh user folder opens the template browser on first load; it would cover the canvas.
  await page.request.post(new URL("api/settings/Comfy.TutorialCompleted", url).href, { data: true });
  await page.goto(url);
  await page.waitForFunction(() => window.app?.graph && window.comfyAPI?.api, null, { timeout: 60_000 });
  await page.keyboard.press("Escape");
  await page.evaluate(async (data) => await window.app.loadGraphData(data), workflow);
  const nodeId = await page.evaluate((type) => window.app.graph._nodes.find((n) => n.type === type).id, LIVE);

  const received = () =>
    page.evaluate((id) => window.app.graph.getNodeById(id).ptiLivePreview?.stats.received ?? 0, nodeId);
  const waitForPreviews = (count) =>
    page.waitForFunction(
      ([id, n]) => (window.app.graph.getNodeById(id).ptiLivePreview?.stats.received ?? 0) >= n,
      [nodeId, count],
      { timeout: RUN_TIMEOUT_MS },
    );
  const queueAndWait = async () => {
    const before = await received();
    await page.evaluate(async () => await window.app.queuePrompt(0, 1));
    await waitForPreviews(before + 1); // the node ran: its new session's first (full-quality) picture arrived
    return page.evaluate((id) => window.app.graph.getNodeById(id).ptiLivePreview.session, nodeId);
  };

  result.firstSession = await queueAndWait();
  await page.waitForTimeout(500);
  await page.screenshot({ path: path.join(outDir, "after_first_run.png") });

  // The slider's place on screen: litegraph draws widget rows at node.pos + (0, widget.y) in canvas space.
  const slider = await page.evaluate((id) => {
    const canvas = window.app.canvas;
    const node = window.app.graph.getNodeById(id);
    canvas.selectNode(node);
    const widget = node.widgets.find((w) => w.name === "strength_1");
    const y = widget.y ?? widget.last_y;
    const toScreen = ([x, yy]) => canvas.ds.convertOffsetToCanvas([x, yy]);
    const rect = canvas.canvas.getBoundingClientRect();
    const [left, top] = toScreen([node.pos[0] + 20, node.pos[1] + y + 10]);
    const [right] = toScreen([node.pos[0] + node.size[0] - 20, 0]);
    return { left: rect.left + left, right: rect.left + right, y: rect.top + top, before: widget.value };
  }, nodeId);
  result.sliderBefore = slider.before;

  const dragStart = Date.now();
  const previewsBefore = await received();
  const middle = (slider.left + slider.right) / 2;
  await page.mouse.move(middle, slider.y);
  await page.mouse.down();
  const steps = 12;
  for (let i = 1; i <= steps; i++) {
    await page.mouse.move(middle + ((slider.right - middle) * 0.9 * i) / steps, slider.y);
    await page.waitForTimeout(120);
  }
  await page.screenshot({ path: path.join(outDir, "while_dragging.png") });
  await page.mouse.up();
  await page.waitForFunction(
    ([id, startedAt]) => {
      const preview = window.app.graph.getNodeById(id).ptiLivePreview;
      return preview && !preview.inFlight && performance.now() - preview.lastSentAt > 400;
    },
    [nodeId, 0],
    { timeout: 30_000 },
  );
  await page.waitForTimeout(300);
  const dragEnd = Date.now();
  result.dragPreviews = (await received()) - previewsBefore;
  result.promptsDuringDrag = result.requests.filter(
    (r) => r.path.endsWith("/prompt") && r.method === "POST" && r.at >= dragStart && r.at <= dragEnd,
  ).length;
  result.stats = await page.evaluate((id) => window.app.graph.getNodeById(id).ptiLivePreview.stats, nodeId);
  result.message = await page.evaluate((id) => window.app.graph.getNodeById(id).ptiLivePreview.message, nodeId);
  await page.screenshot({ path: path.join(outDir, "after_drag.png") });
  const shown = await page.evaluate(async (id) => {
    const blob = window.app.graph.getNodeById(id).ptiLivePreview.lastBlob;
    const bytes = new Uint8Array(await blob.arrayBuffer());
    return { type: blob.type, base64: btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join("")) };
  }, nodeId);
  result.lastPreviewType = shown.type;
  writeFileSync(path.join(outDir, "last_preview.png"), Buffer.from(shown.base64, "base64"));

  // What a saved workflow and the next queue carry.
  const saved = await page.evaluate(() => window.app.graph.serialize());
  result.savedWidgets = saved.nodes.find((n) => n.type === LIVE).widgets_values;
  const prompt = await page.evaluate(async () => (await window.app.graphToPrompt()).output);
  result.promptInputs = prompt[String(nodeId)].inputs;

  // A second tab (its own client id) cannot render the first tab's session.
  const other = await (await browser.newContext()).newPage();
  await other.goto(url);
  await other.waitForFunction(() => window.comfyAPI?.api?.api?.clientId, null, { timeout: 60_000 });
  result.otherTab = await other.evaluate(async (session) => {
    const api = window.comfyAPI.api.api;
    const response = await api.fetchApi("/pti/live/render", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ session, values: {}, quality: "draft", client_id: api.clientId }),
    });
    return { status: response.status, body: await response.text() };
  }, result.firstSession);
  result.tabsDiffer = (await other.evaluate(() => window.comfyAPI.api.api.clientId)) !==
    (await page.evaluate(() => window.comfyAPI.api.api.clientId));

  result.requeueStartedAt = Date.now();
  result.secondSession = await queueAndWait();
  await page.waitForTimeout(1500); // Save Image (PTI) runs after Edit Live

  // "Unload Models" (the frontend's api.freeMemory: POST /api/free) releases the session.
  result.afterFree = await page.evaluate(async (session) => {
    const api = window.comfyAPI.api.api;
    await api.freeMemory({ freeExecutionCache: false });
    const response = await api.fetchApi("/pti/live/render", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ session, values: {}, client_id: api.clientId }),
    });
    return { status: response.status, body: await response.text() };
  }, result.secondSession);
} catch (error) {
  result.errors.push(String(error?.stack ?? error));
} finally {
  writeFileSync(path.join(outDir, "result.json"), JSON.stringify(result, null, 1));
  await browser.close();
}
