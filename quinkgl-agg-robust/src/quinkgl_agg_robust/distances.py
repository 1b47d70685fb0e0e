"""Pairwise squared Euclidean distances between flattened models, through the Gram matrix.

``|x_i - x_j|^2 = |x_i|^2 + |x_j|^2 - 2 x_i·x_j`` needs one matrix product, 3-15x faster than ``torch.cdist``
for a handful of very long rows. The identity cancels badly when the rows are long vectors close to each other,
so the rows are first centred on row 0 (the own model; distances do not change under translation) and the
result is clamped at zero. The centring runs over column blocks into one reused buffer, so it never holds a
second n × d copy of the models.
"""

from __future__ import annotations

import torch


def column_block(n: int, d: int) -> int:
    """How many columns of an (n, d) matrix one block takes: about 1 Mi values, at most a quarter of the matrix."""
    return max(1, min(d, max(1024, (1 << 20) // max(n, 1)), max(1, d // 4)))


def pairwise_sq_distances(matrix: torch.Tensor) -> torch.Tensor:
    """An (n, n) matrix of squared distances between the rows of ``matrix``; the diagonal is exactly zero."""
    n, d = matrix.shape
    width = column_block(n, d)
    gram = torch.zeros((n, n), dtype=matrix.dtype, device=matrix.device)
    buffer = torch.empty((n, min(width, d)), dtype=matrix.dtype, device=matrix.device)
    for start in range(0, d, width):
        block = matrix[:, start : start + width]
        centred = buffer[:, : block.shape[1]]
        torch.sub(block, block[:1], out=centred)
        gram.addmm_(centred, centred.T)
    return distances_from_gram(gram)


def distances_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """Squared distances from a Gram matrix of (centred) rows, clamped at zero, with an exact zero diagonal."""
    norms = gram.diagonal()
    distances = (norms[:, None] + norms[None, :] - 2 * gram).clamp_min_(0)
    distances.fill_diagonal_(0)
    return distances
