"""The update/weight ratio ``||w' - w|| / ||w||`` of each followed parameter, between two backward calls.

At a step's backward we keep our own copies of the small parameters (each at most `MAX_COPY_BYTES`,
all together at most `MAX_TOTAL_BYTES`; detached clones, never the user's tensors, which stay
weakly referenced by the caller). At the next backward one batched pass compares them with the
parameters: that is the update the optimizer (or a hand-written ``w -= lr * w.grad``) made in between.
The copies are then refreshed in place, so a loop allocates them once. Parameters past the caps, or
not plain real floats, get no ratio and are counted. Every read goes through `reads`.
"""

from __future__ import annotations

import torch

from .reads import copy_into, copy_of, moved_norms

MAX_COPY_BYTES = 256 * 1024  # a bigger parameter gets no ratio (copying it every step would cost too much)
MAX_TOTAL_BYTES = 4 * 1024 * 1024  # all copies together


class WeightCopies:
    """Copies of the followed parameters as one backward left them, to be compared at the next one."""

    def __init__(self) -> None:
        self._index: list[int] = []  # positions (in the recorder's parameter list) that have a copy
        self._copies: list[torch.Tensor] = []
        self._seen = 0  # parameters considered so far; later ones are new
        self.nbytes = 0
        self.uncopied = 0  # parameters over the caps, or not plain real floats
        self.taken_at: int | None = None  # the backward call whose parameters the copies hold

    def take(self, params: list[torch.Tensor | None], call: int) -> None:
        """Refresh the copies from ``params`` (in place), and copy newly followed ones within the caps."""
        live = [params[i] for i in self._index]
        if any(p is None for p in live) or (self._copies and not copy_into(self._copies, live)):  # type: ignore[arg-type]
            self._reset()  # a parameter was freed or changed shape: copy afresh
        for i in range(self._seen, len(params)):
            self._add(i, params[i])
        self._seen = len(params)
        self.taken_at = call

    def ratios(self, params: list[torch.Tensor | None]) -> tuple[float | None, ...]:
        """Per parameter ``||now - copy|| / ||copy||`` (None: no copy); () when nothing moved.

        Spends the copies (they hold the differences afterwards) until the next `take`.
        """
        self.taken_at = None
        live = [params[i] for i in self._index]
        if not live or any(p is None for p in live):
            return ()
        pairs = moved_norms(self._copies, live)  # type: ignore[arg-type]
        if pairs is None or not any(moved for moved, _ in pairs):
            return ()  # not readable now, or no parameter changed: no update was made
        out: list[float | None] = [None] * self._seen
        for i, (moved, size) in zip(self._index, pairs, strict=True):
            out[i] = moved / size if size else (0.0 if moved == 0 else None)
        return tuple(out)

    def close(self) -> None:
        self._reset()

    def _add(self, i: int, param: torch.Tensor | None) -> None:
        if param is None:
            return
        copy = copy_of(param, min(MAX_COPY_BYTES, MAX_TOTAL_BYTES - self.nbytes))
        if copy is None:
            self.uncopied += 1
            return
        self._index.append(i)
        self._copies.append(copy)
        self.nbytes += copy.numel() * copy.element_size()

    def _reset(self) -> None:
        self._index, self._copies = [], []
        self._seen = self.nbytes = self.uncopied = 0
        self.taken_at = None
