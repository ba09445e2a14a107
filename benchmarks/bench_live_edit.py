"""Round-trip latency of Edit Live's ``POST /pti/live/render``: p50/p95 over real HTTP on 127.0.0.1.

The route is served by the pack's own handler (``nodes/live_routes.py``, loaded against the test fakes) in an aiohttp
server in this process; a client sends a slider drag (a new strength per request, one request in flight, as the web
extension does) and times each answer from send to the last byte. Drafts (JPEG, <= 512 px) and finals (PNG, full
size) are timed apart. Targets (issue 25): p95 <= 150 ms on 2 CPU cores with the embedded model; on a GPU, <= 250 ms
at 1024 px with a 512 px draft.

Usage: ``python benchmarks/bench_live_edit.py [--requests 60] [--threads 0 1] [--device cpu]
[--resolution 0|1024] [--out benchmarks/results/live_edit.json]``. ``--threads`` runs the whole measurement once
per torch intra-op thread count (0 = torch's default), side by side; ``--resolution 1024`` times a randomly
initialised FFHQ-sized generator (512-d w, 18 layers: the compute of NVIDIA's FFHQ 1024) instead of the embedded
model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))

from aiohttp import ClientSession, web  # noqa: E402
from pack_loader import pack_module  # noqa: E402


def build_generator(resolution: int, device: str) -> torch.nn.Module:
    if not resolution:
        return pack_module("pti.checkpoints").load_generator(None, device)
    torch.manual_seed(0)
    G = pack_module("pti.networks").Generator(
        z_dim=512, c_dim=0, w_dim=512, img_resolution=resolution, img_channels=3, mapping_kwargs={"num_layers": 8}
    )
    return G.eval().to(device)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def drag(url: str, token: str, count: int, quality: str) -> list[float]:
    """``count`` renders of a slider moving from -3 to 3, one in flight; seconds per round trip."""
    times = []
    async with ClientSession() as client:
        for i in range(count):
            body = {"session": token, "values": {"strength_1": -3 + 6 * i / max(count - 1, 1)}, "quality": quality}
            started = time.perf_counter()
            async with client.post(url, json=body) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{response.status}: {await response.text()}")
            times.append(time.perf_counter() - started)
    return times


async def measure(G: torch.nn.Module, requests: int) -> dict:
    live, routes = pack_module("pti.live"), pack_module("nodes.live_routes")
    directions = pack_module("pti.directions")
    store = live.LiveSessionStore(rate=10_000)
    vector = torch.randn(G.w_dim, generator=torch.Generator().manual_seed(0))
    direction = directions.Direction("bench", vector / vector.norm(), None, {})
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, G.z_dim, device=next(G.parameters()).device), None)
    latent = pack_module("pti.latent").Latent(ws.cpu(), {}, "w", "", {})
    scene = live.LiveScene(
        G, latent, {"strength_1": direction}, {"strength_1": live.SliderRange(-10, 10)}, {"strength_1": 0.0}
    )
    token = store.open(scene)
    runner = web.AppRunner(routes.build_app(store))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/api{routes.ROUTE}"
    try:
        await drag(url, token, 5, "draft")  # warm-up
        results = {}
        for quality in ("draft", "final"):
            times = await drag(url, token, requests, quality)
            results[quality] = {
                "p50_ms": round(1000 * statistics.median(times), 1),
                "p95_ms": round(1000 * percentile(times, 0.95), 1),
                "max_ms": round(1000 * max(times), 1),
                "requests": len(times),
            }
        return results
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--threads", type=int, nargs="+", default=[0, 1], help="torch threads per run (0: default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolution", type=int, default=0, help="0: the embedded model; else a random FFHQ-sized G")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    default_threads = torch.get_num_threads()
    G = build_generator(args.resolution, args.device)
    runs = []
    for threads in args.threads:
        torch.set_num_threads(threads or default_threads)
        timing = asyncio.run(measure(G, args.requests))
        runs.append({"torch_threads": torch.get_num_threads(), **timing})
        print(f"threads={torch.get_num_threads()}: {json.dumps(timing)}")
    report = {
        "model": f"{G.img_resolution} px, w_dim {G.w_dim}, {G.num_ws} layers"
        + (" (embedded)" if not args.resolution else " (random weights)"),
        "device": args.device,
        "cpu_cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "runs": runs,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
