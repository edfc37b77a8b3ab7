"""Smoke run of the national-peak load test (~20 s): every persona's requests succeed.

The real thing end to end, at 2 % of the national burst peak: a real `ordonum serve` on a
free port in a temporary data directory pre-loaded by `ordonum demo`, bearer tokens for
distinct identities, a pool of prescriptions issued through the API, locust headless in a
subprocess with bench/locustfile.py, then the report and its plots. `make load` runs the
same pieces at full scale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import load  # noqa: E402
import loadkit  # noqa: E402


@pytest.mark.slow
def test_every_persona_gets_through_a_short_run_without_unexpected_failures(
    tmp_path: Path,
) -> None:
    data, run, results = tmp_path / "data", tmp_path / "run", tmp_path / "results"
    for d in (data, run, results):
        d.mkdir()
    load.preload(data, 2000, run / "demo.log")
    port = load.free_port()
    url = f"http://127.0.0.1:{port}"
    with load.server(data, port, None, run / "server.log") as srv:
        ids = loadkit.make_identities(data, 40, 30, 120)
        ids.save(run / "identities.json")
        load.issue_pool(url, ids, 150, run / "pool.jsonl", concurrency=8)
        # 2 % of the burst peak (~32 req/s) for 16 s, with the rare branches made common
        # enough that each one surely happens: manual entry, retry, over-dispensing, late.
        plan = loadkit.make_plan(
            identities=run / "identities.json",
            pool=run / "pool.jsonl",
            out=run,
            multiples=[0.02],
            first_ramp_s=2,
            first_hold_s=16,
            settle_s=1,
            user_rate=0.5,
            p_manual=0.25,
            p_retry=0.25,
            p_over=0.1,
            p_late=0.1,
        )
        plan.save(run / "plan.json")
        code, cpu = load.run_locust(
            run / "plan.json", plan, url, results, None, 1, {"server": srv.pid}, run / "locust.log"
        )
    log = (run / "locust.log").read_text()
    assert code == 0, log[-3000:]

    per_flow: dict[str, list[int]] = {}
    for flow, _sec, n, fail, exp, _hist in loadkit.load_records(run):
        acc = per_flow.setdefault(flow, [0, 0, 0])
        acc[0] += n
        acc[1] += fail
        acc[2] += exp
    assert set(per_flow) == set(loadkit.FLOWS), per_flow  # every persona, every branch
    assert {f: c[1] for f, c in per_flow.items() if c[1]} == {}, log[-3000:]
    assert per_flow["dispense"][2] > 0  # over-dispensing and late visits got their 409
    assert all(c[2] == 0 for f, c in per_flow.items() if f != "dispense")

    meta = {
        "date": "smoke",
        "machine": load.machine(),
        "server_cpus": "-",
        "locust_cpus": "-",
        "locust_cores": 1,
        "processes": 1,
        "locust_version": "-",
        "preload": 2000,
        "preload_s": 1.0,
        "pool": 150,
        "pool_s": 1.0,
        "prescribers": 40,
        "pharmacies": 30,
        "patients": 120,
        "user_rate": 0.5,
    }
    load.report(run, plan, results, cpu, meta, [])
    summary = json.loads((results / "load-summary.json").read_text())
    (step,) = summary["steps"]
    assert step["failures"] == 0
    assert step["requests"] > 0.8 * step["target_rps"]["total"] * 13  # the rate was offered
    inside = summary["server_side_first_step_ms"]  # the service's own access log, same window
    assert {"/v1/scan", "/v1/prescriptions", "/v1/prescriptions/{id}/dispensations"} <= set(inside)
    assert all(0 < r["p50"] <= r["p99"] for r in inside.values())
    seen = sum(r["requests"] for r in inside.values())
    assert 0.8 * step["requests"] <= seen <= 1.2 * step["requests"], (seen, step["requests"])
    assert "Inside the service at" in (results / "load-summary.md").read_text()
    # the rest of the machine, and the hypervisor's part of it, sampled over the step
    assert 0 <= step["cpu"]["steal"] <= step["cpu"]["others"] + 0.05, step["cpu"]
    assert (results / "load-throughput.png").stat().st_size > 10_000
    assert (results / "load-latency.png").stat().st_size > 10_000
    assert (results / "locust_stats.csv").exists()
