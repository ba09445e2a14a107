"""The example workflows in workflows/ are valid ComfyUI graphs for this pack's nodes.

Checked without a ComfyUI server: node types exist, every link joins an output and an input of the same type (as
declared by the nodes), required inputs are connected, widget values are in range / among the COMBO choices, the
files the workflows name ship with the pack, and the files match what tools/build_workflows.py generates.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pack_loader import load_pack, pack_module

from tools.build_workflows import EXAMPLE_IMAGE, WORKFLOW_DIR, WORKFLOWS, all_node_specs, build_all
from tools.comfy_workflow import (
    VIRTUAL_NODE_TYPES,
    check_widget_value,
    input_items,
    spec_kind,
    ui_to_api,
    widget_inputs,
    widgets_of,
)

SPECS = all_node_specs(load_pack())
WORKFLOW_FILES = sorted(WORKFLOW_DIR.glob("*.json"))
# COMBO values that depend on files shipped with the pack rather than on a user's folders.
SHIPPED_FILES = {"LoadImage": "image", "LoadVideo": "file"}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_there_are_workflows_for_each_use_case():
    names = {p.stem for p in WORKFLOW_FILES}
    assert set(WORKFLOWS) == names and len(names) == 11
    assert (WORKFLOW_DIR / EXAMPLE_IMAGE).is_file(), "the example photo the workflows load must ship with the pack"


# ComfyUI serves a pack's templates from the FIRST of these folders that exists (app/custom_node_manager.py), while its
# template list globs all of them: another of these folders in the pack makes every listed workflow a 404.
COMFYUI_TEMPLATE_FOLDERS = ("example_workflows", "example", "examples", "workflow", "workflows")


def test_no_folder_shadows_the_workflows_in_the_template_browser():
    pack = WORKFLOW_DIR.parent
    present = [name for name in COMFYUI_TEMPLATE_FOLDERS if (pack / name).exists()]
    assert present == [WORKFLOW_DIR.name], (
        f"ComfyUI would serve templates from {present[0]}/, not {WORKFLOW_DIR.name}/: rename {present[:-1]}"
    )


def test_workflow_files_are_up_to_date_with_the_builder():
    built = build_all(all_node_specs(load_pack()))  # the specs as the nodes declare them now
    for name, workflow in built.items():
        path = WORKFLOW_DIR / f"{name}.json"
        assert path.is_file(), f"{path} is missing: run python tools/build_workflows.py"
        assert load(path) == workflow, f"{path.name} is stale: run python tools/build_workflows.py"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.stem)
def test_workflow_graph_is_consistent(path):
    workflow = load(path)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    assert len(nodes) == len(workflow["nodes"]), "duplicate node ids"
    for node in nodes.values():
        assert node["type"] in SPECS or node["type"] in VIRTUAL_NODE_TYPES, f"unknown node type {node['type']}"

    links = {link[0]: link for link in workflow["links"]}
    assert len(links) == len(workflow["links"]), "duplicate link ids"
    for link_id, source_id, source_slot, target_id, target_slot, link_type in workflow["links"]:
        source, target = nodes[source_id], nodes[target_id]
        declared_output = SPECS[source["type"]]["output"][source_slot]
        assert declared_output == link_type == source["outputs"][source_slot]["type"], (path.name, link_id)
        assert link_id in source["outputs"][source_slot]["links"]
        socket = target["inputs"][target_slot]
        assert socket["link"] == link_id, (path.name, link_id)
        declared_inputs = dict((name, spec) for name, spec, _ in input_items(SPECS[target["type"]]["input"]))
        assert spec_kind(declared_inputs[socket["name"]])[0] == link_type, (path.name, target["type"], socket["name"])

    for node in nodes.values():
        if node["type"] in VIRTUAL_NODE_TYPES:
            continue
        connected = {socket["name"] for socket in node.get("inputs", []) if socket.get("link") is not None}
        widget_names = {w.name for w in widgets_of(SPECS[node["type"]]["input"])}
        for name, _spec, required in input_items(SPECS[node["type"]]["input"]):
            if required and name not in widget_names:
                assert name in connected, f"{path.name}: {node['type']}.{name} is not connected"
        for socket in node.get("outputs", []):
            for link_id in socket.get("links") or []:
                assert links[link_id][1] == node["id"]


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.stem)
def test_widget_values_are_valid(path):
    for node in load(path)["nodes"]:
        if node["type"] in VIRTUAL_NODE_TYPES:
            continue
        input_types = SPECS[node["type"]]["input"]
        values = widget_inputs(node, input_types)
        for widget in widgets_of(input_types):
            value = values[widget.name]
            if SHIPPED_FILES.get(node["type"]) == widget.name:
                assert (WORKFLOW_DIR / value).is_file(), f"{path.name} loads {value}, which the pack does not ship"
                continue
            if node["type"] == "PTI_LoadDirection" and not pack_module("nodes.editing").shipped_direction_names():
                pytest.skip("the embedded model's directions are not shipped yet")
            problem = check_widget_value(widget, value)
            assert problem is None, f"{path.name}: {node['type']}.{widget.name}: {problem}"
        if node["type"] == "PTI_LoadStyleGAN":
            embedded = pack_module("nodes.model").embedded_files()
            published = pack_module("pti.catalogue").lookup(values["model_name"])
            assert (published is not None) == path.stem.endswith("(FFHQ 1024, GPU)"), "the title says what it loads"
            if published is None:
                assert values["model_name"] in embedded, "workflows must run on a fresh install"
                assert embedded[values["model_name"]].is_file(), f"{path.name} needs {embedded[values['model_name']]}"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.stem)
def test_workflow_converts_to_a_complete_api_prompt(path):
    prompt = ui_to_api(load(path), {key: spec["input"] for key, spec in SPECS.items()})
    assert prompt, "nothing to execute"
    assert any(entry["class_type"] in ("PTI_SaveImage", "PreviewImage", "PTI_SavePTI") for entry in prompt.values())
    for node_id, entry in prompt.items():
        for name, _spec, required in input_items(SPECS[entry["class_type"]]["input"]):
            if required:
                assert name in entry["inputs"], f"{path.name}: node {node_id} misses {name}"
        for value in entry["inputs"].values():
            if isinstance(value, list):
                assert value[0] in prompt, f"{path.name}: node {node_id} links to a node that will not run"
