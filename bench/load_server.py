"""Load benchmark of `pintor serve`: waves of concurrent requests on loopback against a real server subprocess.

Each wave fires N requests at once (alternating the OpenAI-compatible and A1111-compatible endpoints) and checks:
every request is served (no 5xx), the queue ran the jobs in the order it accepted them (FIFO: start and finish
order follow the queue's sequence numbers), and the server's resident memory stays flat from wave to wave.
It records throughput and p50/p95 latency in `bench/results/server-load-<date>.json`.

    python bench/load_server.py                    # a tiny random model built on the fly, 3 waves of 50
    python bench/load_server.py --model kandinsky-2.2 --requests 20 --waves 2

This is a benchmark, not a test: it prints figures and exits non-zero only if a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples, self._halt = pid, every, [], threading.Event()

    def run(self):
        while not self._halt.is_set():
            try:
                self.samples.append((time.time(), rss_mb(self.pid)))
            except OSError:
                return
            self._halt.wait(self.every)

    def stop(self):
        self._halt.set()
        self.join()


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def one_request(httpx, url: str, i: int, barrier: threading.Barrier, settings: dict) -> dict:
    if i % 2 == 0:
        path, body = "/v1/images/generations", {"prompt": f"a red circle number {i}", "n": 1, "user": f"load-{i}",
                                                 **({"size": settings["size"]} if settings.get("size") else {}),
                                                 **({"steps": settings["steps"]} if settings.get("steps") else {})}
    else:
        path, body = "/sdapi/v1/txt2img", {"prompt": f"a blue square number {i}", "batch_size": 1,
                                           **({"steps": settings["steps"]} if settings.get("steps") else {})}
    with httpx.Client(timeout=600) as client:
        barrier.wait()
        t0 = time.perf_counter()
        r = client.post(url + path, json=body)
        seconds = time.perf_counter() - t0
    return {"i": i, "api": "openai" if i % 2 == 0 else "a1111", "status": r.status_code, "seconds": seconds,
            "job": r.headers.get("x-pintor-job"), "bytes": len(r.content)}


def run_wave(httpx, server, n: int, settings: dict) -> dict:
    barrier = threading.Barrier(n)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(lambda i: one_request(httpx, server.url, i, barrier, settings), range(n)))
    wall = time.perf_counter() - t0
    jobs = {j["id"]: j for j in server.get_json(f"/api/v1/jobs?limit={4 * n}")["jobs"]}
    mine = sorted((jobs[r["job"]] for r in results if r["job"] in jobs), key=lambda j: j["seq"])
    fifo = all(a["started"] <= b["started"] and a["finished"] <= b["finished"]
               for a, b in zip(mine, mine[1:], strict=False))
    latencies = [r["seconds"] for r in results]
    statuses = {}
    for r in results:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    return {"requests": n, "wall_seconds": round(wall, 3), "throughput_rps": round(n / wall, 3),
            "latency_p50": round(percentile(latencies, 0.5), 3), "latency_p95": round(percentile(latencies, 0.95), 3),
            "latency_max": round(max(latencies), 3), "statuses": statuses,
            "server_5xx": sum(1 for r in results if r["status"] >= 500),
            "jobs_found": len(mine), "fifo": fifo,
            "job_seconds_mean": round(statistics.mean(j["finished"] - j["started"] for j in mine), 4) if mine else None}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("pintor", "torch", "diffusers", "transformers", "fastapi", "uvicorn", "gradio", "httpx"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def device() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        accel = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        accel = None
    return {"cpu": cpu, "cores": os.cpu_count(), "accelerator": accel, "platform": platform.platform(),
            "load_average_at_start": list(os.getloadavg())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model to serve (default: a tiny random model built now)")
    p.add_argument("--requests", type=int, default=50, help="concurrent requests per wave (default 50)")
    p.add_argument("--waves", type=int, default=3, help="waves (default 3; memory is compared across them)")
    p.add_argument("--steps", type=int, default=None, help="decoder steps per request (default: the model's)")
    p.add_argument("--size", default=None, help="WxH (default: the model's)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"), help="folder for the JSON result")
    args = p.parse_args(argv)

    import httpx

    from pintor.server.testing import ServerProcess

    with tempfile.TemporaryDirectory(prefix="pintor-load-") as tmp:
        tmp = Path(tmp)
        model = args.model
        if model is None:
            from pintor.architectures import TINY, build_kandinsky22, save_kandinsky22

            model = tmp / "tiny-k22"
            save_kandinsky22(build_kandinsky22(TINY, seed=0), model, name="tiny-k22",
                             defaults=dict(steps=2, prior_steps=2, width=64, height=64))
        settings = {"steps": args.steps, "size": args.size}
        with ServerProcess("--model", model, "--log-level", "warning", outputs=tmp / "outputs") as server:
            sampler = RssSampler(server.proc.pid)
            sampler.start()
            rss_start = rss_mb(server.proc.pid)
            waves = []
            for w in range(args.waves):
                wave = run_wave(httpx, server, args.requests, settings)
                wave["rss_mb_after"] = round(rss_mb(server.proc.pid), 1)
                waves.append(wave)
                print(f"wave {w + 1}: {wave['requests']} requests in {wave['wall_seconds']} s "
                      f"({wave['throughput_rps']} req/s), p50 {wave['latency_p50']} s, p95 {wave['latency_p95']} s, "
                      f"statuses {wave['statuses']}, FIFO {wave['fifo']}, RSS {wave['rss_mb_after']} MB", flush=True)
            sampler.stop()
            history = server.get_json("/api/v1/history?limit=1")["total"]
    rss = [mb for _, mb in sampler.samples]
    # Memory is flat when the later waves end where the first one did (the first wave warms caches up).
    growth = (waves[-1]["rss_mb_after"] - waves[0]["rss_mb_after"]) / waves[0]["rss_mb_after"] if waves else 0.0
    result = {
        "benchmark": "pintor serve load", "date": datetime.now().isoformat(timespec="seconds"),
        "model": str(args.model or "tiny-k22 (random, built by the benchmark)"), "device": device(),
        "versions": versions(), "settings": {"requests_per_wave": args.requests, "waves": args.waves,
                                             "apis": "alternating /v1/images/generations and /sdapi/v1/txt2img",
                                             "steps": args.steps, "size": args.size},
        "waves": waves,
        "memory": {"rss_mb_at_start": round(rss_start, 1), "rss_mb_peak": round(max(rss), 1) if rss else None,
                   "rss_mb_after_each_wave": [w["rss_mb_after"] for w in waves],
                   "growth_first_to_last_wave": round(growth, 4), "samples": len(rss)},
        "images_in_history": history,
        "checks": {"no_5xx": all(w["server_5xx"] == 0 for w in waves),
                   "all_served": all(w["statuses"] == {"200": w["requests"]} for w in waves),
                   "fifo": all(w["fifo"] and w["jobs_found"] == w["requests"] for w in waves),
                   "memory_flat": growth < 0.10},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"server-load-{datetime.now():%Y-%m-%d}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"checks: {result['checks']}; memory {result['memory']['rss_mb_after_each_wave']} MB; wrote {path}")
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
