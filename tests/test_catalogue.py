"""Published checkpoints by name: first-use download from a loopback server (through PTI_MODEL_MIRROR, so the real
catalogue entries are used), Range resume after Cancel, refused downloads deleted, user files never replaced."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from conftest import tensor_digest
from hostile_files import nvidia_pickle_bytes, tiny_generator
from loopback_server import closed_port_url, serve_files

from pti import catalogue, cli, downloads
from pti.checkpoints import CheckpointError, describe_checkpoint, load_generator
from pti.downloads import DownloadError, WeightStore


class Cancelled(Exception):
    """What a Cancel button raises from inside the progress callback."""


@pytest.fixture(scope="module")
def snapshot() -> tuple[torch.nn.Module, bytes]:
    G = tiny_generator(seed=3)
    return G, nvidia_pickle_bytes(G)


@pytest.fixture
def mirror(monkeypatch, snapshot):
    """A loopback server holding ``ffhq.pkl`` (a small NVIDIA-format snapshot), set as the model mirror."""
    monkeypatch.setattr(downloads, "CHUNK_BYTES", 1024)  # many progress calls for a small file
    with serve_files() as server:
        server.files["/ffhq.pkl"] = snapshot[1]
        monkeypatch.setenv(catalogue.MIRROR_VARIABLE, server.url + "/")
        yield server


def model_files(folder: Path) -> list[str]:
    """What a model list would show: visible checkpoint files."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and p.suffix == ".pkl")


def test_first_use_downloads_records_and_loads_then_reuses(tmp_path, mirror, snapshot):
    G, data = snapshot
    seen = []
    store = WeightStore.at([tmp_path], progress=lambda done, total: seen.append((done, total)))
    loaded = load_generator("ffhq-1024", store=store)
    assert tensor_digest(loaded.state_dict()) == tensor_digest(G.state_dict())
    assert mirror.requests == [("/ffhq.pkl", None)]
    assert seen[-1] == (len(data), len(data)) and len(seen) > 3
    record = catalogue.read_record(tmp_path / "ffhq.pkl")
    assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["size"] == len(data)
    assert record["url"] == mirror.url + "/ffhq.pkl" and record["name"] == "ffhq-1024"
    assert describe_checkpoint("ffhq-1024", store)["download"]["sha256"] == record["sha256"]
    assert model_files(tmp_path) == ["ffhq.pkl"]

    load_generator("ffhq-1024", store=store)
    assert len(mirror.requests) == 1, "a downloaded checkpoint is read from disk, not fetched again"


def test_cancel_leaves_nothing_listed_and_the_next_run_resumes(tmp_path, mirror, snapshot):
    G, data = snapshot

    def cancel_halfway(done: int, total: int) -> None:
        if done >= total // 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        load_generator("ffhq-1024", store=WeightStore.at([tmp_path], progress=cancel_halfway))
    assert model_files(tmp_path) == [], "a cancelled download is never offered as a model"
    kept = downloads.partial_path(tmp_path / "ffhq.pkl").stat().st_size
    assert len(data) // 2 <= kept < len(data)

    sent_before = mirror.bytes_sent
    loaded = load_generator("ffhq-1024", store=WeightStore.at([tmp_path]))
    assert mirror.requests[-1] == ("/ffhq.pkl", f"bytes={kept}-")
    assert mirror.bytes_sent - sent_before == len(data) - kept, "only the missing bytes are fetched"
    assert tensor_digest(loaded.state_dict()) == tensor_digest(G.state_dict())
    assert (tmp_path / "ffhq.pkl").read_bytes() == data
    assert not downloads.partial_path(tmp_path / "ffhq.pkl").exists()


def test_a_truncated_download_is_refused_by_the_reader_and_deleted(tmp_path, mirror, snapshot):
    mirror.files["/ffhq.pkl"] = snapshot[1][: len(snapshot[1]) * 2 // 3]
    with pytest.raises(CheckpointError, match=r"ffhq\.pkl.*deleted"):
        load_generator("ffhq-1024", store=WeightStore.at([tmp_path]))
    assert list(tmp_path.iterdir()) == []


def test_a_wrong_hash_is_deleted_with_an_error_naming_the_file(tmp_path, mirror, monkeypatch):
    pinned = catalogue.CatalogueEntry(**{**catalogue.CATALOGUE["ffhq-1024"].__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(catalogue.CATALOGUE, "ffhq-1024", pinned)
    with pytest.raises(DownloadError, match=r"ffhq\.pkl with SHA-256 [0-9a-f]{64}, expected 0{64}.*deleted"):
        catalogue.fetch("ffhq-1024", WeightStore.at([tmp_path]))
    assert list(tmp_path.iterdir()) == []


def test_html_instead_of_a_pickle_is_refused_and_nothing_runs(tmp_path, mirror):
    marker = tmp_path / "executed"
    mirror.content_type = "text/html"
    mirror.files["/ffhq.pkl"] = f"<html><script>open('{marker}', 'w')</script>Sign in</html>".encode()
    with pytest.raises(CheckpointError, match="not a readable StyleGAN checkpoint.*deleted"):
        load_generator("ffhq-1024", store=WeightStore.at([tmp_path / "models"]))
    assert not marker.exists()
    assert list((tmp_path / "models").iterdir()) == []


def test_no_network_names_the_url_and_the_offline_route(tmp_path, monkeypatch):
    url = closed_port_url()
    monkeypatch.setenv(catalogue.MIRROR_VARIABLE, url)
    with pytest.raises(DownloadError) as error:
        load_generator("ffhq-1024", store=WeightStore.at([tmp_path]))
    message = str(error.value)
    assert f"{url}/ffhq.pkl" in message and "fetch-model ffhq-1024 --to DIR" in message and str(tmp_path) in message
    assert "nvlabs-fi-cdn.nvidia.com" in message  # the publisher's URL, for a browser on another machine


def test_offline_store_never_downloads(tmp_path, mirror):
    with pytest.raises(DownloadError, match="not downloaded yet.*fetch-model ffhq-1024"):
        catalogue.fetch("ffhq-1024", WeightStore.at([tmp_path], download=False))
    assert mirror.requests == []


def test_a_users_file_under_a_catalogue_name_is_read_and_never_replaced(tmp_path, mirror):
    other = tiny_generator(seed=11)
    (tmp_path / "ffhq.pkl").write_bytes(nvidia_pickle_bytes(other))
    loaded = load_generator("ffhq-1024", store=WeightStore.at([tmp_path]))
    assert tensor_digest(loaded.state_dict()) == tensor_digest(other.state_dict())
    assert mirror.requests == []

    record = {"name": "ffhq-1024", "size": 12345, "sha256": "0" * 64}
    catalogue.record_path(tmp_path / "ffhq.pkl").write_text(json.dumps(record))
    before = (tmp_path / "ffhq.pkl").read_bytes()
    with pytest.raises(
        catalogue.CatalogueError, match=r"ffhq\.pkl is not the file downloaded as ffhq-1024.*not replaced"
    ):
        load_generator("ffhq-1024", store=WeightStore.at([tmp_path]))
    assert (tmp_path / "ffhq.pkl").read_bytes() == before and mirror.requests == []
    with pytest.raises(DownloadError, match="already exists"):
        downloads.download_file(mirror.url + "/ffhq.pkl", tmp_path / "ffhq.pkl")


def test_no_space_removes_the_partial_file_and_says_how_much_is_needed(tmp_path, mirror, snapshot, monkeypatch):
    downloads.partial_path(tmp_path / "ffhq.pkl").write_bytes(snapshot[1][:100])
    monkeypatch.setattr(downloads.shutil, "disk_usage", lambda folder: type("Usage", (), {"free": 10 << 20})())
    with pytest.raises(DownloadError, match=r"not enough disk space for ffhq\.pkl: \d+ MB more are needed"):
        catalogue.fetch("ffhq-1024", WeightStore.at([tmp_path]))
    assert list(tmp_path.iterdir()) == []


def test_unknown_name_lists_the_names():
    with pytest.raises(catalogue.CatalogueError, match="unknown catalogue model 'ffhq-2048'.*ffhq-1024.*stylegan3-r"):
        catalogue.entry("ffhq-2048")


def test_catalogue_holds_the_published_families():
    names = set(catalogue.CATALOGUE)
    wanted = {"ffhq-1024", "ffhq-256", "stylegan3-t-ffhq-1024", "stylegan3-r-ffhq-1024", "stylegan3-r-ffhqu-256"}
    assert wanted <= names and {"afhqv2-512", "metfaces-1024", "stylegan3-t-afhqv2-512"} <= names
    for item in catalogue.CATALOGUE.values():
        assert item.url.startswith("https://") and item.url.endswith("/" + item.filename)
        assert f"{item.resolution}" in item.filename or item.filename == "ffhq.pkl"
        assert item.architecture.split("-")[0] in item.filename or item.name == "ffhq-1024"
        assert catalogue.lookup(item.label) is item, "the Load StyleGAN label leads back to its entry"
    assert all(catalogue.CATALOGUE[n].directions == "ffhq" for n in ("ffhq-1024", "ffhq-512", "ffhq-256"))


def test_cli_fetch_model_to_a_folder_and_list(tmp_path, mirror, snapshot, capsys):
    assert cli.main(["fetch-model", "ffhq-1024", "--to", str(tmp_path / "carry")]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "carry" / "ffhq.pkl") in out and hashlib.sha256(snapshot[1]).hexdigest() in out
    assert "models/stylegan" in out
    assert cli.main(["fetch-model", "--list"]) == 0
    listing = capsys.readouterr().out
    assert (
        "ffhq-1024" in listing
        and "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl" in listing
    )
    assert "non-commercial" in listing and "~364 MB" in listing
    assert cli.main(["fetch-model", "nope"]) == 2
    assert "known names: ffhq-1024" in capsys.readouterr().err


def test_cli_checkpoint_name_downloads_into_the_weights_dir(tmp_path, mirror, monkeypatch, capsys):
    monkeypatch.setenv("PTI_WEIGHTS_DIR", str(tmp_path))
    assert cli.main(["info", "ffhq-1024"]) == 0
    out = capsys.readouterr().out
    assert "downloading" in out and "sha256" in out and str(tmp_path / "ffhq.pkl") in out
