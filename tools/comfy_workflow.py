"""ComfyUI workflow files: widget layout of a node, UI-format checks and UI -> API conversion, for
``tools/build_workflows.py`` (which writes the example workflows) and the tests that check and run them.

A UI-format workflow (what ComfyUI's editor saves) lists nodes with ``widgets_values`` in the order of the node's
widget inputs, and links as ``[id, origin_node, origin_slot, target_node, target_slot, type]``. The API format that
``POST /prompt`` takes is ``{node_id: {"class_type": ..., "inputs": {name: value | [origin_id, slot]}}}``.

The rules below follow ComfyUI's frontend (1.27): an INT input named ``seed``/``noise_seed`` or with
``control_after_generate`` gets an extra "control after generate" widget, and an ``image_upload`` or ``video_upload``
COMBO an extra upload widget; both are saved in ``widgets_values`` but are not inputs of the node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
# Frontend-only nodes: they never reach the server.
VIRTUAL_NODE_TYPES = ("Note", "MarkdownNote", "Reroute", "PrimitiveNode")


@dataclass(frozen=True)
class Widget:
    name: str
    kind: str  # INT | FLOAT | STRING | BOOLEAN | COMBO
    options: dict
    choices: tuple = ()
    extra_values: int = 0  # trailing UI-only values (control_after_generate, upload button)


def input_items(input_types: dict) -> list[tuple[str, tuple, bool]]:
    """``(name, spec, required)`` for the required then optional inputs, in declaration order."""
    items = [(name, spec, True) for name, spec in input_types.get("required", {}).items()]
    items += [(name, spec, False) for name, spec in input_types.get("optional", {}).items()]
    return items


def spec_kind(spec: tuple | list) -> tuple[str, dict, tuple]:
    """Normalise an input spec to ``(kind, options, combo choices)``; links have their type name as kind."""
    type_part = spec[0]
    options = dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if isinstance(type_part, (list, tuple)):
        return "COMBO", options, tuple(type_part)
    if type_part == "COMBO":
        return "COMBO", options, tuple(options.get("options", ()))
    return type_part, options, ()


def widgets_of(input_types: dict) -> list[Widget]:
    """The widgets a node shows, in ``widgets_values`` order."""
    widgets = []
    for name, spec, _required in input_items(input_types):
        kind, options, choices = spec_kind(spec)
        if kind not in WIDGET_TYPES or options.get("forceInput"):
            continue
        extra = 0
        if options.get("control_after_generate") or (kind == "INT" and name in ("seed", "noise_seed")):
            extra += 1
        if options.get("image_upload") or options.get("video_upload"):
            extra += 1
        widgets.append(Widget(name, kind, options, choices, extra))
    return widgets


def widget_inputs(node: dict, input_types: dict) -> dict[str, Any]:
    """Map a UI node's ``widgets_values`` to input names, dropping UI-only values. Raises on a count mismatch."""
    values = list(node.get("widgets_values") or [])
    widgets = widgets_of(input_types)
    expected = sum(1 + w.extra_values for w in widgets)
    if len(values) != expected:
        names = [w.name for w in widgets]
        raise ValueError(f"node {node['id']} ({node['type']}): {len(values)} widget values for widgets {names}")
    result, position = {}, 0
    for widget in widgets:
        result[widget.name] = values[position]
        position += 1 + widget.extra_values
    return result


def check_widget_value(widget: Widget, value: Any) -> str | None:
    """Why ``value`` is not acceptable for ``widget`` (None when it is)."""
    options = widget.options
    if widget.kind == "COMBO":
        return None if value in widget.choices else f"{value!r} is not one of {list(widget.choices)}"
    if widget.kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"{value!r} is not a boolean"
    if widget.kind == "STRING":
        return None if isinstance(value, str) else f"{value!r} is not a string"
    if widget.kind == "INT" and (isinstance(value, bool) or not isinstance(value, int)):
        return f"{value!r} is not an integer"
    if widget.kind == "FLOAT" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return f"{value!r} is not a number"
    if "min" in options and value < options["min"]:
        return f"{value} is below the minimum {options['min']}"
    if "max" in options and value > options["max"]:
        return f"{value} is above the maximum {options['max']}"
    return None


def ui_to_api(workflow: dict, input_types_of: dict[str, dict]) -> dict[str, dict]:
    """Convert a UI-format workflow to the API prompt format.

    ``input_types_of`` maps each node type to its ``INPUT_TYPES()`` dict (or the ``input`` part of ``/object_info``).
    Links win over widget values (a widget converted to an input); muted/bypassed and virtual nodes are dropped.
    """
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in VIRTUAL_NODE_TYPES or node.get("mode", 0) != 0:
            continue
        inputs = widget_inputs(node, input_types_of[node["type"]])
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                link = links[slot["link"]]
                inputs[slot["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
