"""PyTorch error messages the checks explain, matched loosely (the wording moves between versions)."""

from __future__ import annotations

import re

NO_GRAD_FN = re.compile(r"does not require grad and does not have a grad_fn", re.I)
TWICE = re.compile(r"backward through the graph a second time|saved tensors after they have already been freed", re.I)
NON_SCALAR = re.compile(r"grad can be implicitly created only for scalar outputs", re.I)
LEAF_INPLACE = re.compile(r"leaf Variable that requires grad (is being|has been) used in an in-place operation", re.I)
INT_GRAD = re.compile(r"floating point (?:(?:and|or) complex )?dtype can require gradients", re.I)
LEAF_INTERIOR = re.compile(r"leaf variable has been moved into the graph interior", re.I)
NUMPY_GRAD = re.compile(r"numpy\(\) on (a )?Tensor that requires grad", re.I)
NONLEAF_FLAG = re.compile(r"only change requires_grad flags of leaf variables", re.I)
INPLACE_SAVED = re.compile(r"modified by an inplace operation", re.I)
VERSIONS = re.compile(r"is at version (\d+); expected version (\d+)")
OUTPUT_OF = re.compile(r"output (\d+) of (\w+?)(?:Backward\d*)?[,\s]")
ERROR_SHAPE = re.compile(r"\[\w+(?:\.\w+)* \[([\d, ]*)\]\]")

