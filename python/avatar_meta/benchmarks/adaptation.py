"""`avatar-meta bench adaptation`: few-shot episodes in -> signed PolicyWeights out.

Measured in one run, on one untrained 2x128 MLP meta-policy (the cost does not depend on
the values of the weights), 20 episodes x 200 steps per request:
- `inprocess`: `Adapter` called directly (decode + validate + GAE batch + the run's inner
  step + pack + sign), one request at a time: the baseline (also its CPU time per request,
  `cpu_ms_p50`, which a busy shared machine inflates far less than wall time);
- `service` (16 clients, the headline), `service_by_clients` (1, 16, 64): a real
  `avatar-meta serve` process on loopback with token auth, called by N client threads of this
  process, each sending its next request when the previous one answered; p50/p99 latency
  seen by the client, throughput, errors by status code, the ratio to in-process p50, and
  how the server micro-batched them (`batching`: batches, requests, largest batch). The
  server runs with `--rate-limit 0`: all bench clients share one token, i.e. are one client
  to the rate limiter;
- `step`: CPU ms (thread time) of the inner step alone on one request's batch: the trainer's
  `make_adapt_fn` step (full `pg_loss`, critic included) vs the service's critic-free step,
  one request and per request of a micro-batch of 8, and of building a batch (critic + GAE);
  `server_cpu_ms_per_request` in each service entry is the server process's CPU time over the
  run divided by its requests. Both are far less sensitive to other load on a shared
  machine than latencies;
- `encoder_step`: CPU ms per request of the task encoder's step (a checkpoint of
  `meta.algorithms: [encoder]`) on 8 small requests (2 x 100 steps): the trainer's path and
  the direct step one request at a time vs all 8 vmapped in one call;
- `compute_floor`: CPU ms of only the matrix products one request needs (critic forward for
  the values, actor forward and backward), timed with nothing else; 16 in-flight requests
  on this many cores cannot be answered faster than `p50_floor_ms_16_clients`;
- `onnx`: producing the Sentis ONNX of adapted weights by swapping initializers of the
  cached graph vs a full re-export.
Requests are pre-serialised with `serve.wire` (as a C# client's native protobuf would be fast
too), so client-side pure-Python protobuf encoding does not pollute the service figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

HIDDEN = (128, 128)
EPISODES, STEPS = 20, 200
MAX_BATCH, BATCH_WINDOW_MS = 8, 2.0
CLIENTS = (1, 16, 64)
TOKEN = "bench-token-0123456789abcdef"


def _request(seed: int, episodes: int = EPISODES, steps: int = STEPS) -> bytes:
    from avatar_meta import contract
    from avatar_meta.serve import wire

    rng = np.random.default_rng(seed)
    eps = [
        wire.encode_episode(
            rng.normal(size=(steps, contract.OBSERVATION_SIZE)),
            rng.normal(size=(steps, contract.NUM_CONTINUOUS_ACTIONS)),
            rng.integers(0, contract.DISCRETE_BRANCHES[0], (steps, 1)),
            rng.normal(size=steps),
            np.zeros((steps, sum(contract.DISCRETE_BRANCHES))),
            interrupted=bool(i % 2),
        )
        for i in range(episodes)
    ]
    return wire.encode_adapt_request(contract.BEHAVIOR_NAME, eps)


def _summary(latencies_ms: list[float], wall_s: float) -> dict[str, float]:
    arr = np.asarray(latencies_ms)
    return {
        "p50_ms": float(np.percentile(arr, 50)),
        "p99_ms": float(np.percentile(arr, 99)),
        "mean_ms": float(arr.mean()),
        "requests": int(arr.size),
        "throughput_per_s": float(arr.size / wall_s),
    }


def _inprocess(checkpoint: Path, key: Any, requests: list[bytes], n: int) -> dict[str, float]:
    from avatar_meta.export import signing
    from avatar_meta.serve import wire
    from avatar_meta.serve.adapter import Adapter

    adapter = Adapter(checkpoint)
    adapter.adapt(wire.decode_adapt_request(requests[0]))  # warm-up (first call is slow)
    latencies, cpu = [], []
    t_all = time.perf_counter()
    for i in range(n):
        t0, c0 = time.perf_counter(), time.thread_time()
        view = wire.decode_adapt_request(requests[i % len(requests)])
        params = adapter.adapt(view)
        signing.sign(adapter.pack(params, version=i + 1, task_id=""), key)
        latencies.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.thread_time() - c0) * 1e3)
    return {
        **_summary(latencies, time.perf_counter() - t_all),
        "cpu_ms_p50": float(np.percentile(cpu, 50)),
    }


def _cpu_ms(fn: Any, reps: int) -> float:
    fn()  # warm-up
    out = []
    for _ in range(reps):
        c0 = time.thread_time()
        fn()
        out.append((time.thread_time() - c0) * 1e3)
    return float(np.median(out))


def _step(checkpoint: Path, requests: list[bytes], reps: int) -> dict[str, Any]:
    from avatar_meta.serve import wire
    from avatar_meta.serve.adapter import Adapter

    adapter = Adapter(checkpoint)
    views = [wire.decode_adapt_request(requests[i % len(requests)]) for i in range(MAX_BATCH)]
    batches = adapter.to_batches(views)
    trainer = _cpu_ms(lambda: adapter.reference_adapt(batches[0]), reps)
    serve = _cpu_ms(lambda: adapter.adapt_batch(batches[0]), reps)
    batched = _cpu_ms(lambda: adapter.adapt_many(batches), reps) / len(batches)
    prepare = _cpu_ms(lambda: adapter.to_batches(views[:1], check=False), reps)
    prepare_batched = _cpu_ms(lambda: adapter.to_batches(views, check=False), reps) / len(views)
    return {
        "trainer_step_cpu_ms": trainer,
        "serve_step_cpu_ms": serve,
        "serve_step_batched_cpu_ms_per_request": batched,
        "batch_size": len(batches),
        "to_batch_cpu_ms": prepare,
        "to_batch_batched_cpu_ms_per_request": prepare_batched,
        "speedup_step": trainer / serve,
        "baseline": "trainer_step_cpu_ms",
    }


def _encoder_step(checkpoint: Path, reps: int) -> dict[str, Any]:
    """CPU ms per request of the task encoder's step (one forward pass writes the context) on
    a micro-batch of small requests (2 episodes x 100 steps, so that all 8 share one vmap
    call, see `Adapter.adapt_many`): the trainer's path and the direct step one request at a
    time, and the batched step."""
    from avatar_meta.serve import wire
    from avatar_meta.serve.adapter import Adapter

    adapter = Adapter(checkpoint)
    views = [wire.decode_adapt_request(_request(i, 2, 100)) for i in range(MAX_BATCH)]
    batches = adapter.to_batches(views)
    n = len(batches)
    trainer = _cpu_ms(lambda: [adapter.reference_adapt(b) for b in batches], reps) / n
    alone = _cpu_ms(lambda: [adapter.adapt_many([b]) for b in batches], reps) / n
    together = _cpu_ms(lambda: adapter.adapt_many(batches), reps) / n
    return {
        "steps_per_request": 200,
        "trainer_path_cpu_ms_per_request": trainer,
        "one_at_a_time_cpu_ms_per_request": alone,
        "batched_cpu_ms_per_request": together,
        "batch_size": n,
        "speedup_direct_vs_trainer_path": trainer / alone,
        "speedup_batched": alone / together,
        "baseline": "one_at_a_time_cpu_ms_per_request",
    }


def request_gemms(
    obs: int, hidden: tuple[int, ...], heads: int, rows: int
) -> list[tuple[int, int, int]]:
    """(M, K, N) of every matrix product one adaptation request needs at least: the critic's
    forward pass (values for GAE), the actor's forward pass, and the actor's backward pass
    (weight gradients of every layer, input gradients of all but the first)."""
    widths = [obs, *hidden]
    layers = list(zip(widths[:-1], widths[1:], strict=True))
    critic = [(rows, k, n) for k, n in [*layers, (hidden[-1], 1)]]
    actor = [(rows, k, n) for k, n in [*layers, (hidden[-1], heads)]]
    weight_grads = [(k, rows, n) for _, k, n in actor]
    input_grads = [(rows, n, k) for _, k, n in actor[1:]]
    return critic + actor + weight_grads + input_grads


def _compute_floor(reps: int) -> dict[str, Any]:
    """CPU ms of the bare matrix products of one request (one thread, nothing else): a
    floor no implementation of this adaptation step can go below on this machine, and what it
    implies for the 16-client p50 (16 requests in flight share the cores)."""
    from avatar_meta import contract

    heads = contract.NUM_CONTINUOUS_ACTIONS + sum(contract.DISCRETE_BRANCHES)
    shapes = request_gemms(contract.OBSERVATION_SIZE, HIDDEN, heads, EPISODES * STEPS)
    mats = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]
    flops = sum(2 * m * k * n for m, k, n in shapes)

    def products() -> None:
        for a, b in mats:
            torch.mm(a, b)

    ms = min(_cpu_ms(products, 1) for _ in range(max(reps, 3)))
    cores = os.cpu_count() or 1
    return {
        "gemm_mflop_per_request": flops / 1e6,
        "gemm_cpu_ms_per_request": ms,
        "gemm_gflop_per_s_one_thread": flops / ms / 1e6,
        "p50_floor_ms_16_clients": 16 * ms / cores,
        "note": "16 closed-loop clients keep 16 requests in flight; with C cores each "
        "request waits for about 16 / C requests' compute, so p50 >= 16 * floor / cores",
    }


def _proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a process (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _start_server(folder: Path) -> tuple[subprocess.Popen[str], str]:
    cmd = [
        sys.executable,
        "-m",
        "avatar_meta.cli",
        "serve",
        "--checkpoint",
        str(folder / "maml.pt"),
        "--port",
        "0",
        "--token-file",
        str(folder / "token"),
        "--sign-key",
        str(folder / "keys" / "private.pem"),
        "--max-workers",
        "2",
        "--max-queue",
        "64",
        "--max-batch",
        str(MAX_BATCH),
        "--batch-window-ms",
        str(BATCH_WINDOW_MS),
        "--rate-limit",
        "0",
    ]
    log = open(folder / "server.log", "w")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        raise RuntimeError(f"server did not start: {(folder / 'server.log').read_text()[-2000:]}")
    return proc, line.split(" on ")[-1].strip()


def _service(
    address: str,
    public_key: Any,
    requests: list[bytes],
    clients: int,
    per_client: int,
    server_pid: int,
) -> dict[str, Any]:
    import grpc

    from avatar_meta.serve.client import AdaptationClient

    client = AdaptationClient(address, token=TOKEN, public_key=public_key)
    client.adapt_encoded(requests[0])  # warm-up
    before = client.stats().counters
    cpu_before = _proc_cpu_s(server_pid)
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def worker(k: int) -> None:
        start.wait()
        for i in range(per_client):
            t0 = time.perf_counter()
            try:
                client.adapt_encoded(requests[(k + i) % len(requests)], timeout=120)
                code = "OK"
            except grpc.RpcError as err:
                code = err.code().name
            with lock:
                codes[code] += 1
                if code == "OK":
                    latencies.append((time.perf_counter() - t0) * 1e3)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t_all = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t_all
    cpu_after = _proc_cpu_s(server_pid)
    after = client.stats().counters
    client.close()
    batching = {
        "batches": after["batches"] - before["batches"],
        "requests": after["batched_requests"] - before["batched_requests"],
        "largest_batch_so_far": after["largest_batch"],
    }
    return {
        **_summary(latencies, wall),
        "clients": clients,
        "codes": dict(codes),
        "batching": batching,
        "server_cpu_ms_per_request": (
            None
            if cpu_before is None or cpu_after is None or not latencies
            else (cpu_after - cpu_before) * 1e3 / len(latencies)
        ),
    }


def _onnx(checkpoint: Path, reps: int) -> dict[str, Any]:
    from avatar_meta.export.onnx_export import OnnxTemplate, export_policy
    from avatar_meta.serve.adapter import Adapter

    adapter = Adapter(checkpoint)
    template = OnnxTemplate()
    t0 = time.perf_counter()
    template.template(adapter.spec)
    first = (time.perf_counter() - t0) * 1e3
    swap, full = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        template.bytes_for(adapter.spec, adapter.params, adapter.buffers)
        swap.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        export_policy(adapter.spec, adapter.params, adapter.buffers).SerializeToString()
        full.append((time.perf_counter() - t0) * 1e3)
    s, f = float(np.median(swap)), float(np.median(full))
    return {
        "swap_ms": s,
        "full_export_ms": f,
        "first_export_ms": first,
        "speedup": f / s,
        "baseline": "full_export_ms",
    }


def run(quick: bool = False) -> dict[str, Any]:
    """The `results` object of the suite's JSON."""
    from avatar_meta.export import signing
    from avatar_meta.serve.adapter import make_checkpoint

    torch.set_num_threads(1)
    load_start = os.getloadavg()
    per_client = {1: 4, 16: 1, 64: 1} if quick else {1: 30, 16: 8, 64: 3}
    with tempfile.TemporaryDirectory(prefix="bench-adapt-") as tmp:
        folder = Path(tmp)
        checkpoint = make_checkpoint(folder / "maml.pt", hidden=HIDDEN)
        signing.write_keypair(folder / "keys")
        (folder / "token").write_text(TOKEN)
        key = signing.load_private_key(folder / "keys" / "private.pem")
        public = signing.load_public_key(folder / "keys" / "public.pem")
        requests = [_request(s) for s in range(4)]
        inproc = _inprocess(checkpoint, key, requests, 5 if quick else 40)
        proc, address = _start_server(folder)
        try:
            by_clients = {
                str(n): _service(address, public, requests, n, per_client[n], proc.pid)
                for n in CLIENTS
            }
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        onnx = _onnx(checkpoint, 2 if quick else 10)
        step = _step(checkpoint, requests, 2 if quick else 10)
        encoder = make_checkpoint(folder / "encoder.pt", hidden=HIDDEN, algorithm="encoder")
        encoder_step = _encoder_step(encoder, 2 if quick else 10)
        floor = _compute_floor(2 if quick else 10)
    head = by_clients["16"]
    for entry in by_clients.values():
        entry["ratio_p50_vs_inprocess"] = entry["p50_ms"] / inproc["p50_ms"]
    return {
        "config": {
            "hidden": list(HIDDEN),
            "episodes": EPISODES,
            "steps": STEPS,
            "server_workers": 2,
            "max_batch": MAX_BATCH,
            "batch_window_ms": BATCH_WINDOW_MS,
            "rate_limit": "off (--rate-limit 0: the bench clients share one token)",
            "quick": quick,
            "torch_threads": 1,
            "cores": os.cpu_count(),
            "loadavg_1m_start_end": [load_start[0], os.getloadavg()[0]],
        },
        "inprocess": inproc,
        "service": {
            **head,
            "baseline": "inprocess.p50_ms",
            "ratio_p50_vs_inprocess": head["p50_ms"] / inproc["p50_ms"],
            "goal": {"p50_ms": 20.0, "p99_ms": 100.0},
        },
        "service_by_clients": by_clients,
        "step": step,
        "encoder_step": encoder_step,
        "compute_floor": floor,
        "onnx": onnx,
    }
