"""End to end: a real ComfyUI server loads the pack and executes every example workflow through its HTTP API.

Runs only when ``COMFYUI_DIR`` points at a ComfyUI checkout whose requirements are installed in the Python that
runs the tests (or in ``COMFYUI_PYTHON``). The server gets its own input/output/temp/user folders and an in-memory
database, and loads the pack through ``--extra-model-paths-config`` (``custom_nodes:`` a folder holding a link to
this repository), so the checkout is left as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tools.build_workflows import (
    ALIGN_EXAMPLE_IMAGE,
    EDIT_FACE_IN_VIDEO,
    EXAMPLE_CLIP,
    EXAMPLE_IMAGE,
    FFHQ,
    INVERT_AND_RECONSTRUCT,
    INVERT_AND_SWEEP,
    TURN_AND_MOVE_STYLEGAN3,
    WORKFLOW_DIR,
)
from tools.comfy_workflow import ui_to_api

REPO_ROOT = Path(__file__).resolve().parent.parent
PACK_DIR_NAME = "ComfyUI-PTI"
STARTUP_TIMEOUT_S = 180
WORKFLOW_TIMEOUT_S = 1200  # a loaded 2-core CPU runs the FFHQ and video graphs in 5-9 min
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")

pytestmark = pytest.mark.skipif(
    not COMFYUI_DIR,
    reason="COMFYUI_DIR is not set: point it at a ComfyUI checkout (requirements installed, or COMFYUI_PYTHON set "
    "to its interpreter) to run the workflows through a real server",
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ComfyServer:
    def __init__(self, root: Path, port: int, process: subprocess.Popen, log_path: Path):
        self.root, self.port, self.process, self.log_path = root, port, process, log_path

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str):
        with urllib.request.urlopen(self.url(path), timeout=30) as response:
            return json.loads(response.read())

    def post(self, path: str, payload: dict):
        request = urllib.request.Request(
            self.url(path), data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"POST {path} failed ({exc.code}): {exc.read().decode()[:4000]}") from None

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


@pytest.fixture(scope="module")
def model_mirror():
    """The published-checkpoint host, on loopback: ``ffhq.pkl`` is a small 512-w generator in NVIDIA's format, so
    the FFHQ 1024 workflows download and run through the same path as a user's first run (quickly, on a CPU)."""
    from conftest import make_generator
    from hostile_files import nvidia_pickle_bytes
    from loopback_server import serve_files

    G = make_generator(resolution=32, z_dim=512, w_dim=512, channel_base=512, channel_max=32, seed=4)
    with serve_files() as mirror:
        mirror.files["/ffhq.pkl"] = nvidia_pickle_bytes(G)
        yield mirror


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_mirror):
    root = tmp_path_factory.mktemp("comfyui")
    custom_nodes = root / "custom_nodes"
    custom_nodes.mkdir()
    (custom_nodes / PACK_DIR_NAME).symlink_to(REPO_ROOT, target_is_directory=True)
    for folder in ("input", "output", "temp", "user"):
        (root / folder).mkdir()
    for image in (EXAMPLE_IMAGE, ALIGN_EXAMPLE_IMAGE, EXAMPLE_CLIP):  # what the README tells users to do
        if (WORKFLOW_DIR / image).is_file():
            shutil.copy(WORKFLOW_DIR / image, root / "input" / image)
    config = root / "extra_model_paths.yaml"
    config.write_text(  # downloads go to the test's own models/stylegan, never into the checkout
        f"pti_integration_test:\n    custom_nodes: {custom_nodes}\n    is_default: true\n"
        f"    stylegan: {root / 'models' / 'stylegan'}\n"
    )
    port = _free_port()
    command = [
        os.environ.get("COMFYUI_PYTHON", sys.executable),
        "main.py",
        "--cpu",
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
        "--disable-auto-launch",
        "--extra-model-paths-config",
        str(config),
        "--input-directory",
        str(root / "input"),
        "--output-directory",
        str(root / "output"),
        "--temp-directory",
        str(root / "temp"),
        "--user-directory",
        str(root / "user"),
        "--database-url",
        "sqlite:///:memory:",
    ]
    log_path = root / "server.log"
    with open(log_path, "wb") as log_file:
        environment = dict(os.environ, PTI_MODEL_MIRROR=model_mirror.url)
        process = subprocess.Popen(command, cwd=COMFYUI_DIR, stdout=log_file, stderr=subprocess.STDOUT, env=environment)
    comfy = ComfyServer(root, port, process, log_path)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"ComfyUI exited with code {process.returncode}:\n{comfy.log_tail()}")
            try:
                if any(key.startswith("PTI_") for key in comfy.get("/object_info")):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no PTI nodes in /object_info after {STARTUP_TIMEOUT_S}s:\n{comfy.log_tail()}")
            time.sleep(1)
        yield comfy
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


def test_server_lists_every_pack_node_from_this_pack(server, object_info):
    from pack_loader import load_pack

    keys = set(load_pack().NODE_CLASS_MAPPINGS)
    assert keys <= set(object_info), f"missing from the server: {sorted(keys - set(object_info))}"
    failures = [
        line
        for line in server.log_tail(10**7).splitlines()
        if PACK_DIR_NAME in line and ("IMPORT FAILED" in line or "Cannot import" in line)
    ]
    assert not failures, failures
    for key in keys:
        module = object_info[key]["python_module"]
        assert module.endswith(PACK_DIR_NAME), f"{key} is provided by {module}: a key collision"
    core = {k for k, v in object_info.items() if not v["python_module"].startswith("custom_nodes")}
    assert not keys & core
    assert set(server.get("/workflow_templates").get(PACK_DIR_NAME, [])) >= {
        p.stem for p in WORKFLOW_DIR.glob("*.json")
    }, "the workflows must appear in ComfyUI's template browser"
    for path in WORKFLOW_DIR.glob("*.json"):  # what the template browser fetches when one is opened
        try:
            served = server.get(f"/api/workflow_templates/{PACK_DIR_NAME}/{urllib.parse.quote(path.name)}")
        except urllib.error.HTTPError as error:
            pytest.fail(f"the template browser cannot open {path.name}: {error}")
        assert served == json.loads(path.read_text()), f"the template browser serves another {path.name}"


def _run(server: ComfyServer, workflow: dict, object_info: dict) -> dict:
    prompt = ui_to_api(workflow, {key: info["input"] for key, info in object_info.items()})
    client_id = uuid.uuid4().hex
    payload = {"prompt": prompt, "client_id": client_id, "extra_data": {"extra_pnginfo": {"workflow": workflow}}}
    queued = server.post("/prompt", payload)
    assert not queued.get("node_errors"), queued
    prompt_id = queued["prompt_id"]
    deadline = time.monotonic() + WORKFLOW_TIMEOUT_S
    while time.monotonic() < deadline:
        history = server.get(f"/history/{prompt_id}")
        if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
            entry = history[prompt_id]
            if entry["status"]["status_str"] != "success":
                messages = json.dumps(entry["status"].get("messages"), indent=1)[-6000:]
                raise AssertionError(f"workflow failed:\n{messages}\n{server.log_tail()}")
            return entry
        time.sleep(0.5)
    raise AssertionError(f"workflow did not finish in {WORKFLOW_TIMEOUT_S}s:\n{server.log_tail()}")


def _saved_pngs(server: ComfyServer, entry: dict, workflow: dict) -> list[tuple[Path, bool]]:
    """Every PNG the workflow's Save Image (PTI) nodes wrote, and whether that node had a latent (so a recipe)."""
    savers = {
        str(n["id"]): any(i["name"] == "latent" and i.get("link") is not None for i in n.get("inputs", []))
        for n in workflow["nodes"]
        if n["type"] == "PTI_SaveImage"
    }
    paths = []
    for node_id, has_latent in savers.items():
        for item in entry["outputs"][node_id]["images"]:
            paths.append((server.output_dir / item["subfolder"] / item["filename"], has_latent))
    return paths


@pytest.mark.parametrize("path", sorted(WORKFLOW_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_workflow_runs_in_comfyui(server, object_info, path):
    workflow = json.loads(path.read_text())
    started = time.monotonic()
    entry = _run(server, workflow, object_info)
    elapsed = time.monotonic() - started
    pngs = _saved_pngs(server, entry, workflow)
    videos = _saved_videos(server, entry, workflow)
    assert pngs or videos, "the workflow saved no image and no video"
    for png, has_latent in pngs:
        assert png.is_file(), png
        with Image.open(png) as picture:
            pixels = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255
            assert json.loads(picture.text["workflow"])["nodes"], "the workflow is embedded like Save Image does"
            if has_latent:
                recipe = json.loads(picture.text["pti_recipe"])
                assert recipe["rows"] and recipe["generator_hash"]
        assert pixels.std() > 0.02, f"{png.name} is blank"
    pngs = [png for png, _ in pngs]
    print(f"{path.stem}: {elapsed:.1f}s, saved {[p.name for p in pngs + videos]}")
    keep = os.environ.get("PTI_INTEGRATION_OUTPUTS")  # a folder to copy the outputs to, for looking at them
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for png in pngs:
            shutil.copy(png, Path(keep) / f"{path.stem}__{png.name}")
    if path.stem in EXTRA_CHECKS:
        EXTRA_CHECKS[path.stem](server, entry, workflow, pngs or videos)

    if path.stem.endswith(FFHQ.title_suffix):  # downloaded on first use into the server's models/stylegan
        assert (server.root / "models" / "stylegan" / "ffhq.pkl").is_file()
    if any(n["type"] == "PTI_SavePTI" for n in workflow["nodes"]):
        saved = server.output_dir / "pti"
        assert any((folder / "delta.safetensors").is_file() for folder in saved.iterdir())


def _saved_videos(server: ComfyServer, entry: dict, workflow: dict) -> list[Path]:
    """Every file the workflow's Save Video nodes wrote."""
    savers = [str(n["id"]) for n in workflow["nodes"] if n["type"] == "SaveVideo"]
    found = []
    for node_id in savers:
        for items in entry["outputs"].get(node_id, {}).values():
            found += [server.output_dir / i["subfolder"] / i["filename"] for i in items if isinstance(i, dict)]
    return found


def _decode(path: Path) -> tuple[np.ndarray, float, bool]:
    """Frames ``[N, H, W, 3]`` 0..1, fps and whether there is an audio stream."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return np.stack(frames).astype(np.float32) / 255, float(stream.average_rate), bool(container.streams.audio)


def _check_video(server: ComfyServer, entry: dict, workflow: dict, videos: list[Path]) -> None:
    """Workflow 7: the edited clip has the source's frame count, size, frame rate and audio, and its faces changed
    while the frame borders did not (beyond the codec's noise)."""
    (video,) = videos
    edited, fps, has_audio = _decode(video)
    source, source_fps, _ = _decode(WORKFLOW_DIR / EXAMPLE_CLIP)
    assert edited.shape == source.shape and fps == source_fps and has_audio
    border = np.abs(edited - source)[:, :12].mean()
    centre = np.abs(edited - source)[:, 30:110, 55:140].mean()
    print(f"video edit: mean change {centre:.4f} in the face region, {border:.4f} on the top border")
    assert centre > 0.01 and border < 0.02
    keep = os.environ.get("PTI_INTEGRATION_OUTPUTS")
    if keep:
        middle = len(edited) // 2
        for name, frames in (("source", source), ("edited", edited)):
            Image.fromarray((frames[middle] * 255).round().astype(np.uint8)).save(
                Path(keep) / f"{EDIT_FACE_IN_VIDEO}__{name}.png"
            )


def _psnr_to_photo(png: Path) -> float:
    """PSNR (dB) between a generated PNG and the example photo's centre square, area-resized to the same size."""
    with Image.open(png) as picture:
        generated = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255
    with Image.open(WORKFLOW_DIR / EXAMPLE_IMAGE) as photo:
        side = min(photo.size)
        left, top = (photo.width - side) // 2, (photo.height - side) // 2
        square = photo.convert("RGB").crop((left, top, left + side, top + side))
        target = np.asarray(square.resize(generated.shape[:2][::-1], Image.Resampling.BOX), np.float32) / 255
    return float(-10 * np.log10(np.square(generated - target).mean()))


def _check_reconstruction(server: ComfyServer, entry: dict, workflow: dict, pngs: list[Path]) -> None:
    """Workflow 1: the reconstruction is the person in the photo (>= 27 dB), which the pivot alone is not."""
    (tuned_png,) = pngs
    (preview_id,) = [str(n["id"]) for n in workflow["nodes"] if n["type"] == "PreviewImage"]
    (preview,) = entry["outputs"][preview_id]["images"]
    # ComfyUI puts temp files in <--temp-directory>/temp.
    pivot_png = server.root / "temp" / "temp" / preview["subfolder"] / preview["filename"]
    tuned_psnr, pivot_psnr = _psnr_to_photo(tuned_png), _psnr_to_photo(pivot_png)
    print(f"PSNR to the photo: pivot {pivot_psnr:.2f} dB, after tuning {tuned_psnr:.2f} dB")
    assert tuned_psnr >= 27 and pivot_psnr < 15


def _check_sweep_moves(server: ComfyServer, entry: dict, workflow: dict, pngs: list[Path]) -> None:
    """Workflow 2: the yaw sweep's five tiles are not five copies of one picture."""
    (grid_png,) = [p for p in pngs if Image.open(p).width > Image.open(p).height]
    with Image.open(grid_png) as picture:
        grid = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255
    tiles = np.array_split(grid, 5, axis=1)
    side = min(t.shape[1] for t in tiles)
    first, last = tiles[0][:, :side], tiles[-1][:, :side]
    print(f"yaw sweep: mean change between -3 and +3 tiles {np.abs(first - last).mean():.4f}")
    assert np.abs(first - last).mean() > 0.03


def _check_turn_and_move(server: ComfyServer, entry: dict, workflow: dict, pngs: list[Path]) -> None:
    """Workflow 6: the transformed row (bottom) is not the untransformed one (top)."""
    (grid_png,) = pngs
    with Image.open(grid_png) as picture:
        grid = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255
    top, bottom = np.array_split(grid, 2, axis=0)
    rows = min(len(top), len(bottom))
    change = np.abs(top[:rows] - bottom[:rows]).mean()
    print(f"StyleGAN3 transform: mean change between the rows {change:.4f}")
    assert change > 0.03


EXTRA_CHECKS = {
    INVERT_AND_RECONSTRUCT: _check_reconstruction,
    INVERT_AND_SWEEP: _check_sweep_moves,
    TURN_AND_MOVE_STYLEGAN3: _check_turn_and_move,
    EDIT_FACE_IN_VIDEO: _check_video,
}
