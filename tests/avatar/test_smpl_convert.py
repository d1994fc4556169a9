"""SMPL pickles are read once, by a restricted unpickler, into plain ``.npz`` files; nothing else is ever unpickled.

The synthetic model (``tests/helpers.py::synthetic_smpl``, SMPL's real sizes) is written the way the official
files are: a dict of arrays with a scipy sparse ``J_regressor`` and, for SMPL 1.0, chumpy arrays. Malicious pickles
plant a marker file if anything in them runs; the marker must never appear.
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from lucid_app.cli.main import main
from tests.helpers import synthetic_smpl


class _Ch:
    """Pickles like a chumpy leaf array: class ``chumpy.ch.Ch``, state ``{"x": array, ...}``."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self._dirty_vars = {"x"}
        self._make_dense = False


_Ch.__module__, _Ch.__qualname__, _Ch.__name__ = "chumpy.ch", "Ch", "Ch"


def pickle_with_fake_chumpy(data: object, protocol: int) -> bytes:
    """Pickle ``data`` while a fake ``chumpy.ch`` module exists, then remove it again (chumpy is never imported
    by the converter: reading must work without it)."""
    module = types.ModuleType("chumpy.ch")
    module.Ch = _Ch
    saved = {name: sys.modules.get(name) for name in ("chumpy", "chumpy.ch")}
    sys.modules.update({"chumpy": types.ModuleType("chumpy"), "chumpy.ch": module})
    try:
        return pickle.dumps(data, protocol=protocol)
    finally:
        for name, value in saved.items():
            if value is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = value


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return synthetic_smpl()


def official_style(reference: dict[str, np.ndarray]) -> dict[str, object]:
    """The reference arrays as an SMPL 1.0 file holds them: sparse J_regressor, chumpy shapedirs, extra fields."""
    data: dict[str, object] = dict(reference)
    data["J_regressor"] = scipy.sparse.csc_matrix(reference["J_regressor"])
    data["shapedirs"] = _Ch(reference["shapedirs"])
    data["bs_style"], data["bs_type"] = "lbs", "lrotmin"
    data["pose_training_info"] = {"num_poses": np.int64(1786), "ids": {3, 4}}
    return data


# ---------------------------------------------------------------- conversion


@pytest.mark.parametrize("protocol", [2, 5])
def test_converter_round_trips_the_arrays_exactly(reference: dict, tmp_path: Path, protocol: int) -> None:
    from lucid_app.avatar.body import SMPL_KEYS
    from lucid_app.avatar.smpl_convert import convert_smpl_folder

    assert "chumpy" not in sys.modules
    src = tmp_path / "download" / "smpl"
    src.mkdir(parents=True)
    (src / "SMPL_NEUTRAL.pkl").write_bytes(pickle_with_fake_chumpy(official_style(reference), protocol))
    assert "chumpy" not in sys.modules and "chumpy.ch" not in sys.modules

    written = convert_smpl_folder(tmp_path / "download", tmp_path / "models")
    assert written == {"neutral": tmp_path / "models" / "SMPL_NEUTRAL.npz"}
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["SMPL_NEUTRAL.npz"], "no temporary file left"
    with np.load(written["neutral"], allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(SMPL_KEYS)
        for key in SMPL_KEYS:
            assert npz[key].dtype == reference[key].dtype and np.array_equal(npz[key], reference[key]), key
    assert "chumpy" not in sys.modules, "the converter never imports chumpy"


def test_old_protocol_and_csr_matrices_convert_too(reference: dict, tmp_path: Path) -> None:
    # Protocol 0 goes through copy_reg._reconstructor and _codecs.encode, as old pickles do.
    from lucid_app.avatar.body import SMPL_KEYS
    from lucid_app.avatar.smpl_convert import smpl_arrays

    data = dict(reference, J_regressor=scipy.sparse.csr_matrix(reference["J_regressor"]))
    path = tmp_path / "SMPL_MALE.pkl"
    path.write_bytes(pickle.dumps(data, protocol=0))
    arrays = smpl_arrays(path)
    assert all(np.array_equal(arrays[key], reference[key]) for key in SMPL_KEYS)


def test_official_file_names_are_found(tmp_path: Path) -> None:
    from lucid_app.avatar.smpl_convert import find_smpl_pickles

    models = tmp_path / "smpl" / "models"
    models.mkdir(parents=True)
    for name in ("basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl", "basicModel_f_lbs_10_207_0_v1.0.0.pkl",
                 "basicmodel_f_lbs_10_207_0_v1.1.0.pkl", "notes.txt"):
        (models / name).write_bytes(b"")
    (tmp_path / "SMPL_NEUTRAL.pkl").write_bytes(b"")
    assert find_smpl_pickles(tmp_path) == {
        "neutral": tmp_path / "SMPL_NEUTRAL.pkl", "female": models / "basicmodel_f_lbs_10_207_0_v1.1.0.pkl"}


def test_cli_converts_and_prints_one_json_line(reference: dict, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from lucid_app.avatar.body import find_model_file

    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "SMPL_FEMALE.pkl").write_bytes(pickle.dumps(reference, protocol=2))
    assert main(["smpl-convert", str(tmp_path / "dl"), str(tmp_path / "models")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["command"] == "smpl-convert" and summary["vertices"] == 6890 and summary["joints"] == 24
    assert summary["converted"] == {"female": str(tmp_path / "models" / "SMPL_FEMALE.npz")}
    assert find_model_file(tmp_path / "models", "female") == tmp_path / "models" / "SMPL_FEMALE.npz"


def test_what_is_not_an_smpl_model_gets_a_clear_error(reference: dict, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from lucid_app.avatar.body import AvatarError
    from lucid_app.avatar.smpl_convert import read_smpl_pickle, smpl_arrays

    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps({**reference, "v_template": reference["v_template"][:100]}, protocol=2))
    with pytest.raises(AvatarError, match=r"v_template has shape \[100, 3\], expected \[6890, 3\]"):
        smpl_arrays(path)
    expression = _Ch(reference["shapedirs"])
    del expression.x
    expression.a = 1.0
    path.write_bytes(pickle_with_fake_chumpy({**reference, "shapedirs": expression}, protocol=2))
    with pytest.raises(AvatarError, match="shapedirs: a chumpy expression"):
        smpl_arrays(path)
    path.write_bytes(b"not a pickle")
    with pytest.raises(AvatarError, match="not a readable SMPL pickle"):
        read_smpl_pickle(path)
    assert main(["smpl-convert", str(tmp_path / "empty"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["smpl-convert", str(tmp_path / "empty"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no SMPL model" in err and "SMPL_NEUTRAL.pkl" in err and "Traceback" not in err


# ---------------------------------------------------------------- malicious files


class _TouchMarker:
    """A pickle that creates ``marker`` when loaded by a general unpickler."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


class _SystemMarker(_TouchMarker):
    def __reduce__(self):  # noqa: ANN204
        return os.system, (f"touch '{self.marker}'",)


def test_the_payload_is_live_with_a_plain_unpickler(tmp_path: Path) -> None:
    """The control for the refusals below: such a pickle does run code when loaded the usual way."""
    marker = tmp_path / "MARKER"
    pickle.loads(pickle.dumps(_TouchMarker(marker)))  # noqa: S301 - deliberately, on our own payload
    assert marker.exists()


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("payload", [_TouchMarker, _SystemMarker])
def test_smpl_convert_refuses_a_malicious_pickle(
    reference: dict, tmp_path: Path, capsys, protocol: int, payload: type  # noqa: ANN001
) -> None:
    from lucid_app.avatar.smpl_convert import UnsafePickleError, convert_smpl_folder

    marker = tmp_path / "MARKER"
    src = tmp_path / "download"
    src.mkdir()
    # The payload hides in an ordinary-looking SMPL file, next to a good model of another gender.
    evil = {**reference, "pose_training_info": {"note": payload(marker)}}
    (src / "SMPL_NEUTRAL.pkl").write_bytes(pickle.dumps(evil, protocol=protocol))
    (src / "SMPL_MALE.pkl").write_bytes(pickle.dumps(reference, protocol=protocol))
    with pytest.raises(UnsafePickleError, match=r"refuses to load global .+ \(not an array\)"):
        convert_smpl_folder(src, tmp_path / "models")
    assert main(["smpl-convert", str(src), str(tmp_path / "models")]) == 2
    err = capsys.readouterr().err
    assert "refuses to load global" in err and "Traceback" not in err
    assert not marker.exists(), "nothing in the pickle ran"
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir()), "nothing written"


def test_the_runtime_never_opens_a_pickle(tmp_path: Path) -> None:
    from lucid_app.avatar import front_part_map
    from lucid_app.avatar.body import AvatarError, build_body, find_model_file, load_smpl

    marker = tmp_path / "MARKER"
    smpl = tmp_path / "smpl"
    (smpl / "smpl").mkdir(parents=True)
    (smpl / "smpl" / "SMPL_NEUTRAL.pkl").write_bytes(pickle.dumps(_TouchMarker(marker)))
    for load in (lambda: find_model_file(smpl), lambda: load_smpl(smpl), lambda: build_body(smpl, "a_pose"),
                 lambda: front_part_map(smpl, "a_pose", size_px=16)):
        with pytest.raises(AvatarError, match="never loaded at run time") as err:
            load()
        assert f"python -m lucid_app smpl-convert {smpl / 'smpl'} {smpl}" in str(err.value)
    assert not marker.exists()


def test_a_bad_or_malicious_npz_is_refused(reference: dict, tmp_path: Path) -> None:
    from lucid_app.avatar.body import AvatarError, load_smpl, read_smpl_npz

    marker = tmp_path / "MARKER"
    path = tmp_path / "SMPL_NEUTRAL.npz"
    # An object array is stored as a pickle inside the .npz: allow_pickle=False refuses it unread.
    np.savez(path, **{**reference, "f": np.array([_TouchMarker(marker)], dtype=object)})
    with pytest.raises(AvatarError, match="cannot read .* as a converted SMPL model"):
        read_smpl_npz(path)
    with pytest.raises(AvatarError, match="cannot read"):
        load_smpl(tmp_path)
    assert not marker.exists()
    np.savez(path, **{k: v for k, v in reference.items() if k != "weights"})
    with pytest.raises(AvatarError, match="missing weights.*smpl-convert"):
        read_smpl_npz(path)
    np.savez(path, **{**reference, "f": reference["f"] + 7000})
    with pytest.raises(AvatarError, match="vertex indices"):
        read_smpl_npz(path)
    path.write_bytes(pickle.dumps(reference))
    with pytest.raises(AvatarError, match="cannot read"):
        read_smpl_npz(path)
