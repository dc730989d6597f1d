"""CUDA transparency and overhead of the Recorder on a GPU (run where one exists; not a test).

    python benchmarks/gpu_check.py [--ops 120] [--repeats 5]

1. Transparency: OpInfo samples (torch.testing._internal's op_db) on ``cuda``, forward and
   backward, plain vs under `Recorder`: outputs and gradients must be identical.
2. Overhead with ``torch.cuda.synchronize()``: a loop of small ops, an MLP training step loop
   and a big matmul, each as a ratio to plain and to a do-nothing TorchFunctionMode.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from autograd_magic import Recorder, build_report


class DoNothing(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        return func(*args, **(kwargs or {}))


def run_sample(op: Any, sample: Any) -> tuple[Any, list[Any]]:
    out = op(sample.input, *sample.args, **sample.kwargs)
    outs = [t for t in (out if isinstance(out, (tuple, list)) else (out,)) if isinstance(t, torch.Tensor)]
    leaves = [t for t in (sample.input, *sample.args) if isinstance(t, torch.Tensor) and t.requires_grad]
    grads: list[Any] = []
    diff = [o for o in outs if o.requires_grad and o.is_floating_point()]
    if diff and leaves:
        grads = list(torch.autograd.grad([o.sum() for o in diff], leaves, allow_unused=True))
    return [o.detach().clone() for o in outs], grads


def same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.layout != torch.strided:
            a, b = a.to_dense(), b.to_dense()
        return a.shape == b.shape and bool(torch.equal(torch.view_as_real(a) if a.is_complex() else a,
                                                       torch.view_as_real(b) if b.is_complex() else b)
                                           or torch.allclose(a, b, rtol=0, atol=0, equal_nan=True))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def transparency(max_ops: int) -> None:
    from torch.testing._internal.common_methods_invocations import op_db

    checked = differ = skipped = nondeterministic = 0
    for op in [o for o in op_db if o.supports_autograd][:max_ops]:
        try:
            samples = list(op.sample_inputs("cuda", torch.float32, requires_grad=True))[:2]
        except Exception:
            skipped += 1
            continue
        for sample in samples:
            try:
                torch.manual_seed(0)
                plain = run_sample(op.op, sample)
                torch.manual_seed(0)
                with Recorder() as rec:
                    recorded = run_sample(op.op, sample)
                build_report(rec.trace)
            except Exception:  # the op itself refuses this sample (both runs raise alike, see tests/)
                skipped += 1
                continue
            checked += 1
            if not same(plain, recorded):
                torch.manual_seed(0)
                again = run_sample(op.op, sample)
                if same(plain, again):
                    differ += 1
                    print(f"  DIFFERENT: {op.name}")
                else:
                    nondeterministic += 1
    print(f"CUDA transparency: {checked} op samples compared, {differ} different, {skipped} skipped, "
          f"{nondeterministic} differ plain vs plain too (nondeterministic kernels)")


def timed(work: Callable[[], None], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        work()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def overhead(repeats: int) -> None:
    dev = "cuda"
    x = torch.randn(64, device=dev, requires_grad=True)
    big = torch.randn(8192, 8192, device=dev)
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    data, target = torch.randn(128, 256, device=dev), torch.randn(128, 10, device=dev)

    def loop() -> None:
        y = x
        for _ in range(5000):
            y = (y * 1.0001).sin()
        y.sum().backward()

    def mlp() -> None:
        for _ in range(100):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(data), target).backward()
            opt.step()

    def matmul() -> None:
        for _ in range(5):
            big @ big

    for name, work, target_ratio in (("loop", loop, 1.5), ("mlp", mlp, 1.45), ("matmul", matmul, 1.02)):
        work()
        plain = timed(work, repeats)
        with DoNothing():
            floor = timed(work, repeats)
        with Recorder(namespace={}):
            recorded = timed(work, repeats)
        print(f"{name:7s} plain {plain * 1e3:8.2f} ms  do-nothing x{floor / plain:.2f}  "
              f"recorder x{recorded / plain:.2f} (target <= {target_ratio})  vs floor x{recorded / floor:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # deprecation notes of the sampled ops, alike plain and recorded
    print(torch.__version__, torch.cuda.get_device_name(0))
    transparency(args.ops)
    overhead(args.repeats)


if __name__ == "__main__":
    main()
