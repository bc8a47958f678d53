"""SessionMemory with the real embedded model on every store backend."""

from __future__ import annotations

import asyncio
import json

import pytest
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from test_stores_support import store, store_spec  # noqa: F401

from sidecar_memory import StateError
from sidecar_memory.session import SessionMemory
from sidecar_memory.stores import (
    CorruptStateError,
    DirectoryStore,
    InvalidSessionIdError,
    RetryPolicy,
    StateBlob,
    StateStore,
    UpdateRetriesExhaustedError,
)

@pytest.fixture
def directory_store(tmp_path):
    return DirectoryStore(tmp_path / "states")


FACTS = [
    "My name is Priya and I work as a marine biologist in Lisbon.",
    "My sister Ana is getting married in Porto next June.",
    "I am allergic to peanuts, so please never suggest satay.",
    "Our dog is a three year old beagle called Biscuit.",
]


def test_session_observe_persists(model_and_tokenizer, store: StateStore):
    model, tokenizer = model_and_tokenizer
    memory = SessionMemory(model, tokenizer, store, "priya")

    decisions = [memory.observe(text) for text in FACTS]
    stored = store.load("priya")
    reopened = SessionMemory(model, tokenizer, store, "priya")

    assert stored.version == len(FACTS)
    assert memory.version == len(FACTS)
    assert reopened.stats["turns"] == len(FACTS)
    assert reopened.stats["commits"] == sum(decision.committed for decision in decisions)
    assert reopened.stats["version"] == len(FACTS)
    for decision in decisions:
        if decision.committed:
            recalled = [item.text for item in reopened.recall(decision.text).memories]
            assert decision.text in recalled


def test_session_recall_changes_nothing(model_and_tokenizer, directory_store: StateStore):
    store = directory_store
    model, tokenizer = model_and_tokenizer
    memory = SessionMemory(model, tokenizer, store, "reader")
    memory.observe(FACTS[0])
    before = store.load("reader")

    memory.recall("Where does Priya work?")
    memory.slots()
    memory.stats

    assert store.load("reader") == before


def test_session_recall_on_empty_store(model_and_tokenizer, directory_store: StateStore):
    store = directory_store
    model, tokenizer = model_and_tokenizer
    memory = SessionMemory(model, tokenizer, store, "nobody")

    recall = memory.recall("anything at all?")

    assert recall.memories == []
    assert memory.version == 0
    assert store.load("nobody") is None


def test_session_sessions_isolated(model_and_tokenizer, store: StateStore):
    model, tokenizer = model_and_tokenizer
    alice = SessionMemory(model, tokenizer, store, "alice")
    bob = SessionMemory(model, tokenizer, store, "bob")

    alice.observe(FACTS[0])
    bob.observe(FACTS[3])

    assert alice.stats["turns"] == 1
    assert bob.stats["turns"] == 1
    assert all("Biscuit" not in item.text for item in alice.recall("dog beagle Biscuit").memories)
    assert store.list_sessions() == ["alice", "bob"]


def test_session_interleaved_objects_share_state(model_and_tokenizer, store: StateStore):
    # Two objects for one session behave like two workers: neither overwrites the other.
    model, tokenizer = model_and_tokenizer
    first = SessionMemory(model, tokenizer, store, "shared")
    second = SessionMemory(model, tokenizer, store, "shared")

    decisions = []
    for index, text in enumerate(FACTS):
        worker = first if index % 2 == 0 else second
        decisions.append(worker.observe(text))

    assert first.stats["turns"] == len(FACTS)
    assert second.stats["commits"] == sum(decision.committed for decision in decisions)
    assert store.load("shared").version == len(FACTS)


def test_session_forget_persists(model_and_tokenizer, directory_store: StateStore):
    store = directory_store
    model, tokenizer = model_and_tokenizer
    memory = SessionMemory(model, tokenizer, store, "forgetful")
    for text in FACTS:
        memory.observe(text)
    used_before = memory.stats["slots_used"]
    stored_peanuts = any("peanuts" in item.text for item in memory.slots())

    cleared = memory.forget("peanuts")
    reopened = SessionMemory(model, tokenizer, store, "forgetful")

    assert cleared >= int(stored_peanuts)
    assert reopened.stats["slots_used"] == used_before - cleared
    assert all("peanuts" not in item.text for item in reopened.slots())


def test_session_forget_all_keeps_config(model_and_tokenizer, directory_store: StateStore):
    store = directory_store
    model, tokenizer = model_and_tokenizer
    memory = SessionMemory(model, tokenizer, store, "small", rank=16)
    memory.observe(FACTS[0])

    memory.forget(all=True)

    assert memory.stats["slots_used"] == 0
    assert memory.stats["rank"] == 16
    assert memory.stats["turns"] == 0


def test_session_clear_removes_everything(model_and_tokenizer, store: StateStore):
    model, tokenizer = model_and_tokenizer
    memory = SessionMemory(model, tokenizer, store, "leaver")
    memory.observe(FACTS[0])
    memory.observe(FACTS[1])
    keeper = SessionMemory(model, tokenizer, store, "keeper")
    keeper.observe(FACTS[2])

    assert memory.clear() is True

    assert store.load("leaver") is None
    assert store.load_previous("leaver") is None
    assert store.list_sessions() == ["keeper"]
    assert memory.stats["turns"] == 0
    assert memory.recall("Priya").memories == []
    assert keeper.stats["turns"] == 1


def test_session_async_methods(model_and_tokenizer, store: StateStore):
    model, tokenizer = model_and_tokenizer
    memory = SessionMemory(model, tokenizer, store, "async-user")

    async def scenario():
        decisions = await asyncio.gather(*(memory.aobserve(text) for text in FACTS[:3]))
        async_recall = await memory.arecall("Who is getting married?")
        sync_recall = memory.recall("Who is getting married?")
        await memory.aforget(all=True)
        forgotten = memory.stats
        deleted = await memory.aclear()
        await store.aclose()
        return decisions, async_recall, sync_recall, forgotten, deleted

    decisions, async_recall, sync_recall, forgotten, deleted = asyncio.run(scenario())

    assert sorted(decision.turn for decision in decisions) == [0, 1, 2]
    assert async_recall == sync_recall
    assert forgotten["slots_used"] == 0
    assert forgotten["version"] == 4
    assert deleted is True
    assert store.load("async-user") is None


def test_session_reward_persists(model_and_tokenizer, directory_store: StateStore):
    store = directory_store
    model, tokenizer = model_and_tokenizer
    memory = SessionMemory(model, tokenizer, store, "rewarded")
    memory.observe(FACTS[1])
    version = memory.version

    memory.reward(0.5)

    assert store.load("rewarded").version == version + 1


def test_session_rejects_bad_id(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    store = DirectoryStore(tmp_path)

    with pytest.raises(InvalidSessionIdError) as caught:
        SessionMemory(model, tokenizer, store, "../../etc")

    assert "'../../etc'" in str(caught.value)


def test_session_rejects_non_store(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer

    with pytest.raises(TypeError, match="StateStore"):
        SessionMemory(model, tokenizer, str(tmp_path), "user")


def test_session_retries_exhausted(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    store = DirectoryStore(tmp_path)
    memory = SessionMemory(model, tokenizer, store, "contended", retry=RetryPolicy(max_attempts=2, base_delay=0.0))
    memory.observe(FACTS[0])
    rival_blob = store.load("contended").blob

    class RivalStore(DirectoryStore):
        """Saves a rival version right before every save of the memory, like a faster worker."""

        def _save(self, session_id, blob, expected_version):
            super()._save(session_id, rival_blob, expected_version)
            return super()._save(session_id, blob, expected_version)

    rival = SessionMemory(model, tokenizer, RivalStore(tmp_path), "contended", retry=memory.retry)
    with pytest.raises(UpdateRetriesExhaustedError) as caught:
        rival.observe(FACTS[1])

    assert "'contended'" in str(caught.value)
    assert "2 attempts" in str(caught.value)
    assert store.load("contended").version == 3


def test_session_restore_after_corruption(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    store = DirectoryStore(tmp_path)
    memory = SessionMemory(model, tokenizer, store, "damaged")
    memory.observe(FACTS[0])
    memory.observe(FACTS[1])
    tensor_file = sorted(store.session_dir("damaged").glob("v*"))[-1] / "state.safetensors"
    data = bytearray(tensor_file.read_bytes())
    data[-3] ^= 0xFF
    tensor_file.write_bytes(bytes(data))

    with pytest.raises(CorruptStateError) as caught:
        memory.observe(FACTS[2])
    assert str(tensor_file) in str(caught.value)

    restored = memory.restore_previous()
    decision = memory.observe(FACTS[2])

    assert restored == 3
    assert decision.turn == 1
    assert memory.stats["turns"] == 2
    assert store.load("damaged").version == 4


def test_session_restore_after_invalid_state(model_and_tokenizer, tmp_path):
    # A blob with intact store checksums but NaN in a tensor: the engine rejects it on load.
    model, tokenizer = model_and_tokenizer
    store = DirectoryStore(tmp_path)
    memory = SessionMemory(model, tokenizer, store, "poisoned")
    memory.observe(FACTS[0])
    good = store.load("poisoned")
    store.save("poisoned", nan_blob(good.blob), expected_version=good.version)

    with pytest.raises(StateError, match="NaN or inf"):
        memory.observe(FACTS[1])
    with pytest.raises(StateError, match="NaN or inf"):
        memory.recall("Priya")
    assert store.load_previous("poisoned") == good

    memory.restore_previous()

    assert memory.stats["turns"] == 1
    assert memory.observe(FACTS[1]).turn == 1


def test_session_restore_without_backup(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    memory = SessionMemory(model, tokenizer, DirectoryStore(tmp_path), "new-user")
    memory.observe(FACTS[0])

    with pytest.raises(StateError, match="no previous version"):
        memory.restore_previous()


def test_session_sidecar_is_detached(model_and_tokenizer, directory_store: StateStore):
    store = directory_store
    model, tokenizer = model_and_tokenizer
    memory = SessionMemory(model, tokenizer, store, "detached")
    memory.observe(FACTS[0])

    copy = memory.sidecar()
    copy.observe(FACTS[1])

    assert copy.stats["turns"] == 2
    assert memory.stats["turns"] == 1


def nan_blob(blob: StateBlob) -> StateBlob:
    """Return ``blob`` with one NaN in tensor U and a matching tensor checksum in state.json."""
    import hashlib

    tensors = load_tensors(blob.files["state.safetensors"])
    tensors["U"][0, 0] = float("nan")
    tensor_bytes = save_tensors(tensors)
    document = json.loads(blob.files["state.json"])
    document["tensors_sha256"] = hashlib.sha256(tensor_bytes).hexdigest()
    return StateBlob({"state.json": json.dumps(document).encode(), "state.safetensors": tensor_bytes})
