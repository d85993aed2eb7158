"""Serving speed: ``bgem3 serve`` under concurrent HTTP clients, against in-process encoding.

A real server process (``python -m bgem3 serve`` on a free 127.0.0.1 port) and concurrent
HTTP clients, against the same texts encoded by ``BGEM3`` in this process, in the same run,
with the same number of torch threads on both sides (``--threads``).

Workloads (every request ``POST /v1/m3/encode``, one text each, the outputs of ``--outputs``,
ColBERT as the route's default base64 float16; the client parses every JSON response):
  Q  single short queries, 4-30 tokens, ``kind="query"``: 1, 4, 16, 64 clients (``--clients``)
  P  single passages, log-uniform 8-512 tokens, ``kind="document"`` (``--passage-clients``)
  S  starvation: one client sending queries back to back, alone and then while another client
     streams requests of ``--stream-batch`` passages of 512 tokens

Each client sends its next request as soon as it has the last answer. A point runs
``--warmup`` seconds, then is measured for ``--duration`` seconds (``--passage-duration`` for P
and S) over the requests started in the window (the last ones are waited for): latency
percentiles, and throughput as each client's requests over the time they took, summed over
the clients (a client always has one request out, so this is its rate; unlike counting
completions in the window it does not depend on where a batching server's rounds fall).

References (``BGEM3`` in this process, ``torch.set_num_threads(--threads)``):
  one at a time  each text in its own ``encode_queries`` / ``encode_documents`` call
  one batch      all the texts in one call (the model's token-budget batches)
  16 at a time   queries in calls of ``--group``, with the model's own batching (on CPU:
                 texts of equal length share a forward, the rest are packed end to end in
                 rows of 512 tokens) and padded (``max_padding=1``): the batching gain a
                 server can reach at that many clients
and, for Q and P, an interleaved A/B for the one-client overhead: each text sent to the
server (one keep-alive connection, from this process) and encoded in-process, alternately,
0.1 s apart (so that neither side runs while the other's idle OpenMP threads still spin).

Each load point also reads the server's ``/metrics``: texts per model call (how requests
were batched together) and the time a request spent in the server.

CPU sharing on a small machine: the server gets ``OMP_NUM_THREADS=--threads``; the clients
are one asyncio loop (a minimal HTTP/1.1 client; ``--client httpx`` for httpx's, which costs
far more CPU per request) in a separate process at ``nice +--client-nice``, so the server
wins the cores when both want them; this process waits, its model idle, while clients run.
Each point reports the CPU the server, the clients and every other process on the machine
used (``other``: the machine is shared); a point where ``other`` passed ``--max-other`` is
measured again (``--retries``) and the least disturbed run is kept.

Usage:
  python benchmarks/serve.py --size tiny --json benchmarks/results/serve-cpu-tiny.json
  python benchmarks/serve.py --size real --json benchmarks/results/serve-cpu-real.json
  python benchmarks/serve.py --size tiny --threads 1 --workloads Q --clients 1 16
  python benchmarks/plot_serve.py benchmarks/results/serve-cpu-*.json   # the PNGs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ROUTE = "/v1/m3/encode"
TICK = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")

# size -> defaults that fit the model's speed on 2 CPU cores
DEFAULTS = {
    "tiny": {"duration": 10.0, "passage_duration": 10.0, "warmup": 2.0, "stream_batch": 4,
             "passage_clients": [1, 4, 16, 64], "queries": 256, "passages": 128, "retries": 2,
             "repeats": 3, "ab_rounds": 2},
    "real": {"duration": 25.0, "passage_duration": 45.0, "warmup": 8.0, "stream_batch": 1,
             "passage_clients": [1, 4, 16], "queries": 48, "passages": 24, "retries": 1,
             "repeats": 1, "ab_rounds": 1},
}


# ----------------------------------------------------------------------------- texts
def make_texts(n_queries: int, n_passages: int, stream_batch: int
               ) -> tuple[list[str], list[str], list[list[str]]]:
    """Queries (4-30 tokens), passages (log-uniform 8-512) and streamed 512-token batches."""
    from encode import _texts_of_lengths

    rng = np.random.default_rng(2024)
    queries = _texts_of_lengths(rng.integers(4, 31, n_queries), rng)
    passages = _texts_of_lengths(
        np.exp(rng.uniform(np.log(8), np.log(512), n_passages)).astype(int), rng)
    long = _texts_of_lengths(np.full(4 * stream_batch, 512), rng)
    return queries, passages, [long[i : i + stream_batch] for i in range(0, len(long),
                                                                          stream_batch)]


def body(texts: str | list[str], kind: str, outputs: dict[str, bool]) -> bytes:
    return json.dumps({"input": texts, "kind": kind, **outputs}).encode()


# ----------------------------------------------------------------------------- CPU accounting
def _proc_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def _machine_busy_ticks() -> int:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values) - values[3] - values[4]  # all but idle and iowait


class CPUMeter:
    """CPU used by named processes and by everything else, between ``start`` and ``stop``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def start(self) -> None:
        self._t = time.perf_counter()
        self._busy = _machine_busy_ticks()
        self._ticks = {name: _proc_ticks(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        """Percent of one core, per process name and ``other`` (the rest of the machine)."""
        wall = time.perf_counter() - self._t
        used = {name: (_proc_ticks(pid) - self._ticks[name]) / TICK / wall * 100
                for name, pid in self.pids.items()}
        busy = (_machine_busy_ticks() - self._busy) / TICK / wall * 100
        used["other"] = max(0.0, busy - sum(used.values()))
        return {k: round(v, 1) for k, v in used.items()}


# ----------------------------------------------------------------------------- load generator
def client_process(conn: Any, nice: int) -> None:
    """The load generator: runs each job it is sent (asyncio + httpx), sends back its records."""
    os.nice(nice)
    while True:
        job = conn.recv()
        if job is None:
            return
        cpu = time.process_time()
        try:
            import uvloop

            records, started = uvloop.run(_run_job(job))
        except ImportError:
            records, started = asyncio.run(_run_job(job))
        conn.send({"records": records, "started": started,
                   "cpu_s": time.process_time() - cpu})


class RawConnection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: the least CPU per request.

    Enough HTTP for this server's JSON answers (they carry ``Content-Length``); ``httpx``'s
    ``AsyncClient`` (``--client httpx``) spends far more CPU per request, which on a small
    machine is taken from the server.
    """

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, payload: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(),
                                                            self.port, len(payload), payload))
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status, length = int(lines[0].split()[1]), None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError(f"no Content-Length in the answer: {head[:200]!r}")
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _run_job(job: dict[str, Any]) -> tuple[list[tuple[str, int, float, float, int]],
                                                float]:
    import httpx

    total = sum(g["clients"] for g in job["groups"])
    limits = httpx.Limits(max_connections=total, max_keepalive_connections=total)
    records: list[tuple[str, int, float, float, int]] = []
    headers = {"content-type": "application/json"}
    raw = job["client"] == "raw"
    async with httpx.AsyncClient(base_url=job["url"], limits=limits,
                                 timeout=httpx.Timeout(900.0)) as client:
        t0 = time.perf_counter()
        stop = t0 + job["warmup"] + job["duration"]

        async def one(group: dict[str, Any], cid: int) -> None:
            bodies = group["bodies"]
            connection = RawConnection(job["url"]) if raw else None
            await asyncio.sleep(group.get("delay", 0.0))
            k = cid * max(1, len(bodies) // max(1, group["clients"]))
            while time.perf_counter() < stop:
                started = time.perf_counter()
                if connection is not None:
                    status, data = await connection.post(ROUTE, bodies[k % len(bodies)])
                    if status == 200:
                        json.loads(data)
                else:
                    response = await client.post(ROUTE, content=bodies[k % len(bodies)],
                                                 headers=headers)
                    status = response.status_code
                    if status == 200:
                        response.json()
                records.append((group["name"], cid, started - t0, time.perf_counter() - t0,
                                status))
                k += 1
            if connection is not None:
                connection.close()

        await asyncio.gather(*(one(g, c) for g in job["groups"] for c in range(g["clients"])))
    return records, time.time() - (time.perf_counter() - t0)


def scrape(url: str) -> dict[str, float]:
    """The server's counters that tell how it batched: model calls, rows, server-side time."""
    import httpx

    wanted = {"bgem3_batch_rows_count": "calls", "bgem3_batch_rows_sum": "rows",
              "bgem3_batch_tokens_sum": "tokens",
              f'bgem3_request_duration_seconds_sum{{route="{ROUTE}"}}': "server_s",
              f'bgem3_request_duration_seconds_count{{route="{ROUTE}"}}': "answered"}
    values = dict.fromkeys(wanted.values(), 0.0)
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in wanted:
            values[wanted[name]] = float(value)
    return values


@dataclass
class Point:
    """One measured load point of one group of clients."""

    workload: str
    clients: int
    texts_per_request: int
    requests: int = 0
    errors: int = 0
    requests_per_s: float = 0.0
    texts_per_s: float = 0.0
    completed_per_s: float = 0.0  # requests completed in the window / its length (a check)
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    model_calls: int = 0
    rows_per_call: float = 0.0
    tokens_per_call: float = 0.0
    server_ms: float = 0.0
    cpu_percent: dict[str, float] = field(default_factory=dict)
    load_average: float = 0.0
    disturbed: bool = False  # other processes took over --max-other % CPU in every try
    note: str = ""


def summarize(records: list[tuple[str, int, float, float, int]], name: str, clients: int,
              texts_per_request: int, warmup: float, duration: float, workload: str,
              cpu: dict[str, float], counters: dict[str, float]) -> Point:
    begin, end = warmup, warmup + duration
    mine = [r for r in records if r[0] == name]
    window = [r for r in mine if begin <= r[2] < end]
    point = Point(workload, clients, texts_per_request)
    point.requests = len(window)
    point.errors = sum(r[4] != 200 for r in window)
    latencies = np.array([r[3] - r[2] for r in window if r[4] == 200]) * 1e3
    if latencies.size:
        point.p50_ms = float(np.percentile(latencies, 50))
        point.p99_ms = float(np.percentile(latencies, 99))
        point.max_ms = float(latencies.max())
    # each client always has one request out: its rate is its requests over the time they
    # took (requests started in the window, the last ones waited for); the server's is the sum
    rate, idle = 0.0, 0
    for cid in range(clients):
        took = [r[3] - r[2] for r in window if r[1] == cid and r[4] == 200]
        if took:
            rate += len(took) / sum(took)
        else:
            idle += 1
    if idle:
        point.note = f"{idle} client(s) started no request in the window: lengthen it"
    point.requests_per_s = rate
    point.texts_per_s = rate * texts_per_request
    point.completed_per_s = sum(begin <= r[3] < end and r[4] == 200 for r in mine) / duration
    point.cpu_percent, point.load_average = cpu, os.getloadavg()[0]
    calls = counters.get("calls", 0.0)
    point.model_calls = int(calls)
    point.rows_per_call = counters["rows"] / calls if calls else 0.0
    point.tokens_per_call = counters["tokens"] / calls if calls else 0.0
    answered = counters.get("answered", 0.0)
    point.server_ms = counters["server_s"] / answered * 1e3 if answered else 0.0
    return point


class Clients:
    """The load-generator process, niced, fed one job at a time."""

    def __init__(self, url: str, nice: int, meter_pids: dict[str, int], client: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=client_process, args=(child, nice), daemon=True)
        self._process.start()
        self.url, self.client = url, client
        self.pid = self._process.pid or 0
        self.pids = {**meter_pids, "clients": self.pid}

    def run(self, groups: list[dict[str, Any]], warmup: float, duration: float
            ) -> tuple[list[tuple[str, int, float, float, int]], dict[str, float],
                       dict[str, float]]:
        """Records of every request, CPU % and the server's counters over the window."""
        meter = CPUMeter(self.pids)
        self._conn.send({"url": self.url, "groups": groups, "warmup": warmup,
                         "duration": duration, "client": self.client})
        time.sleep(warmup)
        before = scrape(self.url)
        meter.start()
        time.sleep(duration)
        cpu = meter.stop()
        after = scrape(self.url)
        result = self._conn.recv()
        return result["records"], cpu, {k: after[k] - before[k] for k in after}

    def close(self) -> None:
        self._conn.send(None)
        self._process.join(10)


# ----------------------------------------------------------------------------- the server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(path: str, args: argparse.Namespace, env: dict[str, str], log: Path
                 ) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "bgem3", "serve", "--model", path, "--host", "127.0.0.1",
               "--port", str(port), "--device", args.device, "--dtype", args.dtype]
    print("server: " + " ".join(command[1:]) + f"  (OMP_NUM_THREADS={args.threads})")
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}):\n"
                               + log.read_text()[-3000:])
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    process.kill()
    raise RuntimeError("the server did not answer /health within 900 s")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# ----------------------------------------------------------------------------- in-process
def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(np.array(seconds) * 1e3, q))


def one_at_a_time(encode: Any, texts: list[str], outputs: dict[str, bool]) -> dict[str, float]:
    seconds = []
    for text in texts:
        t0 = time.perf_counter()
        encode([text], **outputs, show_progress=False)
        seconds.append(time.perf_counter() - t0)
    return {"texts_per_s": len(texts) / sum(seconds), "p50_ms": percentile_ms(seconds, 50),
            "p99_ms": percentile_ms(seconds, 99), "texts": len(texts)}


def one_batch(encode: Any, texts: list[str], outputs: dict[str, bool], repeats: int
              ) -> dict[str, float]:
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        encode(texts, **outputs, show_progress=False)
        seconds.append(time.perf_counter() - t0)
    median = statistics.median(seconds)
    return {"texts_per_s": len(texts) / median, "seconds": median, "texts": len(texts)}


def in_groups(encode: Any, texts: list[str], outputs: dict[str, bool], size: int
              ) -> dict[str, float]:
    """Texts ``size`` at a time: what a server that batches ``size`` requests can reach."""
    t0 = time.perf_counter()
    for i in range(0, len(texts), size):
        encode(texts[i : i + size], **outputs, show_progress=False)
    return {"texts_per_s": len(texts) / (time.perf_counter() - t0), "texts": len(texts),
            "group": size}


SETTLE_S = 0.1
"""Pause before each side of the one-client A/B (idle OpenMP threads stop spinning)."""


def ab_overhead(encode: Any, kind: str, url: str, texts: list[str], outputs: dict[str, bool],
                rounds: int) -> dict[str, float]:
    """Each text to the server and in-process, alternately (which goes first alternates)."""
    import httpx

    server, local = [], []
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=url, timeout=900.0) as client:
        for r in range(rounds):
            for i, text in enumerate(texts):
                payload = body(text, kind, outputs)
                for side in ((0, 1) if (r + i) % 2 == 0 else (1, 0)):
                    # both sides' OpenMP threads spin for a while after a forward pass: let
                    # them go idle, so neither side runs while the other's threads spin
                    time.sleep(SETTLE_S)
                    t0 = time.perf_counter()
                    if side == 0:
                        response = client.post(ROUTE, content=payload, headers=headers)
                        response.raise_for_status()
                        response.json()
                        server.append(time.perf_counter() - t0)
                    else:
                        encode([text], **outputs, show_progress=False)
                        local.append(time.perf_counter() - t0)
    s50, l50 = percentile_ms(server, 50), percentile_ms(local, 50)
    return {"server_p50_ms": s50, "local_p50_ms": l50, "server_p99_ms": percentile_ms(server, 99),
            "local_p99_ms": percentile_ms(local, 99), "ratio": s50 / l50,
            "added_ms": s50 - l50, "pairs": len(server),
            "server_total_s": sum(server), "local_total_s": sum(local),
            "total_ratio": sum(server) / sum(local),
            "limit_ms": 1.10 * l50 + 2.0, "holds": s50 <= 1.10 * l50 + 2.0}


# ----------------------------------------------------------------------------- main
def machine_info(threads: int) -> dict[str, Any]:
    import torch
    from encode import cpu_flags, cpu_name

    info = {"cpu": cpu_name(), "cores": os.cpu_count(), "flags": cpu_flags(),
            "torch": torch.__version__, "python": platform.python_version(), "threads": threads}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                info["lscpu_model"] = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


HEADER = (f"{'wl':<4}{'clients':>8}{'req':>6}{'err':>5}{'req/s':>9}{'texts/s':>9}{'p50 ms':>9}"
          f"{'p99 ms':>9}{'max ms':>9}{'vs 1cl':>8}{'vs batch':>9}{'rows/call':>10}"
          f"{'srv ms':>8}  CPU % server/clients/other")


def print_point(p: Point, one: Point | None, reference: dict[str, Any] | None) -> None:
    vs1 = f"{p.requests_per_s / one.requests_per_s:.2f}x" if one and one.requests_per_s else ""
    vsb = f"{p.texts_per_s / reference['texts_per_s']:.2f}x" if reference else ""
    cpu = p.cpu_percent
    print(f"{p.workload:<4}{p.clients:>8}{p.requests:>6}{p.errors:>5}{p.requests_per_s:>9.1f}"
          f"{p.texts_per_s:>9.1f}{p.p50_ms:>9.1f}{p.p99_ms:>9.1f}{p.max_ms:>9.1f}{vs1:>8}"
          f"{vsb:>9}{p.rows_per_call:>10.1f}{p.server_ms:>8.1f}  {cpu.get('server', 0):.0f}/"
          f"{cpu.get('clients', 0):.0f}/{cpu.get('other', 0):.0f} (load {p.load_average:.1f})"
          f" {p.note}")
    sys.stdout.flush()


def least_disturbed(run: Callable[[], T], other: Callable[[T], float], args: argparse.Namespace,
                    label: str) -> T:
    """``run()``, again (up to ``--retries`` times) while other processes took over
    ``--max-other`` % CPU; the least disturbed result."""
    best = run()
    for _ in range(args.retries):
        if other(best) <= args.max_other:
            break
        print(f"  ({label}: other processes used {other(best):.0f}% of a core; measuring "
              "again)")
        sys.stdout.flush()
        again = run()
        if other(again) < other(best):
            best = again
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "real"], default="tiny",
                        help="seeded random checkpoint (encode.py's): tiny 6x384 or BGE-M3's "
                             "real 24x1024")
    parser.add_argument("--model", help="a checkpoint directory instead of --size's")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads of the server and of the in-process reference")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--outputs", default="dense,sparse,colbert",
                        help="what each request asks for (default: all three, as encode.py's "
                             "R1/R2)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64],
                        help="concurrent clients for Q")
    parser.add_argument("--passage-clients", type=int, nargs="+",
                        help="concurrent clients for P (tiny: 1 4 16 64, real: 1 4 16)")
    parser.add_argument("--duration", type=float, help="measured seconds per Q point")
    parser.add_argument("--passage-duration", type=float,
                        help="measured seconds per P and S point")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds before each point")
    parser.add_argument("--stream-batch", type=int,
                        help="512-token passages per request of S's streaming client")
    parser.add_argument("--queries", type=int, help="distinct queries (and in-process calls)")
    parser.add_argument("--passages", type=int, help="distinct passages")
    parser.add_argument("--ab-rounds", type=int,
                        help="rounds over the queries of the one-client A/B (tiny 2, real 1)")
    parser.add_argument("--repeats", type=int,
                        help="repeats of the one-batch reference, median (tiny 3, real 1)")
    parser.add_argument("--client-nice", type=int, default=10,
                        help="niceness of the load-generator process (default: %(default)s)")
    parser.add_argument("--group", type=int, default=16,
                        help="also time queries this many at a time in-process, with the "
                             "model's padding policy and padded (0: skip)")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw",
                        help="load generator's HTTP client: raw (HTTP/1.1 on asyncio streams, "
                             "least CPU) or httpx.AsyncClient")
    parser.add_argument("--max-other", type=float, default=25.0,
                        help="measure a point again when other processes used more than this "
                             "%% of one core during it (the machine is shared)")
    parser.add_argument("--retries", type=int, help="at most this many times (tiny 2, real 1)")
    parser.add_argument("--workloads", default="Q,P,S")
    parser.add_argument("--json", type=Path, help="write results here")
    args = parser.parse_args(argv)
    defaults = DEFAULTS[args.size]
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    workloads = set(args.workloads.split(","))
    wanted = set(args.outputs.split(","))
    if not wanted or wanted - {"dense", "sparse", "colbert"}:
        parser.error(f"--outputs takes dense, sparse, colbert; got {args.outputs!r}")
    outputs = {k: k in wanted for k in ("dense", "sparse", "colbert")}

    warnings.simplefilter("ignore")
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(143))  # stop the server too
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "true",
           "HF_HUB_OFFLINE": "1"}
    os.environ.update({k: env[k] for k in ("TOKENIZERS_PARALLELISM", "HF_HUB_OFFLINE")})
    import bgem3
    import torch
    from encode import bench_checkpoint

    torch.set_num_threads(args.threads)
    path, checkpoint = (args.model, args.model) if args.model else bench_checkpoint(args.size)
    queries, passages, streamed = make_texts(args.queries, args.passages, args.stream_batch)
    machine = machine_info(args.threads)
    print(f"checkpoint: {checkpoint}; {args.dtype} on {args.device}; outputs "
          f"{args.outputs} (ColBERT as base64 float16); route POST {ROUTE}")
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {' '.join(machine['flags'])}; "
          f"torch {machine['torch']}; {args.threads} torch threads in the server and in the "
          f"in-process reference")
    client = ("a minimal HTTP/1.1 client on asyncio streams" if args.client == "raw"
              else "httpx.AsyncClient")
    print(f"clients: one asyncio loop ({client}, one keep-alive connection per client, every "
          f"answer parsed) in a separate process at nice +{args.client_nice}, so the server "
          f"wins the "
          f"{machine['cores']} cores when both want them; load average at start "
          f"{os.getloadavg()[0]:.2f} (the machine is shared: 'other' CPU below is everyone else)")

    log = Path(tempfile.mkdtemp(prefix="bgem3-serve-bench-")) / "server.log"
    server, url = start_server(path, args, env, log)
    clients: Clients | None = None
    results: dict[str, Any] = {"checkpoint": checkpoint, "size": args.size, "dtype": args.dtype,
                               "device": args.device, "route": ROUTE, "outputs": outputs,
                               "machine": machine, "settings": {
                                   k: getattr(args, k) for k in (
                                       "clients", "passage_clients", "duration",
                                       "passage_duration", "warmup", "stream_batch", "queries",
                                       "passages", "ab_rounds", "repeats", "client_nice",
                                       "client", "max_other", "retries")}}
    try:
        started = time.perf_counter()
        model = bgem3.BGEM3(path, device=args.device, dtype=args.dtype)
        print(f"in-process model loaded in {time.perf_counter() - started:.1f} s; server at "
              f"{url} (log {log})")
        q_body = [body(t, "query", outputs) for t in queries]
        p_body = [body(t, "document", outputs) for t in passages]
        s_body = [body(batch, "document", outputs) for batch in streamed]
        # warm-up: both sides, every shape of call
        import httpx

        with httpx.Client(base_url=url, timeout=900.0) as warm:
            for payload in q_body[:4] + p_body[:2] + s_body[:1]:
                warm.post(ROUTE, content=payload,
                          headers={"content-type": "application/json"}).raise_for_status()
        for text in queries[:4]:
            model.encode_queries([text], **outputs, show_progress=False)
        model.encode_documents(passages[:2], **outputs, show_progress=False)

        # ---------------------------------------------------------------- references
        meter = CPUMeter({"this": os.getpid(), "server": server.pid})
        reference: dict[str, Any] = {}
        print("\nin-process reference (BGEM3 in this process, "
              f"{args.threads} threads):")
        print(f"{'wl':<4}{'how':<26}{'texts':>6}{'texts/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
              f"  other CPU %")
        sides: list[tuple[str, list[str], Any]] = [("Q", queries, model.encode_queries),
                                                   ("P", passages, model.encode_documents)]
        for name, texts, encode in sides:
            if name not in workloads and not (name == "Q" and "S" in workloads):
                continue

            def timed(how: Any, *extra: Any, encode: Any = encode, texts: list[str] = texts
                      ) -> dict[str, float]:
                meter.start()
                result: dict[str, float] = how(encode, texts, outputs, *extra)
                result["cpu_other"] = meter.stop()["other"]
                return result

            single = least_disturbed(lambda: timed(one_at_a_time),
                                     lambda r: r["cpu_other"], args, f"{name} one at a time")
            batch = least_disturbed(lambda: timed(one_batch, args.repeats),
                                    lambda r: r["cpu_other"], args, f"{name} one batch")
            reference[name] = batch
            reference[name + "1"] = single
            print(f"{name:<4}{'one at a time':<26}{len(texts):>6}{single['texts_per_s']:>9.1f}"
                  f"{single['p50_ms']:>9.1f}{single['p99_ms']:>9.1f}  {single['cpu_other']:.0f}")
            print(f"{name:<4}{'one batch':<26}{len(texts):>6}{batch['texts_per_s']:>9.1f}"
                  f"{'':>9}{'':>9}  {batch['cpu_other']:.0f}")
            if name == "Q" and args.group:
                # what a server batching --group queries reaches: with the model's own
                # batching (on CPU: equal lengths share a forward, the rest packed), and padded
                default_padding = model.max_padding
                for label, padding in (("", default_padding), (", padded", 1.0)):
                    model.max_padding = padding
                    try:
                        group = least_disturbed(lambda: timed(in_groups, args.group),
                                                lambda r: r["cpu_other"], args,
                                                f"Q {args.group} at a time")
                    finally:
                        model.max_padding = default_padding
                    group["max_padding"] = padding
                    reference[f"Q{args.group}{'p' if padding != default_padding else ''}"] = group
                    how = f"{args.group} at a time{label}"
                    print(f"{name:<4}{how:<26}{len(texts):>6}{group['texts_per_s']:>9.1f}"
                          f"{'':>9}{'':>9}  {group['cpu_other']:.0f}  (max_padding={padding:g})")
            sys.stdout.flush()
        results["in_process"] = reference

        # ---------------------------------------------------------------- one-client A/B
        print()
        for name, texts, encode in sides:
            if name not in workloads:
                continue
            kind = "query" if name == "Q" else "document"

            def ab_run(encode: Any = encode, kind: str = kind, texts: list[str] = texts
                       ) -> dict[str, Any]:
                meter.start()
                ab = ab_overhead(encode, kind, url, texts, outputs, args.ab_rounds)
                ab["cpu_other"] = meter.stop()["other"]
                return ab

            ab = least_disturbed(ab_run, lambda r: r["cpu_other"], args, f"{name} A/B")
            results[f"one_client_ab_{name}"] = ab
            print(f"{name} one client, interleaved A/B over {ab['pairs']} texts (each sent to the "
                  f"server from this process and encoded in-process, alternately): server p50 "
                  f"{ab['server_p50_ms']:.1f} ms (p99 {ab['server_p99_ms']:.1f}), in-process "
                  f"p50 {ab['local_p50_ms']:.1f} ms (p99 {ab['local_p99_ms']:.1f}): "
                  f"{ab['ratio']:.3f}x, +{ab['added_ms']:.2f} ms; total time "
                  f"{ab['total_ratio']:.3f}x; other CPU {ab['cpu_other']:.0f}%")

        # ---------------------------------------------------------------- load points
        clients = Clients(url, args.client_nice, {"server": server.pid or 0}, args.client)

        def load(groups: list[dict[str, Any]], duration: float, label: str
                 ) -> list[Point]:
            """One run of these client groups, a point per group (retried while disturbed)."""
            def run() -> list[Point]:
                records, cpu, counters = clients.run(groups, args.warmup, duration)
                return [summarize(records, g["name"], g["clients"], g.get("texts", 1),
                                  args.warmup, duration, g.get("label", g["name"]), cpu,
                                  counters) for g in groups]

            kept = least_disturbed(run, lambda ps: ps[0].cpu_percent["other"], args, label)
            for point in kept:
                if point.cpu_percent["other"] > args.max_other:
                    point.disturbed = True
                    point.note = f"DISTURBED (other processes) {point.note}".strip()
            return kept

        points: list[Point] = []
        plan = []
        if "Q" in workloads:
            plan += [("Q", n, q_body, args.duration) for n in args.clients]
        if "P" in workloads:
            plan += [("P", n, p_body, args.passage_duration) for n in args.passage_clients]
        if plan:
            print(f"\nserver under load (warm-up {args.warmup:.0f} s, then Q {args.duration:.0f}"
                  f" s, P {args.passage_duration:.0f} s per point; 'vs 1cl': throughput / the "
                  "same server at 1 client; 'vs batch': texts/s / in-process one batch; "
                  "rows/call: texts per model call, from /metrics; srv ms: time in the server "
                  "per request):")
            print(HEADER)
        for name, n, bodies, duration in plan:
            [point] = load([{"name": name, "clients": n, "bodies": bodies}], duration,
                           f"{name} {n} clients")
            points.append(point)
            one = next((p for p in points if p.workload == name and p.clients == 1), None)
            print_point(point, one, reference.get(name))

        # ---------------------------------------------------------------- starvation
        starvation: dict[str, Any] = {}
        if "S" in workloads:
            d = args.passage_duration
            print(f"\nstarvation: one query client alone, then with one client streaming "
                  f"requests of {args.stream_batch} x 512-token passages ({d:.0f} s each):")
            print(HEADER)
            [alone] = load([{"name": "Q", "clients": 1, "bodies": q_body, "label": "S-"}], d,
                           "queries alone")
            print_point(alone, None, None)
            loaded, stream = load(
                [{"name": "Q", "clients": 1, "bodies": q_body, "delay": 0.5, "label": "S+"},
                 {"name": "P", "clients": 1, "bodies": s_body, "texts": args.stream_batch,
                  "label": "S+P"}], d, "queries with the stream")
            print_point(loaded, None, None)
            print_point(stream, None, None)
            starvation = {"alone": alone.__dict__, "loaded": loaded.__dict__,
                          "stream": stream.__dict__,
                          "p50_ratio": loaded.p50_ms / alone.p50_ms if alone.p50_ms else None,
                          "p99_ratio": loaded.p99_ms / alone.p99_ms if alone.p99_ms else None}
            if alone.p50_ms and loaded.p50_ms:
                print(f"  query p50 {alone.p50_ms:.1f} -> {loaded.p50_ms:.1f} ms "
                      f"({starvation['p50_ratio']:.1f}x), p99 {alone.p99_ms:.1f} -> "
                      f"{loaded.p99_ms:.1f} ms ({starvation['p99_ratio']:.1f}x) under the "
                      f"stream; stream {stream.texts_per_s:.1f} passages/s")
        results["points"] = [p.__dict__ for p in points]
        results["starvation"] = starvation

        # ---------------------------------------------------------------- ratios
        print("\nratios:")
        checks = {}
        for name in ("Q", "P"):
            mine = [p for p in points if p.workload == name]
            one = next((p for p in mine if p.clients == 1), None)
            if one and one.requests_per_s:
                print(f"  {name} throughput at N clients / at 1 client: " + ", ".join(
                    f"N={p.clients} {p.requests_per_s / one.requests_per_s:.2f}x" for p in mine))
            if name in reference:
                print(f"  {name} texts/s at N clients / in-process one batch: " + ", ".join(
                    f"N={p.clients} {p.texts_per_s / reference[name]['texts_per_s']:.2f}x"
                    for p in mine))
                ref1 = reference[name + "1"]
                if one:
                    print(f"  {name} 1-client p50 / in-process one-at-a-time p50: "
                          f"{one.p50_ms / ref1['p50_ms']:.3f}x "
                          f"({one.p50_ms:.1f} vs {ref1['p50_ms']:.1f} ms)")
        if f"Q{args.group}" in reference:
            one_ref = reference["Q1"]["texts_per_s"]
            plain = reference[f"Q{args.group}"]["texts_per_s"] / one_ref
            padded = reference[f"Q{args.group}p"]["texts_per_s"] / one_ref
            print(f"  in-process, queries {args.group} at a time / one at a time: {plain:.2f}x "
                  f"with the model's padding policy, {padded:.2f}x padded (the batching gain "
                  "a server can get at that many clients)")
        q = {p.clients: p for p in points if p.workload == "Q"}
        if 1 in q and 16 in q and q[1].requests_per_s:
            gain = q[16].requests_per_s / q[1].requests_per_s
            checks["q16_vs_q1"] = {"ratio": gain, "expected": ">= 3", "holds": gain >= 3}
        if "one_client_ab_Q" in results:
            ab = results["one_client_ab_Q"]
            checks["one_client_overhead"] = {
                "server_p50_ms": ab["server_p50_ms"], "local_p50_ms": ab["local_p50_ms"],
                "limit_ms": ab["limit_ms"], "expected": "<= 1.10 x local + 2 ms",
                "holds": ab["holds"]}
        results["expectations"] = checks
        for key, check in checks.items():
            detail = (f"{check['ratio']:.2f}x" if "ratio" in check else
                      f"{check['server_p50_ms']:.1f} ms vs limit {check['limit_ms']:.1f} ms")
            print(f"  expectation {key} ({check['expected']}): {detail} -> "
                  f"{'holds' if check['holds'] else 'DOES NOT HOLD'}")
        results["load_average_end"] = os.getloadavg()[0]
    finally:
        if clients is not None:
            clients.close()
        stop_server(server)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
