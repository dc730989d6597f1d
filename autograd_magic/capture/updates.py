"""The update/weight ratio ``||w' - w|| / ||w||`` of each followed parameter, between two backward calls.

At a kept step's backward we keep our own copies of the small parameters (each at most
`MAX_COPY_BYTES`, all together at most `MAX_TOTAL_BYTES`; detached clones, never the user's tensors,
which the caller references weakly). At the next backward the copies are subtracted from in place:
their norms are the update the optimizer (or a hand-written ``w -= lr * w.grad``) made in between.
The caller reads those norms, the parameters' own and the gradients' in one batched pass
(`measure` says what to read, `settle` takes the numbers), then the copies are refreshed in place,
so a loop allocates them once. Parameters past the caps, or not plain real floats, get no ratio and
are counted. Every read goes through `reads`.
"""

from __future__ import annotations

import torch

from .reads import copy_into, copy_of, norms_of, subtract

MAX_COPY_BYTES = 256 * 1024  # a bigger parameter gets no ratio (copying it every step would cost too much)
MAX_TOTAL_BYTES = 4 * 1024 * 1024  # all copies together


class WeightCopies:
    """Copies of the followed parameters as one backward left them, to be compared at the next one."""

    def __init__(self) -> None:
        self._index: list[int] = []  # positions (in the recorder's parameter list) that have a copy
        self._copies: list[torch.Tensor] = []
        self._sizes: list[float | None] = []  # each copy's norm: the ratio's denominator
        self._seen = 0  # parameters considered so far; later ones are new
        self._live: list[torch.Tensor] = []  # the copied parameters, between measure and settle
        self._compared = False
        self.nbytes = 0
        self.uncopied = 0  # parameters over the caps, or not plain real floats
        self.taken_at: int | None = None  # the backward call whose parameters the copies hold

    def measure(self, params: list[torch.Tensor | None], call: int, keep: bool) -> list[torch.Tensor]:
        """What the caller should take the norms of, in this order: the copies minus the parameters
        (when the copies were taken at the previous call), then the parameters (when ``keep``)."""
        self._compared = self.taken_at == call - 1 and bool(self._copies)
        self.taken_at = None
        live = [params[i] for i in self._index]
        if any(p is None for p in live):
            self._reset()  # a followed parameter was freed: copy afresh
            live, self._compared = [], False
        self._live = live  # type: ignore[assignment]
        if self._compared:
            self._compared = subtract(self._copies, self._live)
        return (self._copies if self._compared else []) + (self._live if keep else [])

    def settle(self, norms: tuple[float | None, ...], params: list[torch.Tensor | None], call: int,
               keep: bool) -> tuple[float | None, ...]:
        """The ratios, from the norms of what `measure` returned; then, when ``keep``, the copies
        are taken again (in place) and newly followed parameters copied within the caps."""
        moved = norms[:len(self._copies)] if self._compared else ()
        ratios = self._ratios(moved)
        if keep:
            self._sizes = list(norms[len(moved):])
            if self._copies and not copy_into(self._copies, self._live):
                self._reset()  # a parameter changed shape or device: copy afresh
            for i in range(self._seen, len(params)):
                self._add(i, params[i])
            self._seen = len(params)
            self.taken_at = call
        self._live = []
        return ratios

    def close(self) -> None:
        self._reset()

    def _ratios(self, moved: tuple[float | None, ...]) -> tuple[float | None, ...]:
        """Per parameter (None: no copy); () when no parameter moved: no update was made."""
        if not any(moved):
            return ()
        out: list[float | None] = [None] * self._seen
        for i, step, size in zip(self._index, moved, self._sizes, strict=True):
            out[i] = None if step is None or size is None else step / size if size else 0.0 if step == 0 else None
        return tuple(out)

    def _add(self, i: int, param: torch.Tensor | None) -> None:
        if param is None:
            return
        copy = copy_of(param, min(MAX_COPY_BYTES, MAX_TOTAL_BYTES - self.nbytes))
        if copy is None:
            self.uncopied += 1
            return
        self._index.append(i)
        self._copies.append(copy)
        self._sizes.append(norms_of([copy])[0])
        self.nbytes += copy.numel() * copy.element_size()

    def _reset(self) -> None:
        self._index, self._copies, self._sizes = [], [], []
        self._seen = self.nbytes = self.uncopied = 0
        self.taken_at = None
