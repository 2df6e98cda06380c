#!/usr/bin/env python3
"""The benchmark suite's layer in PyTorch eager, for comparison with gqa-bench.

A torchtune-style GQA layer (nn.Linear q/k/v/o, interleaved RoPE, a K/V cache
[b, n_kv, T, hd], K/V expanded to the query heads before scaled dot-product
attention), fp32, batch 1, timed on the shapes and layer modes of
bench/bench_layer.cpp with the same FLOP and byte counts, and written as Google
Benchmark JSON (median, mean and stddev aggregates of the repetitions) named
layer/<mode>/torch/<shape>/real_time, which tools/bench_report.py reads with --extra.

    /usr/bin/python3 bench/torch_layer.py --out build/bench-results/torch.json
    /usr/bin/python3 bench/torch_layer.py --check   # the layer against plain loops

Exit status: 0 done (the output written, or the check passed); 1 the check found
a mismatch; 2 bad arguments or an unwritable output; 77 skipped, nothing written:
PyTorch is not installed (Debian: apt-get install python3-torch) or no benchmark
matches --filter.
"""

import argparse
import functools
import json
import math
import os
import re
import socket
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None

SKIPPED = 77

# As in bench/bench_layer.cpp.
PREFILL_TOKENS = 512
DECODE_STEPS = 64          # decodes before a cache is refilled (untimed)
MAX_SEQ_LEN = 8192 + DECODE_STEPS
L3_BYTES = 32 << 20        # cold chains hold more than 3x this
ROPE_BASE = 10000.0
CONTEXTS = (2048, 8192)


@dataclass(frozen=True)
class Shape:
    name: str
    embed_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    bias: bool  # q/k/v biases; never one on the output projection

    @property
    def q_width(self):
        return self.num_heads * self.head_dim

    @property
    def kv_width(self):
        return self.num_kv_heads * self.head_dim


SHAPES = [
    Shape("small", 256, 8, 2, 32, False),
    Shape("W1", 2048, 32, 8, 64, False),
    Shape("W2", 4096, 32, 8, 128, False),
    Shape("W3", 896, 14, 2, 64, True),
]


def weight_bytes(s):
    d = s.embed_dim
    return 4 * (d * (2 * s.q_width + 2 * s.kv_width) + (s.q_width + 2 * s.kv_width if s.bias else 0))


def cache_bytes(s, slots):
    return 2 * 4 * s.num_kv_heads * slots * s.head_dim


def layer_flops(s, tokens, avg_keys):
    """tools/layer_flops.h: the four projections plus q.k and p.v over the visible keys."""
    return 2 * tokens * s.embed_dim * (2 * s.q_width + 2 * s.kv_width) + 4 * tokens * avg_keys * s.q_width


@functools.lru_cache(maxsize=None)
def rope_table(head_dim, length):
    """[length, head_dim / 2, 2]: cos and sin of position * base^(-2j / head_dim)."""
    theta = ROPE_BASE ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), theta)
    return torch.stack([angles.cos(), angles.sin()], dim=-1).float()


def rotate(x, table):
    """torchtune's RotaryPositionalEmbeddings: x [b, s, heads, hd], pair (2j, 2j+1) turned by table[:, j]."""
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    table = table.view(1, pairs.size(1), 1, pairs.size(3), 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    cos, sin = table[..., 0], table[..., 1]
    return torch.stack([even * cos - odd * sin, odd * cos + even * sin], dim=-1).flatten(3)


def sdpa(q, k, v, mask, causal):
    # PyTorch 2 has the public function; Debian 12's 1.13 only the private one, which returns (out, weights).
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    return F._scaled_dot_product_attention(q, k, v, mask, 0.0, False, causal)[0]


class TorchLayer:
    """torchtune's MultiHeadAttention for GQA with its KVCache, batch 1."""

    def __init__(self, shape, seed, capacity):
        s, d = shape, shape.embed_dim
        generator = torch.Generator().manual_seed(seed)
        self.shape = shape
        self.q_proj = torch.nn.Linear(d, s.q_width, bias=s.bias)
        self.k_proj = torch.nn.Linear(d, s.kv_width, bias=s.bias)
        self.v_proj = torch.nn.Linear(d, s.kv_width, bias=s.bias)
        self.o_proj = torch.nn.Linear(s.q_width, d, bias=False)
        # The scales of bench_layer.cpp's LayerWeights, so activations stay near 1.
        for proj, std in ((self.q_proj, d ** -0.5), (self.k_proj, d ** -0.5), (self.v_proj, d ** -0.5),
                          (self.o_proj, s.q_width ** -0.5)):
            proj.weight.normal_(0.0, std, generator=generator)
            if proj.bias is not None:
                proj.bias.normal_(0.0, 0.1, generator=generator)
        self.k_cache = torch.zeros(1, s.num_kv_heads, capacity, s.head_dim)
        self.v_cache = torch.zeros_like(self.k_cache)
        self.size = 0
        self.rope = rope_table(s.head_dim, capacity)

    def load_cache(self, keys, values):
        """Empties the cache, then writes keys and values [1, n_kv, slots, hd]."""
        slots = keys.size(2)
        self.k_cache[:, :, :slots] = keys
        self.v_cache[:, :, :slots] = values
        self.size = slots

    def forward(self, x):
        """x [1, s, d] at cache positions size() .. size() + s - 1, causal; returns [1, s, d]."""
        s = self.shape
        b, tokens, _ = x.shape
        start, end = self.size, self.size + tokens
        if end > self.k_cache.size(2):
            raise ValueError(f"{tokens} tokens overflow a cache at {start} of {self.k_cache.size(2)}")
        q = self.q_proj(x).view(b, tokens, s.num_heads, s.head_dim)
        k = self.k_proj(x).view(b, tokens, s.num_kv_heads, s.head_dim)
        v = self.v_proj(x).view(b, tokens, s.num_kv_heads, s.head_dim)
        table = self.rope[start:end]
        q, k = rotate(q, table), rotate(k, table)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        self.k_cache[:, :, start:end] = k
        self.v_cache[:, :, start:end] = v
        self.size = end
        # torchtune repeats each kv head for its group of query heads (a copy of the prefix).
        group = (b, s.num_kv_heads, s.num_heads // s.num_kv_heads, end, s.head_dim)
        k = self.k_cache[:, :, :end].unsqueeze(2).expand(group).reshape(b, s.num_heads, end, s.head_dim)
        v = self.v_cache[:, :, :end].unsqueeze(2).expand(group).reshape(b, s.num_heads, end, s.head_dim)
        # One token sees the whole prefix; tokens on an empty cache, the causal triangle;
        # tokens after cached ones, the triangle shifted right by the cached count.
        mask = None
        if tokens > 1 and start > 0:
            mask = torch.ones(tokens, end, dtype=torch.bool).tril(diagonal=start)
        z = sdpa(q, k, v, mask, causal=tokens > 1 and start == 0)
        return self.o_proj(z.transpose(1, 2).reshape(b, tokens, s.q_width))


def random_tensor(shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class Prefill:
    """A causal prefill of 512 tokens on an emptied cache."""

    def __init__(self, s):
        self.layer = TorchLayer(s, 7, PREFILL_TOKENS)
        self.x = random_tensor((1, PREFILL_TOKENS, s.embed_dim), 9)
        self.chain = 1
        self.flops = layer_flops(s, PREFILL_TOKENS, (PREFILL_TOKENS + 1) / 2)
        self.bytes = weight_bytes(s) + 2 * self.x.numel() * 4 + cache_bytes(s, PREFILL_TOKENS)
        self.counters = {}

    def before(self, step):
        pass

    def run(self, step):
        self.layer.size = 0
        self.layer.forward(self.x)


class Decode:
    """One-token decodes against `context` cached tokens. Cold: a chain of layers, each
    with its own weights and cache, used in turn, with more bytes than 3x the L3."""

    def __init__(self, s, context, cold):
        per_layer = weight_bytes(s) + cache_bytes(s, context + DECODE_STEPS)
        self.chain = max(2, -(-3 * L3_BYTES // per_layer)) if cold else 1
        self.layers = [TorchLayer(s, 100 + 10 * l, context + DECODE_STEPS) for l in range(self.chain)]
        # Drawn once and shared: refills are untimed, so the copies' source does not matter.
        self.keys = random_tensor((1, s.num_kv_heads, context, s.head_dim), 11)
        self.values = random_tensor(self.keys.shape, 12)
        self.refill()
        self.x = random_tensor((1, 1, s.embed_dim), 13)
        keys = context + DECODE_STEPS / 2  # the cache grows between refills
        self.flops = layer_flops(s, 1, keys)
        self.bytes = weight_bytes(s) + cache_bytes(s, int(keys)) + 2 * s.embed_dim * 4
        self.counters = {"layers": self.chain}

    def refill(self):
        for layer in self.layers:
            layer.load_cache(self.keys, self.values)

    def before(self, step):
        if step > 0 and step % self.chain == 0 and (step // self.chain) % DECODE_STEPS == 0:
            self.refill()

    def run(self, step):
        self.layers[step % self.chain].forward(self.x)


def registered(quick):
    """(name, make) in bench_layer.cpp's order; the small shape (its modes only) for --quick."""
    for s in SHAPES:
        if (s.name == "small") != quick:
            continue
        tail = f"/torch/{s.name}/real_time"
        yield "layer/prefill512" + tail, functools.partial(Prefill, s)
        for context in CONTEXTS:
            yield f"layer/decode{context}_hot" + tail, functools.partial(Decode, s, context, False)
            if s.name != "small":
                yield f"layer/decode{context}_cold" + tail, functools.partial(Decode, s, context, True)


def name_filter(pattern):
    """Google Benchmark's --benchmark_filter: a regex searched in the name, "-" negates, "all" is all."""
    if pattern in (None, "", "all"):
        return lambda name: True
    negate = pattern.startswith("-")
    regex = re.compile(pattern[1:] if negate else pattern)
    return lambda name: bool(regex.search(name)) != negate


def repetition(bench, step, min_time):
    """Iterations until min_time seconds of timed work, as Google Benchmark runs one
    repetition; returns the real and thread CPU seconds per iteration and the next step."""
    real = cpu = 0.0
    first = step
    while real < min_time or step == first:
        bench.before(step)
        r, c = time.perf_counter(), time.thread_time()
        bench.run(step)
        real += time.perf_counter() - r
        cpu += time.thread_time() - c
        step += 1
    return real / (step - first), cpu / (step - first), step


def aggregates(name, family, runs, bench):
    """Google Benchmark's median, mean and stddev entries of the repetitions `runs`."""
    reals, cpus = [r for r, _ in runs], [c for _, c in runs]
    rates = {"GFLOP/s": [bench.flops * 1e-9 / r for r in reals], "GB/s": [bench.bytes * 1e-9 / r for r in reals]}
    entries = []
    for aggregate, reduce in (("median", statistics.median), ("mean", statistics.fmean),
                              ("stddev", lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)):
        entry = {"name": f"{name}_{aggregate}", "family_index": family, "per_family_instance_index": 0,
                 "run_name": name, "run_type": "aggregate", "repetitions": len(runs), "threads": 1,
                 "aggregate_name": aggregate, "aggregate_unit": "time", "iterations": len(runs),
                 "real_time": reduce(reals) * 1e3, "cpu_time": reduce(cpus) * 1e3, "time_unit": "ms"}
        entry.update({counter: reduce(values) for counter, values in rates.items()})
        entry.update({k: (v if aggregate != "stddev" else 0) for k, v in bench.counters.items()})
        entries.append(entry)
    return entries


def context(threads):
    return {"date": datetime.now().astimezone().isoformat(timespec="seconds"), "host_name": socket.gethostname(),
            "executable": os.path.abspath(sys.argv[0]), "num_cpus": os.cpu_count(),
            "library_build_type": "release", "torch_version": torch.__version__, "torch_threads": threads}


def benchmark(args):
    selected = [(name, make) for name, make in registered(args.quick) if name_filter(args.filter)(name)]
    if not selected:
        print(f"torch_layer.py: no benchmark matches --filter {args.filter!r}; nothing to run", file=sys.stderr)
        return SKIPPED
    results = []
    for family, (name, make) in enumerate(selected):
        bench = make()
        step = 0
        for _ in range(max(2, bench.chain)):  # warm-up: allocator, BLAS threads, every layer once
            bench.before(step)
            bench.run(step)
            step += 1
        runs = []
        for _ in range(args.repetitions):
            real, cpu, step = repetition(bench, step, args.min_time)
            runs.append((real, cpu))
        entries = aggregates(name, family, runs, bench)
        median = entries[0]
        print(f"torch_layer.py: {name}: {median['real_time']:.3f} ms, {median['GFLOP/s']:.1f} GFLOP/s, "
              f"{median['GB/s']:.1f} GB/s (median of {len(runs)})", file=sys.stderr)
        results += entries
        del bench  # a cold chain can hold hundreds of MB; free it before the next one
    report = json.dumps({"context": context(torch.get_num_threads()), "benchmarks": results}, indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(report)
        return 0
    try:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(report)
    except OSError as e:
        print(f"torch_layer.py: error: cannot write {args.out}: {e.strerror}", file=sys.stderr)
        return 2
    return 0


def reference_outputs(layer, x):
    """The layer's outputs for all of x [1, n, d] from position 0, in float64 with a loop
    per head and query: no SDPA, no expand, RoPE from its formula."""
    s, hd = layer.shape, layer.shape.head_dim
    x = x[0].double()

    def project(proj):
        y = x @ proj.weight.double().T
        return y + proj.bias.double() if proj.bias is not None else y

    def rope(y, heads):
        y = y.view(len(x), heads, hd).clone()
        for p in range(len(x)):
            for j in range(hd // 2):
                angle = p * ROPE_BASE ** (-2 * j / hd)
                even, odd = y[p, :, 2 * j].clone(), y[p, :, 2 * j + 1].clone()
                y[p, :, 2 * j] = even * math.cos(angle) - odd * math.sin(angle)
                y[p, :, 2 * j + 1] = odd * math.cos(angle) + even * math.sin(angle)
        return y

    q = rope(project(layer.q_proj), s.num_heads)
    k = rope(project(layer.k_proj), s.num_kv_heads)
    v = project(layer.v_proj).view(len(x), s.num_kv_heads, hd)
    z = torch.zeros(len(x), s.num_heads, hd, dtype=torch.float64)
    group = s.num_heads // s.num_kv_heads
    for h in range(s.num_heads):
        for p in range(len(x)):
            scores = k[: p + 1, h // group] @ q[p, h] / math.sqrt(hd)
            weights = torch.exp(scores - scores.max())
            z[p, h] = (weights / weights.sum()) @ v[: p + 1, h // group]
    return (z.reshape(len(x), s.q_width) @ layer.o_proj.weight.double().T).unsqueeze(0)


def check():
    """A prefill, a second multi-token chunk and decodes against reference_outputs."""
    shape = Shape("check", 64, 8, 2, 16, True)
    chunks = (7, 3, 1, 1, 1, 1)
    layer = TorchLayer(shape, 1, sum(chunks))
    x = random_tensor((1, sum(chunks), shape.embed_dim), 2)
    outputs, start = [], 0
    for n in chunks:
        outputs.append(layer.forward(x[:, start:start + n]))
        start += n
    error = (torch.cat(outputs, dim=1).double() - reference_outputs(layer, x)).abs().max().item()
    verdict = "passed" if error <= 1e-4 else "FAILED"
    print(f"torch_layer.py: check {verdict}: max |torch - reference| = {error:.2e} (atol 1e-4) over "
          f"{sum(chunks)} tokens in chunks {chunks}", file=sys.stderr)
    return 0 if error <= 1e-4 else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="Google Benchmark JSON output (default: stdout)")
    parser.add_argument("--filter", help="run the benchmarks whose name matches this regex "
                        "(Google Benchmark's --benchmark_filter: a leading - negates)")
    parser.add_argument("--repetitions", type=int, default=3, help="repetitions per benchmark (default 3)")
    parser.add_argument("--min-time", type=float, default=0.5,
                        help="seconds of timed iterations per repetition (default 0.5, Google Benchmark's)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: the small shape's modes, 1 repetition of 0.05 s")
    parser.add_argument("--check", action="store_true", help="compare the layer with a loop reference and exit")
    args = parser.parse_args()
    if args.repetitions < 1 or args.min_time < 0:
        parser.error("--repetitions must be at least 1 and --min-time not negative")
    try:
        name_filter(args.filter)
    except re.error as e:
        parser.error(f"--filter {args.filter!r} is not a regex: {e}")
    if args.quick:
        args.repetitions, args.min_time = 1, 0.05

    if torch is None:
        print("torch_layer.py: PyTorch not installed (Debian: apt-get install python3-torch); "
              "skipping the PyTorch comparison", file=sys.stderr)
        return SKIPPED
    # One thread per core, as gqa-bench's kThreads.
    torch.set_num_threads(os.cpu_count() or 1)
    with torch.inference_mode():
        return check() if args.check else benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
