"""Live editing: render a latent edit for a slider value in a few milliseconds, without running a graph.

A :class:`LiveScene` is what one run of an editing node leaves behind: the generator (held weakly, so its owner
decides when it is freed), the latent, the directions and each slider's range, and the layer range. Its
:meth:`LiveScene.render` turns slider values into an image; the node renders its own output the same way, so the
last live preview and the node's next output agree to the rounding of 8-bit pixels.

A :class:`LiveSessionStore` keeps a few scenes (least recently used first out) under unguessable tokens, validates
the values a client sends, limits how often a session is rendered, and shares one lock with the node that fills it:
a render that cannot get the lock at once answers "busy" rather than queueing up behind a graph run.
"""

from __future__ import annotations

import dataclasses
import io
import math
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import torch
from PIL import Image

from .directions import Direction
from .edit import apply_direction
from .image import to_pil
from .latent import Latent, synthesize

DRAFT = "draft"  # while dragging: small JPEG
FINAL = "final"  # on release: full-size PNG, the exact pixels of the node's output
QUALITIES = (DRAFT, FINAL)
DRAFT_JPEG_QUALITY = 85


class LiveEditError(Exception):
    """A refused live request; ``status`` is its HTTP status and the message is meant for the user."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _bad_request(message: str) -> LiveEditError:
    return LiveEditError(400, message)


@dataclasses.dataclass(frozen=True)
class SliderRange:
    """The inclusive range a slider's value is clamped to."""

    minimum: float
    maximum: float

    def clamp(self, value: float) -> float:
        return min(max(value, self.minimum), self.maximum)


@dataclasses.dataclass(frozen=True)
class RenderedImage:
    """Encoded image bytes with their media type."""

    data: bytes
    media_type: str


class LiveScene:
    """A generator, a latent and named directions with slider ranges: renders ``w + sum(strength_k * d_k)``.

    ``values`` (the node's slider values when it ran) are the starting point; a render request may change any
    subset of them. ``layers`` is the half-open w-layer range every direction edits (None: each direction's own).
    """

    def __init__(
        self,
        generator: torch.nn.Module,
        latent: Latent,
        directions: Mapping[str, Direction],
        ranges: Mapping[str, SliderRange],
        values: Mapping[str, float],
        layers: tuple[int, int] | None = None,
        noise_mode: str = "const",
    ):
        if set(directions) != set(ranges) or set(values) != set(ranges):
            raise ValueError(f"directions {sorted(directions)}, ranges and values must name the same sliders")
        for direction in directions.values():
            direction.check_compatible(latent.ws.shape[2], latent.ws.shape[1])
        self._generator = weakref.ref(generator)
        self.latent = latent
        self.directions = dict(directions)
        self.ranges = dict(ranges)
        self.values = {key: ranges[key].clamp(float(value)) for key, value in values.items()}
        self.layers = layers
        self.noise_mode = noise_mode

    @property
    def generator(self) -> torch.nn.Module | None:
        """The generator, or None once its owner (ComfyUI's cache) let it go."""
        return self._generator()

    def checked_values(self, values: Any) -> dict[str, float]:
        """The scene's values with ``values`` (a mapping of slider name -> number) applied and clamped.

        Raises a 400 :class:`LiveEditError` for anything but a mapping of known names to finite numbers.
        """
        if not isinstance(values, Mapping):
            raise _bad_request(f"'values' must be an object of slider name -> number, got {type(values).__name__}")
        unknown = sorted(str(key) for key in values if key not in self.ranges)
        if unknown:
            raise _bad_request(f"unknown slider(s) {unknown[:5]}; this node has {sorted(self.ranges)}")
        merged = dict(self.values)
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise _bad_request(f"slider {key!r} must be a finite number, got {str(value)[:40]!r}")
            merged[key] = self.ranges[key].clamp(float(value))
        return merged

    def edited_latent(self, values: Mapping[str, float]) -> Latent:
        """The latent moved along every direction by its value (``values`` as from :meth:`checked_values`)."""
        edited = self.latent
        for key, direction in self.directions.items():
            if values[key] != 0.0:
                edited = apply_direction(edited, direction, values[key], self.layers)
        return edited

    def render(self, values: Mapping[str, float], row: int | None = None) -> torch.Tensor:
        """``[N, 3, R, R]`` in ``[-1, 1]`` for ``values`` (checked); one row per latent row, or only ``row``.

        Rows are rendered one at a time, so a row's pixels do not depend on how many rows are asked for.
        """
        G = self.generator
        if G is None:
            raise LiveEditError(410, "the generator of this preview was released by ComfyUI: run the graph again")
        edited = self.edited_latent(values)
        rows = range(len(edited)) if row is None else [row]
        with torch.no_grad():
            images = [synthesize(G, _row_of(edited, i), noise_mode=self.noise_mode) for i in rows]
        return torch.cat(images).float().cpu()


def _row_of(latent: Latent, index: int) -> Latent:
    noises = {k: v[index : index + 1] for k, v in latent.noises.items()}
    return dataclasses.replace(latent, ws=latent.ws[index : index + 1], noises=noises)


def encode(image: torch.Tensor, quality: str, draft_size: int) -> RenderedImage:
    """``[3, H, W]`` in ``[-1, 1]`` -> JPEG at most ``draft_size`` px (draft) or a lossless full-size PNG (final)."""
    pil = to_pil(image)
    buffer = io.BytesIO()
    if quality == FINAL:
        pil.save(buffer, format="PNG", compress_level=1)
        return RenderedImage(buffer.getvalue(), "image/png")
    if max(pil.size) > draft_size:
        pil = pil.resize((draft_size, draft_size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    pil.save(buffer, format="JPEG", quality=DRAFT_JPEG_QUALITY)
    return RenderedImage(buffer.getvalue(), "image/jpeg")


@dataclasses.dataclass
class LiveSession:
    """One stored scene: who may render it (``owner``: client and node ids) and its recent request times."""

    scene: LiveScene
    owner: tuple[str | None, str | None]
    requests: list[float] = dataclasses.field(default_factory=list)


class LiveSessionStore:
    """Scenes under unguessable tokens: at most ``capacity``, least recently used evicted first.

    ``lock`` serialises renders with the node that fills the store: the node holds it while it runs, a render
    that cannot take it within ``busy_wait_s`` is refused as busy (409). ``rate`` requests per second per session
    are served, more are refused (429). Tokens of released sessions are remembered (up to ``remember``) so a
    client learns its preview expired (410) rather than that it never existed (404).
    """

    def __init__(
        self,
        capacity: int = 2,
        rate: float = 60.0,
        busy_wait_s: float = 0.25,
        remember: int = 256,
        draft_size: int = 512,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not 1 <= capacity <= 8:
            raise ValueError(f"capacity must be 1..8 sessions, got {capacity}")
        self.capacity, self.rate, self.busy_wait_s = capacity, rate, busy_wait_s
        self.draft_size, self.clock, self.remember = draft_size, clock, remember
        self.lock = threading.RLock()
        self._meta_lock = threading.Lock()  # guards the dictionaries only, never held while rendering
        self._sessions: OrderedDict[str, LiveSession] = OrderedDict()
        self._released: OrderedDict[str, str] = OrderedDict()  # token -> why it went

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, scene: LiveScene, client_id: str | None = None, node_id: str | None = None) -> str:
        """Store ``scene`` and return its new token. A session of the same client and node is replaced."""
        token = secrets.token_urlsafe(24)
        owner = (client_id, node_id)
        with self._meta_lock:
            for old, session in list(self._sessions.items()):
                if node_id is not None and session.owner == owner:
                    self._forget(old, "this node ran again: use its new preview")
            while len(self._sessions) >= self.capacity:
                oldest = next(iter(self._sessions))
                self._forget(oldest, "this preview was evicted by a newer one")
            self._sessions[token] = LiveSession(scene, owner)
        return token

    def release(self, token: str, reason: str = "this preview was released") -> bool:
        """Drop one session; True if it existed."""
        with self._meta_lock:
            return self._forget(token, reason) if token in self._sessions else False

    def release_where(self, keep: Callable[[LiveSession], bool], reason: str) -> int:
        """Drop every session for which ``keep`` is false; returns how many went."""
        with self._meta_lock:
            gone = [token for token, session in self._sessions.items() if not keep(session)]
            for token in gone:
                self._forget(token, reason)
        return len(gone)

    def release_all(self, reason: str = "ComfyUI freed its models") -> int:
        return self.release_where(lambda session: False, reason)

    def _forget(self, token: str, reason: str) -> bool:
        self._sessions.pop(token, None)
        self._released[token] = reason
        while len(self._released) > self.remember:
            self._released.popitem(last=False)
        return True

    def session(self, token: Any, client_id: str | None = None) -> LiveSession:
        """The live session ``token`` names (marked most recently used), or a 400/404/410 LiveEditError."""
        if not isinstance(token, str) or not 8 <= len(token) <= 128:
            raise _bad_request("'session' must be the token the node returned when it ran")
        with self._meta_lock:
            session = self._sessions.get(token)
            if session is None:
                why = self._released.get(token)
                if why is not None:
                    raise LiveEditError(410, f"{why}: run the graph again")
                raise LiveEditError(
                    404, "unknown preview session (from another tab or an old run): run the graph again"
                )
            if session.owner[0] is not None and client_id != session.owner[0]:
                raise LiveEditError(404, "this preview belongs to another browser tab: run the graph again here")
            if session.scene.generator is None:
                self._forget(token, "the generator of this preview was released by ComfyUI")
                raise LiveEditError(410, "the generator of this preview was released by ComfyUI: run the graph again")
            self._sessions.move_to_end(token)
            now = self.clock()
            session.requests[:] = [t for t in session.requests if now - t < 1.0]
            if len(session.requests) >= self.rate:
                raise LiveEditError(429, f"too many preview requests (over {self.rate:g} per second)")
            session.requests.append(now)
        return session

    def render(
        self, token: Any, values: Any, quality: Any = DRAFT, client_id: str | None = None
    ) -> tuple[RenderedImage, dict[str, float]]:
        """Encoded image of the first latent row for ``values`` in session ``token``, and the values used.

        Blocking (call it off the event loop). Raises LiveEditError: 400 bad input, 404/410 unknown or released
        session, 409 busy (the node or another render holds the lock), 429 too many requests.
        """
        if quality not in QUALITIES:
            raise _bad_request(f"'quality' must be one of {list(QUALITIES)}, got {str(quality)[:20]!r}")
        session = self.session(token, client_id)
        checked = session.scene.checked_values(values)
        if not self.lock.acquire(timeout=self.busy_wait_s):
            raise LiveEditError(409, "busy: the graph or another preview is using this generator; try again")
        try:
            image = session.scene.render(checked, row=0)[0]
        finally:
            self.lock.release()
        return encode(image, quality, self.draft_size), checked
