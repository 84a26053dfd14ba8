"""Serving benchmark for issue 6 (not run by pytest).

    python bench/serve.py                     # random weights, synthetic Beauty-size catalogue
    python bench/serve.py --run runs/beauty   # a trained run's checkpoint and catalogue
    python bench/serve.py --n-load 2000       # a shorter load test
    python bench/serve.py --quick true --out /tmp/serve-bench   # a smoke run (small samples everywhere)

Setting: a Beauty-size catalogue (12,101 items, semantic IDs 256/256/256 + a dedup level),
the configs/sparse.yaml model (CausalSID d128, 2 layers, item-id embedding), 20-item histories,
beam 20, k = 10, exclude_history on (the server's default). Latency does not depend on the
weights, so random weights are used unless --run is given (results say which).

Measured in one run, on the same histories:
- ONNX in process: ExportRuntime.recommend at batch 1 (p50, p99);
- HTTP: `python serve.py` on 127.0.0.1, one client, keep-alive (p50, p99);
- throughput: --n-load requests (default 20,000, the issue's reliability run) from 32 concurrent
  clients: req/s, errors, 5xx; then the server's RSS (current and peak);
- fairness under a flood: --flood-clients light clients (one --history-item request each, back to
  back) alone, then while one more client loops /recommend/batch with 256 requests of
  --flood-history ids (~870 KB, the issue's heavy client): light p50/p99 in both phases;
- torch eager, ours: GenRecModule.recommend (the evaluation path) at batch 1;
- the peer path, TIGER: transformers `generate()` with `prefix_allowed_tokens_fn` (a dict trie)
  on a T5 of TIGER's size (4+4 layers, d_model 128, 6 heads, d_kv 64, d_ff 1024, 80 history tokens),
  random weights and TIGER's own 3 levels of 256 + dedup even with --run (the trained model is CausalSID);
- the same T5 and weights exported by `genrec export` (arch tiger) and decoded by ExportRuntime.

Torch runs with --torch-threads (1 by default: the machine is shared, and 1 thread was the faster
setting for this tiny model here); onnxruntime with --intra-op-threads. Writes
bench/results/serve.json and bench/results/serve_latency.png, prints a table.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from genrec.config import add_config_args, config_from_args
from genrec.io import machine_info, package_versions, write_json_atomic

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from loadgen import flood_figure, run_load  # noqa: E402

BEAUTY_ITEMS = 12_101          # Amazon Beauty (2014, 5-core) catalogue size
SEMANTIC_LEVELS = (256, 256, 256)
WARMUP = 30                    # untimed requests before each timed path
SERVER_START_TIMEOUT_S = 120
TARGETS = {                    # issue 6 performance targets
    "onnx_p50_ms": 5.0, "onnx_p99_ms": 15.0, "http_p50_ms": 10.0, "throughput_rps": 300.0,
    "server_rss_mb": 300.0, "speedup_vs_peer": 3.0,
    "flood_light_p99_ms": 50.0,   # light clients' p99 while one client floods 870 KB batches (serving issue)
}
FLOOD_BATCH = 256              # requests per flooding batch (the server's --max-batch-requests)


@dataclass
class BenchConfig:
    run: str | None = None          # trained run to export (None: random weights, synthetic catalogue)
    n_items: int = BEAUTY_ITEMS     # synthetic catalogue size
    history: int = 20               # items per request history
    beam_width: int = 20            # beam width of every path
    k: int = 10                     # items returned per request
    n_latency: int = 1000           # timed in-process ONNX requests
    n_eager: int = 200              # timed torch-eager requests (ours)
    n_peer: int = 30                # timed peer generate() requests
    n_http: int = 1000              # timed sequential HTTP requests
    n_load: int = 20_000            # requests of the concurrent load test
    n_flood: int = 2000             # light requests per phase of the flood figure (alone, then beside the flood)
    flood_clients: int = 8          # light clients of the flood figure
    flood_history: int = 280        # ids per history in the flooding batch (256 of them: ~870 KB)
    quick: bool = False             # smoke run: caps every sample size (about a minute; do not publish its figures)
    clients: int = 32               # concurrent clients of the load test
    intra_op_threads: int = 1       # onnxruntime intra-op threads (in process and server)
    torch_threads: int = 1          # torch threads for both eager paths
    seed: int = 0                   # catalogue, weights and histories
    out: str = "bench/results"      # where serve.json and serve_latency.png go

    def __post_init__(self):
        if self.quick:
            self.n_latency, self.n_eager, self.n_peer = (min(self.n_latency, 100), min(self.n_eager, 20),
                                                         min(self.n_peer, 3))
            self.n_http, self.n_load, self.n_flood = (min(self.n_http, 100), min(self.n_load, 500),
                                                      min(self.n_flood, 200))
        for name in ("n_items", "history", "beam_width", "k", "n_latency", "n_eager", "n_peer", "n_http", "n_load",
                     "n_flood", "flood_clients", "flood_history", "clients", "intra_op_threads", "torch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.k > self.beam_width:
            raise ValueError(f"k ({self.k}) must be <= beam_width ({self.beam_width})")


# ---------------------------------------------------------------------- setup
def synthetic_codes(n_items: int, seed: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """(N, 4) codes: skewed level 0 (as RQ-VAE usage is), uniform levels 1-2, then the dedup level."""
    from genrec.tokenizer.semantic_ids import dedup_level

    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(SEMANTIC_LEVELS[0], 0.5))
    codes = np.stack([rng.choice(SEMANTIC_LEVELS[0], n_items, p=weights)]
                     + [rng.integers(0, k, n_items) for k in SEMANTIC_LEVELS[1:]], axis=1)
    dedup = dedup_level(codes)
    return np.concatenate([codes, dedup[:, None]], axis=1), (*SEMANTIC_LEVELS, int(dedup.max()) + 1)


def build_model(cfg: BenchConfig):
    """The causal model of configs/sparse.yaml (random weights) or the run's trained checkpoint."""
    import torch

    from genrec.lit.data import ModelDims
    from genrec.lit.module import GenRecModule

    if cfg.run:
        from genrec.evaluate import load_genrec

        module, _ = load_genrec(Path(cfg.run), "best")
        return module, "trained checkpoint " + str(Path(cfg.run) / "checkpoints" / "best.ckpt")
    codes, levels = synthetic_codes(cfg.n_items, cfg.seed)
    torch.manual_seed(cfg.seed)
    module = GenRecModule(dims=ModelDims(levels, cfg.n_items, 0, "bench", max_items=20), arch="causal",
                          d_model=128, n_layers=2,
                          n_heads=4, d_ff=512, dropout=0.0, item_id_embedding=True,
                          beam_width=cfg.beam_width)
    module.item_codes.copy_(torch.as_tensor(codes))
    return module.genrec.eval(), "random weights (latency does not depend on them)"


def export_folder(cfg: BenchConfig, module, out: Path, from_run: bool) -> Path:
    from genrec.export import ExportConfig, export, export_module

    config = ExportConfig(beam_width=cfg.beam_width, name=out.name)
    if from_run:
        export(Path(cfg.run), out, config)
    else:
        export_module(module, out, config, source_ids=[f"B{i:07d}" for i in range(module.n_items)],
                      titles=[f"Item {i}" for i in range(module.n_items)])
    return out


def timed(fn, inputs: list, warmup: int = WARMUP) -> np.ndarray:
    """Seconds per call of fn(x) for each x in inputs, after ``warmup`` untimed calls."""
    for x in inputs[:warmup]:
        fn(x)
    out = np.zeros(len(inputs))
    for i, x in enumerate(inputs):
        start = time.perf_counter()
        fn(x)
        out[i] = time.perf_counter() - start
    return out


# ---------------------------------------------------------------------- paths
def bench_onnx(cfg: BenchConfig, folder: Path, histories: list[np.ndarray]) -> np.ndarray:
    from genrec.serving.runtime import ExportRuntime, RuntimeConfig

    runtime = ExportRuntime(folder, RuntimeConfig(intra_op_threads=cfg.intra_op_threads))
    return timed(lambda h: runtime.recommend([h], cfg.k, beam_width=cfg.beam_width), histories)


def bench_eager(cfg: BenchConfig, module, histories: list[np.ndarray]) -> np.ndarray:
    import torch

    def run(h):
        hist = torch.as_tensor(h[None])
        module.recommend(hist, k=cfg.k, beam_width=cfg.beam_width, exclude=[h])

    return timed(run, histories)


def build_tiger(cfg: BenchConfig, module):
    """TIGER's T5 (4+4 layers, d_model 128, 6 heads, d_kv 64, d_ff 1024), random weights, a catalogue of the
    same size with TIGER's own layout (3 levels of 256 + dedup), also with --run: a trained run's codes may
    be 17 PQ digits, which would make the peer decode 17 steps over 340 history tokens, not TIGER's 4 over 80."""
    import torch

    from genrec.lit.data import ModelDims
    from genrec.lit.module import GenRecModule

    codes, levels = synthetic_codes(module.n_items, cfg.seed)
    torch.manual_seed(cfg.seed)
    tiger = GenRecModule(dims=ModelDims(levels, module.n_items, 0, "bench", max_items=cfg.history),
                         arch="tiger", d_model=128,
                         tiger_layers=4, tiger_heads=6, tiger_d_ff=1024, tiger_dropout=0.0,
                         beam_width=cfg.beam_width)
    tiger.item_codes.copy_(torch.as_tensor(codes))
    return tiger.genrec.eval()


def bench_peer(cfg: BenchConfig, tiger_module, histories: list[np.ndarray]) -> tuple[np.ndarray, dict]:
    """TIGER's serving path: T5 generate() + prefix_allowed_tokens_fn over a dict trie of global tokens."""
    import torch

    from genrec.model.layout import BOS, EOS

    tiger = tiger_module.model
    layout = tiger.layout
    tokens = layout.to_tokens(tiger_module.item_codes.numpy())                      # (N, D) global token ids
    allowed: dict[tuple[int, ...], list[int]] = {}
    for row in tokens.tolist():
        for d in range(len(row)):
            allowed.setdefault((BOS, *row[:d]), []).append(row[d])
    allowed = {prefix: sorted(set(nxt)) for prefix, nxt in allowed.items()}
    code_to_item = {tuple(row): i for i, row in enumerate(tokens.tolist())}

    def prefix_allowed_tokens_fn(batch_id, input_ids):
        return allowed.get(tuple(input_ids.tolist()), [EOS])

    n_levels = layout.n_levels
    found = []

    @torch.inference_mode()
    def run(h):
        input_ids = torch.as_tensor(tokens[h].reshape(1, -1))                       # (1, history * D)
        out = tiger.t5.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                num_beams=cfg.beam_width, num_return_sequences=cfg.k, do_sample=False,
                                max_new_tokens=n_levels, min_new_tokens=n_levels, decoder_start_token_id=BOS,
                                prefix_allowed_tokens_fn=prefix_allowed_tokens_fn)
        found.append(sum(tuple(seq[1:1 + n_levels]) in code_to_item for seq in out.tolist()))

    seconds = timed(run, histories, warmup=min(3, len(histories)))
    params = sum(p.numel() for p in tiger.parameters())
    return seconds, {"parameters": params, "history_tokens": cfg.history * n_levels,
                     "valid_items_per_request": float(np.mean(found[-len(histories):]))}


def start_server(folder: Path, log_path: Path, *flags: str, intra_op_threads: int = 1) -> tuple[subprocess.Popen, str]:
    """`serve.py` on ``folder`` at a free loopback port (extra ``flags`` appended); (process, base URL)
    once it listens."""
    log_file = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, str(REPO / "serve.py"), "--export", str(folder), "--host", "127.0.0.1",
                             "--port", "0", "--intra-op-threads", str(intra_op_threads), "--log-level", "info", *flags],
                            stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO)
    log_file.close()
    deadline = time.time() + SERVER_START_TIMEOUT_S
    while time.time() < deadline:
        match = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", log_path.read_text(errors="replace"))
        if match:
            return proc, match.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the server did not start; its log:\n{log_path.read_text(errors='replace')[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM (a graceful shutdown), SIGKILL if it has not exited within 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def rss_mb(pid: int) -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of a process, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return {"rss_mb": round(fields.get("VmRSS", float("nan")), 1),
            "peak_rss_mb": round(fields.get("VmHWM", float("nan")), 1)}


def bench_http(cfg: BenchConfig, folder: Path, work: Path, histories: list[np.ndarray], ids: list[str]) -> dict:
    proc, url = start_server(folder, work / "server.log", intra_op_threads=cfg.intra_op_threads)
    try:
        def body(h):
            return {"history": [ids[i] for i in h], "k": cfg.k}

        run_load(url, [body(h) for h in histories[:WARMUP]], clients=1)
        single = run_load(url, [body(h) for h in histories[:cfg.n_http]], clients=1)
        rng = np.random.default_rng(cfg.seed + 1)
        load_bodies = [body(histories[i]) for i in rng.integers(0, len(histories), cfg.n_load)]
        load = run_load(url, load_bodies, clients=cfg.clients)
        light = [body(histories[i]) for i in rng.integers(0, len(histories), cfg.n_flood)]
        flood_body = {"requests": [{"history": [ids[i] for i in rng.integers(0, len(ids), cfg.flood_history)],
                                    "k": cfg.k} for _ in range(FLOOD_BATCH)]}
        flood = flood_figure(url, light, flood_body, clients=cfg.flood_clients)
        memory = rss_mb(proc.pid)
        alive = proc.poll() is None
    finally:
        stop_server(proc)
    return {
        "single": single, "load": load, "flood": flood, "memory": memory, "alive_after_load": alive,
        "n_5xx": sum(n for s, n in load.statuses.items() if s >= 500),
    }


# ---------------------------------------------------------------------- report
def summary(seconds: np.ndarray) -> dict:
    ms = seconds * 1000
    return {"n": int(len(ms)), "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p90_ms": round(float(np.percentile(ms, 90)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3)}


def plot(latencies: dict[str, np.ndarray], path: Path) -> None:
    from genrec.plots import plt, save_png   # headless (Agg) pyplot

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, seconds in latencies.items():
        ms = np.sort(seconds * 1000)
        ax.step(ms, np.arange(1, len(ms) + 1) / len(ms), where="post", label=f"{name} (p50 {np.median(ms):.1f} ms)")
    ax.axvline(TARGETS["onnx_p50_ms"], color="grey", ls=":", lw=1)
    ax.axvline(TARGETS["onnx_p99_ms"], color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("latency per request, batch 1 (ms, log scale); dotted 5 ms, dashed 15 ms")
    ax.set_ylabel("fraction of requests")
    ax.set_title("genrec serving latency: beam 20, k = 10, 20-item history, 12,101 items")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    save_png(fig, path)   # atomic: a killed run never leaves a half-written PNG in bench/results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_config_args(parser, BenchConfig)   # one flag per field, its comment as the help text
    cfg = config_from_args(BenchConfig, parser.parse_args(argv))

    import torch

    torch.set_num_threads(cfg.torch_threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="genrec-bench-serve-") as tmp:
        work = Path(tmp)
        module, weights = build_model(cfg)
        print(f"model: {weights}; {module.n_items} items, levels {list(module.level_sizes)}")
        folder = export_folder(cfg, module, work / "causal", from_run=bool(cfg.run))
        tiger = build_tiger(cfg, module)
        tiger_folder = export_folder(cfg, tiger, work / "tiger", from_run=False)
        rng = np.random.default_rng(cfg.seed)
        n_hist = max(cfg.n_latency, cfg.n_http, cfg.n_eager, cfg.n_peer)
        histories = [rng.choice(module.n_items, cfg.history, replace=False) for _ in range(n_hist)]
        from genrec.serving.runtime import ExportRuntime

        ids = ExportRuntime(folder).source_ids
        print("timing onnxruntime in process ...")
        onnx = bench_onnx(cfg, folder, histories[:cfg.n_latency])
        print("timing HTTP (single client, then the load test) ...")
        http = bench_http(cfg, folder, work, histories, ids)
        print("timing torch eager (ours) ...")
        eager = bench_eager(cfg, module, histories[:cfg.n_eager])
        print("timing the same T5 exported to ONNX ...")
        onnx_tiger = bench_onnx(cfg, tiger_folder, histories[:cfg.n_latency])
        print("timing the peer path (T5 generate + prefix_allowed_tokens_fn) ...")
        peer, peer_info = bench_peer(cfg, tiger, histories[:cfg.n_peer])
        export_bytes = sum(p.stat().st_size for p in folder.iterdir())

    load = http["load"]
    from run import git_commit

    results = {
        "git_commit": git_commit(),
        "setting": {"n_items": int(module.n_items), "level_sizes": list(module.level_sizes),
                    "history_items": cfg.history, "beam_width": cfg.beam_width, "k": cfg.k, "exclude_history": True,
                    "weights": weights, "model": "CausalSID d128, 2 layers, 4 heads, d_ff 512, item-id embedding",
                    "export_mb": round(export_bytes / 2**20, 2)},
        "onnx_in_process": summary(onnx),
        "http_single_client": summary(http["single"].latencies),
        "http_load": {"requests": load.n_requests, "clients": cfg.clients,
                      "requests_per_s": round(load.requests_per_s, 1),
                      "errors": load.n_errors, "n_5xx": http["n_5xx"],
                      "statuses": {str(k): v for k, v in load.statuses.items()},
                      "server_alive_after": http["alive_after_load"], **summary(load.latencies)},
        "http_flood": http["flood"],
        "server_memory": http["memory"],
        "torch_eager_ours": summary(eager),
        "onnx_tiger_in_process": summary(onnx_tiger) | {"note": "the peer's T5 and weights, exported by genrec"},
        "peer_tiger_generate": summary(peer) | peer_info,
        "speedup": {"onnx_vs_peer_p50": round(float(np.median(peer) / np.median(onnx)), 1),
                    "http_vs_peer_p50": round(float(np.median(peer) / np.median(http["single"].latencies)), 1),
                    "onnx_vs_torch_eager_ours_p50": round(float(np.median(eager) / np.median(onnx)), 2),
                    "onnx_tiger_vs_peer_p50": round(float(np.median(peer) / np.median(onnx_tiger)), 1)},
        "config": asdict(cfg),
        "machine": machine_info() | {"load_avg_before": [round(x, 2) for x in load_before],
                                     "load_avg_after": [round(x, 2) for x in os.getloadavg()]},
        "versions": package_versions(),
    }
    measured = {"onnx_p50_ms": results["onnx_in_process"]["p50_ms"],
                "onnx_p99_ms": results["onnx_in_process"]["p99_ms"],
                "http_p50_ms": results["http_single_client"]["p50_ms"],
                "throughput_rps": results["http_load"]["requests_per_s"],
                "server_rss_mb": results["server_memory"]["peak_rss_mb"],
                "flood_light_p99_ms": results["http_flood"]["beside_flood"]["p99_ms"],
                "speedup_vs_peer": results["speedup"]["onnx_vs_peer_p50"]}
    higher_is_better = {"throughput_rps", "speedup_vs_peer"}
    results["targets"] = {name: {"target": target, "measured": measured[name],
                                 "met": bool(measured[name] >= target if name in higher_is_better
                                             else measured[name] <= target)}
                          for name, target in TARGETS.items()}
    out = REPO / cfg.out if not Path(cfg.out).is_absolute() else Path(cfg.out)
    write_json_atomic(out / "serve.json", results)
    plot({"ONNX in process": onnx, "HTTP, 1 client": http["single"].latencies, "torch eager (ours)": eager,
          "TIGER T5, ONNX (ours)": onnx_tiger, "peer: T5 generate()": peer}, out / "serve_latency.png")
    print(table(results))
    print(f"wrote {out / 'serve.json'} and {out / 'serve_latency.png'}")
    return results


def table(r: dict) -> str:
    rows = [
        ("ONNX in process, batch 1", f"{r['onnx_in_process']['p50_ms']:.2f}",
         f"{r['onnx_in_process']['p99_ms']:.2f}", ""),
        ("HTTP loopback, 1 client", f"{r['http_single_client']['p50_ms']:.2f}",
         f"{r['http_single_client']['p99_ms']:.2f}", ""),
        (f"HTTP loopback, {r['http_load']['clients']} clients", f"{r['http_load']['p50_ms']:.2f}",
         f"{r['http_load']['p99_ms']:.2f}", f"{r['http_load']['requests_per_s']:.0f} req/s, "
         f"{r['http_load']['errors']} errors / {r['http_load']['requests']}"),
        (f"HTTP, {r['http_flood']['light_clients']} light clients alone", f"{r['http_flood']['alone']['p50_ms']:.2f}",
         f"{r['http_flood']['alone']['p99_ms']:.2f}", ""),
        (f"HTTP, the same beside a {r['http_flood']['flood']['body_kb']:.0f} kB batch flood",
         f"{r['http_flood']['beside_flood']['p50_ms']:.2f}", f"{r['http_flood']['beside_flood']['p99_ms']:.2f}",
         f"{r['http_flood']['flood']['requests']} flood batches, statuses {r['http_flood']['flood']['statuses']}"),
        ("torch eager, ours (GenRecModule.recommend)", f"{r['torch_eager_ours']['p50_ms']:.2f}",
         f"{r['torch_eager_ours']['p99_ms']:.2f}", ""),
        ("TIGER T5 exported, ONNX in process", f"{r['onnx_tiger_in_process']['p50_ms']:.2f}",
         f"{r['onnx_tiger_in_process']['p99_ms']:.2f}", f"{r['speedup']['onnx_tiger_vs_peer_p50']}x faster than peer"),
        ("peer: T5 generate() + prefix_allowed_tokens_fn", f"{r['peer_tiger_generate']['p50_ms']:.2f}",
         f"{r['peer_tiger_generate']['p99_ms']:.2f}", f"{r['speedup']['onnx_vs_peer_p50']}x slower than ONNX"),
    ]
    lines = ["| path | p50 ms | p99 ms | notes |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines.append(f"\nserver RSS {r['server_memory']['rss_mb']} MB (peak {r['server_memory']['peak_rss_mb']} MB); "
                 f"{r['setting']['weights']}; load avg before/after {r['machine']['load_avg_before']} / "
                 f"{r['machine']['load_avg_after']}")
    lines.append("targets: " + ", ".join(f"{k} {v['measured']} "
                                         f"({'met' if v['met'] else 'MISSED'}, target {v['target']})"
                                         for k, v in r["targets"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
