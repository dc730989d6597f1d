"""Memory kept for backward: per node, per graph, checked against what autograd really saved.

The truth comes from a plain run of the same cell under ``torch.autograd.graph.saved_tensors_hooks``:
its pack hook sees every tensor autograd saves, and records each storage once (views of one storage
share it). What lives anyway (the parameters and views of them such as ``weight.t()``, the input batch
the cell holds) is left out on both sides: backward does not free it.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import torch
from conftest import report_of, run
from test_diagnostics import diagnose

from autograd_magic.views.html import render_html
from autograd_magic.views.text import render_text
from autograd_magic.views.widget import payload

TRUTH = """
_agm_sizes = {}
_agm_live = {p.untyped_storage().data_ptr() for p in [x, *model.parameters()]}  # weight.t() is a view of one
def _agm_pack(t):
    storage = t.untyped_storage()
    if storage.data_ptr() not in _agm_live:
        _agm_sizes[storage.data_ptr()] = storage.nbytes()
    return t
with torch.autograd.graph.saved_tensors_hooks(_agm_pack, lambda t: t):
    loss = model(x).logsumexp(-1).mean()
truth = sum(_agm_sizes.values())
loss.backward()
"""
CNN = """torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
    torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4),
    torch.nn.Flatten(), torch.nn.Dropout(0.2), torch.nn.Linear(32 * 16, 10))
x = torch.randn(16, 3, 32, 32)
"""
TRANSFORMER = """torch.manual_seed(0)
layer = torch.nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, dropout=0.1, batch_first=True)
model = torch.nn.Sequential(torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False),
                            torch.nn.Linear(32, 8))
x = torch.randn(4, 10, 32)
"""
FORWARD = "loss = model(x).logsumexp(-1).mean()\nloss.backward()\n"


def _truth(ip: Any, setup: str) -> int:
    run(ip, setup + TRUTH)
    truth = ip.user_ns["truth"]
    assert truth > 0
    return int(truth)


def _measured(ip: Any, setup: str) -> Any:
    run(ip, setup)
    report, cell = report_of(ip, FORWARD)
    assert cell.error is None
    return report


def test_a_cnn_keeps_what_saved_tensors_hooks_see_within_ten_percent(ip: Any) -> None:
    truth = _truth(ip, CNN)
    memory = _measured(ip, CNN).graphs[0].memory
    assert memory is not None
    assert abs(memory.saved_bytes - truth) <= 0.1 * truth, (memory.saved_bytes, truth)
    assert {"model.0.weight", "x"} <= set(memory.apart)  # listed, counted apart: they live anyway
    assert memory.unread == 0


def test_a_transformer_keeps_what_saved_tensors_hooks_see_within_ten_percent(ip: Any) -> None:
    truth = _truth(ip, TRANSFORMER)
    memory = _measured(ip, TRANSFORMER).graphs[0].memory
    assert memory is not None
    assert abs(memory.saved_bytes - truth) <= 0.1 * truth, (memory.saved_bytes, truth)
    assert len(memory.holders) == 5 and memory.holders[0].saved_bytes >= memory.holders[-1].saved_bytes


def test_views_of_one_storage_count_once_and_leaves_apart(ip: Any) -> None:
    body = ("w = torch.randn(256, 256, requires_grad=True)\n"
            "loss = (w.exp() * w).sum(0).pow(2).sum()\n"
            "loss.backward()\n")
    report = diagnose(ip, body)
    nodes = {n.label: n for n in report.graphs[0].nodes}
    assert nodes["ExpBackward0"].saved_bytes == 256 * 256 * 4  # its own output
    mul = nodes["MulBackward0"]
    assert mul.saved_bytes == 256 * 256 * 4 and mul.saved_apart == ("w",)  # exp's output, and w apart
    assert nodes["PowBackward0"].saved_bytes == 256 * 4
    memory = report.graphs[0].memory
    assert memory.saved_bytes == 256 * 256 * 4 + 256 * 4 and memory.tensors == 2  # exp's output once
    assert memory.apart == ("w",) and memory.apart_bytes == 256 * 256 * 4
    assert {h.label for h in memory.holders[:2]} == {"ExpBackward0", "MulBackward0"}
    assert memory.holders[0].line == 2 and "exp" in memory.holders[0].code


def test_a_view_and_its_base_saved_by_two_nodes_count_once(ip: Any) -> None:
    body = ("w = torch.randn(64, 64, requires_grad=True)\n"
            "h = (w + 1).exp()\n"
            "loss = (h.t() * w).sum()\n"
            "del h\n"
            "loss.backward()\n")
    memory = diagnose(ip, body).graphs[0].memory
    assert memory.saved_bytes == 64 * 64 * 4 and memory.tensors == 1  # exp's output and its transpose: one storage
    assert memory.apart == ("w",)


def test_every_view_shows_the_memory_line_and_json_has_saved_bytes(ip: Any) -> None:
    run(ip, CNN)
    report, cell = report_of(ip, FORWARD)
    text = render_text(report)
    assert "memory kept for backward: " in text and "freed when backward runs" in text
    assert "memory kept for backward: " in render_html(report)
    data = json.loads(report.to_json())
    graph = data["graphs"][0]
    assert sum(n["saved_bytes"] for n in graph["nodes"]) >= graph["memory"]["saved_bytes"] > 0
    assert graph["memory"]["holders"][0]["line"] == 1  # the forward line
    sent = payload(report)["graphs"][0]
    assert sent["memory_text"][0].startswith("memory kept for backward: ")
    assert any(n["kept_text"].startswith("keeps ") for n in sent["nodes"])


def test_the_tooltip_says_what_a_node_keeps(ip: Any) -> None:
    from autograd_magic.views.graph import to_dot

    report = diagnose(ip, "w = torch.randn(100, requires_grad=True)\nloss = w.exp().sum()\nloss.backward()\n")
    dot = to_dot(report.graphs[0])
    assert "keeps 400 bytes for backward" in dot


def test_hooked_saved_tensors_are_never_unpacked_and_counted_as_unread(ip: Any) -> None:
    body = ("calls = []\n"
            "def pack(t):\n    calls.append('pack')\n    return t\n"
            "def unpack(t):\n    calls.append('unpack')\n    return t\n"
            "w = torch.randn(8, requires_grad=True)\n"
            "with torch.autograd.graph.saved_tensors_hooks(pack, unpack):\n    y = w.exp()\n"
            "print(calls)\n")
    report, cell = report_of(ip, body)
    assert cell.stdout.strip() == "['pack']"  # no unpack: reading the graph ran none of the user's hooks
    assert report.graphs[0].memory.unread == 1


def test_a_slice_that_keeps_a_big_storage_gets_a_note(ip: Any) -> None:
    body = ("x = torch.randn(4096, 2048, requires_grad=True)\n"
            "w = torch.randn(8, requires_grad=True)\n"
            "def head(x):\n"
            "    h = x + 1\n"
            "    return (h[:, :8] * w).sum()\n"
            "loss = head(x)\n"
            "loss.backward()\n")
    report = diagnose(ip, body)
    notes = [d for d in report.diagnostics if d.kind == "backward-memory"]
    assert len(notes) == 1 and notes[0].severity == "note"
    assert notes[0].line == 5 and "32 MiB" in notes[0].message and "128 KiB" in notes[0].message
    assert "`.clone()`" in notes[0].message


def _hooks_told() -> bool:
    """This torch says whether a hook packed a saved tensor (else nothing saved is read, by design)."""
    from autograd_magic.capture.compat import NOT_AVAILABLE, raw_saved, saved_unpack_hook

    node = (torch.ones(1, requires_grad=True) * torch.ones(1, requires_grad=True)).grad_fn
    return saved_unpack_hook(raw_saved(node, "self")) is not NOT_AVAILABLE


pytestmark = pytest.mark.skipif(not _hooks_told(), reason="this torch cannot tell hooks apart: saved tensors unread")
NO_PROC = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads the resident set from /proc")


@NO_PROC
def test_activations_that_take_most_of_the_process_get_a_note_with_remedies(ip: Any) -> None:
    resident = _resident_bytes()
    chunk = 2**24  # elements: 64 MiB a tensor
    ops = max(4, int(1.5 * resident / (4 * chunk)) + 2)  # kept > half of what the process then holds
    body = (f"x = torch.randn({chunk}, requires_grad=True)\n"
            f"h = x\nfor _ in range({ops}):\n    h = h.sin()\n"
            "loss = h.sum()\n"
            "del h\n"
            "loss.backward()\n")
    report = diagnose(ip, body)
    notes = [d for d in report.diagnostics if d.kind == "backward-memory"]
    assert len(notes) == 1 and notes[0].severity == "note", report.diagnostics
    message = notes[0].message
    assert "of activations for backward" in message and "the process holds" in message
    for remedy in ("torch.no_grad()", "checkpoint", "smaller batch"):
        assert remedy in message
    assert notes[0].line == 4  # the biggest holder: the sin inside the loop
    assert not [d for d in report.diagnostics if d.severity != "note"]


@NO_PROC
def test_an_evaluation_without_no_grad_is_told_to_use_it(ip: Any) -> None:
    resident = _resident_bytes()
    chunk = 2**24
    ops = max(4, int(1.5 * resident / (4 * chunk)) + 2)
    body = (f"w = torch.randn({chunk}, requires_grad=True)\n"
            f"h = w\nfor _ in range({ops}):\n    h = h.sin()\n"
            "score = h.sum()\n"
            "del h\n")
    report, _ = report_of(ip, body)
    notes = [d for d in report.diagnostics if d.kind == "backward-memory"]
    assert len(notes) == 1 and "if you only evaluate, `torch.no_grad()`" in notes[0].message
    ip.user_ns.pop("score", None)


def test_ordinary_training_keeps_quiet(ip: Any) -> None:
    run(ip, CNN)
    report, _ = report_of(ip, "opt = torch.optim.SGD(model.parameters(), lr=0.1)\nfor _ in range(3):\n"
                              "    opt.zero_grad()\n    loss = model(x).logsumexp(-1).mean()\n    loss.backward()\n"
                              "    opt.step()\n")
    assert "backward-memory" not in [d.kind for d in report.diagnostics]
    assert report.graphs[0].memory.saved_bytes > 0


def _resident_bytes() -> int:
    with open("/proc/self/statm") as stat:
        return int(stat.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_storage_of_reads_no_data_and_no_mode_sees_it() -> None:
    from torch.utils._python_dispatch import TorchDispatchMode

    from autograd_magic.capture.reads import storage_of

    seen = []

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            seen.append(func)
            return func(*args, **(kwargs or {}))

    view = torch.randn(10, 10)[2:4]
    with Spy():
        found = storage_of(view)
    assert found is not None and found[1:] == (400, 80) and seen == []
    assert storage_of(torch.empty(0)) is None


def test_a_checkpointed_block_is_not_recomputed_to_be_measured(ip: Any) -> None:
    body = ("from torch.utils.checkpoint import checkpoint\n"
            "runs = []\n"
            "def block(x):\n    runs.append(1)\n    return x.sin().exp()\n"
            "x = torch.randn(64, requires_grad=True)\n"
            "y = checkpoint(block, x, use_reentrant=False).sum()\n"
            "print(len(runs))\n")
    report, cell = report_of(ip, body)
    assert cell.stdout.strip() == "1"  # the forward ran once: reading the graph recomputed nothing
    assert report.graphs[0].memory.unread >= 1
