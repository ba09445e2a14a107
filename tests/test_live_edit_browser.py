"""Edit Live in a real browser: headless Chromium drives ComfyUI's own web UI against a real ComfyUI server.

The server is the integration test's (``COMFYUI_DIR``, its own folders, started on 127.0.0.1). The browser is
Debian's ``chromium`` (or ``PTI_CHROMIUM``) driven by ``playwright-core`` from npm, looked up in
``PTI_PLAYWRIGHT_CORE`` or ``/work/node_tools/node_modules/playwright-core`` (install it outside the checkout:
``npm install --prefix /work/node_tools playwright-core``). tests/browser/live_edit.mjs loads a workflow using
Edit Live, queues it, drags a strength slider with the mouse, queues again; this file checks what it recorded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_comfyui_integration import COMFYUI_DIR, model_mirror, server  # noqa: F401  (the server fixtures)

from tools.build_workflows import Graph, all_node_specs

DRIVER = Path(__file__).resolve().parent / "browser" / "live_edit.mjs"
CHROMIUM = os.environ.get("PTI_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
PLAYWRIGHT_CORE = Path(os.environ.get("PTI_PLAYWRIGHT_CORE", "/work/node_tools/node_modules/playwright-core"))
NODE = shutil.which("node")
SCREENSHOTS = os.environ.get("PTI_SCREENSHOTS")  # a folder to copy the screenshots to, for looking at them

pytestmark = [
    pytest.mark.skipif(not COMFYUI_DIR, reason="COMFYUI_DIR is not set: the browser test needs a real ComfyUI"),
    pytest.mark.skipif(
        not (CHROMIUM and NODE and (PLAYWRIGHT_CORE / "package.json").is_file()),
        reason="no headless Chromium: needs chromium, node and playwright-core (PTI_PLAYWRIGHT_CORE)",
    ),
]


def generated_face_workflow() -> dict:
    """What workflow PTI 7 does after its (slow) inversion: a sampled face into Edit Live with two directions, saved.
    Built with the same builder as the shipped workflows; the real ComfyUI runs it in a few seconds."""
    from pack_loader import load_pack

    graph = Graph(all_node_specs(load_pack()))
    model = graph.add("PTI_LoadStyleGAN", 0, 0, model_name="(embedded default)")
    sample = graph.add("PTI_SampleLatent", 1, 0, seed=7, batch_size=1, truncation_psi=0.8)
    graph.link(model, "generator", sample, "generator")
    live = graph.add("PTI_EditLive", 2, 0, strength_1=0.0, strength_2=0.0, layer_start=-1, layer_end=-1)
    graph.link(model, "generator", live, "generator")
    graph.link(sample, "latent", live, "latent")
    for index, name in enumerate(("smile", "yaw"), start=1):
        direction = graph.add("PTI_LoadDirection", 1, 2 + index, direction=name, entry="")
        graph.link(direction, "direction", live, f"direction_{index}")
    save = graph.add("PTI_SaveImage", 3, 0, filename_prefix="PTI/live_edit", layout="separate", grid_columns=0)
    graph.link(live, "image", save, "images")
    graph.link(live, "latent", save, "latent")
    return graph.to_json()


@pytest.fixture(scope="module")
def session_record(server, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("browser")
    workflow = out / "edit_live.json"
    workflow.write_text(json.dumps(generated_face_workflow()))
    command = [NODE, str(DRIVER), str(PLAYWRIGHT_CORE), CHROMIUM, server.url("/"), str(workflow), str(out)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=900)
    result_path = out / "result.json"
    assert result_path.is_file(), f"the browser driver failed:\n{finished.stdout}\n{finished.stderr}"
    record = json.loads(result_path.read_text())
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        for png in out.glob("*.png"):
            shutil.copy(png, Path(SCREENSHOTS) / png.name)
    assert not record["errors"], "\n".join(record["errors"]) + "\n" + server.log_tail()
    return record, out


def test_dragging_a_slider_updates_the_preview_without_queueing(session_record):
    record, _ = session_record
    assert record["dragPreviews"] >= 3, f"previews while dragging: {record['dragPreviews']} ({record['stats']})"
    assert record["promptsDuringDrag"] == 0, "the drag must not queue a prompt"
    assert record["message"] == "", record["message"]
    drafts = [p for p in record["previews"] if p["type"] == "image/jpeg" and p["status"] == 200]
    assert drafts, "drafts are JPEG"
    assert record["maxRendersInFlight"] == 1, "one request in flight per node"
    gaps = np.diff(record["renderSentAt"])
    assert gaps.min() >= 25, f"throttled to ~30 Hz: {gaps.tolist()}"  # 33 ms, less the clock's coarseness


def test_the_workflow_keeps_the_dragged_value(session_record):
    record, _ = session_record
    value = record["promptInputs"]["strength_1"]
    assert value != record["sliderBefore"] and value > record["sliderBefore"], (record["sliderBefore"], value)
    assert value in record["savedWidgets"], "the serialised workflow holds the dragged value"


def test_requeue_outputs_the_last_preview(server, session_record):  # noqa: F811
    record, out = session_record
    assert record["secondSession"] and record["secondSession"] != record["firstSession"]
    saved = sorted((server.output_dir / "PTI").glob("live_edit*.png"), key=lambda p: p.stat().st_mtime)
    assert len(saved) >= 2, saved
    preview = np.asarray(Image.open(out / "last_preview.png").convert("RGB"), dtype=np.float32)
    with Image.open(saved[-1]) as picture:
        output = np.asarray(picture.convert("RGB"), dtype=np.float32)
        assert json.loads(picture.text["pti_recipe"])["rows"]
    assert output.shape == preview.shape
    assert np.abs(output - preview).max() <= 1.0, "the re-queued output is the last preview (<= 1/255)"
    with Image.open(saved[0]) as first:
        assert np.abs(np.asarray(first.convert("RGB"), dtype=np.float32) - output).mean() > 1, "the edit changed it"


def test_another_tab_cannot_use_the_session(session_record):
    record, _ = session_record
    assert record["tabsDiffer"]
    assert record["otherTab"]["status"] == 404 and "another browser tab" in record["otherTab"]["body"]


def test_unload_models_releases_the_session(session_record):
    record, _ = session_record
    assert record["afterFree"]["status"] == 410 and "Unload models" in record["afterFree"]["body"], record["afterFree"]
