"""Writes the example workflows in ``workflows/`` (UI format) from the short graph descriptions below.

Run ``python tools/build_workflows.py`` after changing a node's inputs; ``tests/test_workflows.py`` checks the
files against the nodes either way, and the tests take the example images' names and the workflow folder from here
(``tools.build_workflows``). Widget values are spelled out here, so a file never depends on defaults that may
change, and every workflow runs unchanged on a fresh install: the embedded models and the example image that ships
next to the workflows (copy it into ComfyUI's ``input/`` folder).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parent.parent
if __name__ == "__main__":  # run as a script: pti/, tools/ and tests/ are importable from the repository root
    sys.path.insert(0, str(REPO_ROOT))

from pti.catalogue import CATALOGUE  # noqa: E402
from pti.projection import PROJECTION_PRESETS  # noqa: E402
from pti.tune import TUNING_PRESETS  # noqa: E402
from tools.comfy_workflow import input_items, spec_kind, widgets_of  # noqa: E402

WORKFLOW_DIR = REPO_ROOT / "workflows"
EXAMPLE_IMAGE = "pti_example_face.png"
ALIGN_EXAMPLE_IMAGE = "pti_example_photo.jpg"
EXAMPLE_CLIP = "pti_example_clip.mp4"

# The core nodes the workflows use, as ComfyUI 0.3.x declares them (nodes.py).
CORE_NODES = {
    "LoadImage": {
        "input": {"required": {"image": ([EXAMPLE_IMAGE, ALIGN_EXAMPLE_IMAGE], {"image_upload": True})}},
        "output": ["IMAGE", "MASK"],
        "output_name": ["IMAGE", "MASK"],
    },
    "PreviewImage": {"input": {"required": {"images": ("IMAGE",)}}, "output": [], "output_name": []},
    "ImageBatch": {
        "input": {"required": {"image1": ("IMAGE",), "image2": ("IMAGE",)}},
        "output": ["IMAGE"],
        "output_name": ["IMAGE"],
    },
    # ComfyUI's core video nodes (comfy_extras/nodes_video.py), as /object_info lists them.
    "LoadVideo": {
        "input": {"required": {"file": ("COMBO", {"options": [EXAMPLE_CLIP], "video_upload": True})}},
        "output": ["VIDEO"],
        "output_name": ["VIDEO"],
    },
    "GetVideoComponents": {
        "input": {"required": {"video": ("VIDEO",)}},
        "output": ["IMAGE", "AUDIO", "FLOAT"],
        "output_name": ["images", "audio", "fps"],
    },
    "CreateVideo": {
        "input": {
            "required": {"images": ("IMAGE",), "fps": ("FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0})},
            "optional": {"audio": ("AUDIO",)},
        },
        "output": ["VIDEO"],
        "output_name": ["VIDEO"],
    },
    "SaveVideo": {
        "input": {
            "required": {
                "video": ("VIDEO",),
                "filename_prefix": ("STRING", {"default": "video/ComfyUI"}),
                "format": ("COMBO", {"options": ["auto", "mp4"], "default": "auto"}),
                "codec": ("COMBO", {"options": ["auto", "h264"], "default": "auto"}),
            }
        },
        "output": [],
        "output_name": [],
    },
}
WIDGET_KINDS = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
COLUMN_WIDTH, ROW_HEIGHT, GAP = 360, 90, 40
IMAGE_PREVIEW_HEIGHT = 260  # nodes that show an image (Load Image, outputs) get room for it
NOTE_SIZE = (320, 150)


def pack_node_specs(pack: ModuleType) -> dict[str, dict]:
    """``/object_info``-like specs of the nodes of ``pack`` (the pack module, loaded against the test fakes)."""
    specs = {}
    for key, cls in pack.NODE_CLASS_MAPPINGS.items():
        specs[key] = {
            "input": cls.INPUT_TYPES(),
            "output": list(cls.RETURN_TYPES),
            "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
        }
    return specs


def all_node_specs(pack: ModuleType) -> dict[str, dict]:
    return {**CORE_NODES, **pack_node_specs(pack)}


@dataclass
class Node:
    id: int
    type: str
    column: float
    row: float
    widgets: dict = field(default_factory=dict)
    title: str | None = None


@dataclass
class Graph:
    specs: dict[str, dict]
    nodes: list[Node] = field(default_factory=list)
    links: list[tuple[int, int, str, int, str]] = field(default_factory=list)  # id, src, output, dst, input
    notes: list[tuple[str, float, float]] = field(default_factory=list)

    def add(self, type_name: str, column: float, row: float, title: str | None = None, **widgets) -> Node:
        node = Node(len(self.nodes) + len(self.notes) + 1, type_name, column, row, widgets, title)
        self.nodes.append(node)
        return node

    def link(self, source: Node, output: str, target: Node, input_name: str) -> None:
        self.links.append((len(self.links) + 1, source.id, output, target.id, input_name))

    def note(self, text: str, column: float, row: float) -> None:
        self.notes.append((text, column, row))

    # ---------------------------------------------------------------------------------------------- to JSON

    def _link_inputs(self, node: Node) -> list[tuple[str, str]]:
        """(name, type) of every input that is a socket, in declaration order: the non-widget inputs, then the
        widgets that a link drives (a widget converted to an input, e.g. a clip's fps)."""
        sockets, linked_widgets = [], []
        linked = {name for _, _, _, dst, name in self.links if dst == node.id}
        for name, spec, _required in input_items(self.specs[node.type]["input"]):
            kind, options, _choices = spec_kind(spec)
            if kind not in WIDGET_KINDS or options.get("forceInput"):
                sockets.append((name, kind))
            elif name in linked:
                linked_widgets.append((name, kind))
        return sockets + linked_widgets

    def _widget_values(self, node: Node) -> list:
        values = []
        widgets = widgets_of(self.specs[node.type]["input"])
        unknown = set(node.widgets) - {w.name for w in widgets}
        if unknown:
            raise ValueError(f"{node.type} has no widgets {sorted(unknown)}")
        for widget in widgets:
            if widget.name in node.widgets:
                value = node.widgets[widget.name]
            elif "default" in widget.options:
                value = widget.options["default"]
            else:
                value = widget.choices[0]
            values.append(value)
            if widget.extra_values:
                upload = widget.options.get("image_upload") or widget.options.get("video_upload")
                values.append("image" if upload else "fixed")
        return values

    def _order(self) -> dict[int, int]:
        """Topological execution order (what the editor stores as ``order``)."""
        incoming = {n.id: {src for _, src, _, dst, _ in self.links if dst == n.id} for n in self.nodes}
        order, done = {}, set()
        while len(done) < len(self.nodes):
            ready = sorted(i for i, deps in incoming.items() if i not in done and deps <= done)
            if not ready:
                raise ValueError("the graph has a cycle")
            for node_id in ready:
                order[node_id] = len(order)
                done.add(node_id)
        return order

    def to_json(self) -> dict:
        order = self._order()
        positions = self._layout()
        links_json, nodes_json = [], []
        for link_id, src, output, dst, input_name in self.links:
            source, target = self._node(src), self._node(dst)
            out_slot = self.specs[source.type]["output_name"].index(output)
            in_names = [name for name, _ in self._link_inputs(target)]
            if input_name not in in_names:
                raise ValueError(f"{target.type} has no input socket {input_name!r}")
            out_type = self.specs[source.type]["output"][out_slot]
            links_json.append([link_id, src, out_slot, dst, in_names.index(input_name), out_type])
        for node in self.nodes:
            spec = self.specs[node.type]
            widget_names = {w.name for w in widgets_of(spec["input"])}
            inputs = [
                {"name": name, "type": kind, "link": self._incoming(node.id, name)}
                | ({"widget": {"name": name}} if name in widget_names else {})
                for name, kind in self._link_inputs(node)
            ]
            outputs = [
                {"name": name, "type": kind, "links": self._outgoing(node.id, name), "slot_index": slot}
                for slot, (name, kind) in enumerate(zip(spec["output_name"], spec["output"]))
            ]
            widget_values = self._widget_values(node)
            entry = {
                "id": node.id,
                "type": node.type,
                "pos": positions[node.id],
                "size": [320, self._height(node)],
                "flags": {},
                "order": order[node.id],
                "mode": 0,
                "inputs": inputs,
                "outputs": outputs,
                "properties": {"Node name for S&R": node.type},
                "widgets_values": widget_values,
            }
            if node.title:
                entry["title"] = node.title
            nodes_json.append(entry)
        for index, (text, _column, _row) in enumerate(self.notes):
            nodes_json.append(
                {
                    "id": len(self.nodes) + index + 1,
                    "type": "Note",
                    "pos": positions[len(self.nodes) + index + 1],
                    "size": list(NOTE_SIZE),
                    "flags": {},
                    "order": len(self.nodes) + index,
                    "mode": 0,
                    "inputs": [],
                    "outputs": [],
                    "properties": {"text": ""},
                    "widgets_values": [text],
                    "color": "#432",
                    "bgcolor": "#653",
                }
            )
        nodes_json.sort(key=lambda n: n["id"])
        return {
            "last_node_id": max(n["id"] for n in nodes_json),
            "last_link_id": len(links_json),
            "nodes": nodes_json,
            "links": links_json,
            "groups": [],
            "config": {},
            "extra": {"ds": {"scale": 0.7, "offset": [40, 40]}},
            "version": 0.4,
        }

    def _height(self, node: Node) -> int:
        spec = self.specs[node.type]
        slots = max(len(self._link_inputs(node)), len(spec["output"]))
        shows_image = node.type in ("LoadImage", "PreviewImage", "PTI_SaveImage")
        return 34 + 22 * slots + 26 * len(self._widget_values(node)) + (IMAGE_PREVIEW_HEIGHT if shows_image else 0)

    def _layout(self) -> dict[int, list[float]]:
        """Positions: each node at (column, row) of the grid, pushed down below the node above it in its column."""
        boxes = [(n.id, n.column, n.row, self._height(n)) for n in self.nodes]
        boxes += [(len(self.nodes) + i + 1, column, row, NOTE_SIZE[1]) for i, (_, column, row) in enumerate(self.notes)]
        positions, bottoms = {}, {}
        for node_id, column, row, height in sorted(boxes, key=lambda box: (box[1], box[2])):
            top = max(row * ROW_HEIGHT, bottoms.get(column, -GAP) + GAP)
            positions[node_id] = [column * COLUMN_WIDTH, top]
            bottoms[column] = top + height
        return positions

    def _node(self, node_id: int) -> Node:
        return next(n for n in self.nodes if n.id == node_id)

    def _incoming(self, node_id: int, input_name: str) -> int | None:
        found = [link_id for link_id, _, _, dst, name in self.links if dst == node_id and name == input_name]
        return found[0] if found else None

    def _outgoing(self, node_id: int, output: str) -> list[int]:
        return [link_id for link_id, src, out, _, _ in self.links if src == node_id and out == output]


# ------------------------------------------------------------------------------------------------ workflows

PROJECT_STEPS, TUNE_STEPS = PROJECTION_PRESETS["fast"].steps, TUNING_PRESETS["fast"].steps
STOP_AT_PSNR = TUNING_PRESETS["fast"].target_psnr
PHOTO_NOTE = (
    f"Copy {EXAMPLE_IMAGE} from this pack's workflows/ folder into ComfyUI's input/ folder (or load your own "
    f"photo: a centred face works best). Steps are the fast preset's: {PROJECT_STEPS} for projection, up to "
    f"{TUNE_STEPS} for tuning (it stops once the reconstruction is {STOP_AT_PSNR:g} dB from the photo), about "
    "20 s on a 2-core CPU with the embedded model."
)


@dataclass(frozen=True)
class Model:
    """The generator a photo workflow loads, the presets it runs with and the directions it sweeps."""

    model_name: str
    preset: str
    sweep: tuple[str, str]  # workflow 2: direction, strengths
    paste_back_edit: tuple[str, str]  # workflow 4: direction, strengths
    title_suffix: str = ""
    note: str = ""


EMBEDDED = Model("(embedded default)", "fast", ("yaw", "-3:3:5"), ("glasses", "-2:2:3"))
FFHQ_1024 = CATALOGUE["ffhq-1024"]
FFHQ = Model(
    FFHQ_1024.label,
    "reference",
    ("pose", "-3:3:5"),
    ("smile", "-3:3:3"),
    " (FFHQ 1024, GPU)",
    f"NVIDIA's FFHQ 1024 generator (StyleGAN2-ADA, the PTI paper's; ~{FFHQ_1024.approx_mb} MB, {FFHQ_1024.licence}) "
    "is downloaded into models/stylegan on the first run (PTI_MODEL_MIRROR replaces the host; offline: python -m "
    "pti fetch-model ffhq-1024 on another machine). The official PTI settings run here (450 projection and 350 "
    "tuning steps at 1024 px): meant for a GPU, hours on a CPU. The shipped FFHQ directions (age, pose, smile) fit "
    "it. Not yet run on a GPU by the pack: the thumbnail is a description, not this workflow's output.",
)


def _invert(
    graph: Graph, model: Node, photo: Node, photo_output: str = "IMAGE", column: int = 1, preset: str = "fast"
) -> tuple[Node, Node]:
    """Project the photo and tune the model on it: the (pivot, tuned) nodes shared by the photo workflows."""
    steps = PROJECTION_PRESETS[preset].steps
    project = graph.add("PTI_ProjectPivot", column, 0, steps=steps, space="W", seed=0, preset=preset)
    graph.link(model, "generator", project, "generator")
    graph.link(photo, photo_output, project, "image")
    tune = graph.add(
        "PTI_PivotalTune",
        column + 1,
        0,
        steps=TUNING_PRESETS[preset].steps,
        stop_at_psnr=TUNING_PRESETS[preset].target_psnr,
        locality=False,
        seed=0,
        preset=preset,
    )
    graph.link(model, "generator", tune, "generator")
    graph.link(photo, photo_output, tune, "image")
    graph.link(project, "latent", tune, "latent")
    return project, tune


def _sources(graph: Graph, image_name: str = EXAMPLE_IMAGE, model_name: str = EMBEDDED.model_name) -> tuple[Node, Node]:
    model = graph.add("PTI_LoadStyleGAN", 0, 0, model_name=model_name)
    photo = graph.add("LoadImage", 0, 2, image=image_name)
    return model, photo


def _sweep(
    graph: Graph,
    latent: Node,
    generator: tuple[Node, str],
    direction_name: str,
    strengths: str,
    at: dict[str, tuple[int, int]],
) -> tuple[Node, Node]:
    """Load a direction, sweep ``latent`` along it and decode with ``generator`` (node, output): (edit, decode).

    ``at`` places the three nodes: keys ``direction``, ``edit``, ``decode`` -> (column, row).
    """
    direction = graph.add("PTI_LoadDirection", *at["direction"], direction=direction_name, entry="")
    graph.link(generator[0], generator[1], direction, "generator")  # a shipped name picks the one that fits it
    edit = graph.add(
        "PTI_ApplyLatentEdit",
        *at["edit"],
        mode="sweep",
        strength=2.0,
        strengths=strengths,
        layer_start=-1,
        layer_end=-1,
    )
    graph.link(latent, "latent", edit, "latent")
    graph.link(direction, "direction", edit, "direction")
    decode = graph.add("PTI_Decode", *at["decode"], truncation_psi=1.0, noise_mode="const")
    graph.link(generator[0], generator[1], decode, "generator")
    graph.link(edit, "latent", decode, "latent")
    return edit, decode


def _save_grid(graph: Graph, images: Node, latent: Node, prefix: str, columns: int, at: tuple[int, int]) -> Node:
    """Save Image (PTI) of ``images`` as one grid, with the recipe of ``latent``."""
    save = graph.add("PTI_SaveImage", *at, filename_prefix=prefix, layout="grid", grid_columns=columns)
    graph.link(images, "image", save, "images")
    graph.link(latent, "latent", save, "latent")
    return save


def invert_and_reconstruct(specs: dict, choice: Model = EMBEDDED) -> Graph:
    graph = Graph(specs)
    model, photo = _sources(graph, model_name=choice.model_name)
    project, tune = _invert(graph, model, photo, preset=choice.preset)
    before = graph.add("PreviewImage", 2, 4, title="Pivot before tuning")
    graph.link(project, "reconstruction", before, "images")
    save = graph.add("PTI_SaveImage", 3, 0, filename_prefix="PTI/reconstruction", layout="separate", grid_columns=0)
    graph.link(tune, "reconstruction", save, "images")
    graph.link(project, "latent", save, "latent")
    graph.note(choice.note or PHOTO_NOTE, 0, 5)
    return graph


def invert_tune_edit_sweep(specs: dict, choice: Model = EMBEDDED) -> Graph:
    graph = Graph(specs)
    model, photo = _sources(graph, model_name=choice.model_name)
    project, tune = _invert(graph, model, photo, preset=choice.preset)
    places = {"direction": (2, 4), "edit": (3, 2), "decode": (4, 0)}
    direction, strengths = choice.sweep
    edit, decode = _sweep(graph, project, (tune, "tuned_generator"), direction, strengths, places)
    _save_grid(graph, decode, edit, f"PTI/{direction}_sweep", 5, (5, 0))
    keep = graph.add("PTI_SavePTI", 3, 5, name="example_face", destination="output/pti")
    graph.link(model, "generator", keep, "base_generator")
    graph.link(tune, "tuned_generator", keep, "tuned_generator")
    graph.link(project, "latent", keep, "latent")
    graph.note(choice.note or PHOTO_NOTE, 0, 5)
    return graph


def generate_and_edit(specs: dict) -> Graph:
    graph = Graph(specs)
    model = graph.add("PTI_LoadStyleGAN", 0, 0, model_name="(embedded default)")
    sample = graph.add("PTI_SampleLatent", 1, 0, seed=7, batch_size=2, truncation_psi=0.8)
    graph.link(model, "generator", sample, "generator")
    places = {"direction": (1, 3), "edit": (2, 0), "decode": (3, 0)}
    edit, decode = _sweep(graph, sample, (model, "generator"), "hair_length", "-2, 0, 2", places)
    _save_grid(graph, decode, edit, "PTI/generated", 3, (4, 0))
    graph.note("Pure generation: two faces from seed 7 and 8, each with less and more hair.", 0, 3)
    return graph


def align_edit_paste_back(specs: dict, choice: Model = EMBEDDED) -> Graph:
    graph = Graph(specs)
    model, photo = _sources(graph, ALIGN_EXAMPLE_IMAGE, choice.model_name)
    align = graph.add("PTI_AlignFace", 1, 0, size=1024, detector="auto", fallback="error", landmarks="", face_index=0)
    graph.link(photo, "IMAGE", align, "image")
    graph.link(model, "generator", align, "generator")
    project, tune = _invert(graph, model, align, "aligned", column=2, preset=choice.preset)
    places = {"direction": (3, 4), "edit": (4, 0), "decode": (5, 0)}
    edit, decode = _sweep(graph, project, (tune, "tuned_generator"), *choice.paste_back_edit, places)
    paste = graph.add("PTI_PasteBack", 5, 3, feather=0.08)
    graph.link(photo, "IMAGE", paste, "original")
    graph.link(decode, "image", paste, "edited")
    graph.link(align, "alignment", paste, "alignment")
    _save_grid(graph, paste, edit, "PTI/pasted_back", 3, (6, 0))
    align_note = (
        f"Copy {ALIGN_EXAMPLE_IMAGE} into ComfyUI's input/ folder. Align Face finds the face itself (MTCNN; its "
        "2 MB weights are downloaded into models/pti_weights on first use). Several faces: face_index 0 is the "
        "largest. Or type five landmarks, or set fallback to 'center crop'."
    )
    graph.note(f"{align_note} {choice.note}".strip(), 0, 7)
    return graph


def encoder_warm_start(specs: dict) -> Graph:
    """Encode the photo in one pass, refine that latent briefly, tune: the fast route to a pivot."""
    graph = Graph(specs)
    model, photo = _sources(graph)
    loader = graph.add("PTI_LoadEncoder", 0, 5, encoder_name="(embedded default model's encoder)")
    encode = graph.add("PTI_EncodeImage", 1, 0)
    graph.link(model, "generator", encode, "generator")
    graph.link(loader, "encoder", encode, "encoder")
    graph.link(photo, "IMAGE", encode, "image")
    steps = PROJECTION_PRESETS["fast"].init_steps
    project = graph.add("PTI_ProjectPivot", 2, 0, steps=steps, space="W", seed=0, preset="fast")
    graph.link(model, "generator", project, "generator")
    graph.link(photo, "IMAGE", project, "image")
    graph.link(encode, "latent", project, "initial_latent")
    tune = graph.add(
        "PTI_PivotalTune", 3, 0, steps=TUNE_STEPS, stop_at_psnr=STOP_AT_PSNR, locality=False, seed=0, preset="fast"
    )
    graph.link(model, "generator", tune, "generator")
    graph.link(photo, "IMAGE", tune, "image")
    graph.link(project, "latent", tune, "latent")
    encoded = graph.add("PreviewImage", 1, 3, title="Encoder only (one forward pass)")
    graph.link(encode, "reconstruction", encoded, "images")
    save = graph.add("PTI_SaveImage", 4, 0, filename_prefix="PTI/encoder_start", layout="separate", grid_columns=0)
    graph.link(tune, "reconstruction", save, "images")
    graph.link(project, "latent", save, "latent")
    graph.note(
        f"Copy {EXAMPLE_IMAGE} into ComfyUI's input/ folder. Encode Image predicts the pivot in one pass; Project "
        f"Pivot refines it for {steps} steps (0 keeps the encoder's latent as it is), then tuning fits the photo. "
        "For your own model, put its e4e/pSp checkpoint in models/stylegan/encoders.",
        0,
        7,
    )
    return graph


def turn_and_move_stylegan3(specs: dict) -> Graph:
    """The embedded StyleGAN3's faces as generated, and the same latents through a rotated and shifted input."""
    graph = Graph(specs)
    model = graph.add("PTI_LoadStyleGAN", 0, 0, model_name="(embedded StyleGAN3)")
    sample = graph.add("PTI_SampleLatent", 1, 0, seed=1, batch_size=4, truncation_psi=0.8)
    graph.link(model, "generator", sample, "generator")
    transform = graph.add("PTI_StyleGAN3Transform", 1, 3, translate_x=0.15, translate_y=0.0, rotate=20.0)
    graph.link(model, "generator", transform, "generator")
    plain = graph.add("PTI_Decode", 2, 0, title="As generated", truncation_psi=1.0, noise_mode="const")
    graph.link(model, "generator", plain, "generator")
    graph.link(sample, "latent", plain, "latent")
    moved = graph.add(
        "PTI_Decode", 2, 3, title="Turned 20 degrees, moved right", truncation_psi=1.0, noise_mode="const"
    )
    graph.link(transform, "generator", moved, "generator")
    graph.link(sample, "latent", moved, "latent")
    both = graph.add("ImageBatch", 3, 0)
    graph.link(plain, "image", both, "image1")
    graph.link(moved, "image", both, "image2")
    save = graph.add("PTI_SaveImage", 4, 0, filename_prefix="PTI/stylegan3_turned", layout="grid", grid_columns=4)
    graph.link(both, "IMAGE", save, "images")
    graph.note(
        "StyleGAN3 draws its picture from Fourier features whose grid the input transform can turn and shift, so "
        "the same four latents come out rotated 20 degrees counter-clockwise and moved 0.15 of the width to the "
        "right (top row: as generated, bottom row: transformed). Content moved in from outside the frame is "
        "synthesised, not blank. Works after Pivotal Tune as well.",
        0,
        3,
    )
    return graph


def edit_face_in_video(specs: dict) -> Graph:
    """A clip through ComfyUI's core video nodes: one generator tuned on every frame, the same edit on each, pasted
    back, saved as a video with the source's frame rate and audio."""
    graph = Graph(specs)
    load = graph.add("LoadVideo", 0, 0, file=EXAMPLE_CLIP)
    parts = graph.add("GetVideoComponents", 0, 5)
    graph.link(load, "VIDEO", parts, "video")
    model = graph.add("PTI_LoadStyleGAN", 1, 0, model_name=EMBEDDED.model_name)
    encoder = graph.add("PTI_LoadEncoder", 1, 2, encoder_name="(embedded default model's encoder)")
    tune = graph.add(
        "PTI_VideoTune", 2, 0, tune_steps=VIDEO_TUNE_STEPS, stop_at_psnr=STOP_AT_PSNR, smooth_center=1.0,
        smooth_size=3.0, detector="auto", seed=0,
    )  # fmt: skip
    graph.link(model, "generator", tune, "generator")
    graph.link(parts, "images", tune, "images")
    graph.link(encoder, "encoder", tune, "encoder")
    direction = graph.add("PTI_LoadDirection", 2, 5, direction="smile", entry="")
    graph.link(tune, "tuned_generator", direction, "generator")
    edit = graph.add(
        "PTI_VideoEdit", 3, 0, strength=2.0, layer_start=-1, layer_end=-1, frame_offset=0, stitch_steps=0,
        feather=0.08,
    )  # fmt: skip
    graph.link(tune, "video_inversion", edit, "video_inversion")
    graph.link(parts, "images", edit, "images")
    graph.link(direction, "direction", edit, "direction")
    video = graph.add("CreateVideo", 4, 0, fps=12.0)
    graph.link(edit, "images", video, "images")
    graph.link(parts, "fps", video, "fps")
    graph.link(parts, "audio", video, "audio")
    graph.add("SaveVideo", 5, 0, filename_prefix="PTI/video_smile", format="auto", codec="auto")
    graph.link(video, "VIDEO", graph.nodes[-1], "video")
    aligned = graph.add("PreviewImage", 3, 4, title="Aligned faces tuned on")
    graph.link(tune, "aligned", aligned, "images")
    graph.note(
        f"Copy {EXAMPLE_CLIP} into ComfyUI's input/ folder (a real face under a moving camera, 24 frames). Video "
        "Tune aligns every frame (crop smoothed over time), starts each pivot from the encoder and tunes ONE "
        "generator on all frames; Video Edit applies the same smile to every frame and pastes it back. Frame rate "
        "and audio go from Get Video Components straight to Create Video. A few minutes on a 2-core CPU.",
        0,
        7,
    )
    return graph


def edit_live(specs: dict) -> Graph:
    """Invert and tune the example photo, then edit it with Edit Live's sliders (smile and yaw)."""
    graph = Graph(specs)
    model, photo = _sources(graph)
    project, tune = _invert(graph, model, photo)
    live = graph.add("PTI_EditLive", 3, 0, strength_1=0.0, strength_2=0.0, layer_start=-1, layer_end=-1)
    graph.link(tune, "tuned_generator", live, "generator")
    graph.link(project, "latent", live, "latent")
    for index, name in enumerate(("smile", "yaw"), start=1):
        direction = graph.add("PTI_LoadDirection", 2, 3 + index, direction=name, entry="")
        graph.link(tune, "tuned_generator", direction, "generator")
        graph.link(direction, "direction", live, f"direction_{index}")
    _save_grid(graph, live, live, "PTI/live_edit", 1, (4, 0))
    graph.note(
        "Queue once (inversion and tuning run once). Then drag a strength slider of Edit Live: the face changes on "
        "the node without queueing. Queue again to save exactly what the node shows; only Edit Live and Save re-run.",
        0,
        5,
    )
    return graph


# File names are the template cards' titles in ComfyUI's template browser.
INVERT_AND_RECONSTRUCT = "PTI 1 - Invert a photo and reconstruct it"
INVERT_AND_SWEEP = "PTI 2 - Invert a photo and sweep an edit"
GENERATE_AND_EDIT = "PTI 3 - Generate faces and edit them"
ALIGN_EDIT_PASTE_BACK = "PTI 4 - Align a face, edit it, paste it back"
ENCODER_WARM_START = "PTI 5 - Start from the encoder, then tune"
TURN_AND_MOVE_STYLEGAN3 = "PTI 6 - Turn and move a StyleGAN3 face"
EDIT_FACE_IN_VIDEO = "PTI 7 - Edit a face in a video"
VIDEO_TUNE_STEPS = 300
EDIT_LIVE = "PTI 8 - Edit live with sliders"

WORKFLOWS = {
    INVERT_AND_RECONSTRUCT: invert_and_reconstruct,
    INVERT_AND_SWEEP: invert_tune_edit_sweep,
    GENERATE_AND_EDIT: generate_and_edit,
    ALIGN_EDIT_PASTE_BACK: align_edit_paste_back,
    ENCODER_WARM_START: encoder_warm_start,
    TURN_AND_MOVE_STYLEGAN3: turn_and_move_stylegan3,
    EDIT_FACE_IN_VIDEO: edit_face_in_video,
    EDIT_LIVE: edit_live,
}
# The photo workflows again on NVIDIA's FFHQ 1024 generator, downloaded on first run (the embedded ones stay the
# offline default).
FFHQ_VARIANTS = {
    name + FFHQ.title_suffix: (lambda specs, make=make: make(specs, FFHQ))
    for name, make in WORKFLOWS.items()
    if name in (INVERT_AND_RECONSTRUCT, INVERT_AND_SWEEP, ALIGN_EDIT_PASTE_BACK)
}
WORKFLOWS.update(FFHQ_VARIANTS)


def build_all(specs: dict[str, dict]) -> dict[str, dict]:
    """Every workflow as UI-format JSON, for the node specs ``all_node_specs(pack)``."""
    return {name: make(specs).to_json() for name, make in WORKFLOWS.items()}


def main() -> None:
    from tests.pack_loader import load_pack  # the nodes' specs come from the pack loaded against the fakes

    WORKFLOW_DIR.mkdir(exist_ok=True)
    for name, workflow in build_all(all_node_specs(load_pack())).items():
        path = WORKFLOW_DIR / f"{name}.json"
        path.write_text(json.dumps(workflow, indent=1) + "\n")
        print(f"wrote {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
