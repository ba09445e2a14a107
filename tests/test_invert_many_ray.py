"""invert-many on a local two-CPU Ray cluster: the same manifest and retry rules as the local backend, with two
actors pulling photos from the driver's queue. One cluster for the module (starting Ray takes ~10 s)."""

from __future__ import annotations

import pytest
import ray
from conftest import REPO_ROOT, make_generator
from many_photos import BROKEN, PHOTOS, STEPS, manifest_rows, write_photos

from pti.checkpoints import save_generator
from pti.cli import main
from pti.hashing import state_dict_hash
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
def first_run(cluster, tmp_path_factory):
    """Three photos and a broken file on two actors, one retry."""
    G = make_generator()
    photos = write_photos(tmp_path_factory.mktemp("photos"), PHOTOS[:3])
    out = tmp_path_factory.mktemp("out")
    summary = invert_many(G, [photos], out, retries=1, backend="ray", actors=2, **STEPS)
    return G, photos, out, summary


def test_every_photo_is_done_once_and_the_broken_one_retried_then_failed(first_run):
    G, photos, out, summary = first_run
    assert [row["key"] for row in summary.rows] == [row["key"] for row in manifest_rows(out)[1]][: len(summary.rows)]
    assert sorted(row["sources"][0] for row in summary.done) == [str(photos / name) for name in PHOTOS[:3]]
    assert all(row["attempts"] == 1 and row["steps"]["tuning"] == 2 for row in summary.done)
    (failed,) = summary.failed
    assert failed["sources"] == [str(photos / BROKEN)] and failed["attempts"] == 2 and "cannot read" in failed["error"]
    assert len({row["worker"] for row in summary.rows}) == 2  # both actors worked
    assert {row["worker"].rsplit(":", 1)[1] for row in summary.rows} == {"cpu"}
    for row in summary.done:  # results came back as bytes and were written by the driver
        tuned, latent = load_result(out / row["name"], G)
        assert latent.generator_hash == state_dict_hash(G)


def test_a_resumed_run_on_the_command_line_processes_only_the_remaining_photos(first_run, tmp_path, capsys):
    G, photos, out, _ = first_run
    write_photos(photos, PHOTOS, broken=False)  # one more photo; the first three are rewritten with the same bytes
    checkpoint = save_generator(G, tmp_path / "tiny.safetensors")  # the same weights: the manifest's model
    argv = ["invert-many", str(photos), "--out", str(out), "--checkpoint", str(checkpoint), "--init", "none"]
    argv += ["--steps-pivot", "2", "--steps-tune", "2", "--backend", "ray", "--actors", "2"]
    before = manifest_rows(out)[1]
    assert main(argv) == 1  # the broken file failed in the first run: exit status 1
    printed = capsys.readouterr().out
    assert "1 done now, 3 done before, 0 failed now, 1 failed before (--retry-failed runs them again)" in printed
    rows = manifest_rows(out)[1]
    assert rows[: len(before)] == before
    assert [row["sources"][0] for row in rows[len(before) :]] == [str(photos / PHOTOS[3])]
    assert len({row["key"] for row in rows}) == len(rows)  # each photo once
