"""Property-based fuzzing of the whole API from its OpenAPI schema (schemathesis), against a real daemon process.

Every operation gets schema-conforming (positive) and schema-violating (negative) requests, with random path
parameters and with the ids of a real run and device. Half of them have one string of their body (a value or a
key, at any depth) or of their query replaced by hostile text, or one more query parameter of it: lone surrogates
and control characters, NUL among them. Every answer must come back within a time limit, none with a 5xx, a request holding text the ledger cannot
store must be refused, and a rejected request (4xx) must leave the ledger's runs, members and phases exactly as
they were. A stopped run seeded before the fuzzing must come out of it unchanged.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from telemetry_service.text import find_unstorable
from tests.daemon_proc import DaemonProcess

# Examples per operation, per mode (positive/negative) and per path-parameter choice: ~1 minute in all.
EXAMPLES = 20
REQUEST_TIMEOUT_S = 20.0
TABLES = {"runs": "id", "run_members": "id", "phases": "id"}
# Lone surrogates (Cs) and control characters (Cc, NUL among them) mixed into ordinary text. A URL cannot carry a
# lone surrogate, so query values get control characters only; a JSON body carries both as escapes.
# NUL is drawn on its own too: among the 65 control characters it would be rare.
CONTROL = st.characters(categories=["Cc"]) | st.just("\x00")
BODY_TEXT = st.text(st.characters(categories=["Cs"]) | CONTROL | st.characters(codec="utf-8"), min_size=1, max_size=12)
QUERY_TEXT = st.text(CONTROL | st.characters(codec="ascii"), min_size=1, max_size=12)


def _text_places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], bool]]:
    """(path, is_key) of every string value and every key in a JSON value."""
    if isinstance(value, str):
        return [(path, False)]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in [((*path, k), True), *_text_places(v, (*path, k))]]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _text_places(v, (*path, i))]
    return []


@st.composite
def _spoiled(draw: st.DrawFn, cases: st.SearchStrategy[Any]) -> Any:
    """A case, or the case with one string of its body or query replaced by hostile text (with none, one more
    query parameter of hostile text)."""
    case = draw(cases)
    if draw(st.booleans()):
        return case
    body = case.body if isinstance(case.body, (dict, list)) else None
    places = [("body", p) for p in _text_places(body)] if body is not None else []
    places += [("query", ((k,), False)) for k, v in (case.query or {}).items() if isinstance(v, str)]
    if not places:
        case.query = {**(case.query or {}), draw(QUERY_TEXT): draw(QUERY_TEXT)}
        return case
    where, (path, is_key) = draw(st.sampled_from(places))
    container = case.body if where == "body" else case.query
    for step in path[:-1]:
        container = container[step]
    if is_key:
        container[draw(BODY_TEXT)] = container.pop(path[-1])
    else:
        container[path[-1]] = draw(BODY_TEXT if where == "body" else QUERY_TEXT)
    return case


def _curl(case: Any) -> str:
    try:
        return case.as_curl_command()[:600]
    except ValueError:  # text curl's command line cannot hold
        return f"{case.method} {case.formatted_path} query={case.query!r} body={case.body!r}"[:600]


def _sent_unstorable(request: Any) -> bool:
    """Whether the request as it went out (a URL cannot carry everything a case holds) holds unstorable text."""
    query = [x for pair in parse_qsl(urlsplit(request.url).query, keep_blank_values=True) for x in pair]
    try:
        body = json.loads(request.body) if request.body else None
    except ValueError:  # not JSON: nothing the ledger could be asked to store
        body = None
    return bool(find_unstorable(query) or find_unstorable(body))


def _snapshot(path: Path) -> dict[str, str]:
    """A digest of every row of the tables requests can write (samples are the sampler's and keep growing)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as conn:
        return {table: hashlib.sha256(repr(conn.execute(f"SELECT * FROM {table} ORDER BY {key}").fetchall())
                                      .encode()).hexdigest()
                for table, key in TABLES.items()}


def _run_rows(path: Path, run_id: str) -> tuple[Any, ...]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as conn:
        run = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchall()
        phases = conn.execute("SELECT p.* FROM phases p JOIN runs r ON r.id = p.run_pk WHERE r.run_id = ? "
                              "ORDER BY p.id", (run_id,)).fetchall()
    return run, phases


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    d = DaemonProcess(tmp_path_factory.mktemp("fuzz"), "--simulate-gpus", "1").start()
    with d.client() as c:
        node = c.get("/healthz").json()["node"]
        for run_id in ("kept", "live"):
            assert c.post("/api/v1/runs", json={"name": run_id, "run_id": run_id, "tags": {"t": 1}}).status_code == 201
        now = time.time()
        steps = [{"name": "step", "start": now - 0.5 + 0.01 * i, "end": now - 0.495 + 0.01 * i, "step": i}
                 for i in range(30)]
        assert c.post("/api/v1/runs/kept/phases", json=steps).status_code == 202
        assert c.post("/api/v1/runs/live/phases", json=steps).status_code == 202
        time.sleep(0.5)
        assert c.post("/api/v1/runs/kept/stop", json={"metrics": {"accuracy": 0.9}}).status_code == 200
        # Samples just after the end still sharpen its answer (the update bracketing the end); then it is settled.
        time.sleep(2.5)
        kept_energy = c.get("/api/v1/runs/kept/energy").json()
    path = Path(d.db.removeprefix("sqlite:///"))
    yield d, path, node, kept_energy
    d.stop()


def test_fuzzed_requests_get_no_5xx_no_hang_and_rejections_change_nothing(seeded):
    d, path, node, kept_energy = seeded
    kept_before = _run_rows(path, "kept")
    schema = schemathesis.openapi.from_url(f"{d.url}/openapi.json")
    real_ids = {"run_id": "live", "node": node, "key": "simgpu0"}
    statuses: Counter[int] = Counter()
    unstorable: Counter[bool] = Counter()
    failures: list[str] = []

    def check(case: Any) -> None:
        before = _snapshot(path)
        started = time.monotonic()
        response = case.call(base_url=d.url, timeout=REQUEST_TIMEOUT_S)
        statuses[response.status_code] += 1
        hostile = _sent_unstorable(response.request)
        unstorable[hostile] += 1
        label = f"{case.method} {case.formatted_path} -> {response.status_code}"
        if response.status_code >= 500:
            failures.append(f"{label}: {response.text[:300]}\n  {_curl(case)}")
        elif response.status_code < 400 and hostile:
            failures.append(f"{label} took text the ledger cannot store\n  {_curl(case)}")
        elif response.status_code >= 400 and _snapshot(path) != before:
            failures.append(f"{label} was rejected but changed the ledger\n  {_curl(case)}")
        elif response.status_code < 400 and time.monotonic() - started > REQUEST_TIMEOUT_S:
            failures.append(f"{label} took {time.monotonic() - started:.1f} s")

    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        for fixed in (None, {k: v for k, v in real_ids.items() if k in names} or None):
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
                          suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
                @given(_spoiled(operation.as_strategy(generation_mode=mode, path_parameters=fixed)))
                def fuzz(case: Any) -> None:
                    check(case)

                try:
                    fuzz()
                except Unsatisfiable:  # nothing in this operation can be made invalid (no parameters, no body)
                    continue
            if not names:
                break
    cases = sum(statuses.values())
    print(f"\nfuzz: {cases} requests over {len(operations)} operations ({unstorable[True]} with unstorable text); "
          f"statuses {dict(sorted(statuses.items()))}")
    assert not failures, "\n".join(failures[:20])
    assert cases >= 10 * len(operations)
    assert statuses[422] > 0 and statuses[404] > 0 and any(200 <= s < 300 for s in statuses)
    assert unstorable[True] >= len(operations)
    # The stopped run nobody was allowed to touch is as it was, and so is its energy.
    assert _run_rows(path, "kept") == kept_before
    with d.client() as c:
        after = c.get("/api/v1/runs/kept/energy").json()
    assert after["total"]["energy_j"] == pytest.approx(kept_energy["total"]["energy_j"], rel=1e-12)
    assert after["phases"] == kept_energy["phases"]


NOW = time.time()
DEEP = '{"name": "deep", "config": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}"


@pytest.mark.parametrize("method,path,body,status,fragment", [
    ("POST", "/api/v1/runs", b'{"name": "\\ud800"}', 422, "unicode"),  # a lone surrogate cannot be stored
    ("POST", "/api/v1/runs", b'{"name": "a\\u0000b"}', 422, "NUL"),
    ("POST", "/api/v1/runs", DEEP.encode(), 422, "nested deeper"),
    ("POST", "/api/v1/runs", b'{"name": "x", "pid": true}', 422, "integer"),  # strict: no bool for int
    ("POST", "/api/v1/runs", b'{"name": "x", "pid": 12.0}', 422, "integer"),
    ("POST", "/api/v1/runs", b'{"name": "x", "started_at": 5e-324}', 422, "greater than or equal"),
    ("POST", "/api/v1/runs", '{"name": "x", "visible_devices": ["²"]}'.encode(), 201, "names no GPU"),
    ("POST", "/api/v1/runs", b'{"name": "x", "config": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "parsing"),
    ("POST", "/api/v1/runs/live/phases", f'[{{"name": "x", "start": {NOW}, "end": Infinity}}]'.encode(), 422, "finite"),
    ("POST", "/api/v1/runs/live/phases", b'[{"name": "' + b"n" * 256 + b'", "start": 1, "end": 2}]', 422, "255"),
    ("GET", "/api/v1/runs/live/samples?device=x/simgpu0&max_points=100001", b"", 422, "100000"),
])
def test_hostile_requests_found_by_hand(seeded, method, path, body, status, fragment):
    d, db, _, _ = seeded
    before = _snapshot(db)
    with d.client() as c:
        r = c.request(method, path, content=body or None, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert fragment.lower() in r.text.lower()
    if status >= 400:
        assert _snapshot(db) == before


def test_a_streamed_body_is_cut_off_at_the_limit(seeded):
    d, db, _, _ = seeded
    before = _snapshot(db)
    chunk = b'{"name": "x", "start": 1, "end": 2},' * 30_000  # ~1 MiB a chunk, no Content-Length
    with d.client() as c:
        r = c.post("/api/v1/runs/live/phases", content=iter([b"["] + [chunk] * 12 + [b"]"]),
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over 8388608 bytes" in r.json()["detail"]
    assert _snapshot(db) == before
