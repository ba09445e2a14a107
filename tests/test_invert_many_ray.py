"""invert-many on a local two-CPU Ray cluster: the same manifest and retry rules as the local backend, with two
actors pulling photos from the driver's queue. One cluster for the module (starting Ray takes ~10 s); two runs:
one that crashes after two photos, and the command line resuming it."""

from __future__ import annotations

import pytest
import ray
import torch
from conftest import REPO_ROOT, make_generator
from many_photos import BROKEN, PHOTOS, STEPS, manifest_rows, write_photos

from pti.checkpoints import save_generator
from pti.cli import main
from pti.hashing import state_dict_hash
from pti.latent import synthesize
from pti.many import invert_many
from pti.saved_result import load_result


@pytest.fixture(scope="module")
def cluster():
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}},
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def crashed(cluster, tmp_path_factory):
    """Three photos and a broken file on two actors; the driver dies (an exception) once two rows are written."""
    G = make_generator()
    photos = write_photos(tmp_path_factory.mktemp("photos"), PHOTOS[:3])
    out = tmp_path_factory.mktemp("out")

    def crash_after_two(row: dict) -> None:
        if len(manifest_rows(out)[1]) == 2:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        invert_many(G, [photos], out, retries=1, backend="ray", actors=2, on_row=crash_after_two, **STEPS)
    return G, photos, out, manifest_rows(out)[1]


def test_the_crashed_run_recorded_whole_results_only(crashed):
    G, photos, out, rows = crashed
    assert len(rows) == 2 and all(row["status"] == "done" and row["attempts"] == 1 for row in rows)
    for row in rows:  # results came back as bytes and were written by the driver
        tuned, latent = load_result(out / row["name"], G)
        assert latent.generator_hash == state_dict_hash(G)
        assert not torch.equal(synthesize(tuned, latent), synthesize(G, latent))


def test_the_command_line_resumes_only_the_rest_each_photo_once(crashed, tmp_path, capsys):
    G, photos, out, before = crashed
    checkpoint = save_generator(G, tmp_path / "tiny.safetensors")  # the same weights: the manifest's model
    argv = ["invert-many", str(photos), "--out", str(out), "--checkpoint", str(checkpoint), "--init", "none"]
    argv += ["--steps-pivot", "2", "--steps-tune", "2", "--backend", "ray", "--actors", "2", "--retries", "1"]
    assert main(argv) == 1  # the broken file fails: exit status 1
    assert "1 done now, 2 done before, 1 failed now" in capsys.readouterr().out
    rows = manifest_rows(out)[1]
    assert rows[:2] == before
    everything = {str(photos / name) for name in (*PHOTOS[:3], BROKEN)}
    resumed = {row["sources"][0]: row for row in rows[2:]}
    assert set(resumed) == everything - {row["sources"][0] for row in before}  # only what the crash left
    broken = resumed.pop(str(photos / BROKEN))
    assert broken["status"] == "failed" and broken["attempts"] == 2 and "cannot read" in broken["error"]
    assert [row["status"] for row in resumed.values()] == ["done"]
    assert len({row["key"] for row in rows}) == len(rows) == 4  # every photo exactly once
    assert len({row["worker"] for row in rows[2:]}) == 2  # the two actors shared the work
    assert {row["worker"].rsplit(":", 1)[1] for row in rows} == {"cpu"}
