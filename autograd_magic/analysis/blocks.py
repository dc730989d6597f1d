"""Repeated blocks: the N layers of a ``TransformerEncoder``, a ``Sequential`` of identical layers,
or one module applied several times, drawn once and marked ×N.

Two module instances repeat each other when they are siblings (same parent) of the same class whose
nodes have the same ops at the same places inside them: the same multiset of (node class, path below
the instance). One module applied k times repeats itself: every (node class, line, expression) inside
it appears exactly k times. The members' nodes are matched to the first instance's (nearest the root)
by their order, and drawn as that one, ×N; nothing is dropped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

from ..report.model import Node

Key = tuple[str, ...]
SIMILAR = 0.9  # share of distinct (op, place) keys two instances must have in common


@dataclass(frozen=True)
class Block:
    """One repeated block: ``instances`` (module names; one name for a module applied ``count`` times)."""

    instances: tuple[str, ...]
    cls: str
    count: int
    saving: int  # nodes fewer once folded

    @property
    def first(self) -> str:
        return self.instances[0]


def find_blocks(nodes: list[Node], classes: dict[str, str]) -> list[Block]:
    """Every repeated block of these nodes, largest saving first."""
    return sorted(_sibling_blocks(nodes, classes) + _reapplied(nodes, classes), key=lambda b: -b.saving)


def _inside(module: str | None, instance: str) -> bool:
    return module is not None and (module == instance or module.startswith(instance + "."))


def _members(nodes: list[Node], instance: str) -> list[Node]:
    return [n for n in nodes if n.kind in ("op", "leaf") and _inside(n.module, instance)]


def _shape_of_instance(nodes: list[Node], instance: str) -> Counter[Key]:
    """(class, path inside, a parameter's shape) of each node: Linear(4, 8) and Linear(8, 2) differ."""
    return Counter(_key(n, len(instance) + 1) for n in _members(nodes, instance))


def _key(node: Node, cut: int) -> Key:
    """An op's class; a parameter's class, place and shape. An op's place inside is left out: ops
    past the per-line recording cap are placed by their consumers, often in the instance itself."""
    if node.kind == "leaf":
        return (node.label, (node.module or "")[cut:], str(node.shape))
    return (node.label, "", "")


def _sibling_blocks(nodes: list[Node], classes: dict[str, str]) -> list[Block]:
    """Numbered siblings of one class with the same parameters and nearly the same ops: which ops, not
    how many (the first layer's input may need no gradient; ops past the recording cap are placed by
    their consumers, so one may land in the next layer)."""
    order = list(dict.fromkeys(m for n in nodes for m in _prefixes(n.module)))  # nearest the root first
    groups: list[tuple[tuple[str, str, frozenset[Key]], set[Key], list[str]]] = []
    for module in order:
        if "." not in module or module not in classes or not module.rsplit(".", 1)[1].isdigit():
            continue  # numbered children (Sequential, ModuleList) only: linear1 and linear2 are not a loop
        shape = set(_shape_of_instance(nodes, module))
        if len(shape) < 2:
            continue
        key = (module.rsplit(".", 1)[0], classes[module], frozenset(k for k in shape if k[2]))
        group = next((g for g in groups if g[0] == key and _alike(g[1], shape)), None)
        if group is None:
            groups.append((key, shape, [module]))
        else:
            group[2].append(module)
    return [Block(tuple(names), key[1], len(names), sum(len(_members(nodes, n)) for n in names[1:]))
            for key, _, names in groups if len(names) > 1]


def _alike(first: set[Key], other: set[Key]) -> bool:
    return len(first & other) >= SIMILAR * len(first | other)


def _reapplied(nodes: list[Node], classes: dict[str, str]) -> list[Block]:
    found = []
    for module in dict.fromkeys(n.module for n in nodes if n.module):
        sigs = Counter((n.label, n.line, n.expr) for n in nodes if n.kind == "op" and n.module == module)
        counts = set(sigs.values())
        if len(counts) == 1 and (k := counts.pop()) > 1 and module in classes:
            found.append(Block((module,), classes[module], k, (k - 1) * len(sigs)))
    return found


def _prefixes(module: str | None) -> list[str]:
    parts = (module or "").split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)] if module else []


def fold_block(nodes: list[Node], edges: list[tuple[int, int]],
               block: Block) -> tuple[list[Node], list[tuple[int, int]]]:
    """The block drawn once: each member node becomes the first instance's matching node, marked ×count."""
    alias = _reapplied_alias(nodes, block) if len(block.instances) == 1 else _sibling_alias(nodes, block)
    kept = set(alias.values())
    kept_bytes = Counter[int]()  # a drawn node stands for what its instances keep for backward
    for n in nodes:
        kept_bytes[alias.get(n.id, n.id)] += n.saved_bytes
    out = [replace(n, repeat=n.repeat * block.count, saved_bytes=kept_bytes[n.id]) if n.id in kept else n
           for n in nodes if n.id not in alias]
    folded = dict.fromkeys((alias.get(a, a), alias.get(b, b)) for a, b in edges)
    return out, [e for e in folded if e[0] != e[1] or e[0] not in kept or e in edges]


def _sibling_alias(nodes: list[Node], block: Block) -> dict[int, int]:
    def slots(instance: str) -> dict[tuple[Key, int], int]:
        cut, seen = len(instance) + 1, Counter[Key]()
        out: dict[tuple[Key, int], int] = {}
        for n in _members(nodes, instance):
            key = _key(n, cut)
            out[(key, seen[key])] = n.id
            seen[key] += 1
        return out

    first = slots(block.first)
    by_key = {slot[0]: nid for slot, nid in reversed(first.items())}  # an extra op joins its first kin
    return {nid: first.get(slot, by_key.get(slot[0], nid)) for other in block.instances[1:]
            for slot, nid in slots(other).items() if slot in first or slot[0] in by_key}


def _reapplied_alias(nodes: list[Node], block: Block) -> dict[int, int]:
    first: dict[Key, int] = {}
    alias = {}
    for n in nodes:
        if n.kind != "op" or n.module != block.first:
            continue
        key = (n.label, str(n.line), n.expr)
        if key in first:
            alias[n.id] = first[key]
        else:
            first[key] = n.id
    return alias


def block_label(block: Block) -> str:
    """`enc.layers.0–5` for contiguous numbered siblings, else the first name and how many more."""
    if len(block.instances) == 1:  # applied k times, or a loop inside its forward: its ops ran k times either way
        return f"{block.first}, its ops ran {block.count} times"
    parent, last = block.first.rsplit(".", 1)[0], [i.rsplit(".", 1)[1] for i in block.instances]
    if all(x.isdigit() for x in last):
        numbers = sorted(int(x) for x in last)
        if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
            return f"{parent}.{numbers[0]}–{numbers[-1]}"
    return f"{block.first} and {block.count - 1} alike"
