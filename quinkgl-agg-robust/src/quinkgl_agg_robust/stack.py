"""Models as rows of one matrix: the groundwork every rule in this package shares.

Row 0 is always the own model. A received update joins only if it has every floating tensor of the own model
with the same shape and holds finite values only; otherwise it is reported as excluded before any rule runs
(the arch hash makes a shape mismatch unlikely, but a NaN from a diverged or hostile peer would poison every
distance and sort). Integer buffers (e.g. BatchNorm's ``num_batches_tracked``) never enter the matrix: the
result always takes them from the own model.

Memory: the matrix is allocated once (n × d in float32, float64 for float64 models, on the own model's device)
and every model is copied straight into its row, so building it costs one n × d copy and no temporaries
larger than one tensor. Weighted means go through core's :func:`quinkgl.aggregation.weighted_mean`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from quinkgl.aggregation import AggregationResult, ModelUpdate, weighted_mean


class ModelStack:
    """The own model and the usable received models, flattened to the rows of ``matrix`` (own first)."""

    def __init__(self, own: ModelUpdate, received: Sequence[ModelUpdate], *, lazy: bool = False):
        self.own = own
        self.names = [name for name, t in own.tensors.items() if t.is_floating_point()]
        self.shapes = [own.tensors[name].shape for name in self.names]
        self.sizes = [own.tensors[name].numel() for name in self.names]
        # float32 at least (half precision loses too much in sums of squares); float64 if the model uses it.
        self.dtype = torch.float32
        for name in self.names:
            self.dtype = torch.promote_types(self.dtype, own.tensors[name].dtype)
        self.device = own.tensors[self.names[0]].device if self.names else torch.device("cpu")

        self.candidates = [u for u in received if self._fits(u)]
        self.received = received
        self._matrix: torch.Tensor | None = None
        if lazy:  # the caller works from the tensors (distances()); rows are filtered when distances are known
            self.updates: list[ModelUpdate] = [own, *self.candidates]
            self._set_rejected()
        else:
            self.matrix  # noqa: B018 - builds the matrix and filters the rows now

    def _set_rejected(self) -> None:
        usable = {id(u) for u in self.updates}
        self.rejected: tuple[str, ...] = tuple(u.sender for u in self.received if id(u) not in usable)

    @property
    def matrix(self) -> torch.Tensor:
        """The usable models as the rows of one (n, d) matrix, own first (built on first use)."""
        if self._matrix is None:
            self._matrix, self.updates = self._flatten([self.own, *self.candidates])
            self._set_rejected()
        return self._matrix

    def distances(self) -> torch.Tensor:
        """Squared distances between the usable models, computed straight from their tensors (no n × d matrix).

        Column blocks of the models, centred on the own model, go through one reused (n, block) buffer into the
        Gram matrix. A model whose squared distance from the own model is not finite (a NaN or infinity, or
        values beyond ~1e19 in float32) is dropped here, with its rows of the result, and reported as rejected.
        """
        from quinkgl_agg_robust.distances import column_block, distances_from_gram

        updates = [self.own, *self.candidates]
        n, d = len(updates), sum(self.sizes)
        width = column_block(n, d)
        gram = torch.zeros((n, n), dtype=self.dtype, device=self.device)
        buffer = torch.empty((n, max(1, min(width, d))), dtype=self.dtype, device=self.device)
        for name, size in zip(self.names, self.sizes, strict=False):
            flat = [u.tensors[name].detach().reshape(-1) for u in updates]
            anchor = flat[0].to(self.device, self.dtype)
            for start in range(0, size, width):
                stop = min(start + width, size)
                block = buffer[:, : stop - start]
                for row, values in zip(block, flat, strict=False):
                    torch.sub(values[start:stop].to(self.device), anchor[start:stop], out=row)
                gram.addmm_(block, block.T)
        finite = torch.isfinite(gram.diagonal()).tolist()
        finite[0] = True
        keep = [i for i, ok in enumerate(finite) if ok]
        self.updates = [updates[i] for i in keep]
        self._set_rejected()
        if len(keep) < n:
            index = torch.tensor(keep, device=self.device)
            gram = gram[index][:, index]
        return distances_from_gram(gram)

    def drop_non_finite(self) -> None:
        """For a lazy stack: leave out received models holding a NaN or infinity, checked tensor by tensor."""
        finite = [u for u in self.candidates if all(bool(torch.isfinite(u.tensors[n]).all()) for n in self.names)]
        self.updates = [self.own, *finite]
        self._set_rejected()

    @property
    def columns(self) -> int:
        """d: the number of floating values in one model."""
        return sum(self.sizes)

    def copy_columns(self, start: int, stop: int, out: torch.Tensor) -> None:
        """Write columns ``[start, stop)`` of the usable models' rows into ``out`` straight from their tensors."""
        offset = 0
        for name, size in zip(self.names, self.sizes, strict=False):
            low, high = max(start, offset), min(stop, offset + size)
            if low < high:
                for row, update in zip(out, self.updates, strict=False):
                    values = update.tensors[name].detach().reshape(-1)
                    row[low - start : high - start].copy_(values[low - offset : high - offset])
            offset += size

    def update_result(self, index: int) -> AggregationResult:
        """The result that adopts one usable model as it is (converted to the own model's dtypes and device)."""
        chosen = self.updates[index]
        tensors = {
            name: (chosen.tensors[name].detach().to(t.device, t.dtype).clone() if name in self.names else t.clone())
            for name, t in self.own.tensors.items()
        }
        used = {0, index}
        return AggregationResult(
            tensors,
            tuple(u.sender for i, u in enumerate(self.updates) if i in used),
            self.rejected + tuple(u.sender for i, u in enumerate(self.updates) if i not in used),
        )

    def __len__(self) -> int:
        return len(self.updates)

    def _fits(self, update: ModelUpdate) -> bool:
        tensors = update.tensors
        return all(
            name in tensors and tensors[name].is_floating_point() and tensors[name].shape == shape
            for name, shape in zip(self.names, self.shapes, strict=False)
        )

    def _flatten(self, updates: Sequence[ModelUpdate]) -> tuple[torch.Tensor, list[ModelUpdate]]:
        """Copy each model straight into its row, then drop rows with a NaN or infinity by moving the later rows
        up in place (the own model, row 0, is kept even if training diverged). Returns the filled rows."""
        matrix = torch.empty((len(updates), sum(self.sizes)), dtype=self.dtype, device=self.device)
        for row, update in zip(matrix, updates, strict=False):
            offset = 0
            for name, size in zip(self.names, self.sizes, strict=False):
                row[offset : offset + size].copy_(update.tensors[name].detach().reshape(-1))
                offset += size
        finite = [True] + [bool(torch.isfinite(row).all()) for row in matrix[1:]]  # d bools at a time
        kept: list[ModelUpdate] = []
        for index, (update, ok) in enumerate(zip(updates, finite, strict=False)):
            if ok:
                if len(kept) != index:
                    matrix[len(kept)].copy_(matrix[index])
                kept.append(update)
        return matrix[: len(kept)], kept

    def tensors(self, row: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unflatten one row into a state dict shaped like the own model (integer buffers copied from it)."""
        pieces = dict(zip(self.names, torch.split(row, self.sizes), strict=False)) if self.names else {}
        result: dict[str, torch.Tensor] = {}
        for name, original in self.own.tensors.items():
            if name in pieces:
                result[name] = pieces[name].reshape(original.shape).to(original.dtype).clone()
            else:
                result[name] = original.clone()
        return result

    def result(self, row: torch.Tensor, used_rows: Sequence[int]) -> AggregationResult:
        """An :class:`AggregationResult` for ``row``; own is always listed as used, unused rows as excluded."""
        chosen = {0, *used_rows}
        used = tuple(self.updates[i].sender for i in range(len(self.updates)) if i in chosen)
        left_out = tuple(self.updates[i].sender for i in range(len(self.updates)) if i not in chosen)
        return AggregationResult(self.tensors(row), used, self.rejected + left_out)

    def keep_own(self) -> AggregationResult:
        """The fallback when a rule cannot judge the models it has: keep the own model, exclude everything else."""
        return self.update_result(0)

    def weighted_mean(self, rows: Sequence[int], weights: Sequence[float] | None = None) -> AggregationResult:
        """The (weighted) mean of the given rows' models; weights are normalised, all-zero weights mean uniform."""
        rows = list(rows)
        chosen = [self.updates[i] for i in rows]
        tensors = weighted_mean(chosen, [1.0] * len(rows) if weights is None else weights, like=self.own.tensors)
        used = {0, *rows}
        return AggregationResult(
            tensors,
            tuple(u.sender for i, u in enumerate(self.updates) if i in used),
            self.rejected + tuple(u.sender for i, u in enumerate(self.updates) if i not in used),
        )
