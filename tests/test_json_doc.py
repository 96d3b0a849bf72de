"""docs/json.md names every field the JSON carries: the JSON of one small finished sweep (trained
for real, so its levels carry provenance; a supervisor's lease and action recorded), of a sweep
with a search, and of a launch's dry run is walked, and every key, nested ones too, must appear in
the doc as `key`."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.sweeputil import REPO, tiny_spec, tp, write_spec
from tests.test_cli import search_sweep  # noqa: F401 - a fixture: a sweep with a search

DOC = REPO / "docs" / "json.md"
# Objects keyed by data, not by field names (states, grid axes, library names, data keys, codes,
# level paths, spec keys, searched parameters): their keys are values, and their values data.
DATA_KEYED = {
    "counts",
    "axes",
    "libraries",
    "data",
    "other_code",
    "bad_levels",
    "settings_changed",
    "best_params",
    "params",
}


def keys(doc: Any, where: str = "") -> dict[str, str]:
    """Every field name in a JSON document -> the first path it was seen at."""
    out: dict[str, str] = {}
    if isinstance(doc, list):
        for item in doc:
            for k, path in keys(item, where + "[]").items():
                out.setdefault(k, path)
    elif isinstance(doc, dict):
        for k, v in doc.items():
            out.setdefault(k, f"{where}.{k}")
            if k not in DATA_KEYED:
                for kk, path in keys(v, f"{where}.{k}").items():
                    out.setdefault(kk, path)
    return out


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """dense and imp at 0.5, one epoch a level (two levels), trained to the end, with a finished
    supervisor's lease and one action: (tmp, spec path, url)."""
    from db import supervision
    from db.store import Store

    tmp = tmp_path_factory.mktemp("jsondoc")
    spec = tiny_spec("jdoc")
    spec["grid"] = {"method": ["dense", "imp"], "sparsity": [0.5], "seed": [0]}
    path = write_spec(tmp, spec)
    tp("launch", str(path), cwd=tmp, check=True)
    url = f"sqlite:///{tmp / 'tp-results.db'}"
    store = Store(url)
    supervision.acquire(store, "jdoc", "me", host="h", pid=1, where="local", sched_id=None, lease_s=60.0)
    supervision.record(store, "jdoc", "me", "stop", "every run finished")
    supervision.release(store, "jdoc", "me", stopped="finished: every run COMPLETED")
    store.close()
    return tmp, path, url


def _json(tmp, *args: str) -> Any:
    proc = tp(*args, "--format", "json", cwd=tmp)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_every_field_of_the_json_is_in_docs_json_md(done, search_sweep):  # noqa: F811 - the fixture
    tmp, spec, url = done
    status = _json(tmp, "status", "jdoc", "--db", url)
    assert status["supervisor"]["actions"] and all(r["state"] == "COMPLETED" for r in status["runs"])
    run = next(r["run_id"] for r in status["runs"] if r["method"] == "imp")
    documents = {
        "status SWEEP": status,
        "status": _json(tmp, "status", "--db", url),
        "status RUN_ID": _json(tmp, "status", run, "--db", url),
        "query SWEEP": _json(tmp, "query", "jdoc", "--db", url),
        "query --levels": _json(tmp, "query", "jdoc", "--levels", "--db", url),
        "query --group-by": _json(tmp, "query", "jdoc", "--group-by", "method,sparsity", "--db", url),
        "launch --dry-run": _json(tmp, "launch", str(spec), "--dry-run", "--db", url),
    }
    assert documents["status RUN_ID"]["levels"][0]["provenance"]["attempts"]
    searching = tiny_spec("jsearch", grid={"method": ["imp"], "sparsity": [0.5], "seed": [0]})
    lr = {"type": "log_float", "low": 1e-3, "high": 0.3}
    searching["search"] = {"params": {"optimizer.lr": lr}, "n_trials": 2}
    documents["launch --dry-run (search)"] = _json(tmp, "launch", str(write_spec(tmp, searching)), "--dry-run")
    assert documents["launch --dry-run (search)"]["search"]["trials"] == 2
    stmp, surl = search_sweep
    documents["status SWEEP (search)"] = _json(stmp, "status", "srch", "--db", surl)
    documents["query --best"] = _json(stmp, "query", "srch", "--best", "--db", surl)
    assert documents["status SWEEP (search)"]["search"] and documents["query --best"][0]["best_params"]
    named = set(re.findall(r"`([^`\n]+)`", DOC.read_text()))
    missing = {
        f"{what}: {path}" for what, doc in documents.items() for k, path in keys(doc).items() if k not in named
    }
    assert not missing, "fields docs/json.md does not name (as `key`):\n" + "\n".join(sorted(missing))
