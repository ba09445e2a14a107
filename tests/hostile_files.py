"""Valid files for every loader of the pack and the mutations that make them hostile: the builders the hostile-file,
supply-chain, checkpoint and fuzz tests share, and the engine of ``benchmarks/fuzz_loaders.py`` (which only adds the
long seeded run and its table).

Each *target* is one loader plus the valid seed files it accepts (written here from a tiny seeded generator):

=====================  =====================================  ============================================
target                 loader                                 seeds
=====================  =====================================  ============================================
generator-safetensors  ``load_generator``                     ``save_generator`` output (fp32 and fp16)
generator-nvidia-pkl   ``load_generator``                     NVIDIA persistence pickle (G, D, G_ema)
generator-sg3-pkl      ``load_generator``                     StyleGAN3 snapshot NVIDIA's training loop wrote
                                                              (numpy arrays in module state), numpy 2 and 1
                                                              spellings
generator-torch-zip    ``load_generator``                     rosinality ``torch.save`` checkpoint (zip)
generator-torch-legacy ``load_generator``                     the same in the legacy (pre-1.6) layout
safetensors            ``read_safetensors``                   a few tensors of every dtype + metadata
direction-npy          ``load_directions``                    InterFaceGAN-style ``[1, w_dim]`` boundary
direction-pt           ``load_directions``                    ``torch.save`` of named vectors; GANSpace dict
direction-safetensors  ``load_directions``                    ``save_directions`` output
latent                 ``Latent.load``                        ``Latent.save`` output (w+ with noise maps)
delta                  ``load_delta``                         ``save_delta`` output (lowrank and fp16)
=====================  =====================================  ============================================

An input is a seed file plus a short list of mutations (bit flips, interesting bytes and little-endian integers
written over length fields, truncations, deletions, duplicated ranges, splices with another seed, digits in text
headers replaced by extreme numbers). Hypothesis, not atheris: it is already installed, pure Python (no libFuzzer
build, nothing new for CI), runs inside pytest and shrinks a crash to the fewest mutations that reproduce it; these
loaders are small parsers where structure-aware mutation of valid seeds matters more than coverage feedback.
``tests/test_fuzz_smoke.py`` draws the mutation lists with Hypothesis (``operations_strategy``). The bulk run draws
the same lists from a seeded ``random.Random`` (``random_operations``): Hypothesis's engine costs about 4.6 ms of
CPU per example (measured), more than most loaders take per file (0.6 ms), and the run is reproducible all the same
(target name, ``--seed`` and input number fix every file).

Every input is classified: *refused* (the target's documented error type), *accepted* (it still parses), *crash*
(any other exception; the input is saved under ``--out``), *hang* (slower than ``--hang-seconds``).

Tests import it as ``hostile_files`` (``tests/`` is on pytest's ``pythonpath``); the benchmark, run as a script,
as ``tests.hostile_files``. It imports no other test module, so both work.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import pickle
import pickletools
import random
import re
import signal
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pti.checkpoints import (
    CheckpointError,
    export_rosinality_state_dict,
    load_generator,
    read_safetensors,
    save_generator,
)
from pti.directions import Direction, DirectionError, load_directions, save_directions
from pti.networks import Generator

HANG_SECONDS = 5.0
STYLEGAN3_SNAPSHOT = Path(__file__).resolve().parent / "data" / "stylegan3_snapshot.pkl"


def numpy1_spelling(data: bytes) -> bytes:
    """The same pickle as numpy 1.x writes it: ``numpy.core.*`` instead of numpy 2's ``numpy._core.*`` names.

    Rewrites the module-name strings (their length prefixes change) and drops the FRAME hints (optional, and their
    lengths would no longer fit); every other instruction is copied byte for byte.
    """
    ops = list(pickletools.genops(data))
    out = bytearray()
    for index, (op, arg, pos) in enumerate(ops):
        end = ops[index + 1][2] if index + 1 < len(ops) else len(data)
        chunk = data[pos:end]
        if op.name == "FRAME":
            continue
        if isinstance(arg, str) and arg.startswith("numpy._core."):
            text = arg.replace("numpy._core.", "numpy.core.", 1)
            if op.name == "GLOBAL":  # protocols 0-2: "module name" as two text lines
                chunk = b"c" + text.replace(" ", "\n").encode() + b"\n"
            elif op.name == "SHORT_BINUNICODE":
                chunk = b"\x8c" + bytes([len(text)]) + text.encode()
            elif op.name == "BINUNICODE":
                chunk = b"X" + len(text).to_bytes(4, "little") + text.encode()
        out += chunk
    return bytes(out)


# ====================================================================================================================
# Seed files


def tiny_generator(seed: int = 0) -> Generator:
    """A 16 px generator with 8-dimensional w: loads in milliseconds, has every kind of tensor a real one has."""
    torch.manual_seed(seed)
    G = Generator(
        z_dim=8,
        c_dim=0,
        w_dim=8,
        img_resolution=16,
        img_channels=3,
        mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=dict(channel_base=64, channel_max=8, architecture="skip"),
    )
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
        G.mapping.w_avg.copy_(G.mapping(torch.randn(64, 8), None)[:, 0].mean(0))
    return G.eval()


@contextlib.contextmanager
def nvidia_modules(run_module_src: bool = False) -> Iterator[types.SimpleNamespace]:
    """Importable stand-ins for ``torch_utils.persistence`` and ``dnnlib.util`` that pickle as NVIDIA's do.

    While active, ``persistent(module, module_src)`` returns an object whose pickle is what NVIDIA's persistent
    classes write (``_reconstruct_persistent_obj(meta)`` with the source code in ``meta['module_src']``). With
    ``run_module_src`` the stand-in reconstructor really ``exec``\\ s the source, as NVIDIA's does, so
    ``pickle.loads`` of such a file proves the payload is live.
    """
    persistence = types.ModuleType("torch_utils.persistence")
    util = types.ModuleType("dnnlib.util")

    def _reconstruct_persistent_obj(meta):
        if run_module_src:
            exec(meta["module_src"], types.ModuleType("_imported_module").__dict__)
        return meta["class_name"]

    class EasyDict(dict):
        pass

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util.EasyDict = EasyDict
    names = {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": persistence,
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.util": util,
    }
    saved = {name: sys.modules.get(name) for name in names}
    sys.modules.update(names)

    def easy(value: Any) -> Any:
        return EasyDict({k: easy(v) for k, v in value.items()}) if isinstance(value, dict) else value

    def persistent(module: torch.nn.Module, module_src: str, init_kwargs: dict | None = None) -> Any:
        state = dict(module.__dict__)
        state["_modules"] = {name: persistent(child, module_src) for name, child in module._modules.items()}
        state["_init_args"] = ()
        state["_init_kwargs"] = easy(init_kwargs or {})
        state["gain_as_numpy"] = np.float64(0.5)  # NVIDIA modules carry numpy scalars (np.sqrt gains)
        meta = dict(type="class", version=6, module_src=module_src, class_name=type(module).__name__, state=state)

        class Persistent:
            def __reduce__(self):
                return (_reconstruct_persistent_obj, (meta,))

        return Persistent()

    try:
        yield types.SimpleNamespace(persistent=persistent, EasyDict=EasyDict, reconstruct=_reconstruct_persistent_obj)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def nvidia_pickle_bytes(
    G: Generator,
    module_src: str = "class Generator: pass\n",
    protocol: int = 4,
    ema_init_kwargs: dict | None = None,
) -> bytes:
    """A stylegan2-ada-pytorch network snapshot of ``G`` (G, D, G_ema), as ``pickle.dumps`` of its dict.

    ``ema_init_kwargs`` replaces the constructor arguments recorded for ``G_ema`` (to write inconsistent files).
    """
    with nvidia_modules() as nv:
        snapshot = {
            "training_set_kwargs": nv.EasyDict(path="faces.zip", resolution=G.img_resolution, use_labels=False),
            "G": nv.persistent(G, module_src, G.init_kwargs),
            "D": nv.persistent(torch.nn.Linear(3, 1), module_src, {"c_dim": 0}),
            "G_ema": nv.persistent(G, module_src, ema_init_kwargs or G.init_kwargs),
            "augment_pipe": None,
        }
        return pickle.dumps(snapshot, protocol=protocol)


def _torch_save_bytes(obj: Any, zipped: bool = True) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=zipped)
    return buffer.getvalue()


def _file_bytes(write: Callable[[Path], Any], suffix: str) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"seed{suffix}"
        write(path)
        return path.read_bytes()


def rosinality_bytes(G: Generator, zipped: bool = True) -> bytes:
    state = export_rosinality_state_dict(G)
    return _torch_save_bytes({"g_ema": state, "latent_avg": G.mapping.w_avg.clone()}, zipped)


def _latent_seed(G: Generator) -> bytes:
    from pti.latent import Latent

    ws = torch.randn(2, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(1))
    noises = {
        name: torch.randn(2, 1, layer.resolution, layer.resolution)
        for name, layer in list(G.synthesis.noise_layers().items())[:2]
    }
    latent = Latent(ws, noises, "w+", "0123456789abcdef", {"stage": "projection", "steps": 3})
    return _file_bytes(latent.save, ".safetensors")


def tuned_copy(G: Generator) -> Generator:
    """``G`` with every synthesis weight nudged (what pivotal tuning produces, for delta seeds)."""
    from pti.networks import clone_generator

    tuned = clone_generator(G)
    with torch.no_grad():
        rng = torch.Generator().manual_seed(7)
        for p in tuned.synthesis.parameters():
            p.add_(torch.randn(p.shape, generator=rng) * 0.01)
    return tuned


def _delta_seeds(G: Generator) -> list[bytes]:
    from pti.delta import save_delta

    tuned = tuned_copy(G)
    return [
        _file_bytes(lambda p, m=mode: save_delta(tuned, G, p, mode=m), ".safetensors") for mode in ("lowrank", "fp16")
    ]


def _plain_safetensors_seed() -> bytes:
    from pti.checkpoints import write_safetensors

    tensors = {
        "f32": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "f16": torch.ones(4, dtype=torch.float16),
        "i64": torch.arange(3),
        "u8": torch.arange(5, dtype=torch.uint8),
        "empty": torch.zeros(0, 4),
        "scalar": torch.tensor(2.5),
    }
    return _file_bytes(lambda p: write_safetensors(p, tensors, {"format": "fuzz", "note": "x"}), ".safetensors")


def _direction_seeds(G: Generator) -> dict[str, list[bytes]]:
    rng = torch.Generator().manual_seed(3)
    vectors = {name: torch.randn(G.w_dim, generator=rng) for name in ("smile", "age")}
    npy = io.BytesIO()
    np.save(npy, vectors["smile"][None].numpy())
    pca = {"mean": torch.zeros(1, G.w_dim), "comp": torch.randn(3, 1, G.w_dim, generator=rng), "std": torch.ones(3)}
    saved = [Direction("smile", vectors["smile"], (0, 2), {"note": "x"}), Direction("age", vectors["age"])]
    return {
        "npy": [npy.getvalue()],
        "pt": [_torch_save_bytes(vectors), _torch_save_bytes(pca), _torch_save_bytes(vectors["age"], zipped=False)],
        "safetensors": [_file_bytes(lambda p: save_directions(saved, p, "0123456789abcdef"), ".safetensors")],
    }


# ====================================================================================================================
# Targets


@dataclass
class Target:
    """One loader under test: ``load(path)`` must either return or raise one of ``allowed``."""

    name: str
    suffix: str
    seeds: list[bytes]
    load: Callable[[Path], Any]
    allowed: tuple[type[BaseException], ...]


def _encoder_seeds() -> dict[str, list[bytes]]:
    """A tiny e4e as published (torch.save of state_dict/opts/latent_avg) and in this project's format."""
    from pti.encoder import Encoder, EncoderConfig, save_encoder

    config = EncoderConfig(num_ws=4, w_dim=8, stage_units=(1, 1, 1, 1), stage_channels=(4, 8, 12, 16))
    torch.manual_seed(0)
    encoder = Encoder(config, latent_avg=torch.randn(4, 8))
    state = {f"encoder.{k}": v for k, v in encoder.net.state_dict().items()}
    opts = {"encoder_type": "Encoder4Editing", "stylegan_size": 8, "start_from_latent_avg": True}
    published = {"state_dict": state, "opts": opts, "latent_avg": torch.randn(4, 8)}
    return {
        "encoder-e4e": [_torch_save_bytes(published)],
        "encoder-safetensors": [_file_bytes(lambda p: save_encoder(encoder, p), ".safetensors")],
    }


def build_targets(names: list[str] | None = None) -> list[Target]:
    """Every fuzz target (or those named), with seeds made from ``tiny_generator()``."""
    from pti.delta import load_delta
    from pti.encoder import load_encoder
    from pti.latent import Latent

    G = tiny_generator()
    directions = _direction_seeds(G)
    generator_seeds = {
        "safetensors": [
            _file_bytes(lambda p: save_generator(G, p), ".safetensors"),
            _file_bytes(lambda p: save_generator(G, p, fp16=True), ".safetensors"),
        ],
        "nvidia-pkl": [nvidia_pickle_bytes(G, protocol=4), nvidia_pickle_bytes(G, protocol=2)],
        "sg3-pkl": [STYLEGAN3_SNAPSHOT.read_bytes(), numpy1_spelling(STYLEGAN3_SNAPSHOT.read_bytes())],
        "torch-zip": [rosinality_bytes(G, zipped=True)],
        "torch-legacy": [rosinality_bytes(G, zipped=False)],
    }
    targets = [
        Target(f"generator-{kind}", ".pt" if "torch" in kind else ".pkl" if kind.endswith("pkl") else ".safetensors",
               seeds, load_generator, (CheckpointError,))
        for kind, seeds in generator_seeds.items()
    ]  # fmt: skip
    targets += [
        Target("safetensors", ".safetensors", [_plain_safetensors_seed()], read_safetensors, (CheckpointError,)),
        *(
            Target(f"direction-{kind}", f".{kind}", seeds, lambda p: load_directions(p, G), (DirectionError,))
            for kind, seeds in directions.items()
        ),
        Target("latent", ".safetensors", [_latent_seed(G)], Latent.load, (ValueError,)),
        Target("delta", ".safetensors", _delta_seeds(G), lambda p: load_delta(p, G), (CheckpointError,)),
        *(
            Target(kind, ".pt" if kind.endswith("e4e") else ".safetensors", seeds, load_encoder, (CheckpointError,))
            for kind, seeds in _encoder_seeds().items()
        ),
    ]
    if names:
        unknown = set(names) - {t.name for t in targets}
        if unknown:
            raise SystemExit(f"unknown target(s) {sorted(unknown)}; known: {[t.name for t in targets]}")
        targets = [t for t in targets if t.name in names]
    for target in targets:  # every seed must load, or the mutations start from a file that is already refused
        for seed in target.seeds:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / f"seed{target.suffix}"
                path.write_bytes(seed)
                target.load(path)
    return targets


# ====================================================================================================================
# Mutations

MUTATIONS = ("flip", "byte", "int", "truncate", "delete", "duplicate", "splice", "number")
_INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, ord("{"), ord("."), ord("R"), ord("c"), ord("\x93"))
_INTERESTING_INTS = (0, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**40, 2**62, 2**63 - 1, 2**64 - 1, 10**12)
_NUMBERS = (b"0", b"-1", b"1", b"4294967296", b"1000000000000", b"99999999999999999999", b"1e308", b"-0")
_DIGITS = re.compile(rb"-?\d+")


def _position(data: bytes, fraction: float) -> int:
    """Mostly near the start (headers, length fields), sometimes anywhere."""
    return min(len(data) - 1, int(len(data) * fraction**3)) if data else 0


def mutate(data: bytes, operations: list[tuple[int, float, int]], donors: list[bytes]) -> bytes:
    """Apply ``(kind, where in 0..1, value)`` mutations in order; deterministic for the same arguments."""
    buffer = bytearray(data)
    for kind, fraction, value in operations:
        name = MUTATIONS[kind % len(MUTATIONS)]
        at = _position(buffer, fraction)
        if name == "flip" and buffer:
            buffer[at] ^= 1 << (value % 8)
        elif name == "byte" and buffer:
            buffer[at] = _INTERESTING_BYTES[value % len(_INTERESTING_BYTES)]
        elif name == "int":
            width = (1, 2, 4, 8)[value % 4]
            number = _INTERESTING_INTS[(value // 4) % len(_INTERESTING_INTS)] % (1 << (8 * width))
            buffer[at : at + width] = number.to_bytes(width, "little")
        elif name == "truncate":
            del buffer[at:]
        elif name == "delete":
            del buffer[at : at + 1 + value % 64]
        elif name == "duplicate":
            chunk = buffer[at : at + 1 + value % 256]
            buffer[at:at] = chunk
        elif name == "splice" and donors:
            donor = donors[value % len(donors)]
            start = _position(donor, fraction)
            buffer[at:] = donor[start:]
        elif name == "number":
            runs = list(_DIGITS.finditer(bytes(buffer[:65536])))
            if runs:
                run = runs[int(fraction * len(runs)) % len(runs)]
                buffer[run.start() : run.end()] = _NUMBERS[value % len(_NUMBERS)]
    return bytes(buffer)


def random_operations(rng: random.Random, max_operations: int = 4) -> list[tuple[int, float, int]]:
    """A mutation list drawn from ``rng`` (same shape as ``operations_strategy`` draws)."""
    return [
        (rng.randrange(len(MUTATIONS)), rng.random(), rng.randrange(2**16 + 1))
        for _ in range(rng.randint(1, max_operations))
    ]


def operations_strategy(max_operations: int = 4):
    """Hypothesis strategy for a mutation list."""
    from hypothesis import strategies as st

    operation = st.tuples(st.integers(0, len(MUTATIONS) - 1), st.floats(0, 1, exclude_max=True), st.integers(0, 2**16))
    return st.lists(operation, min_size=1, max_size=max_operations)


# ====================================================================================================================
# Running


class Hang(BaseException):
    """Raised by the watchdog alarm; a BaseException so no loader's ``except Exception`` can swallow it."""


def _alarm(signum, frame):
    raise Hang()


_PATH_NOISE = re.compile(r"(/[^\s'\"():,]+)+")
_NUMBER_NOISE = re.compile(r"\d+")


def normalise_message(message: str) -> str:
    """An error message without paths and numbers, so equivalent refusals count once."""
    return _NUMBER_NOISE.sub("N", _PATH_NOISE.sub("<path>", message))[:200]


@dataclass
class Report:
    """What happened to the inputs of one target."""

    target: str
    inputs: int = 0
    refused: int = 0
    accepted: int = 0
    messages: set[str] = field(default_factory=set)
    crashes: list[str] = field(default_factory=list)
    hangs: int = 0
    max_seconds: float = 0.0
    total_seconds: float = 0.0

    def row(self) -> str:
        return (
            f"| {self.target} | {self.inputs} | {self.refused} | {self.accepted} | {len(self.messages)} | "
            f"{self.max_seconds * 1000:.0f} | {self.total_seconds / max(1, self.inputs) * 1000:.1f} | "
            f"{len(self.crashes)} | {self.hangs} |"
        )


TABLE_HEADER = (
    "| loader | inputs run | refused | still valid | distinct error messages | max ms/input | mean ms/input | "
    "crashes | hangs (> 5 s) |\n|---|---|---|---|---|---|---|---|---|"
)  # the columns of Report.row


def run_one(target: Target, data: bytes, path: Path, report: Report, out: Path | None = None,
            hang_seconds: float = HANG_SECONDS, reraise: bool = False) -> None:  # fmt: skip
    """Load ``data`` through ``target`` and record the outcome in ``report`` (``reraise``: let a crash propagate)."""
    path.write_bytes(data)
    report.inputs += 1
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, hang_seconds * 4)  # hard stop well after the hang threshold
    start, hung = time.perf_counter(), False
    try:
        target.load(path)
        report.accepted += 1
    except target.allowed as exc:
        report.refused += 1
        report.messages.add(f"{type(exc).__name__}: {normalise_message(str(exc))}")
    except Hang:
        hung = True
    except Exception as exc:
        if reraise:
            raise
        digest = hashlib.sha256(data).hexdigest()[:12]
        report.crashes.append(f"{type(exc).__name__}: {str(exc)[:200]} (input {digest})")
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{target.name}-{digest}{target.suffix}").write_bytes(data)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        elapsed = time.perf_counter() - start
        report.max_seconds = max(report.max_seconds, elapsed)
        report.total_seconds += elapsed
        if hung or elapsed > hang_seconds:
            report.hangs += 1
            if out is not None:  # keep slow inputs too, to reproduce them
                out.mkdir(parents=True, exist_ok=True)
                (out / f"slow-{target.name}-{hashlib.sha256(data).hexdigest()[:12]}{target.suffix}").write_bytes(data)
