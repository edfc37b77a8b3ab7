"""`make load`: the national-peak load test, from an empty directory to a report.

1. Pre-load the store with ``ordonum demo --count N`` (1 million by default), timed.
2. Start the release build (``ordonum serve``) pinned with taskset to one core.
3. Mint bearer tokens for thousands of identities and issue a pool of prescriptions through
   the API (their papers: ID, QR token, access code) for the pharmacists to scan.
4. Run locust headless, pinned to the other core(s), with bench/locustfile.py: ramp to the
   national burst peak (bench/sizing.py), hold, then step up to find the knee. Locust's CSV
   and HTML go to bench/results/; the CPU use of the server and of locust is sampled.
5. Measure the raw per-endpoint ceiling (scan, dispense, create) with wrk.
6. Write bench/results/load-summary.md (+ .json) and PNG plots, and exit non-zero when, at
   the national burst peak, p99 > 50 ms, unexpected failures > 0.1 %, or the peak was not
   actually offered (achieved rate < 95 % of the target: coordinated omission guard).

Everything is bounded in time; the server and locust are stopped on every exit path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import loadkit

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SLO_P99_MS = 50.0
X = "\N{MULTIPLICATION SIGN}"  # steps are written x1, x2... as in the issue
SLO_FAILURES = 0.001
SUSTAINED = 0.95  # achieved / target rate below which a step is not credited
SHARED_CPU = 0.2  # cores taken by other processes above which a run is flagged
CPU_BOUND = 0.90  # share of its cores above which the load generator is the bottleneck


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ordonum_cli() -> list[str]:
    script = Path(sys.executable).with_name("ordonum")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ordonum"]


def pinned(cpus: str | None, cmd: list[str]) -> list[str]:
    if cpus is None or shutil.which("taskset") is None:
        return cmd
    return ["taskset", "-c", cpus, *cmd]


def preload(
    data: Path, count: int, log: Path, tokens: Path | None = None, store: str | None = None
) -> float:
    """``ordonum demo --count N [--tokens FILE] [--store URL]``: the wall time in seconds."""
    cmd = [*ordonum_cli(), "demo", "--count", str(count), "--data", str(data)]
    if store:
        cmd += ["--store", store]
    if tokens is not None:
        cmd += ["--tokens", str(tokens)]
    t = time.perf_counter()
    with log.open("w") as f:
        subprocess.run(
            cmd,
            check=True,
            stdout=f,
            stderr=subprocess.STDOUT,
            timeout=900,
        )
    return time.perf_counter() - t


def demo_papers(tokens: Path, count: int, seed: int = 5) -> list[dict[str, Any]]:
    """A sample of the pre-loaded prescriptions for the scanners (``demo --tokens`` TSV:
    id, token, access_code, prescriber_rpps, patient_nir, with a header row)."""
    if count <= 0 or not tokens.exists():
        return []
    lines = tokens.read_text().splitlines()[1:]
    picked = random.Random(seed).sample(lines, min(count, len(lines)))
    papers = []
    for line in picked:
        rx, token, code = line.split("\t")[:3]
        papers.append({"id": rx, "token": token, "access_code": code})
    return papers


@contextmanager
def server(
    data: Path,
    port: int,
    cpus: str | None,
    log: Path,
    env: dict[str, str] | None = None,
    store: str | None = None,
    workers: int = 1,
) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``ordonum serve`` process; stopped (SIGTERM, then SIGKILL) on exit."""
    import httpx

    serve = [*ordonum_cli(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    serve += ["--data", str(data)]
    if store:
        serve += ["--store", store, "--workers", str(workers)]
    cmd = pinned(cpus, serve)
    with log.open("ab") as f:  # the service's defaults unless told: durable writes, access log
        proc = subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"ordonum serve exited with {proc.returncode}: see {log}")
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ordonum serve not healthy after 120 s: see {log}")
                time.sleep(0.2)
            yield proc
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[Any], grace_s: float = 20) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def issue_pool(
    url: str,
    ids: loadkit.Identities,
    count: int,
    path: Path,
    concurrency: int = 32,
    quantity: int | None = None,
) -> float:
    """Issue ``count`` prescriptions through the API; their papers go to ``path`` (JSONL)."""
    import httpx

    meds = loadkit.load_medicines()
    rng = random.Random(count)
    jobs = []
    for _ in range(count):
        doc = rng.choice(ids.prescribers)
        body = loadkit.prescription_body(rng, rng.choice(ids.patients), meds, quantity)
        jobs.append((doc["bearer"], body))
    rows: list[dict[str, Any]] = []

    async def run() -> None:
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
            queue = iter(jobs)

            async def worker() -> None:
                for bearer, body in queue:
                    r = await client.post(
                        "/v1/prescriptions",
                        json=body,
                        headers={"Authorization": f"Bearer {bearer}"},
                    )
                    if r.status_code != 201:
                        raise RuntimeError(f"pool: HTTP {r.status_code}: {r.text[:300]}")
                    rows.append(loadkit.pool_entry(r.json(), body))

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    t = time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - t
    loadkit.write_jsonl(path, rows)
    return elapsed


class CpuSampler(threading.Thread):
    """Samples the CPU use (in cores) of process trees once a second, with wall time."""

    def __init__(self, pids: dict[str, int], period_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pids, self.period_s = pids, period_s
        self.samples: list[dict[str, float]] = []
        self._halt = threading.Event()

    @staticmethod
    def _busy_s() -> tuple[float, float]:
        """CPU seconds the machine was busy so far (steal included: the hypervisor ran
        something else on our cores), and of them stolen."""
        import psutil

        t = psutil.cpu_times()
        steal = float(getattr(t, "steal", 0.0))
        return float(sum(t) - t.idle - getattr(t, "iowait", 0.0)), steal

    def _all(self) -> dict[str, float]:
        cur = {k: loadkit.cpu_seconds(p) for k, p in self.pids.items()}
        cur["machine"], cur["steal"] = self._busy_s()
        return cur

    def run(self) -> None:
        last, t_last = self._all(), time.time()
        while not self._halt.wait(self.period_s):
            now, cur = time.time(), self._all()
            sample = {"t": now}
            for k in cur:
                sample[k] = (cur[k] - last[k]) / (now - t_last)
            # what the rest of the machine took: other users of these cores skew a run (the
            # hypervisor's steal among them, also given apart)
            sample["others"] = max(0.0, sample["machine"] - sum(sample[k] for k in self.pids))
            self.samples.append(sample)
            last, t_last = cur, now

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def run_locust(
    plan_path: Path,
    plan: loadkit.Plan,
    url: str,
    results: Path,
    cpus: str | None,
    processes: int,
    watch: dict[str, int],
    log: Path,
) -> tuple[int, list[dict[str, float]]]:
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(BENCH / "locustfile.py"),
        "--headless",
        "--host",
        url,
        "--csv",
        str(results / "locust"),
        "--html",
        str(results / "locust.html"),
        "--stop-timeout",
        "5",
        "--loglevel",
        "WARNING",
        "--only-summary",
    ]
    if processes > 1:
        cmd += ["--processes", str(processes)]
    env = {
        **os.environ,
        "ORDONUM_LOAD_PLAN": str(plan_path),
        "ORDONUM_LOAD_WORKERS": str(max(1, processes)),
        "PYTHONPATH": str(BENCH),
    }
    with log.open("wb") as f:
        proc = subprocess.Popen(pinned(cpus, cmd), stdout=f, stderr=subprocess.STDOUT, env=env)
        sampler = CpuSampler({**watch, "locust": proc.pid})
        sampler.start()
        try:
            proc.wait(timeout=plan.duration_s + 90)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # locust writes its reports on SIGINT
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        finally:
            sampler.stop()
            stop(proc)
    return proc.returncode, sampler.samples


# --- wrk: the raw ceiling per endpoint ---------------------------------------------------------


@dataclass
class WrkResult:
    endpoint: str
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    requests: int
    note: str = ""
    cpu_us: float = math.nan  # the server's CPU time per request (every thread, kernel too)


# --- analysis ----------------------------------------------------------------------------------

Row = tuple[str, int, int, int, int, dict[int, int]]


@dataclass
class FlowStats:
    requests: int = 0
    failures: int = 0
    expected_409: int = 0
    hist: dict[int, int] = field(default_factory=dict)

    def add(self, n: int, fail: int, exp: int, hist: dict[int, int]) -> None:
        self.requests += n
        self.failures += fail
        self.expected_409 += exp
        for k, v in hist.items():
            self.hist[k] = self.hist.get(k, 0) + v

    def p(self, q: float) -> float:
        return loadkit.percentile_ms(self.hist, q)

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass
class StageResult:
    stage: loadkit.Stage
    seconds: float
    flows: dict[str, FlowStats]
    total: FlowStats
    achieved: dict[str, float]  # per sizing flow and "total", req/s
    cpu: dict[str, float]  # mean cores used over the window, per watched process
    locust_cores: float

    @property
    def sustained(self) -> bool:
        return self.achieved["total"] >= SUSTAINED * self.stage.target_rps["total"]

    @property
    def within_slo(self) -> bool:
        return (
            self.total.requests > 0
            and self.total.p(0.99) <= SLO_P99_MS
            and self.total.failure_ratio <= SLO_FAILURES
        )

    @property
    def locust_bound(self) -> bool:
        return self.cpu.get("locust", 0.0) >= CPU_BOUND * self.locust_cores

    @property
    def passed(self) -> bool:
        return self.sustained and self.within_slo

    def verdict(self) -> str:
        if self.passed:
            return "within SLO" + ("; machine shared with other processes" if self.shared else "")
        why = []
        if not self.sustained:
            why.append("rate not sustained")
        if self.total.requests and self.total.p(0.99) > SLO_P99_MS:
            why.append("p99 > 50 ms")
        if self.total.failure_ratio > SLO_FAILURES:
            why.append("failures > 0.1 %")
        if self.locust_bound:
            why.append("**locust CPU-bound**")
        if self.shared:
            why.append("machine shared with other processes")
        return ", ".join(why)

    @property
    def shared(self) -> bool:
        """Other processes took more than a fifth of a core: the step measured less."""
        return self.cpu.get("others", 0.0) > SHARED_CPU


def analyse(
    rows: Sequence[Row],
    plan: loadkit.Plan,
    t0: float,
    cpu: Sequence[dict[str, float]],
    locust_cores: float,
) -> list[StageResult]:
    out = []
    for stage in plan.stages:
        lo, hi = stage.window(plan.settle_s)
        first, last = math.ceil(t0 + lo), math.floor(t0 + hi)  # whole seconds inside
        flows: dict[str, FlowStats] = defaultdict(FlowStats)
        total = FlowStats()
        for flow, sec, n, fail, exp, hist in rows:
            if first <= sec < last:
                flows[flow].add(n, fail, exp, hist)
                total.add(n, fail, exp, hist)
        seconds = max(1, last - first)
        achieved: dict[str, float] = defaultdict(float)
        for flow, st in flows.items():
            achieved[loadkit.FLOWS.get(flow, flow)] += st.requests / seconds
        achieved["total"] = total.requests / seconds
        window = [s for s in cpu if first <= s["t"] < last]
        keys = {k for s in window for k in s if k != "t"}
        mean_cpu = {k: sum(s[k] for s in window) / len(window) for k in keys} if window else {}
        out.append(
            StageResult(stage, seconds, dict(flows), total, dict(achieved), mean_cpu, locust_cores)
        )
    return out


def server_side_ms(log: Path, lo: float, hi: float) -> dict[str, list[float]]:
    """Per route template, the service's own time for each request that ended in
    ``[lo, hi)`` (Unix s): its access log's ``ms``, from the request entering the app to its
    last byte handed to the socket. What locust measures on top is the wait before the app
    (socket, event loop), the network and the client itself."""
    out: dict[str, list[float]] = defaultdict(list)
    if not log.exists():
        return out
    with log.open("rb") as f:
        for line in f:
            if b'"msg":"request"' not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if lo <= entry.get("ts", 0.0) < hi:
                out[entry["route"]].append(float(entry["ms"]))
    for times in out.values():
        times.sort()
    return out


def quantile(sorted_ms: Sequence[float], q: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))] if sorted_ms else math.nan


def server_cpu(r: StageResult) -> float:
    """Cores used by the system under test: the service's processes and PostgreSQL's."""
    return r.cpu.get("server", math.nan) + r.cpu.get("postgres", 0.0)


def cpu_per_request_us(r: StageResult) -> float:
    """Server CPU time per request: what a step costs, whatever else the machine did."""
    rate = r.achieved.get("total", 0.0)
    return server_cpu(r) * 1e6 / rate if rate > 0 else math.nan


def backend_label(meta: dict[str, Any]) -> str:
    if meta.get("store", "embedded") == "embedded":
        return "embedded store, 1 process"
    return f"PostgreSQL store (same CPUs), {meta.get('workers', 1)} worker process(es)"


def knee(results: Sequence[StageResult]) -> StageResult | None:
    """The highest step reached with every step up to it within the SLO at its full rate."""
    best = None
    for r in results:
        if not r.passed:
            break
        best = r
    return best


def gate(results: Sequence[StageResult]) -> tuple[bool, str]:
    peak = next((r for r in results if r.stage.multiple == 1), None)
    if peak is None:
        return False, "the plan has no step at the national burst peak (x1)"
    if peak.passed:
        return True, (
            f"national burst peak held: {peak.achieved['total']:,.0f} req/s, "
            f"p99 {peak.total.p(0.99):.1f} ms, unexpected failures "
            f"{peak.total.failure_ratio:.3%}"
        )
    return False, f"at the national burst peak: {peak.verdict()}"


# --- report -----------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    py = platform.python_version()
    return f"{model}, {os.cpu_count()} cores, Linux {platform.release()}, Python {py}"


def fmt_ms(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.1f}"


def summary_md(
    results: Sequence[StageResult],
    meta: dict[str, Any],
    wrk: Sequence[WrkResult],
    verdict: tuple[bool, str],
    server_side: dict[str, list[float]] | None = None,
) -> str:
    k = knee(results)
    lines = [
        "# Load test: national peak",
        "",
        f"- date: {meta['date']}",
        f"- machine: {meta['machine']}",
        f"- server: `ordonum serve` (release build), {backend_label(meta)}, pinned to CPU "
        f"{meta['server_cpus']}; locust {meta['locust_version']} pinned to CPU "
        f"{meta['locust_cpus']} "
        f"({meta['processes']} process(es))",
        f"- store before the run: {meta['preload']:,} prescriptions loaded by `ordonum demo` in "
        f"{meta['preload_s']:.1f} s ({meta['preload'] / max(meta['preload_s'], 1e-9):,.0f}/s), "
        f"plus {meta['pool']:,} issued through the API in {meta['pool_s']:.1f} s; the "
        f"pharmacists scan those and {meta.get('demo_papers', 0):,} pre-loaded ones",
        f"- identities: {meta['prescribers']:,} prescribers, {meta['pharmacies']:,} pharmacies, "
        f"{meta['patients']:,} patients, each with its own bearer token",
        f"- pacing: constant throughput, {meta['user_rate']:g} requests/s per user; a step counts "
        f"only if its achieved rate is ≥ {SUSTAINED:.0%} of the target",
        "",
        f"**Gate ({'PASS' if verdict[0] else 'FAIL'})**: {verdict[1]}.",
        "",
    ]
    if k is None:
        lines.append("**Knee**: not reached: the first step already missed the SLO or its rate.")
    else:
        nxt = next((r for r in results if r.stage.start_s > k.stage.start_s), None)
        bound = ""
        if nxt is not None and nxt.locust_bound:
            bound = (
                " The next step was limited by the load generator (locust CPU-bound), so the "
                "server's own knee may be higher: see the wrk ceiling."
            )
        elif nxt is None:
            bound = " It is the last step of the plan: the knee is at least this."
        lines.append(
            f"**Knee**: {X}{k.stage.multiple:g} the national burst peak "
            f"({k.achieved['total']:,.0f} mixed req/s, p99 {k.total.p(0.99):.1f} ms), "
            f"locust at {k.cpu.get('locust', math.nan):.0%} of {k.locust_cores:g} core(s).{bound}"
        )
    lines += [
        "",
        "| step | target req/s | achieved req/s | p50 ms | p95 ms | p99 ms | max ms | "
        "unexpected failures | expected 409 | server CPU | server CPU µs/req | locust CPU | "
        "other processes CPU | of it, hypervisor steal | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        t = r.total
        lines.append(
            f"| {X}{r.stage.multiple:g} | {r.stage.target_rps['total']:,.0f} | "
            f"{r.achieved['total']:,.0f} | {fmt_ms(t.p(0.5))} | {fmt_ms(t.p(0.95))} | "
            f"{fmt_ms(t.p(0.99))} | {fmt_ms(t.p(1.0))} | {t.failures:,} ({t.failure_ratio:.2%}) | "
            f"{t.expected_409:,} | {server_cpu(r):.0%} | "
            f"{cpu_per_request_us(r):,.0f} | {r.cpu.get('locust', math.nan):.0%} | "
            f"{r.cpu.get('others', math.nan):.0%} | {r.cpu.get('steal', math.nan):.0%} | "
            f"{r.verdict()} |"
        )
    for r in results[:1] + ([k] if k is not None and k is not results[0] else []):
        lines += [
            "",
            f"Per flow at {X}{r.stage.multiple:g} ({r.seconds:.0f} s measured):",
            "",
            "| flow | req/s | p50 ms | p95 ms | p99 ms | unexpected failures | expected 409 |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name in loadkit.FLOWS:
            st = r.flows.get(name)
            if st is None:
                continue
            lines.append(
                f"| {name} | {st.requests / r.seconds:,.1f} | {fmt_ms(st.p(0.5))} | "
                f"{fmt_ms(st.p(0.95))} | {fmt_ms(st.p(0.99))} | {st.failures:,} | "
                f"{st.expected_409:,} |"
            )
        lines += ["", "| sizing flow | target req/s | achieved req/s |", "|---|---:|---:|"]
        for f, target in r.stage.target_rps.items():
            lines.append(f"| {f} | {target:,.0f} | {r.achieved.get(f, 0.0):,.0f} |")
    if server_side:
        lines += [
            "",
            f"Inside the service at {X}{results[0].stage.multiple:g} (its access log: from the "
            "request entering the app to its last byte handed to the socket; locust's "
            "latency adds the wait before the app, the network and the client):",
            "",
            "| route | requests | p50 ms | p95 ms | p99 ms |",
            "|---|---:|---:|---:|---:|",
        ]
        for route, times in sorted(server_side.items(), key=lambda kv: -len(kv[1])):
            lines.append(
                f"| `{route}` | {len(times):,} | {fmt_ms(quantile(times, 0.5))} | "
                f"{fmt_ms(quantile(times, 0.95))} | {fmt_ms(quantile(times, 0.99))} |"
            )
    if wrk:
        lines += [
            "",
            "Raw ceiling per endpoint (wrk with `make bench-http`'s script, after the locust run, "
            "server restarted on the same data with the per-identity rate limit lifted):",
            "",
            "| endpoint | req/s | server CPU µs/req | p50 ms | p99 ms | requests | non-2xx "
            "| note |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for w in wrk:
            cpu_us = "—" if math.isnan(w.cpu_us) else f"{w.cpu_us:,.0f}"
            lines.append(
                f"| {w.endpoint} | {w.rps:,.0f} | {cpu_us} | {fmt_ms(w.p50_ms)} | "
                f"{fmt_ms(w.p99_ms)} | {w.requests:,} | {w.non_2xx:,} | {w.note} |"
            )
    lines += [
        "",
        "![throughput and CPU](load-throughput.png)",
        "",
        "![latency per flow](load-latency.png)",
        "",
    ]
    return "\n".join(lines)


def plot(
    rows: Sequence[Row],
    plan: loadkit.Plan,
    t0: float,
    cpu: Sequence[dict[str, float]],
    out: Path,
    window_s: int = 5,
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    per_sec: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    hists: dict[str, dict[int, FlowStats]] = defaultdict(lambda: defaultdict(FlowStats))
    for flow, sec, n, fail, exp, hist in rows:
        x = sec - int(t0)
        per_sec[flow][x] += n
        per_sec["total"][x] += n
        hists[flow][x // window_s].add(n, fail, exp, hist)
    end = int(plan.duration_s) + 1
    xs = list(range(end))
    bounds = [s.start_s for s in plan.stages[1:]]
    flows = [f for f in loadkit.FLOWS if f in per_sec]

    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    target = [
        next((s.target_rps["total"] for s in plan.stages if s.start_s <= x < s.end_s), 0.0)
        for x in xs
    ]
    ax1.plot(xs, [per_sec["total"].get(x, 0) for x in xs], label="achieved", lw=1)
    ax1.plot(xs, target, label="target (hold)", lw=1, ls="--", color="k")
    ax1.set_ylabel("mixed req/s")
    ax1.set_title("National peak load test: throughput (steps are multiples of the burst peak)")
    for flow in flows:
        ax2.plot(xs, [per_sec[flow].get(x, 0) for x in xs], label=flow, lw=0.8)
    ax2.set_ylabel("req/s per flow")
    cpu_t = [s["t"] - t0 for s in cpu]
    keys = ("server", "postgres", "locust", "others", "steal")
    for key in (k for k in keys if any(k in s for s in cpu)):
        ax3.plot(cpu_t, [100 * s.get(key, math.nan) for s in cpu], label=f"{key} CPU", lw=1)
    ax3.set_ylabel("CPU % of one core")
    ax3.set_xlabel("seconds since start")
    for ax in (ax1, ax2, ax3):
        for b in bounds:
            ax.axvline(b, color="grey", lw=0.5, ls=":")
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    for s in plan.stages:
        ax1.annotate(f"{X}{s.multiple:g}", (s.start_s + 1, 0), fontsize=8, va="bottom")
    fig.tight_layout()
    p1 = out / "load-throughput.png"
    fig.savefig(p1, dpi=80)
    plt.close(fig)

    ncol = 2
    nrow = math.ceil(len(flows) / ncol) or 1
    fig, axes = plt.subplots(nrow, ncol, figsize=(11, 2.6 * nrow), sharex=True, squeeze=False)
    for ax, flow in zip(axes.flat, flows, strict=False):
        ws = sorted(hists[flow])
        wx = [w * window_s + window_s / 2 for w in ws]
        for q, style in ((0.5, "-"), (0.95, "--"), (0.99, ":")):
            ax.plot(wx, [hists[flow][w].p(q) for w in ws], style, lw=1, label=f"p{q * 100:g}")
        ax.axhline(SLO_P99_MS, color="red", lw=0.6, label="SLO p99 50 ms")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(flow, fontsize=9)
        ax.set_ylabel("ms")
        for b in bounds:
            ax.axvline(b, color="grey", lw=0.5, ls=":")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(flows) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("seconds since start")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"Latency per flow ({window_s} s windows)")
    fig.tight_layout()
    p2 = out / "load-latency.png"
    fig.savefig(p2, dpi=80)
    plt.close(fig)
    return [p1, p2]


def summary_json(results: Sequence[StageResult], meta: dict[str, Any], ok: bool) -> dict[str, Any]:
    k = knee(results)
    return {
        **meta,
        "gate_passed": ok,
        "knee_multiple": k.stage.multiple if k else None,
        "knee_rps": k.achieved["total"] if k else None,
        "steps": [
            {
                "multiple": r.stage.multiple,
                "target_rps": r.stage.target_rps,
                "achieved_rps": r.achieved,
                "p50_ms": r.total.p(0.5),
                "p95_ms": r.total.p(0.95),
                "p99_ms": r.total.p(0.99),
                "requests": r.total.requests,
                "failures": r.total.failures,
                "expected_409": r.total.expected_409,
                "cpu": r.cpu,
                "locust_bound": r.locust_bound,
                "machine_shared": r.shared,
                "verdict": r.verdict(),
            }
            for r in results
        ],
    }


def report(
    run: Path,
    plan: loadkit.Plan,
    results_dir: Path,
    cpu: Sequence[dict[str, float]],
    meta: dict[str, Any],
    wrk: Sequence[WrkResult],
) -> bool:
    rows = loadkit.load_records(Path(plan.out))
    t0 = json.loads((Path(plan.out) / "shape.json").read_text())["t0"]
    results = analyse(rows, plan, t0, cpu, meta["locust_cores"])
    ok, why = gate(results)
    lo, hi = plan.stages[0].window(plan.settle_s)
    inside = server_side_ms(run / "server.log", t0 + lo, t0 + hi)
    (results_dir / "load-summary.md").write_text(summary_md(results, meta, wrk, (ok, why), inside))
    summary = summary_json(results, meta, ok)
    summary["server_side_first_step_ms"] = {
        route: {"requests": len(t), **{f"p{q}": quantile(t, q / 100) for q in (50, 95, 99)}}
        for route, t in inside.items()
    }
    (results_dir / "load-summary.json").write_text(json.dumps(summary, indent=2, default=str))
    plot(rows, plan, t0, cpu, results_dir)
    return ok


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preload", type=int, default=1_000_000, help="prescriptions loaded first")
    ap.add_argument("--pool", type=int, default=5000, help="prescriptions issued via the API")
    ap.add_argument(
        "--demo-papers", type=int, default=20000, help="pre-loaded prescriptions also scanned"
    )
    ap.add_argument("--multiples", default="1,2,5,10", help="steps, as multiples of the burst peak")
    ap.add_argument("--first-hold", type=float, default=60.0, help="seconds at the peak")
    ap.add_argument("--step-hold", type=float, default=30.0, help="seconds at each step")
    ap.add_argument("--user-rate", type=float, default=5.0, help="requests/s per locust user")
    ap.add_argument("--server-cpus", default="0", help="taskset CPU list for the server")
    ap.add_argument("--locust-cpus", default="1", help="taskset CPU list for locust and wrk")
    ap.add_argument("--processes", type=int, default=1, help="locust processes (workers)")
    ap.add_argument("--prescribers", type=int, default=5000)
    ap.add_argument("--pharmacies", type=int, default=3000)
    ap.add_argument("--patients", type=int, default=12000)
    ap.add_argument("--wrk-seconds", type=int, default=10, help="0 skips the wrk ceiling")
    ap.add_argument("--results", type=Path, default=BENCH / "results")
    ap.add_argument("--work", type=Path, default=None, help="work dir (default: a temp dir)")
    ap.add_argument(
        "--store",
        default=None,
        help="postgresql://... to run the service on PostgreSQL (default: the embedded store)",
    )
    ap.add_argument(
        "--pg",
        action="store_true",
        help="start a throwaway PostgreSQL cluster (bench/pgcluster.py) on the server CPUs "
        "and use it as --store",
    )
    ap.add_argument("--workers", type=int, default=1, help="service processes (needs PostgreSQL)")
    args = ap.parse_args(argv)
    if args.workers > 1 and not (args.store or args.pg):
        ap.error("--workers > 1 needs --store postgresql://... or --pg")

    results_dir: Path = args.results
    results_dir.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="ordonum-load-"))
    data, run = work / "data", work / "run"
    data.mkdir(parents=True, exist_ok=True)
    run.mkdir(parents=True, exist_ok=True)
    print(f"work dir: {work}", flush=True)
    cluster = None
    try:
        store: str | None = args.store
        if args.pg:
            cluster = start_pg(args.server_cpus)
            store = cluster.create_database("ordonum")
            print(f"PostgreSQL: {store}", flush=True)
        print(f"pre-loading {args.preload:,} prescriptions (ordonum demo)...", flush=True)
        preload_s = (
            preload(data, args.preload, run / "demo.log", run / "demo-tokens.tsv", store)
            if args.preload
            else 0.0
        )
        print(f"  {preload_s:.1f} s", flush=True)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with server(
            data, port, args.server_cpus, run / "server.log", None, store, args.workers
        ) as srv:
            print("minting identities...", flush=True)
            ids = loadkit.make_identities(data, args.prescribers, args.pharmacies, args.patients)
            ids.save(run / "identities.json")
            print(f"issuing a pool of {args.pool:,} prescriptions through the API...", flush=True)
            pool_s = issue_pool(url, ids, args.pool, run / "pool.jsonl")
            print(f"  {pool_s:.1f} s", flush=True)
            papers = demo_papers(run / "demo-tokens.tsv", args.demo_papers)
            issued = list(loadkit.read_jsonl(run / "pool.jsonl"))
            mixed = issued + papers
            random.Random(3).shuffle(mixed)
            loadkit.write_jsonl(run / "pool-mixed.jsonl", mixed)
            plan = loadkit.make_plan(
                identities=run / "identities.json",
                pool=run / "pool-mixed.jsonl",
                out=run,
                multiples=[float(m) for m in args.multiples.split(",")],
                first_hold_s=args.first_hold,
                step_hold_s=args.step_hold,
                user_rate=args.user_rate,
            )
            plan.save(run / "plan.json")
            print(f"locust: {plan.duration_s:.0f} s, steps {args.multiples}...", flush=True)
            code, cpu = run_locust(
                run / "plan.json",
                plan,
                url,
                results_dir,
                args.locust_cpus,
                args.processes,
                {"server": srv.pid} | ({"postgres": cluster.postmaster_pid()} if cluster else {}),
                run / "locust.log",
            )
            print(f"  locust exited with {code}", flush=True)
        wrk: list[WrkResult] = []
        if args.wrk_seconds > 0:  # a fresh server, per-identity rate limit lifted (one bearer)
            lifted = {"ORDONUM_RATE": "1000000", "ORDONUM_BURST": "1000000"}
            with server(
                data, port, args.server_cpus, run / "server.log", lifted, store, args.workers
            ) as ceiling:
                # Server CPU per request only for one process (workers are its children).
                wrk = run_wrk(
                    url, ids, run, args.wrk_seconds, ceiling if args.workers == 1 else None
                )
        import locust

        meta = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(),
            "server_cpus": args.server_cpus,
            "locust_cpus": args.locust_cpus,
            "locust_cores": len(cpu_list(args.locust_cpus)),
            "processes": args.processes,
            "locust_version": locust.__version__,
            "preload": args.preload,
            "preload_s": preload_s,
            "pool": args.pool,
            "pool_s": pool_s,
            "demo_papers": len(papers),
            "prescribers": args.prescribers,
            "pharmacies": args.pharmacies,
            "patients": args.patients,
            "user_rate": args.user_rate,
            "store": "PostgreSQL" if store else "embedded",
            "workers": args.workers,
        }
        ok = report(run, plan, results_dir, cpu, meta, wrk)
        print((results_dir / "load-summary.md").read_text())
        return 0 if ok else 1
    finally:
        if cluster is not None:
            cluster.destroy()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def start_pg(cpus: str | None) -> Any:
    """A throwaway PostgreSQL cluster (bench/pgcluster.py, PostgreSQL's default durability),
    its processes pinned to ``cpus`` like the service: they inherit this process's
    affinity while it starts them."""
    from pgcluster import PgCluster

    cluster = PgCluster.create()
    mine = os.sched_getaffinity(0)
    try:
        if cpus:
            os.sched_setaffinity(0, cpu_list(cpus))
        cluster.start()
    finally:
        os.sched_setaffinity(0, mine)
    return cluster


def cpu_list(spec: str) -> list[int]:
    cpus: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cpus += list(range(int(lo), int(hi or lo) + 1))
    return cpus


def run_wrk(
    url: str,
    ids: loadkit.Identities,
    run: Path,
    seconds: int,
    proc: subprocess.Popen[bytes] | None = None,
) -> list[WrkResult]:
    """The raw ceiling of scan, dispense and create, with `make bench-http`'s wrk script and
    settings; with ``proc`` (the server), its CPU time per request too.

    bench/bench_http.py's Lua script replays ``path<TAB>body`` lines with one bearer and a
    fresh Idempotency-Key per request; here the scans replay the QR tokens of the pharmacists'
    pool, the dispensations take one pack at a time from 500 prescriptions of 9,999 packs,
    and the creations replay 2,000 bodies of 1 to 4 real medicines for the test's patients.
    The server must run with the per-identity rate limit lifted (one bearer per endpoint).
    """
    import bench_http
    import httpx

    if shutil.which("wrk") is None:
        print("wrk not found (apt-get install wrk): no raw ceiling", flush=True)
        return []
    os.environ["BENCH_HTTP_SECONDS"] = str(seconds)
    bench_http.DURATION = seconds
    pharmacist = ids.pharmacists[0]["bearer"]
    pool = list(loadkit.read_jsonl(run / "pool-mixed.jsonl"))
    scans = run / "wrk-scan.txt"
    scans.write_text("".join(f"/v1/scan\t{json.dumps({'token': e['token']})}\n" for e in pool))
    meds = loadkit.load_medicines()
    rng = random.Random(13)
    lines = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(500):
            body = loadkit.prescription_body(rng, rng.choice(ids.patients), meds, 9_999)
            body["lines"] = body["lines"][:1]
            doc = rng.choice(ids.prescribers)["bearer"]
            r = client.post(
                "/v1/prescriptions", json=body, headers={"Authorization": f"Bearer {doc}"}
            )
            r.raise_for_status()
            one = {"line": 0, "quantity": 1, "intervention": {"kind": "none"}}
            payload = {"token": r.json()["token"], "lines": [one]}
            lines.append(
                f"/v1/prescriptions/{r.json()['id']}/dispensations\t{json.dumps(payload)}\n"
            )
    packs = run / "wrk-dispense.txt"
    packs.write_text("".join(lines))
    bodies = (loadkit.prescription_body(rng, rng.choice(ids.patients), meds) for _ in range(2000))
    creations = run / "wrk-create.txt"
    creations.write_text("".join(f"/v1/prescriptions\t{json.dumps(b)}\n" for b in bodies))
    prescriber = ids.prescribers[0]["bearer"]
    script = run / "list.lua"
    script.write_text(bench_http.LUA_LIST)
    out = []
    for name, file, bearer, note in (
        ("scan (QR token)", scans, pharmacist, f"{len(pool):,} tokens in turn"),
        ("dispense (1 pack, durable)", packs, pharmacist, "500 prescriptions, a fresh key each"),
        ("create (durable)", creations, prescriber, "2,000 bodies of 1-4 real medicines"),
    ):
        print(f"wrk: {name}...", flush=True)
        r = bench_http.wrk(url, script, file, {"BENCH_BEARER": bearer}, server=proc)
        out.append(
            WrkResult(
                name,
                r["rps"],
                r["p50"],
                r["p99"],
                int(r["errors"]),
                int(r["requests"]),
                f"{note}; wrk -t2 -c{bench_http.CONNECTIONS} -d{seconds}s",
                r["cpu_us"],
            )
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
