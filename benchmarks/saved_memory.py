"""Cost of reading the memory kept for backward in a graph walk: the same snapshot with and without the
storage reads, interleaved in one process (a benchmark, not a test).

    python benchmarks/saved_memory.py [--repeats 60]

Prints, per graph, the median snapshot time without and with the reads, and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from autograd_magic.capture.snapshot import GraphWalker, Walk
from autograd_magic.capture.tensors import Identity


def cases() -> dict[str, tuple[torch.nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128, dropout=0.1, batch_first=True)
    transformer = torch.nn.Sequential(torch.nn.TransformerEncoder(layer, num_layers=6, enable_nested_tensor=False),
                                      torch.nn.Linear(64, 8))
    mlp = torch.nn.Sequential(*[m for _ in range(24) for m in (torch.nn.Linear(64, 64), torch.nn.ReLU())])
    return {"transformer x6": (transformer, torch.randn(8, 16, 64)), "24-layer MLP": (mlp, torch.randn(32, 64))}


def reads(on: bool, saved: tuple[Any, Any]) -> None:
    """Turn the storage reads on (the walker's own methods) or off (no-ops that keep no memory)."""
    if on:
        GraphWalker._note_storages, GraphWalker._with_memory = saved  # type: ignore[method-assign]
    else:
        GraphWalker._note_storages = lambda self, nid, kept, walk: None  # type: ignore[method-assign]
        GraphWalker._with_memory = lambda self, nodes, walk: (nodes, None)  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(1)
    saved = (GraphWalker._note_storages, GraphWalker._with_memory)
    for name, (model, x) in cases().items():
        loss = model(x).sum()
        namespace = {"x": x, "model": model}
        times: dict[bool, list[float]] = {False: [], True: []}
        nodes = 0
        for _ in range(args.repeats):
            for on in (False, True):
                reads(on, saved)
                walker = GraphWalker(Identity(), namespace)
                start = time.perf_counter()
                nodes = len(walker.take([loss], Walk()).nodes)
                times[on].append(time.perf_counter() - start)
        reads(True, saved)
        without, with_ = statistics.median(times[False]), statistics.median(times[True])
        print(f"{name}: {nodes} nodes, snapshot {without * 1e3:.2f} ms without the memory reads, "
              f"{with_ * 1e3:.2f} ms with them (ratio {with_ / without:.2f})")


if __name__ == "__main__":
    main()
