"""Everything one memory learns, in one object, and its conversion to bytes.

A state is saved as two files: ``state.safetensors`` with the tensors and
``state.json`` with the config, the slot ledger, the gate statistics and the
self-state. JSON carries the sha256 of the tensor file, the schema version
and a fingerprint of the model, so a load detects corruption, an older
format, or a state written with another model or size before it touches
anything. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from .config import SidecarConfig
from .encoder import DF_BUCKETS, DocumentFrequency
from .errors import StateError
from .fast_weights import FastWeights
from .gate import GateStats
from .ledger import SlotRecord
from .steering import SelfState
from .stores.base import StateBlob

#: Version of the layout below. Bump it, and add a migration, when it changes.
SCHEMA_VERSION = 1
JSON_FILE = "state.json"
TENSOR_FILE = "state.safetensors"


@dataclass
class PendingTurn:
    """An uncommitted recent turn, kept for eligibility traces."""

    turn: int
    text: str
    timestamp: float
    key: torch.Tensor  # (d_key,)


@dataclass
class MemoryState:
    """The mutable state of one memory. Its size depends only on the config."""

    config: SidecarConfig
    fingerprint: dict[str, Any]
    projection: torch.Tensor  # (hidden_size, d_hidden)
    calibration_mean: torch.Tensor  # (hidden_size,)
    calibration_std: torch.Tensor  # (hidden_size,)
    weights: FastWeights
    ledger: list[SlotRecord | None]
    df: DocumentFrequency = field(default_factory=DocumentFrequency)
    gate: GateStats = field(default_factory=GateStats)
    self_state: SelfState = field(default_factory=SelfState)
    pending: list[PendingTurn] = field(default_factory=list)
    turns: int = 0
    previous_question: bool = False
    """Flag set when the latest turn was a question, because the next turn may answer it."""
    last_turn: dict[str, Any] | None = None
    """Gate inputs of the latest turn, so ``reward()`` can re-score it."""

    def slots_used(self) -> int:
        """Count the occupied slots."""
        return sum(record is not None for record in self.ledger)


def model_fingerprint(model: Any, hidden_size: int) -> dict[str, Any]:
    """Identify a model well enough to reject states written with another one."""
    config = model.config
    return {
        "architecture": type(model).__name__,
        "name_or_path": str(getattr(config, "_name_or_path", "")),
        "hidden_size": hidden_size,
        "vocab_size": int(getattr(config, "vocab_size", 0) or 0),
        "num_layers": int(getattr(config, "num_hidden_layers", 0) or getattr(config, "n_layer", 0) or 0),
    }


def to_blob(state: MemoryState) -> StateBlob:
    """Serialise a state to ``state.json`` and ``state.safetensors`` bytes."""
    d_key = state.config.d_key
    pending_keys = torch.zeros(max(state.config.trace_turns, 1), d_key)  # (trace_turns, d_key)
    for i, item in enumerate(state.pending[: pending_keys.shape[0]]):
        pending_keys[i] = item.key
    tensors = {
        "U": state.weights.U.contiguous(),
        "V": state.weights.V.contiguous(),
        "projection": state.projection.contiguous(),
        "calibration_mean": state.calibration_mean.contiguous(),
        "calibration_std": state.calibration_std.contiguous(),
        "df_counts": state.df.counts.contiguous(),
        "pending_keys": pending_keys,
    }
    tensor_bytes = save_tensors(tensors)
    document = {
        "schema_version": SCHEMA_VERSION,
        "tensors_sha256": hashlib.sha256(tensor_bytes).hexdigest(),
        "config": state.config.to_dict(),
        "fingerprint": state.fingerprint,
        "ledger": [record.to_dict() if record else None for record in state.ledger],
        "df_documents": state.df.documents,
        "gate": state.gate.to_dict(),
        "self_state": state.self_state.to_dict(),
        "pending": [{"turn": p.turn, "text": p.text, "timestamp": p.timestamp} for p in state.pending],
        "turns": state.turns,
        "previous_question": state.previous_question,
        "last_turn": state.last_turn,
    }
    json_bytes = json.dumps(document, ensure_ascii=False, sort_keys=True).encode("utf-8")
    return StateBlob({JSON_FILE: json_bytes, TENSOR_FILE: tensor_bytes})


def from_blob(blob: StateBlob, *, fingerprint: dict[str, Any], where: str) -> MemoryState:
    """Rebuild a state, checking format, checksum, model, shapes and values.

    ``where`` names the source (a path or store key) in error messages.
    Raises :class:`StateError` without side effects when any check fails.
    """
    files = dict(blob.files)
    for name in (JSON_FILE, TENSOR_FILE):
        if name not in files:
            raise StateError(f"{where}: {name} is missing; the state is incomplete, restore a backup or start a new memory")
    try:
        document = json.loads(files[JSON_FILE].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StateError(f"{where}/{JSON_FILE} is not valid JSON ({error}); restore a backup or start a new memory") from error
    version = document.get("schema_version") if isinstance(document, dict) else None
    if version != SCHEMA_VERSION:
        raise StateError(
            f"{where}/{JSON_FILE} has schema_version {version!r}, this library reads {SCHEMA_VERSION}; "
            "load it with the version that wrote it, or start a new memory"
        )
    digest = hashlib.sha256(files[TENSOR_FILE]).hexdigest()
    if digest != document.get("tensors_sha256"):
        raise StateError(f"{where}/{TENSOR_FILE} fails its checksum; the file is corrupt, restore a backup")
    try:
        config = SidecarConfig.from_dict(document["config"])
        tensors = load_tensors(files[TENSOR_FILE])
        return _rebuild(document, tensors, config, fingerprint, where)
    except StateError:
        raise
    except Exception as error:  # Report malformed fields as a state error, not a crash.
        raise StateError(f"{where}: the state is malformed ({type(error).__name__}: {error}); restore a backup") from error


def _rebuild(document: dict, tensors: dict, config: SidecarConfig, fingerprint: dict, where: str) -> MemoryState:
    saved = document["fingerprint"]
    for key in ("architecture", "hidden_size", "vocab_size", "num_layers"):
        if saved.get(key) != fingerprint.get(key):
            raise StateError(
                f"{where} was written with a different model ({key}={saved.get(key)!r}, "
                f"this model has {fingerprint.get(key)!r}); load it with the model that wrote it"
            )
    hidden = fingerprint["hidden_size"]
    expected = {
        "U": (config.d_key, config.rank),
        "V": (config.d_key, config.rank),
        "projection": (hidden, max(config.d_hidden_part, 1)),
        "calibration_mean": (hidden,),
        "calibration_std": (hidden,),
        "df_counts": (DF_BUCKETS,),
        "pending_keys": (max(config.trace_turns, 1), config.d_key),
    }
    for name, shape in expected.items():
        if name not in tensors:
            raise StateError(f"{where}/{TENSOR_FILE} lacks tensor {name!r}; restore a backup")
        tensor = tensors[name]
        if tuple(tensor.shape) != shape:
            raise StateError(
                f"{where}/{TENSOR_FILE}: tensor {name!r} has shape {tuple(tensor.shape)}, expected {shape} "
                f"for d_key={config.d_key}, rank={config.rank}; the state does not match its config"
            )
        if not bool(torch.isfinite(tensor).all()):
            raise StateError(f"{where}/{TENSOR_FILE}: tensor {name!r} contains NaN or inf; restore a backup")
    ledger = [SlotRecord.from_dict(r) if r else None for r in document["ledger"]]
    if len(ledger) != config.rank:
        raise StateError(
            f"{where}/{JSON_FILE}: ledger has {len(ledger)} slots, expected rank={config.rank}; restore a backup"
        )
    pending = [
        PendingTurn(p["turn"], p["text"], p["timestamp"], tensors["pending_keys"][i].clone())
        for i, p in enumerate(document["pending"][: expected["pending_keys"][0]])
    ]
    gate = GateStats(**document["gate"])
    if not all(math.isfinite(v) for v in (gate.mean, gate.m2)):
        raise StateError(f"{where}/{JSON_FILE}: gate statistics contain NaN or inf; restore a backup")
    return MemoryState(
        config=config,
        fingerprint=saved,
        projection=tensors["projection"].clone(),
        calibration_mean=tensors["calibration_mean"].clone(),
        calibration_std=tensors["calibration_std"].clone(),
        weights=FastWeights(config.d_key, config.rank, u=tensors["U"].clone(), v=tensors["V"].clone()),
        ledger=ledger,
        df=DocumentFrequency(tensors["df_counts"].clone(), int(document["df_documents"])),
        gate=gate,
        self_state=SelfState(**document["self_state"]),
        pending=pending,
        turns=int(document["turns"]),
        previous_question=bool(document.get("previous_question", False)),
        last_turn=document.get("last_turn"),
    )
