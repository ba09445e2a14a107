"""invert-many with the local backend: one job per photo content, the manifest, retries, resume, refusals.

A tiny 32 px generator, two steps per stage and one CPU thread (two threads fight over a busy two-core machine, ten
times slower) keep each photo under a second; the first photo of the session also loads LPIPS.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, make_generator
from many_photos import BROKEN, PHOTOS, STEPS, manifest_rows, write_photos

from pti.checkpoints import save_generator
from pti.cli import main
from pti.hashing import state_dict_hash
from pti.latent import synthesize
from pti.many import invert_many
from pti.many_jobs import LOCK_FILE, MANIFEST_FILE, FolderBusy, ForeignManifest, folder_lock
from pti.saved_result import load_result, saved_results

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # 2 threads on a busy 2-core CPU ran ~10x slower


@pytest.fixture(scope="module")
def G():
    return make_generator()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = write_photos(tmp_path_factory.mktemp("photos"), PHOTOS[:3])
    (folder / "p0_copy.png").write_bytes((folder / "p0.png").read_bytes())  # same bytes: the same job
    return folder


def test_each_photo_once_and_a_broken_one_retried_then_failed(G, photos, tmp_path):
    out = tmp_path / "out"
    seen = []
    summary = invert_many(G, [photos], out, retries=1, on_row=seen.append, **STEPS)
    header, rows = manifest_rows(out)
    assert rows == seen == summary.rows
    assert header["model_hash"] == state_dict_hash(G) and header["settings"]["steps_tune"] == 2

    done = {row["sources"][0]: row for row in summary.done}
    assert sorted(Path(p).name for p in done) == ["p0.png", "p1.png", "p2.png"]  # p0_copy is p0's job
    p0 = done[str(photos / "p0.png")]
    assert p0["sources"] == [str(photos / "p0.png"), str(photos / "p0_copy.png")]
    assert p0["key"] == hashlib.sha256((photos / "p0.png").read_bytes()).hexdigest()
    for row in done.values():
        assert row["attempts"] == 1 and row["steps"] == {"projection": 2, "tuning": 2}
        assert row["seconds"] > 0 and np.isfinite(row["metrics"]["tuned"]["psnr"])
        tuned, latent = load_result(out / row["name"], G)  # the saved_result layout, reloadable
        assert latent.generator_hash == header["model_hash"]
        assert not torch.equal(synthesize(tuned, latent), synthesize(G, latent))

    assert p0["name"] == "p0-" + p0["key"][:12]
    assert saved_results(out) == sorted(row["name"] for row in done.values())  # what ComfyUI's Load PTI lists
    (failed,) = summary.failed
    assert failed["sources"] == [str(photos / BROKEN)] and failed["attempts"] == 2  # 1 + retries
    assert "cannot read" in failed["error"] and "outputs" not in failed
    assert not (out / failed["name"]).exists()
    assert [row["sources"][0] for row in rows][-1] == str(photos / BROKEN)  # retried after the others

    again = invert_many(G, [photos], out, retries=1, **STEPS)  # done photos are skipped, so are failed ones
    assert again.rows == [] and len(again.skipped_done) == 3 and len(again.skipped_failed) == 1
    retried = invert_many(G, [photos], out, retries=0, retry_failed=True, **STEPS)
    assert [(row["status"], row["attempts"]) for row in retried.rows] == [("failed", 1)]
    assert len(manifest_rows(out)[1]) == 5


def test_a_crashed_run_resumes_with_only_the_remaining_photos(G, photos, tmp_path, caplog):
    out = tmp_path / "out"

    def crash_after_two(row):
        if len(manifest_rows(out)[1]) == 2:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        invert_many(G, [photos], out, retries=0, on_row=crash_after_two, **STEPS)
    first = manifest_rows(out)[1]
    assert len(first) == 2
    with open(out / MANIFEST_FILE, "a") as f:
        f.write('{"type": "photo", "key": "half-writt')  # a run killed while appending

    resumed = invert_many(G, [photos], out, retries=0, **STEPS)
    assert "half-written" in caplog.text
    assert {row["key"] for row in resumed.rows}.isdisjoint(row["key"] for row in first)
    assert len(resumed.rows) == 2 and len(resumed.skipped_done) == 2  # 4 jobs: 3 photos + the broken file
    rows = manifest_rows(out)[1]
    assert len(rows) == 4 and len({row["key"] for row in rows}) == 4


def test_a_folder_of_another_model_or_settings_is_refused_unless_forced(G, tmp_path, capsys):
    photos = write_photos(tmp_path / "photos", PHOTOS[:1], broken=False)
    out = tmp_path / "out"
    invert_many(G, [photos], out, **STEPS)
    with open(out / MANIFEST_FILE, "a") as f:
        f.write('{"type": "photo", "key": "half-writt')  # a refusal must not even tidy this up
    before = (out / MANIFEST_FILE).read_bytes()

    with pytest.raises(ForeignManifest, match="other settings \\(seed 0 -> 3\\).*--force"):
        invert_many(G, [photos], out, seed=3, **STEPS)
    with pytest.raises(ForeignManifest, match="another model"):
        invert_many(make_generator(seed=1), [photos], out, **STEPS)
    checkpoint = save_generator(G, tmp_path / "tiny.safetensors")
    argv = ["invert-many", str(photos), "--out", str(out), "--checkpoint", str(checkpoint), "--seed", "3"]
    assert main([*argv, "--steps-pivot", "2", "--steps-tune", "2", "--init", "none"]) == 2
    assert "holds results of other settings (seed 0 -> 3)" in capsys.readouterr().err
    assert (out / MANIFEST_FILE).read_bytes() == before  # nothing changed

    forced = invert_many(G, [photos], out, seed=3, force=True, **STEPS)
    assert len(forced.done) == 1  # started over: the photo runs again under the new settings
    (kept,) = out.glob("manifest.replaced-*.jsonl")
    assert kept.read_bytes() == before
    assert manifest_rows(out)[0]["settings"]["seed"] == 3


def test_a_second_run_on_a_busy_folder_is_refused(G, photos, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with folder_lock(out):
        with pytest.raises(FolderBusy, match=f"in use by another invert-many run \\(pid {os.getpid()}"):
            invert_many(G, [photos], out, **STEPS)
    assert not (out / MANIFEST_FILE).exists()


def test_missing_inputs_are_refused_before_anything_runs(G, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no images in"):
        invert_many(G, [empty], tmp_path / "out")
    assert main(["invert-many", str(tmp_path / "nope.png"), "--out", str(tmp_path / "out")]) == 2
    assert "input not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_photo_without_a_face_fails_with_the_reason_when_aligning(G, tmp_path):
    photos = write_photos(tmp_path / "photos", PHOTOS[:1], broken=False)
    face = REPO_ROOT / "tests" / "data" / "photos" / "obama.jpg"
    summary = invert_many(G, [face, photos], tmp_path / "out", align="mtcnn", retries=0, **STEPS)
    assert [row["status"] for row in summary.rows] == ["done", "failed"]
    assert summary.failed[0]["error"].startswith("NoFaceFoundError")


def test_a_killed_process_leaves_no_stale_lock_and_the_cli_resumes(G, tmp_path):
    """A real ``python -m pti invert-many`` holds the folder (a second run is refused), is killed with SIGKILL
    after its first photo, and a new run finishes only the photos the killed one did not."""
    photos = write_photos(tmp_path / "photos")
    checkpoint = save_generator(G, tmp_path / "tiny.safetensors")
    out = tmp_path / "out"
    argv = [str(photos), "--out", str(out), "--checkpoint", str(checkpoint), "--init", "none", "--device", "cpu"]
    argv += ["--steps-pivot", "2", "--steps-tune", "2", "--retries", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "pti", "invert-many", *argv], env=env, cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 120
        while not (out / MANIFEST_FILE).is_file() or len(manifest_rows(out)[1]) < 1:
            assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first photo"
            time.sleep(0.05)
        with pytest.raises(FolderBusy, match=f"pid {process.pid}"):
            invert_many(G, [photos], out, **STEPS)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    first = {row["key"] for row in manifest_rows(out)[1]}
    assert 1 <= len(first) < 5 and (out / LOCK_FILE).is_file()

    assert main(["invert-many", *argv]) == 1  # the broken file fails: exit status 1
    rows = manifest_rows(out)[1]
    assert len(rows) == 5 and len({row["key"] for row in rows}) == 5  # every photo exactly once
    assert sum(row["status"] == "done" for row in rows) == 4


def test_photos_tuned_in_batches_match_one_at_a_time(G, photos, tmp_path):
    one = invert_many(G, [photos], tmp_path / "one", retries=0, **STEPS)
    batched = invert_many(G, [photos], tmp_path / "batched", retries=0, batch=2, **STEPS)
    assert [(r["key"], r["status"], r["steps"]) for r in batched.done] == [
        (r["key"], r["status"], r["steps"]) for r in one.done
    ]
    assert [r["error"] for r in batched.failed] == [r["error"] for r in one.failed]  # the broken file, alone
    assert [r["tuned_together"] for r in one.done] == [1, 1, 1]
    assert [r["tuned_together"] for r in batched.done] == [2, 2, 1]  # p0 and p1, then p2 (the broken file failed)
    for row in one.done:
        single, latent = load_result(tmp_path / "one" / row["name"], G)
        together, same_latent = load_result(tmp_path / "batched" / row["name"], G)
        assert torch.equal(latent.ws, same_latent.ws)  # each photo is projected alone either way
        apart = max((a - b).abs().max().item() for a, b in zip(single.parameters(), together.parameters()))
        assert apart < 1e-4  # float32 summation order, then fp16 delta storage
        assert not torch.equal(synthesize(together, latent), synthesize(G, latent))
    with pytest.raises(ValueError, match="batch > 1 tunes every weight"):
        invert_many(G, [photos], tmp_path / "rank", batch=2, rank=4, **STEPS)
