"""The :class:`Sidecar`: gate-and-commit, recall and persistence for one memory."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from typing import Any

import torch

from . import gate as gating
from .affect import arousal, reward_cues
from .config import SidecarConfig
from .conflict import attribute_words, conflicting_slots, extract_facts, speaker_of
from .encoder import KeyEncoder, shared_encoder, turn_terms
from .errors import InvalidInputError, StateError
from .fast_weights import FastWeights, sparsify
from .ledger import SlotRecord, clip_text
from .records import GateDecision, MemoryItem, Recall
from .state import MemoryState, PendingTurn, from_blob, model_fingerprint, to_blob
from .steering import build_prefix
from .stores.base import StateBlob
from .stores.files import read_files, write_files_atomically

logger = logging.getLogger(__name__)


class Sidecar:
    """A constant-size fast-weight memory attached to a frozen causal LM.

    Create one per user or conversation. Memories on the same model share its
    key encoder, so creating many is cheap. Methods are thread-safe, and the
    async variants run the same work in a worker thread.

    Args:
        model: a Hugging Face causal LM. It is only read, under inference mode.
        tokenizer: its tokenizer.
        config: sizes and gains, or ``None`` for the :class:`SidecarConfig` defaults.
        **overrides: fields to change on ``config``, e.g. ``rank=256``.
    """

    def __init__(self, model: Any, tokenizer: Any, config: SidecarConfig | None = None, **overrides: Any) -> None:
        base = config if config is not None else SidecarConfig()
        self.config = base.replace(**overrides) if overrides else base
        self.model = model
        self.tokenizer = tokenizer
        self._lock = threading.RLock()
        self._encoder: KeyEncoder = shared_encoder(model, tokenizer, self.config)
        self._state = self._new_state()

    # ------------------------------------------------------------------ setup
    def _new_state(self) -> MemoryState:
        cfg = self.config
        return MemoryState(
            config=cfg,
            fingerprint=model_fingerprint(self.model, self._encoder.reader.hidden_size),
            projection=self._encoder.projection.clone(),
            calibration_mean=self._encoder.calibration_mean.clone(),
            calibration_std=self._encoder.calibration_std.clone(),
            weights=FastWeights(cfg.d_key, cfg.rank),
            ledger=[None] * cfg.rank,
        )

    # ------------------------------------------------------------------ keys
    def _key(self, text: str, terms: list[str]) -> torch.Tensor:
        """Encode one text with this state's saved projection. Returns shape ``(d_key,)``."""
        state = self._state
        hidden = None
        if self._encoder.d_hidden:
            pooled = self._encoder.reader.read(text).pooled  # (H,)
            hidden = self._encoder.hidden_key(pooled, mean=state.calibration_mean, std=state.calibration_std,
                                              projection=state.projection)
        lexical = self._encoder.lexical_key(terms, state.df) if self._encoder.d_lexical else None
        return self._encoder.combine(hidden, lexical)

    def _check_text(self, text: Any, *, name: str = "text") -> str:
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InvalidInputError(
                    f"{name} is bytes that are not valid UTF-8 ({error}); decode it yourself or pass str"
                ) from error
        if not isinstance(text, str):
            raise InvalidInputError(f"{name} must be a str; got {type(text).__name__}")
        if not text.strip():
            raise InvalidInputError(f"{name} is empty or whitespace only; pass a turn with some words")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise InvalidInputError(
                f"{name} contains characters that are not valid Unicode text ({error.reason} at position "
                f"{error.start}); decode the input with errors='replace' first"
            ) from error
        if len(text) > self.config.max_input_chars:
            raise InvalidInputError(
                f"{name} has {len(text)} characters, more than max_input_chars={self.config.max_input_chars}; "
                "split it into turns or raise max_input_chars"
            )
        return text

    # ------------------------------------------------------------------ observe
    def observe(self, text: str, role: str = "user", *, timestamp: float | None = None) -> GateDecision:
        """Run gate-and-commit on one turn and return the decision.

        The turn is encoded once, scored by the gate, and written to a slot
        only when ``G > tau``. A turn that contradicts a stored fact replaces
        the slot holding it.
        """
        text = self._check_text(text)
        if timestamp is not None and (isinstance(timestamp, bool) or not isinstance(timestamp, (int, float))
                                      or not math.isfinite(timestamp)):
            raise InvalidInputError(f"timestamp must be a finite number of seconds since the epoch; got {timestamp!r}")
        if not isinstance(role, str) or not role.strip():
            raise InvalidInputError(f"role must be a non-empty str such as 'user' or 'assistant'; got {role!r}")
        with self._lock:
            facts = extract_facts(text, role)
            # A stated fact also indexes its attribute's name, so questions that
            # name the attribute but not the value still find it.
            terms = turn_terms(text) + turn_terms(" ".join(attribute_words(facts)))
            key = self._key(text, terms)  # (d_key,)
            now = time.time() if timestamp is None else float(timestamp)
            return self._observe_key(text, role, key, terms, now, facts)

    async def aobserve(self, text: str, role: str = "user", *, timestamp: float | None = None) -> GateDecision:
        """Async :meth:`observe`: the forward pass runs in a worker thread, off the event loop."""
        return await asyncio.to_thread(self.observe, text, role, timestamp=timestamp)

    def _observe_key(self, text: str, role: str, key: torch.Tensor, terms: list[str], now: float,
                     facts: list) -> GateDecision:
        state, cfg = self._state, self.config
        read = state.weights.read(key, temperature=cfg.temp)
        cos_kr = None
        if state.slots_used():
            cos_kr = float(torch.nn.functional.cosine_similarity(key, read.reconstruction, dim=0))
        novelty = gating.novelty(cos_kr)
        cues = gating.dialogue_cues(speaker_of(text, role)[1])
        information = gating.information_score(sum(state.df.weight(t) for t in terms), cues,
                                               answers_question=state.previous_question,
                                               states_fact=bool(facts), config=cfg)
        affect = arousal(text, cfg)
        reward_signal = reward_cues(text, cfg)
        stale = conflicting_slots(facts, {i: r.facts for i, r in enumerate(state.ledger) if r and r.facts})
        features = gating.Features(
            S=gating.surprisal(information, novelty, cfg),
            N=novelty,
            A=affect.score,
            C=1.0 if stale else 0.0,
            R=reward_signal.score,
        )
        g = gating.score(features, cfg)
        tau = gating.threshold(state.gate, cfg)
        committed = g > tau
        turn = state.turns

        slot = replaced = None
        bound: tuple[int, ...] = ()
        if committed:
            slot, replaced, bound = self._commit(text, role, key, read, g, turn, now, facts, sorted(stale))
            state.gate.commits += 1
        else:
            self._remember_pending(PendingTurn(turn, text, now, key))

        state.df.add(terms)
        state.gate.update(g)
        state.turns += 1
        state.previous_question = cues.is_question
        state.self_state.update(
            arousal=features.A, conflict=features.C, cues=affect.cues, update_text=text if stale else None
        )
        state.last_turn = {"turn": turn, "S": features.S, "N": features.N, "A": features.A, "C": features.C,
                           "R": features.R, "committed": committed, "slot": slot, "role": role, "text": clip_text(text, cfg.max_text_chars)}
        reason = self._reason(features, committed, replaced, bound, reward_signal.cues, affect.cues)
        decision = GateDecision(turn=turn, role=role, text=text, S=features.S, N=features.N, A=features.A,
                                C=features.C, R=features.R, G=g, tau=tau, committed=committed, slot=slot,
                                replaced_slot=replaced, bound_turns=bound, reason=reason)
        logger.debug("turn %d: G=%.3f tau=%.3f committed=%s slot=%s", turn, g, tau, committed, slot)
        return decision

    def _commit(self, text, role, key, read, g, turn, now, facts, stale_slots):
        state, cfg = self._state, self.config
        weights = state.weights
        replaced = None
        if stale_slots:
            # The newest statement of a fact replaces every slot holding an older value.
            slot = replaced = stale_slots[0]
            for old in stale_slots:
                weights.clear(old)
                state.ledger[old] = None
        else:
            slot = self._choose_slot(read)
        record = state.ledger[slot]
        merging = record is not None and read.similarity[slot] >= cfg.merge_threshold
        if not merging and record is not None:
            weights.clear(slot)  # Evict the weakest slot's old content.
        residual = key - read.reconstruction
        residual = residual / residual.norm().clamp_min(1e-8)
        gain = cfg.eta0 * g
        weights.write(slot, sparsify(key, cfg.key_topk), residual, gain, decay=cfg.decay)

        bound = self._bind_pending(slot, gain, turn, now)
        context = " ".join(p.text for p in bound)
        fact_pairs = [f.as_pair() for f in facts]
        if merging:
            record.writes += 1
            record.timestamp = now
            record.facts = _merge_facts(record.facts, fact_pairs)
        else:
            state.ledger[slot] = SlotRecord(
                text=clip_text(text, cfg.max_text_chars), role=role, turn=turn, timestamp=now, gate=g,
                context=clip_text(context, cfg.max_context_chars) if context else "",
                bound_turns=[p.turn for p in bound], facts=fact_pairs,
            )
        return slot, replaced, tuple(p.turn for p in bound)

    def _choose_slot(self, read) -> int:
        state, cfg = self._state, self.config
        if state.slots_used() and float(read.similarity.max()) >= cfg.merge_threshold:
            return int(read.similarity.argmax())
        for index, record in enumerate(state.ledger):
            if record is None:
                return index
        return int(state.weights.strengths().argmin())  # Evict the weakest slot.

    def _remember_pending(self, item: PendingTurn) -> None:
        pending = self._state.pending
        pending.append(item)
        del pending[: max(len(pending) - self.config.trace_turns, 0)]

    def _bind_pending(self, slot: int, gain: float, turn: int, now: float) -> list[PendingTurn]:
        """Write recent uncommitted turns into the slot with decaying weight (eligibility traces)."""
        cfg, state = self.config, self._state
        bound = []
        for item in state.pending:
            distance = turn - item.turn
            if distance <= cfg.trace_turns and now - item.timestamp <= cfg.trace_seconds:
                state.weights.bind(slot, item.key, gain * cfg.trace_decay ** distance)
                bound.append(item)
        state.pending.clear()
        return bound

    @staticmethod
    def _reason(features, committed, replaced, bound, reward_hits, affect_cues) -> str:
        parts = []
        if replaced is not None:
            parts.append(f"conflict: replaced slot {replaced}")
        if affect_cues:
            parts.append("arousal: " + ", ".join(affect_cues[:3]))
        if reward_hits:
            parts.append("reward cue: " + reward_hits[0])
        if bound:
            parts.append(f"bound turns {list(bound)}")
        if not parts:
            parts.append("informative" if committed else "below threshold")
        return "; ".join(parts)

    # ------------------------------------------------------------------ recall
    def recall(self, query: str, k: int | None = None) -> Recall:
        """Return the ``k`` memories most similar to ``query`` and the steering prefix.

        Recall reads memory without changing it.
        """
        query = self._check_text(query, name="query")
        k = self.config.recall_k if k is None else k
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInputError(f"k must be a positive int; got {k!r}")
        with self._lock:
            key = self._key(query, turn_terms(query))
            return self._recall_key(query, key, k)

    async def arecall(self, query: str, k: int | None = None) -> Recall:
        """Async :meth:`recall`, run in a worker thread."""
        return await asyncio.to_thread(self.recall, query, k)

    def _recall_key(self, query: str, key: torch.Tensor, k: int) -> Recall:
        state = self._state
        weights = state.weights
        strengths = weights.strengths()  # (rank,)
        occupied = [i for i, record in enumerate(state.ledger) if record is not None and strengths[i] > 0]
        memories = []
        if occupied:
            index = torch.tensor(occupied)
            cosines = (key @ weights.U[:, index]) / strengths[index]  # (n_occupied,)
            order = torch.argsort(cosines, descending=True)[:k]
            for position in order.tolist():
                slot = occupied[position]
                record = state.ledger[slot]
                memories.append(MemoryItem(
                    text=record.text, score=float(cosines[position]), slot=slot, role=record.role,
                    turn=record.turn, strength=float(strengths[slot]), timestamp=record.timestamp,
                    context=record.context, bound_turns=tuple(record.bound_turns),
                    facts=_fact_triples(record.facts),
                ))
        prefix = build_prefix(state.self_state, slots_used=state.slots_used(), recalled=len(memories))
        return Recall(query=query, prefix=prefix, memories=memories)

    # ------------------------------------------------------------------ reward / forget
    def reward(self, value: float) -> GateDecision | None:
        """Credit the latest turn with reward ``value`` in ``[-1, 1]``.

        A positive reward re-scores the turn with ``R`` raised. If the turn was
        not committed and now clears the threshold, it is committed. A committed
        turn's slot is strengthened by ``1 + value`` (weakened for negative
        values). Returns the new decision, or ``None`` when nothing changed.
        """
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1.0 <= value <= 1.0:
            raise InvalidInputError(f"reward value must be a number in [-1, 1]; got {value!r}")
        with self._lock:
            last = self._state.last_turn
            if last is None:
                raise InvalidInputError("reward() requires an observed turn, but none was observed; call observe() first")
            if last["committed"]:
                slot = last["slot"]
                if self._state.ledger[slot] is not None:
                    self._state.weights.U[:, slot] *= 1.0 + value
                    self._state.weights.V[:, slot] *= 1.0 + value
                return None
            pending = next((p for p in self._state.pending if p.turn == last["turn"]), None)
            if pending is None or value <= 0:
                return None
            features = gating.Features(S=last["S"], N=last["N"], A=last["A"], C=last["C"], R=min(last["R"] + value, 1.0))
            g = gating.score(features, self.config)
            tau = gating.threshold(self._state.gate, self.config)
            if g <= tau:
                return None
            self._state.pending.remove(pending)
            read = self._state.weights.read(pending.key, temperature=self.config.temp)
            slot, replaced, bound = self._commit(pending.text, last["role"], pending.key, read, g, pending.turn,
                                                 pending.timestamp, [], [])
            self._state.gate.commits += 1
            last.update(committed=True, slot=slot, R=features.R)
            return GateDecision(turn=pending.turn, role=last["role"], text=pending.text, S=features.S, N=features.N,
                                A=features.A, C=features.C, R=features.R, G=g, tau=tau, committed=True, slot=slot,
                                replaced_slot=replaced, bound_turns=bound, reason="reward")

    def forget(self, query: str | None = None, all: bool = False, *, threshold: float = 0.5) -> int:  # noqa: A002
        """Clear slots and return how many were cleared.

        ``all=True`` resets the whole memory (slots, statistics, pending
        turns). With ``query``, slots whose key has cosine at least
        ``threshold`` with the query's key, or whose text contains the query,
        are cleared.
        """
        if all:
            with self._lock:
                cleared = self._state.slots_used()
                self._state = self._new_state()
                return cleared
        if query is None:
            raise InvalidInputError("forget() requires query=... or all=True; got neither")
        query = self._check_text(query, name="query")
        with self._lock:
            key = self._key(query, turn_terms(query))
            weights, ledger = self._state.weights, self._state.ledger
            strengths = weights.strengths()
            cleared = 0
            for slot, record in enumerate(ledger):
                if record is None:
                    continue
                cosine = 0.0
                if strengths[slot] > 0:
                    cosine = float(key @ weights.U[:, slot] / strengths[slot])
                if cosine >= threshold or query.lower() in record.text.lower():
                    weights.clear(slot)
                    ledger[slot] = None
                    cleared += 1
            # Forgotten text must not survive as another slot's bound context either.
            for record in ledger:
                if record is not None and record.context and query.lower() in record.context.lower():
                    record.context = ""
                    record.bound_turns = []
            self._state.pending = [p for p in self._state.pending if query.lower() not in p.text.lower()]
            return cleared

    # ------------------------------------------------------------------ persistence
    def to_blob(self) -> StateBlob:
        """Serialise the state (``state.json`` + ``state.safetensors``)."""
        with self._lock:
            return to_blob(self._state)

    def load_blob(self, blob: StateBlob, *, where: str = "state") -> None:
        """Replace this memory's state with a serialised one.

        The blob is fully validated first, so on any error the current state
        is left untouched. The saved config replaces this memory's config.
        """
        fingerprint = model_fingerprint(self.model, self._encoder.reader.hidden_size)
        state = from_blob(blob, fingerprint=fingerprint, where=where)
        with self._lock:
            self.config = state.config
            self._encoder = shared_encoder(self.model, self.tokenizer, state.config)
            self._state = state

    def save_state(self, path: str | os.PathLike[str]) -> None:
        """Write the state to directory ``path`` atomically (temporary directory, then rename)."""
        write_files_atomically(path, self.to_blob().files)

    def load_state(self, path: str | os.PathLike[str]) -> None:
        """Load a state written by :meth:`save_state`. Raises :class:`StateError` if missing or invalid."""
        try:
            # read_files also finds a state left as a backup by a save that was interrupted mid-swap.
            files = read_files(path)
        except FileNotFoundError as error:
            raise StateError(
                f"state directory {os.fspath(path)!r} does not exist; check the path or save a state first"
            ) from error
        except OSError as error:
            raise StateError(f"cannot read state directory {os.fspath(path)!r}: {error}") from error
        self.load_blob(StateBlob(files), where=os.fspath(path))

    @classmethod
    def from_state(cls, model: Any, tokenizer: Any, path: str | os.PathLike[str]) -> "Sidecar":
        """Create a memory and load its state from ``path``."""
        sidecar = cls(model, tokenizer)
        sidecar.load_state(path)
        return sidecar

    # ------------------------------------------------------------------ inspection
    @property
    def stats(self) -> dict[str, Any]:
        """Counters of this memory: turns seen, commits, slots used, gate statistics."""
        with self._lock:
            state = self._state
            return {
                "turns": state.turns,
                "commits": state.gate.commits,
                "slots_used": state.slots_used(),
                "rank": self.config.rank,
                "d_key": self.config.d_key,
                "gate_mean": state.gate.mean,
                "gate_std": state.gate.std,
                "tau": gating.threshold(state.gate, self.config),
                "arousal": state.self_state.arousal,
            }

    def slots(self) -> list[MemoryItem]:
        """Return all occupied slots, strongest first."""
        with self._lock:
            strengths = self._state.weights.strengths()
            items = [
                MemoryItem(text=r.text, score=float("nan"), slot=i, role=r.role, turn=r.turn,
                           strength=float(strengths[i]), timestamp=r.timestamp, context=r.context,
                           bound_turns=tuple(r.bound_turns))
                for i, r in enumerate(self._state.ledger) if r is not None
            ]
        return sorted(items, key=lambda m: -m.strength)

    def state_nbytes(self) -> int:
        """Return the size in bytes of the serialised state."""
        return sum(len(data) for data in self.to_blob().files.values())

    # ------------------------------------------------------------------ generation
    def generate(self, prompt: str, max_new_tokens: int = 64, temperature: float = 0.7, top_p: float = 0.9,
                 *, observe: bool = True, **generate_kwargs: Any) -> str:
        """Generate a reply to ``prompt`` with recalled memory in the system message.

        :mod:`sidecar_memory.generation` describes the steps.
        """
        from .generation import generate_with_memory

        return generate_with_memory(self, prompt, max_new_tokens=max_new_tokens, temperature=temperature,
                                    top_p=top_p, observe=observe, **generate_kwargs)

    def generate_kv(self, mem_text: str, prompt: str, max_new_tokens: int = 16, stop_on_newline: bool = False,
                    allowed_words: list[str] | None = None) -> str:
        """Decode greedily with ``mem_text`` prefilled into the KV cache.

        :mod:`sidecar_memory.generation` describes the steps.
        """
        from .generation import generate_from_kv

        return generate_from_kv(self.model, self.tokenizer, mem_text, prompt, max_new_tokens=max_new_tokens,
                                stop_on_newline=stop_on_newline, allowed_words=allowed_words)

    def _observe_and_recall(self, prompt: str, role: str, k: int, observe: bool) -> Recall:
        """Encode ``prompt`` once, use the key for recall, then (optionally) for gate-and-commit."""
        prompt = self._check_text(prompt, name="prompt")
        with self._lock:
            terms = turn_terms(prompt)
            key = self._key(prompt, terms)
            recalled = self._recall_key(prompt, key, k)
            if observe:
                self._observe_key(prompt, role, key, terms, time.time(), extract_facts(prompt, role))
            return recalled


def _fact_triples(pairs: list[list[str]]) -> tuple[tuple[str, str, str], ...]:
    """Turn ledger pairs ``["speaker|attribute", value]`` into ``(speaker, attribute, value)``."""
    triples = []
    for key, value in pairs:
        speaker, _, attribute = key.partition("|")
        triples.append((speaker, attribute, value))
    return tuple(triples)


def _merge_facts(old: list[list[str]], new: list[list[str]]) -> list[list[str]]:
    merged = {key: value for key, value in old}
    merged.update({key: value for key, value in new})
    return [[k, v] for k, v in merged.items()]


class SidecarV3(Sidecar):
    """Sidecar with the original constructor: keyword arguments instead of a config object.

    Accepts ``d_key, d_state, rank, key_topk, decay, eta0, temp,
    affect_weights, fixed_tau, min_events, warmup_tau, s_mode, s_alpha``.
    ``d_state`` sized the prototype's random prefix network, which is gone
    (the steering prefix is now plain text), so it is accepted and ignored.
    """

    def __init__(self, model: Any, tokenizer: Any, *, d_key: int = 256, d_state: int = 512, rank: int = 64,
                 key_topk: int | None = 32, decay: float = 0.995, eta0: float = 0.1, temp: float = 0.5,
                 affect_weights: tuple[float, float, float, float, float] = (1.0, 0.5, 0.6, 1.0, 1.0),
                 fixed_tau: float | None = None, min_events: int = 2, warmup_tau: float = 0.90,
                 s_mode: str = "blend", s_alpha: float = 0.6, **overrides: Any) -> None:
        if isinstance(d_state, bool) or not isinstance(d_state, int) or d_state < 1:
            raise InvalidInputError(f"d_state must be a positive int; got {d_state!r}")
        config = SidecarConfig(d_key=d_key, rank=rank, key_topk=key_topk, decay=decay, eta0=eta0, temp=temp,
                               affect_weights=affect_weights, fixed_tau=fixed_tau, min_events=min_events,
                               warmup_tau=warmup_tau, s_mode=s_mode, s_alpha=s_alpha, **overrides)
        super().__init__(model, tokenizer, config)
