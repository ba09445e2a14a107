"""HTTP side of Edit Live (PTI): ``POST /pti/live/render`` (ComfyUI also serves it as ``/api/pti/live/render``).

Request: JSON ``{"session": token, "values": {"strength_1": 1.5, ...}, "quality": "draft" | "final",
"client_id": the tab's id}`` of at most :data:`MAX_BODY_BYTES`. Answer: the image (JPEG while dragging, PNG on
release) with ``Cache-Control: no-store``, or JSON ``{"error": message}`` with 400 (bad body), 404 (unknown
session), 409 (busy), 410 (released session) or 429 (too many requests). Nothing else is served: no GET, no file
paths, nothing read but JSON. ComfyUI's own origin check guards it; no CORS headers are added.

Sessions are released when a new prompt of the same tab no longer holds their node (an on-prompt handler), and when
the user presses "Unload models" / "Free" (a middleware that sees ``POST /free``); a session whose generator
ComfyUI's cache let go answers 410 (the store holds generators weakly).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from ..pti.live import LiveEditError, LiveSessionStore
from .live import STORE

log = logging.getLogger("pti.nodes")

ROUTE = "/pti/live/render"
MAX_BODY_BYTES = 4096
NO_STORE = {"Cache-Control": "no-store"}
LIVE_NODE_TYPE = "PTI_EditLive"
BODY_KEYS = frozenset({"session", "values", "quality", "client_id"})


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=NO_STORE)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


async def _read_json(request: web.Request) -> dict:
    """The request's JSON object, or a 400 LiveEditError for an oversized, malformed or non-object body."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise LiveEditError(400, f"request body over {MAX_BODY_BYTES} bytes")
    body = await request.content.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise LiveEditError(400, f"request body over {MAX_BODY_BYTES} bytes")
    try:
        payload = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise LiveEditError(400, f"the body must be JSON {{session, values, quality}}: {str(exc)[:80]}") from None
    if not isinstance(payload, dict):
        raise LiveEditError(400, "the body must be a JSON object {session, values, quality}")
    unknown = sorted(str(key)[:20] for key in payload if key not in BODY_KEYS)
    if unknown:
        raise LiveEditError(400, f"unknown field(s) {unknown[:5]}; expected {sorted(BODY_KEYS)}")
    return payload


def render_handler(store: LiveSessionStore):
    """The aiohttp handler of :data:`ROUTE` for ``store``."""

    async def post_render(request: web.Request) -> web.Response:
        try:
            payload = await _read_json(request)
            client_id = payload.get("client_id")
            if client_id is not None and not isinstance(client_id, str):
                raise LiveEditError(400, "'client_id' must be a string")
            rendered, used = await asyncio.to_thread(
                store.render,
                payload.get("session"),
                payload.get("values", {}),
                payload.get("quality", "draft"),
                client_id,
            )
        except LiveEditError as exc:
            return _error(exc.status, exc.message)
        except RuntimeError as exc:  # e.g. ComfyUI moved the generator while it rendered
            log.warning("PTI live render failed: %s", exc)
            return _error(409, "busy: ComfyUI is moving this generator; try again")
        headers = {**NO_STORE, "X-PTI-Values": json.dumps(used, separators=(",", ":"))}
        return web.Response(body=rendered.data, content_type=rendered.media_type, headers=headers)

    return post_render


def prompt_handler(store: LiveSessionStore):
    """ComfyUI on-prompt handler: release the sessions of this tab whose node is not in the new prompt."""

    def on_prompt(json_data: dict) -> dict:
        prompt = json_data.get("prompt")
        if isinstance(prompt, dict):
            client_id = json_data.get("client_id")
            live_nodes = {
                str(node_id)
                for node_id, node in prompt.items()
                if isinstance(node, dict) and node.get("class_type") == LIVE_NODE_TYPE
            }
            store.release_where(
                lambda session: session.owner[0] != client_id or session.owner[1] in live_nodes,
                "its node left the workflow",
            )
        return json_data

    return on_prompt


def free_middleware(store: LiveSessionStore):
    """Middleware releasing every session on ``POST /free`` with ``unload_models`` or ``free_memory``."""

    @web.middleware
    async def release_on_free(request: web.Request, handler):
        if request.method == "POST" and request.path in ("/free", "/api/free"):
            try:
                flags = await request.json()  # aiohttp keeps the body, so ComfyUI's handler reads it again
            except ValueError:
                flags = None
            if isinstance(flags, dict) and (flags.get("unload_models") or flags.get("free_memory")):
                released = store.release_all("ComfyUI unloaded its models (Unload models / Free)")
                log.info("PTI: released %d live-edit session(s) on Free", released)
        return await handler(request)

    return release_on_free


def add_routes(routes: web.RouteTableDef, store: LiveSessionStore = STORE) -> None:
    routes.post(ROUTE)(render_handler(store))


def build_app(store: LiveSessionStore) -> web.Application:
    """A bare aiohttp app serving the route, with the Free middleware (tests, benchmarks)."""
    app = web.Application(middlewares=[free_middleware(store)])
    routes = web.RouteTableDef()
    add_routes(routes, store)
    app.add_routes(routes)
    app.router.add_post("/api" + ROUTE, render_handler(store))
    app.router.add_post("/free", lambda request: web.Response())
    return app


def install(prompt_server: Any, store: LiveSessionStore = STORE) -> None:
    """Hook the route, the on-prompt release and the Free middleware into ComfyUI's running ``PromptServer``."""
    add_routes(prompt_server.routes, store)  # ComfyUI copies every route under /api/ when it starts serving
    prompt_server.add_on_prompt_handler(prompt_handler(store))
    prompt_server.app.middlewares.append(free_middleware(store))


def install_into_comfyui() -> bool:
    """Install into ComfyUI's server when there is one (``server.PromptServer.instance``); False otherwise."""
    try:
        import server
    except ImportError:
        return False
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is None:
        return False
    install(instance)
    return True
