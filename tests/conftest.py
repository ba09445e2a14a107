"""Shared fixtures: small seeded generators, helpers to hash tensors/modules (immutability checks) and to read
this process's peak memory.

Also the skip policy: a test may skip only because it needs a GPU, a real ComfyUI (``COMFYUI_DIR``) or the
``../shared`` folder. Everything else a test needs, README command 1 installs; under ``CI=true`` any other skip
fails the run, elsewhere it is listed at the end.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest
import torch

from pti.networks import Generator

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"

ALLOWED_SKIP_REASONS = re.compile(
    r"needs a GPU|COMFYUI_DIR is not set|shared data folder .* is absent|no headless Chromium"
)
_unexpected_skips: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not ALLOWED_SKIP_REASONS.search(reason):
            _unexpected_skips.append(f"{report.nodeid}: {reason}")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if _unexpected_skips:
        terminalreporter.section("skips outside the allowed reasons (GPU, COMFYUI_DIR, ../shared)", red=True)
        for line in _unexpected_skips:
            terminalreporter.line(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _unexpected_skips and os.environ.get("CI", "").lower() in ("1", "true") and session.exitstatus == 0:
        session.exitstatus = 1


def make_generator(
    resolution: int = 32,
    architecture: str = "skip",
    c_dim: int = 0,
    z_dim: int = 32,
    w_dim: int = 32,
    channel_base: int = 256,
    channel_max: int = 32,
    seed: int = 0,
    mapping_layers: int = 2,
) -> Generator:
    """A small generator with non-trivial weights (random noise strengths, w_avg), seeded and in eval mode."""
    torch.manual_seed(seed)
    G = Generator(
        z_dim=z_dim,
        c_dim=c_dim,
        w_dim=w_dim,
        img_resolution=resolution,
        img_channels=3,
        mapping_kwargs=dict(num_layers=mapping_layers),
        synthesis_kwargs=dict(channel_base=channel_base, channel_max=channel_max, architecture=architecture),
    )
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
        labels = torch.randn(256, c_dim) if c_dim else None
        G.mapping.w_avg.copy_(G.mapping(torch.randn(256, z_dim), labels)[:, 0].mean(0))
    return G.eval()


def tensor_digest(obj) -> str:
    """SHA-256 over every tensor of a module/tensor/dict/list, for before/after immutability checks."""
    h = hashlib.sha256()

    def feed(x):
        if isinstance(x, torch.nn.Module):
            for k, v in x.state_dict().items():
                h.update(k.encode())
                feed(v)
        elif isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(str((t.dtype, tuple(t.shape))).encode())
            h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                h.update(str(k).encode())
                feed(x[k])
        elif isinstance(x, (list, tuple)):
            for v in x:
                feed(v)
        else:
            h.update(repr(x).encode())

    feed(obj)
    return h.hexdigest()


def peak_rss_reset() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS; False where Linux ``/proc`` does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def status_kb(field: str) -> int:
    """A kB figure of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ``VmSize``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@pytest.fixture
def tiny_generator() -> Generator:
    return make_generator()


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared data folder {SHARED_DIR} is absent (it sits beside the checkout in CI)")
    return SHARED_DIR


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module's tests (restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
