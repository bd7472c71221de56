"""The model registry: its schema, and that it names exactly the models a checkout holds, with
their sha256, sizes and cards, so a download is checked against the right figures."""
from __future__ import annotations

import copy
import json

import pytest

from MRSuperResLib.errors import MRSuperResError
from MRSuperResLib.files import sha256_of
from MRSuperResLib.models import registry
from MRSuperResLib.options import SHIPPED_MODELS_DIR


def test_the_registry_names_the_checkouts_models_with_their_figures():
    entries = registry.read_registry(registry.REGISTRY_FILE)
    names = {e["name"] for e in entries}
    held = {p.stem for p in SHIPPED_MODELS_DIR.glob("*.safetensors")}
    assert names == held, (names, held)
    for e in entries:
        weights = SHIPPED_MODELS_DIR / e["file"]
        assert sha256_of(weights) == e["sha256"] and weights.stat().st_size == e["size"], e["name"]
        card = SHIPPED_MODELS_DIR / e["card"]
        assert sha256_of(card) == e["card_sha256"], f"{card} changed: run scripts/maintainers/release_models.py"
        assert json.loads(card.read_text()).get("sha256") == e["sha256"]
        assert e["task"] == ("through-plane" if e["scale"] == 1 else f"in-plane x{e['scale']}")


@pytest.mark.parametrize("change, problem", [
    (lambda r: r.update(schema_version=2), "schema version 1"),
    (lambda r: r["models"][0].pop("sha256"), "'sha256' must be a str"),
    (lambda r: r["models"][0].update(size="33 MB"), "'size' must be a int"),
    (lambda r: r["models"][0].update(sha256="abc"), "not 64 hex digits"),
    (lambda r: r["models"][0].update(task="in-plane x4", scale=1), "does not fit scale 1"),
    (lambda r: r["models"][0].update(urls=["ftp://x/y.safetensors"]), "must be http"),
    (lambda r: r["models"].append(copy.deepcopy(r["models"][0])), "listed twice"),
    (lambda r: r["models"][0].update(file="other.safetensors"), "file and card must be"),
])
def test_a_registry_that_breaks_the_schema_is_refused_in_one_line(change, problem):
    data = json.loads(registry.REGISTRY_FILE.read_text())
    change(data)
    with pytest.raises(MRSuperResError, match=problem):
        registry.check_registry(data)


def test_a_mirror_comes_first_and_the_card_lies_beside_the_weights():
    entry = registry.read_registry(registry.REGISTRY_FILE)[0]
    urls = registry.urls_of(entry, environ={registry.MIRROR_ENV: "http://mirror.local/models/"})
    assert urls[0] == f"http://mirror.local/models/{entry['file']}" and urls[1:] == entry["urls"]
    assert registry.urls_of(entry, entry["card"], environ={})[0].endswith("/" + entry["card"])
