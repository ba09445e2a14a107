"""`python -m pti info`: prints a checkpoint's geometry, or one clear error line with exit status 2."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT, make_generator

from pti.checkpoints import save_generator
from pti.cli import main


def test_info_prints_resolution_and_num_ws(tmp_path, capsys):
    G = make_generator(64, "resnet")
    path = save_generator(G, tmp_path / "g.safetensors")
    assert main(["info", str(path)]) == 0
    lines = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    fields = {key.strip(): value.strip() for key, value in lines.items()}
    assert fields["resolution"] == "64"
    assert fields["num_ws"] == str(G.num_ws) == "10"
    assert fields["architecture"] == "resnet"
    assert fields["format"] == "pti-safetensors"


def test_info_reports_bad_files_without_traceback(tmp_path, capsys):
    bad = tmp_path / "model.pkl"
    bad.write_bytes(b"not a checkpoint at all")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a recognised generator checkpoint" in err and "Traceback" not in err


def test_info_runs_as_a_module(tmp_path):
    path = save_generator(make_generator(32), tmp_path / "g.safetensors")
    result = subprocess.run(
        [sys.executable, "-m", "pti", "info", str(path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "resolution: 32" in result.stdout and "num_ws: 8" in result.stdout
