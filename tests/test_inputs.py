"""What a level records of its inputs besides config and code (core/inputs.py): library versions,
data fingerprints, and what launch says when reused levels had other ones."""

from __future__ import annotations

import os

from cli.render.launch import inputs_phrase
from core.inputs import FULL_HASH_BYTES, data_fingerprint, file_fingerprint, input_changes, library_versions

DIGITS_MLP = {"model": {"name": "mlp"}, "data": {"name": "digits"}}
VIT_BETON = {"model": {"name": "deit_tiny"}, "data": {"name": "beton", "train_path": "x"}}


def test_versions_come_from_metadata():
    got = library_versions(["numpy", "no-such-library-here"])
    assert got["numpy"] and got["no-such-library-here"] is None


def test_a_small_file_is_hashed_whole_a_large_one_at_both_ends(tmp_path):
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"a" * 1000)
    big.write_bytes(b"b" * (FULL_HASH_BYTES + 10))
    fs, fb = file_fingerprint(small), file_fingerprint(big)
    assert fs and fb and not fs["sampled"] and fb["sampled"] and fb["size"] == FULL_HASH_BYTES + 10
    with open(big, "r+b") as f:  # the last MiB: another beton's allocation table
        f.seek(FULL_HASH_BYTES)
        f.write(b"c")
    assert file_fingerprint(big)["sha256"] != fb["sha256"]
    assert file_fingerprint(tmp_path / "gone") is None


def test_the_mtime_is_recorded_not_compared(tmp_path):
    path = tmp_path / "train.beton"
    path.write_bytes(b"data")
    data = {"name": "beton", "train_path": str(path)}
    recorded = {"libraries": library_versions(), "data": data_fingerprint(data)}
    os.utime(path, (1, 1))  # copied elsewhere without its times
    train = {**VIT_BETON, "data": data}
    now = {"libraries": library_versions(), "data": data_fingerprint(data)}
    assert input_changes(recorded, train, now) == {}
    path.write_bytes(b"other")
    now["data"] = data_fingerprint(data)
    assert input_changes(recorded, train, now) == {"data": ["train_path"]}


def test_only_the_level_s_own_libraries_count():
    now = {"libraries": {"torch": "2", "numpy": "2", "timm": "2", "scikit-learn": "2"}, "data": {}}
    recorded = {"libraries": {**now["libraries"], "timm": "1"}, "data": {}}
    assert input_changes(recorded, DIGITS_MLP, now) == {}  # a digits MLP uses no timm
    assert input_changes(recorded, {**VIT_BETON, "data": {"name": "beton"}}, now) == {"libraries": {"timm": "1"}}
    assert input_changes({"code": "x"}, DIGITS_MLP, now) == {"unrecorded": True}


def test_launch_says_it_in_one_line():
    other = {
        "levels": 3,
        "libraries": {"torch": {"now": "2.4", "recorded": {"2.3": 3}}},
        "data": {"train_path": 1},
    }
    line = inputs_phrase(other)
    assert line is not None and "\n" not in line
    assert line == (
        "note: 3 reused levels were trained with other versions: torch 2.3 (now 2.4) "
        "and other data: data.train_path."
    )
    assert inputs_phrase({}) is None


def test_launch_counts_reused_levels_by_library_and_data():
    from types import SimpleNamespace

    from orchestrator.control.controller import other_inputs

    train = {"model": {"name": "mlp"}, "data": {"name": "digits"}}
    plan = SimpleNamespace(levels={lid: SimpleNamespace(train=train) for lid in "abc"})
    now = library_versions()
    provs = {
        "a": {"libraries": now, "data": {}},
        "b": {"libraries": {**now, "scikit-learn": "0.1"}, "data": {}},
        "c": {"code": "old"},  # trained before inputs were recorded
    }
    got = other_inputs(plan, provs)
    assert got == {
        "levels": 1,
        "libraries": {"scikit-learn": {"now": now["scikit-learn"], "recorded": {"0.1": 1}}},
        "data": {},
        "unrecorded": 1,
    }
    assert other_inputs(plan, {"a": provs["a"]}) == {}
