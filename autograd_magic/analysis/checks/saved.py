"""Check for memory kept for backward: activations that dominate the process, or a slice that keeps a
big storage alive. Notes only: keeping activations is how autograd works, not a mistake."""

from __future__ import annotations

from ...report.model import Diagnostic, Memory, size_text
from ...trace.events import GraphSnapshot, Site, Trace
from ..lineage import show
from ..naming import Names
from ..saved import graph_memory, pinned

DOMINATE_MIN = 64 * 2**20  # bytes a graph keeps before it can be said to dominate anything
PIN_MIN = 16 * 2**20  # bytes a slice keeps alive beyond itself before it is worth a note
PIN_RATIO = 8  # the storage is at least this many times what the saved slice spans
REMEDIES = ("To keep less: `torch.no_grad()` around code that only evaluates (no graph is kept); activation "
            "checkpointing (`torch.utils.checkpoint.checkpoint` on a block) keeps only its inputs and recomputes "
            "the rest in backward; a smaller batch keeps proportionally less.")


def check_backward_memory(trace: Trace, names: Names) -> list[Diagnostic]:
    """Activations kept for backward take most of the process's memory, or a slice keeps a whole storage."""
    found = []
    for snap, site in _graphs(trace):
        memory = graph_memory(snap, names)
        if memory is not None and _dominates(memory):
            found.append(_dominates_note(snap, site, memory, names))
        found.extend(_pinned_notes(snap))
    return found


def _graphs(trace: Trace) -> list[tuple[GraphSnapshot, Site | None]]:
    """Each graph once: the last snapshot at each backward call site, then the graphs no backward ran on."""
    last: dict[tuple[int | None, int | None, str], tuple[GraphSnapshot, Site | None]] = {}
    for event in trace.backwards:
        if event.graph is not None and event.graph.nodes:
            last[(event.site.cell, event.site.line, event.site.code)] = (event.graph, event.site)
    return [*last.values(), *((snap, None) for snap in trace.graphs)]


def _dominates(memory: Memory) -> bool:
    return (memory.in_use is not None and memory.saved_bytes >= DOMINATE_MIN
            and memory.saved_bytes > memory.in_use / 2)


def _dominates_note(snap: GraphSnapshot, site: Site | None, memory: Memory, names: Names) -> Diagnostic:
    root = names.label(snap.root)
    whose = f"The graph of {show(root)}" if root else "A graph"
    until = f"until `{site.expr or site.code}` at line {site.line} runs backward" if site else (
        f"for as long as {show(root) if root else 'its result'} is kept (no backward ran on it)")
    share = memory.saved_bytes / memory.in_use if memory.in_use else 1.0
    biggest = "; ".join(f"line {h.line} `{h.code}` ({h.label}{f' ×{h.count}' if h.count > 1 else ''}): "
                        f"{size_text(h.saved_bytes)}" for h in memory.holders[:3])
    remedies = REMEDIES if site else REMEDIES.replace("To keep less: ", "To keep less: if you only evaluate, ")
    top = memory.holders[0] if memory.holders else None
    return Diagnostic(
        "backward-memory", "note", top.line if top else None, top.code if top else "", (root,) if root else (),
        f"{whose} keeps {size_text(memory.saved_bytes)} of activations for backward, {until}: "
        f"{share:.0%} of the {size_text(memory.in_use or 0)} the process holds. The biggest: {biggest}.\n{remedies}")


def _pinned_notes(snap: GraphSnapshot) -> list[Diagnostic]:
    out = []
    for node, size, needed in pinned(snap, PIN_MIN, PIN_RATIO):
        site = node.site
        where = f"`{site.code}` at line {site.line}" if site and site.line else f"`{node.label}`"
        out.append(Diagnostic(
            "backward-memory", "note", site.line if site else None, site.code if site else "", (),
            f"{where} keeps all {size_text(size)} of a tensor's storage for backward, though it saved only a "
            f"{size_text(needed)} slice of it: a view keeps its whole storage alive.\n"
            f"If the rest is not needed, save a copy of the slice (`.clone()` it before the op) so the big "
            f"tensor can be freed; or compute the op on the slice before making it part of something bigger."))
    return out
