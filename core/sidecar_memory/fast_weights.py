"""The fast-weight matrices ``U`` and ``V`` and their Hebbian writes.

``U`` (d_key × rank) stores one key per column ("slot"), and ``V`` (d_key × rank)
stores what was left unexplained when the slot was written. A read of key
``k`` attends over slots, ``a = softmax(Uᵀk / T)``, and reconstructs
``r = V a``. A write to slot ``j`` is a rank-1 Hebbian update of both
matrices after a global decay:

    U ← decay·U + g · k̃ e_jᵀ        V ← decay·V + g · v e_jᵀ

with gain ``g = eta0·G``, ``k̃`` the (optionally top-k sparse) key and
``v = norm(k − r)`` the normalised residual. Columns are never renormalised,
so the gain survives as the column's strength and decides eviction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Read:
    """Result of reading one key."""

    attention: torch.Tensor
    """Softmax over slots, shape ``(rank,)``. Empty slots get zero weight."""
    reconstruction: torch.Tensor
    """Reconstruction ``r = V a``, shape ``(d_key,)``."""
    similarity: torch.Tensor
    """Cosine between the key and each slot's key column, shape ``(rank,)``. Empty slots get -1."""


class FastWeights:
    """Two low-rank matrices updated online, without gradients."""

    def __init__(self, d_key: int, rank: int, *, u: torch.Tensor | None = None, v: torch.Tensor | None = None) -> None:
        self.U = u if u is not None else torch.zeros(d_key, rank)  # (d_key, rank)
        self.V = v if v is not None else torch.zeros(d_key, rank)  # (d_key, rank)

    @property
    def rank(self) -> int:
        """Number of slots: the column count of ``U`` and ``V``."""
        return int(self.U.shape[1])

    def strengths(self) -> torch.Tensor:
        """Return the norm of each key column, shape ``(rank,)``. Zero means the slot is empty."""
        return self.U.norm(dim=0)

    def read(self, key: torch.Tensor, *, temperature: float) -> Read:
        """Attend over occupied slots with a unit key of shape ``(d_key,)``."""
        strengths = self.strengths()  # (rank,)
        occupied = strengths > 0
        similarity = torch.full((self.rank,), -1.0)
        if not bool(occupied.any()):
            return Read(torch.zeros(self.rank), torch.zeros_like(key), similarity)
        similarity[occupied] = (key @ self.U[:, occupied]) / strengths[occupied]  # (n_occupied,)
        logits = (key @ self.U) / temperature  # (rank,)
        logits = logits.masked_fill(~occupied, float("-inf"))
        attention = torch.softmax(logits, dim=0)  # (rank,)
        return Read(attention, self.V @ attention, similarity)

    def write(self, slot: int, key: torch.Tensor, residual: torch.Tensor, gain: float, *, decay: float) -> None:
        """Decay all slots, then add ``gain·key`` to column ``slot`` of U and ``gain·residual`` to V."""
        self.U.mul_(decay)
        self.V.mul_(decay)
        self.U[:, slot] += gain * key
        self.V[:, slot] += gain * residual

    def bind(self, slot: int, key: torch.Tensor, gain: float) -> None:
        """Add a weaker key to a slot's key column, so a nearby turn also finds the slot."""
        self.U[:, slot] += gain * key

    def clear(self, slot: int) -> None:
        """Empty one slot."""
        self.U[:, slot] = 0.0
        self.V[:, slot] = 0.0


def sparsify(key: torch.Tensor, topk: int | None) -> torch.Tensor:
    """Keep the ``topk`` largest-magnitude entries of a key of shape ``(d_key,)``, renormalised."""
    if topk is None or topk >= key.numel():
        return key
    kept = torch.zeros_like(key)
    index = key.abs().topk(topk).indices
    kept[index] = key[index]
    return kept / kept.norm().clamp_min(1e-8)
