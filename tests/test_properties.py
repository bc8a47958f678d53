"""Property-based tests: random sequences of public engine calls keep the state loadable and the same size.

Two state machines run against the real model (shared through the session-scoped
``model_and_tokenizer`` fixture). Example counts are small because one observe takes
tens of milliseconds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test
from safetensors.torch import load as load_tensors

from sidecar_memory import InvalidInputError, Sidecar, StateBlob
from sidecar_memory.session import SessionMemory
from sidecar_memory.stores import DirectoryStore, SQLiteStore

SETTINGS = settings(
    max_examples=8,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FACTS = [
    "My name is Lena and I teach chemistry.",
    "I moved to Bergen last spring.",
    "My brother Tom plays the cello.",
    "I am vegetarian.",
    "Our flat has a blue door.",
    "I changed my mind: I now live in Oslo.",
]
TEXTS = st.one_of(st.sampled_from(FACTS), st.text(max_size=80))
ROLES = st.sampled_from(["user", "assistant"])


def tensor_shapes(blob: StateBlob) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in load_tensors(blob.files["state.safetensors"]).items()}


class SidecarMachine(RuleBasedStateMachine):
    """observe, recall, save_state, load_state, to_blob/load_blob and forget on one Sidecar."""

    model = None
    tokenizer = None

    @initialize()
    def create(self):
        self.sidecar = Sidecar(self.model, self.tokenizer, rank=16)
        self.directory = Path(tempfile.mkdtemp(prefix="sidecar-properties-"))
        self.saved: StateBlob | None = None
        initial = self.sidecar.to_blob()
        self.tensor_bytes = len(initial.files["state.safetensors"])
        self.shapes = tensor_shapes(initial)
        self.turns = 0

    @rule(text=TEXTS, role=ROLES)
    def observe(self, text: str, role: str):
        # Blank text must be rejected. Other text may be rejected too (for example text
        # that yields no tokens), but only with InvalidInputError and no change of state.
        before = self.sidecar.to_blob()
        try:
            decision = self.sidecar.observe(text, role=role)
        except InvalidInputError:
            assert self.sidecar.to_blob() == before
            return
        assert text.strip(), f"blank text {text!r} was accepted"
        assert decision.turn == self.turns
        self.turns += 1

    @rule(query=TEXTS, k=st.integers(min_value=1, max_value=20))
    def recall(self, query: str, k: int):
        before = self.sidecar.to_blob()
        try:
            result = self.sidecar.recall(query, k=k)
        except InvalidInputError:
            result = None
        else:
            assert query.strip(), f"blank query {query!r} was accepted"
            assert len(result.memories) <= min(k, self.sidecar.stats["slots_used"])
            scores = [item.score for item in result.memories]
            assert scores == sorted(scores, reverse=True)
        assert self.sidecar.to_blob() == before

    @rule()
    def save(self):
        self.sidecar.save_state(self.directory)
        self.saved = self.sidecar.to_blob()

    @precondition(lambda self: self.saved is not None)
    @rule()
    def load(self):
        self.sidecar.load_state(self.directory)
        assert self.sidecar.to_blob() == self.saved
        self.turns = self.sidecar.stats["turns"]

    @rule(query=st.one_of(st.none(), st.sampled_from(["Bergen", "cello", "vegetarian", "nothing like this"])))
    def forget(self, query: str | None):
        used = self.sidecar.stats["slots_used"]
        if query is None:
            cleared = self.sidecar.forget(all=True)
            assert cleared == used
            assert self.sidecar.stats["slots_used"] == 0
            self.turns = 0
        else:
            cleared = self.sidecar.forget(query)
            assert self.sidecar.stats["slots_used"] == used - cleared

    @invariant()
    def loadable_and_same_size(self):
        blob = self.sidecar.to_blob()
        fresh = Sidecar(self.model, self.tokenizer)
        fresh.load_blob(blob, where="property-test")
        assert fresh.to_blob() == blob
        assert len(blob.files["state.safetensors"]) == self.tensor_bytes
        assert tensor_shapes(blob) == self.shapes
        assert self.sidecar.stats["slots_used"] <= self.sidecar.stats["rank"]
        assert self.sidecar.stats["turns"] == self.turns

    def teardown(self):
        import shutil

        shutil.rmtree(self.directory, ignore_errors=True)


class SessionMachine(RuleBasedStateMachine):
    """observe, recall, forget and clear on two sessions sharing one store."""

    model = None
    tokenizer = None
    store_kind = "directory"

    @initialize()
    def create(self):
        self.directory = Path(tempfile.mkdtemp(prefix="sidecar-session-properties-"))
        if self.store_kind == "sqlite":
            self.store = SQLiteStore(self.directory / "states.db")
        else:
            self.store = DirectoryStore(self.directory)
        self.memories = {
            session_id: SessionMemory(self.model, self.tokenizer, self.store, session_id, rank=16)
            for session_id in ("anna", "ben")
        }
        self.versions = {"anna": 0, "ben": 0}
        self.turns = {"anna": 0, "ben": 0}
        self.tensor_bytes: int | None = None

    @rule(session_id=st.sampled_from(["anna", "ben"]), text=TEXTS)
    def observe(self, session_id: str, text: str):
        memory = self.memories[session_id]
        try:
            memory.observe(text)
        except InvalidInputError:
            return  # the invariant checks that the stored version did not move
        assert text.strip(), f"blank text {text!r} was accepted"
        self.versions[session_id] += 1
        self.turns[session_id] += 1

    @rule(session_id=st.sampled_from(["anna", "ben"]), query=st.sampled_from(FACTS))
    def recall(self, session_id: str, query: str):
        self.memories[session_id].recall(query)

    @rule(session_id=st.sampled_from(["anna", "ben"]), everything=st.booleans())
    def forget(self, session_id: str, everything: bool):
        memory = self.memories[session_id]
        if everything:
            memory.forget(all=True)
            self.turns[session_id] = 0
        else:
            memory.forget("Bergen")
        self.versions[session_id] += 1

    @rule(session_id=st.sampled_from(["anna", "ben"]))
    def clear(self, session_id: str):
        existed = self.memories[session_id].clear()
        assert existed == (self.versions[session_id] > 0)
        self.versions[session_id] = 0
        self.turns[session_id] = 0

    @invariant()
    def stored_states_loadable(self):
        assert self.store.list_sessions() == sorted(s for s, v in self.versions.items() if v > 0)
        for session_id, version in self.versions.items():
            stored = self.store.load(session_id)
            if version == 0:
                assert stored is None
                continue
            assert stored.version == version
            fresh = Sidecar(self.model, self.tokenizer)
            fresh.load_blob(stored.blob, where=session_id)
            assert fresh.stats["turns"] == self.turns[session_id]
            size = len(stored.blob.files["state.safetensors"])
            self.tensor_bytes = self.tensor_bytes or size
            assert size == self.tensor_bytes

    def teardown(self):
        import shutil

        self.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def test_sidecar_random_calls(model_and_tokenizer):
    SidecarMachine.model, SidecarMachine.tokenizer = model_and_tokenizer
    run_state_machine_as_test(SidecarMachine, settings=SETTINGS)


@pytest.mark.parametrize("store_kind", ["directory", "sqlite"])
def test_session_random_calls(model_and_tokenizer, store_kind: str):
    machine = type(f"SessionMachine_{store_kind}", (SessionMachine,), {"store_kind": store_kind})
    machine.model, machine.tokenizer = model_and_tokenizer
    run_state_machine_as_test(machine, settings=SETTINGS)
