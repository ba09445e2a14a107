"""CPU/GPU cost of the generator: modulated-convolution strategies side by side, forward and forward+backward.

Strategies compared on the same weights in one run (ratios are what matter on a shared, noisy machine):
* ``grouped``  -- one weight per sample, a single grouped convolution (``fused=True``);
* ``shared``   -- scale activations, one shared-weight convolution, demodulate after (``fused=False``);
* ``einsum``   -- per-sample weights applied with ``torch.einsum`` over unfolded patches (candidate only);
* ``auto``     -- what ``ops.modulated_conv2d`` picks by itself (``fused=None``) for each call.

    python benchmarks/bench_networks.py [--resolution 256] [--batch 1 4] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pti import ops  # noqa: E402
from pti.networks import Generator  # noqa: E402


def einsum_modulated_conv2d(
    x, weight, styles, noise=None, up=1, padding=0, resample_filter=None, demodulate=True, fused=None
):
    """Candidate implementation: unfold patches and contract with per-sample weights (einsum)."""
    batch, _, h, w = x.shape
    out_channels, in_channels, kh, kw = weight.shape
    wmod = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)
    if demodulate:
        wmod = wmod * (wmod.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    if up > 1:  # fall back to the grouped path for upsampling layers
        return STRATEGIES["grouped"](x, weight, styles, noise, up, padding, resample_filter, demodulate)
    patches = F.unfold(x, (kh, kw), padding=padding)  # [N, I*kh*kw, L]
    out = torch.einsum("nok,nkl->nol", wmod.reshape(batch, out_channels, -1), patches)
    out = out.reshape(batch, out_channels, h + 2 * padding - kh + 1, w + 2 * padding - kw + 1)
    if noise is not None:
        out = out + noise
    return out


def _forced(fused: bool):
    reference = ops.modulated_conv2d  # bound now, before any patching

    def call(*args, **kwargs):
        return reference(*args, **{**kwargs, "fused": fused})

    return call


STRATEGIES = {
    "grouped": _forced(True),
    "shared": _forced(False),
    "einsum": einsum_modulated_conv2d,
    "auto": ops.modulated_conv2d,
}


def ffhq_generator(resolution: int, device: str) -> Generator:
    torch.manual_seed(0)
    G = Generator(
        z_dim=512,
        c_dim=0,
        w_dim=512,
        img_resolution=resolution,
        img_channels=3,
        synthesis_kwargs=dict(channel_base=32768, channel_max=512),
    )
    return G.to(device).eval()


def time_call(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def measure(G: Generator, ws: torch.Tensor, impl, repeats: int, device: str) -> tuple[float, float]:
    """(forward seconds, forward+backward seconds) with ``impl`` as the modulated convolution."""
    original = ops.modulated_conv2d
    ops.modulated_conv2d = impl
    try:
        with torch.no_grad():
            forward = time_call(lambda: G.synthesis(ws, noise_mode="const"), repeats, device)
        ws_grad = ws.clone().requires_grad_(True)

        def forward_backward():
            G.zero_grad(set_to_none=True)
            G.synthesis(ws_grad, noise_mode="const").square().mean().backward()

        return forward, time_call(forward_backward, repeats, device)
    finally:
        ops.modulated_conv2d = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, nargs="+", default=[256])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    args = parser.parse_args()
    strategies = ["grouped", *(name for name in args.strategies if name != "grouped")]  # the baseline
    rows = []
    for resolution in args.resolution:
        G = ffhq_generator(resolution, args.device)
        for batch in args.batch:
            ws = G.mapping(torch.randn(batch, 512, device=args.device), None).detach()
            timings = {name: measure(G, ws, STRATEGIES[name], args.repeats, args.device) for name in strategies}
            base = timings["grouped"]
            for name, (fwd, both) in timings.items():
                rows.append((resolution, batch, name, fwd, both, base[1] / both))
    print(f"device={args.device} threads={torch.get_num_threads()} torch={torch.__version__}")
    print("| res | batch | strategy | forward s | fwd+bwd s | fwd+bwd speed vs grouped |")
    print("|---|---|---|---|---|---|")
    for res, batch, name, fwd, both, ratio in rows:
        print(f"| {res} | {batch} | {name} | {fwd:.3f} | {both:.3f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
