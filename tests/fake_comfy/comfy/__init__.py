"""Test double of ComfyUI's ``comfy`` package: only the modules the PTI nodes import."""
