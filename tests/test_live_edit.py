"""Edit Live (PTI): the session store, the node and ``POST /pti/live/render`` through aiohttp's test client.

The route is served by a bare aiohttp app (``live_routes.build_app``) around a store of the test's own, with the
pack loaded against the fakes in tests/fake_comfy; the browser side is tests/test_live_edit_browser.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading

import numpy as np
import pytest
import torch
from aiohttp.test_utils import TestClient, TestServer
from conftest import make_generator
from pack_loader import load_pack, pack_module
from PIL import Image

pack = load_pack()
live = pack_module("pti.live")
live_node = pack_module("nodes.live")
live_routes = pack_module("nodes.live_routes")
Direction = pack_module("pti.directions").Direction
Latent = pack_module("pti.latent").Latent


@pytest.fixture(scope="module")
def generator():
    G = make_generator(resolution=32)
    packed = pack_module("pti.networks").Generator(**G.init_kwargs)
    packed.load_state_dict(G.state_dict())
    return packed.eval()


def unit_direction(name: str, seed: int, w_dim: int = 32) -> Direction:
    vector = torch.randn(w_dim, generator=torch.Generator().manual_seed(seed))
    return Direction(name, vector / vector.norm(), None, {})


@pytest.fixture(scope="module")
def latent(generator):
    with torch.no_grad():
        ws = generator.mapping(torch.randn(2, generator.z_dim, generator=torch.Generator().manual_seed(1)), None)
    return Latent(ws, {}, "w", "", {})


def scene_of(generator, latent, strength: float = 1.0) -> live.LiveScene:
    directions = {"strength_1": unit_direction("a", 0), "strength_2": unit_direction("b", 1)}
    ranges = {key: live.SliderRange(-5.0, 5.0) for key in directions}
    return live.LiveScene(generator, latent, directions, ranges, {"strength_1": strength, "strength_2": 0.0})


def run_node(**inputs):
    node = live_node.EditLive()
    with torch.inference_mode():
        return node.edit(**inputs)


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255


async def with_client(store, scenario):
    client = TestClient(TestServer(live_routes.build_app(store)))
    await client.start_server()
    try:
        return await scenario(client)
    finally:
        await client.close()


def serve(store, scenario):
    return asyncio.run(with_client(store, scenario))


async def post(client, payload, path=live_routes.ROUTE):
    body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    response = await client.post(path, data=body, headers={"Content-Type": "application/json"})
    return response.status, dict(response.headers), await response.read()


# ------------------------------------------------------------------------------------------------------ node


def test_node_output_equals_the_final_preview_and_its_ui_names_the_session(generator, latent):
    store = live_node.STORE
    store.release_all()
    d1, d2 = unit_direction("a", 0), unit_direction("b", 1)
    out = run_node(
        generator=generator,
        latent=latent,
        direction_1=d1,
        strength_1=1.5,
        direction_2=d2,
        strength_2=-0.5,
        layer_start=-1,
        layer_end=-1,
        unique_id="7",
    )
    image, edited = out["result"]
    assert image.shape == (2, 32, 32, 3)
    assert torch.allclose(edited.ws, latent.ws + 1.5 * d1.vector - 0.5 * d2.vector, atol=1e-5)
    (entry,) = out["ui"][live_node.UI_KEY]
    assert entry["values"] == {"strength_1": 1.5, "strength_2": -0.5}
    assert len(entry["session"]) >= 32 and len(store) == 1

    async def scenario(client):
        status, headers, body = await post(client, {"session": entry["session"], "values": {}, "quality": "final"})
        assert status == 200 and headers["Content-Type"] == "image/png" and headers["Cache-Control"] == "no-store"
        preview = decode_png(body)
        assert np.abs(preview - image[0].numpy()).max() <= 1 / 255 + 1e-6
        status, _, body = await post(client, {"session": entry["session"], "values": {"strength_1": 4.0}})
        assert status == 200
        dragged = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), dtype=np.float32) / 255
        assert np.abs(dragged - image[0].numpy()).mean() > 0.01, "a new strength must change the face"

    serve(store, scenario)
    store.release_all()


def test_node_runs_with_one_direction_and_a_layer_range(generator, latent):
    direction = unit_direction("a", 3)
    (image, edited) = run_node(
        generator=generator,
        latent=latent,
        direction_1=direction,
        strength_1=2.0,
        layer_start=2,
        layer_end=4,
        unique_id=None,
    )["result"]
    changed = (edited.ws - latent.ws).abs().amax(dim=2)[0] > 0
    assert changed.tolist() == [i in (2, 3) for i in range(generator.num_ws)]
    assert image.shape[0] == 2
    node = live_node.EditLive
    assert node.VALIDATE_INPUTS(layer_start=3, layer_end=3) != True  # noqa: E712
    assert node.IS_CHANGED() != node.IS_CHANGED(), "each queue must re-run the node (one session per tab)"
    spec = node.INPUT_TYPES()
    assert spec["required"]["strength_1"][1]["display"] == "slider"
    sliders = {f"{kind}_{i}" for kind in ("direction", "strength") for i in (2, 3, 4)}
    assert list(spec["optional"]) == [*sorted(sliders, key=lambda k: (k[-1], k)), "layer_start", "layer_end"]
    live_node.STORE.release_all()


# ------------------------------------------------------------------------------------------------------ store


def test_values_are_validated_and_clamped(generator, latent):
    scene = scene_of(generator, latent)
    assert scene.checked_values({"strength_2": 99}) == {"strength_1": 1.0, "strength_2": 5.0}
    assert scene.checked_values({"strength_1": -1e300}) == {"strength_1": -5.0, "strength_2": 0.0}
    for bad in ({"strength_9": 1.0}, {"strength_1": float("nan")}, {"strength_1": "1"}, {"strength_1": True}, [1]):
        with pytest.raises(live.LiveEditError) as error:
            scene.checked_values(bad)
        assert error.value.status == 400
    assert scene.values == {"strength_1": 1.0, "strength_2": 0.0}, "a refused request changes nothing"


def test_store_evicts_least_recently_used_and_answers_410(generator, latent):
    store = live.LiveSessionStore(capacity=2)
    first, second = store.open(scene_of(generator, latent)), store.open(scene_of(generator, latent))
    store.session(first)  # first is now the most recently used
    third = store.open(scene_of(generator, latent))
    assert len(store) == 2
    with pytest.raises(live.LiveEditError) as error:
        store.session(second)
    assert error.value.status == 410 and "evicted" in error.value.message
    assert store.release(first) and not store.release(first)
    store.session(third)
    replaced = store.open(scene_of(generator, latent), "tab", "5")
    store.open(scene_of(generator, latent), "tab", "5")  # the node ran again: its old session goes
    with pytest.raises(live.LiveEditError) as error:
        store.session(replaced, "tab")
    assert error.value.status == 410 and "ran again" in error.value.message


def test_a_session_belongs_to_its_tab_and_dies_with_its_generator(latent):
    store = live.LiveSessionStore()
    G = make_generator(resolution=32, seed=2)
    token = store.open(scene_of(G, latent), client_id="tab-a", node_id="3")
    with pytest.raises(live.LiveEditError) as error:
        store.session(token, "tab-b")
    assert error.value.status == 404 and "another browser tab" in error.value.message
    store.session(token, "tab-a")
    del G  # ComfyUI's cache dropped the generator: the store never keeps it alive
    import gc

    gc.collect()
    with pytest.raises(live.LiveEditError) as error:
        store.session(token, "tab-a")
    assert error.value.status == 410


def test_rate_is_capped_per_session(generator, latent):
    now = [100.0]
    store = live.LiveSessionStore(rate=3, clock=lambda: now[0])
    token = store.open(scene_of(generator, latent))
    for _ in range(3):
        store.session(token)
    with pytest.raises(live.LiveEditError) as error:
        store.session(token)
    assert error.value.status == 429
    now[0] += 1.01
    store.session(token)


# ------------------------------------------------------------------------------------------------------ route


def test_route_answers_images_and_clamps(generator, latent):
    store = live.LiveSessionStore()
    token = store.open(scene_of(generator, latent))

    async def scenario(client):
        status, headers, body = await post(client, {"session": token, "values": {"strength_1": 50}})
        assert status == 200 and headers["Content-Type"] == "image/jpeg" and headers["Cache-Control"] == "no-store"
        assert "Access-Control-Allow-Origin" not in headers
        assert json.loads(headers["X-PTI-Values"]) == {"strength_1": 5.0, "strength_2": 0.0}
        assert Image.open(io.BytesIO(body)).size == (32, 32)
        status, _, clamped = await post(
            client, {"session": token, "values": {"strength_1": 5}, "quality": "final"}, "/api" + live_routes.ROUTE
        )
        status_huge, _, huge = await post(client, {"session": token, "values": {"strength_1": 50}, "quality": "final"})
        assert status == status_huge == 200 and clamped == huge, "50 is clamped to the slider's maximum, 5"
        response = await client.get(live_routes.ROUTE)
        assert response.status == 405, "nothing is served on GET"

    serve(store, scenario)


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"{not json", "JSON"),
        ('{"session": "x", "values": {"strength_1": NaN}}', "JSON"),
        ('{"session": "%s", "values": {"strength_1": 1e999}}', "finite"),
        ('{"session": "%s", "values": {"strength_7": 1}}', "unknown slider"),
        ('{"session": "%s", "values": [], "quality": "draft"}', "values"),
        ('{"session": "%s", "quality": "huge"}', "quality"),
        ('{"session": "%s", "path": "/etc/passwd"}', "unknown field"),
        ("[1, 2]", "object"),
        ('{"session": "%s", "values": {"strength_1": 1}, "pad": "' + "x" * 5000 + '"}', "bytes"),
        ('{"session": 5}', "token"),
    ],
)
def test_route_refuses_bad_bodies_with_a_message(generator, latent, body, fragment):
    store = live.LiveSessionStore()
    scene = scene_of(generator, latent)
    token = store.open(scene)
    payload = body.replace("%s", token, 1) if isinstance(body, str) else body

    async def scenario(client):
        status, headers, answer = await post(client, payload)
        assert status == 400, answer
        assert headers["Cache-Control"] == "no-store"
        assert fragment in json.loads(answer)["error"]

    serve(store, scenario)
    assert scene.values == {"strength_1": 1.0, "strength_2": 0.0} and len(store) == 1


def test_route_404_410_409_and_free(generator, latent):
    store = live.LiveSessionStore(capacity=1, busy_wait_s=0.05)
    old = store.open(scene_of(generator, latent))
    token = store.open(scene_of(generator, latent))  # evicts old (capacity 1)

    async def scenario(client):
        status, _, body = await post(client, {"session": "A" * 32, "values": {}})
        assert status == 404 and "run the graph again" in json.loads(body)["error"]
        status, _, body = await post(client, {"session": old, "values": {}})
        assert status == 410 and "run the graph again" in json.loads(body)["error"]
        holder_has_lock, release = threading.Event(), threading.Event()

        def node_running():  # what Edit Live does while it executes
            with store.lock:
                holder_has_lock.set()
                release.wait(5)

        thread = threading.Thread(target=node_running)
        thread.start()
        holder_has_lock.wait(5)
        try:
            status, _, body = await post(client, {"session": token, "values": {}})
            assert status == 409 and "busy" in json.loads(body)["error"]
        finally:
            release.set()
            thread.join()
        status, _, _ = await post(client, {"session": token, "values": {}})
        assert status == 200
        await client.post("/free", json={"unload_models": True})
        status, _, body = await post(client, {"session": token, "values": {}})
        assert status == 410 and "Unload models" in json.loads(body)["error"]

    serve(store, scenario)


def test_renders_leave_the_event_loop(generator, latent):
    """Two requests at once: the loop keeps answering while a render holds the lock, the second waits its turn."""
    store = live.LiveSessionStore(busy_wait_s=2.0)
    token = store.open(scene_of(generator, latent))
    loop_threads: set[int] = set()
    original = live.LiveScene.render

    def recording_render(self, values, row=None):
        loop_threads.add(threading.get_ident())
        return original(self, values, row)

    async def scenario(client):
        live.LiveScene.render = recording_render
        try:
            answers = await asyncio.gather(*(post(client, {"session": token, "values": {}}) for _ in range(2)))
        finally:
            live.LiveScene.render = original
        assert [status for status, _, _ in answers] == [200, 200]
        assert threading.get_ident() not in loop_threads, "torch work must run off the event loop"

    serve(store, scenario)


def test_on_prompt_releases_sessions_whose_node_left_the_prompt(generator, latent):
    store = live.LiveSessionStore()
    kept = store.open(scene_of(generator, latent), "tab-a", "4")
    gone = store.open(scene_of(generator, latent), "tab-a", "9")
    handler = live_routes.prompt_handler(store)
    prompt = {"4": {"class_type": "PTI_EditLive", "inputs": {}}, "9": {"class_type": "PTI_Decode", "inputs": {}}}
    other_tab = {"prompt": {}, "client_id": "tab-b"}
    assert handler(other_tab) is other_tab and len(store) == 2, "another tab's prompt leaves this tab's sessions"
    handler({"prompt": prompt, "client_id": "tab-a"})
    store.session(kept, "tab-a")
    with pytest.raises(live.LiveEditError) as error:
        store.session(gone, "tab-a")
    assert error.value.status == 410 and "left the workflow" in error.value.message
