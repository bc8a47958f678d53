"""Bad input to the engine and to SessionMemory: each case is a clear error or handled, and nothing saved is lost.

"Nothing saved is lost" is checked against a DirectoryStore: after every rejected call
the stored version and bytes are unchanged, and the session still accepts new turns.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from sidecar_memory import InvalidInputError, Sidecar, StateBlob, StateError
from sidecar_memory.session import SessionMemory
from sidecar_memory.stores import DirectoryStore

SEED_TURNS = [
    "My name is Jonas and I repair bicycles in Utrecht.",
    "My daughter Mila starts school in September.",
    "I cannot eat gluten, it makes me ill.",
]


@pytest.fixture(scope="module")
def seed_blob(model_and_tokenizer) -> StateBlob:
    """The state after SEED_TURNS, computed once and copied into each test's store."""
    model, tokenizer = model_and_tokenizer
    engine = Sidecar(model, tokenizer)
    for text in SEED_TURNS:
        engine.observe(text)
    return engine.to_blob()


@pytest.fixture
def memory(model_and_tokenizer, seed_blob: StateBlob, tmp_path: Path) -> SessionMemory:
    model, tokenizer = model_and_tokenizer
    store = DirectoryStore(tmp_path / "states")
    store.save("jonas", seed_blob, expected_version=0)
    return SessionMemory(model, tokenizer, store, "jonas")


@pytest.fixture
def sidecar(model_and_tokenizer, seed_blob: StateBlob) -> Sidecar:
    model, tokenizer = model_and_tokenizer
    engine = Sidecar(model, tokenizer)
    engine.load_blob(seed_blob)
    return engine


def assert_store_unchanged(memory: SessionMemory, before) -> None:
    after = memory.store.load(memory.session_id)
    assert after.version == before.version
    assert after.blob == before.blob


def assert_still_usable(memory: SessionMemory) -> None:
    turns = memory.stats["turns"]
    memory.observe("Also, my favourite tea is rooibos.")
    assert memory.stats["turns"] == turns + 1


# -- text ---------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", " ", "   \n\t  ", "\u3000", "\r\n"])
def test_blank_turn_rejected(memory: SessionMemory, text: str):
    before = memory.store.load(memory.session_id)

    with pytest.raises(InvalidInputError, match="empty or whitespace"):
        memory.observe(text)

    assert_store_unchanged(memory, before)
    assert_still_usable(memory)


def test_blank_query_rejected(memory: SessionMemory):
    with pytest.raises(InvalidInputError, match="query"):
        memory.recall("   ")


def test_megabyte_turn_clear_error_or_handled(memory: SessionMemory):
    before = memory.store.load(memory.session_id)
    text = ("The quick brown fox jumps over the lazy dog. " * 23_000)[:1_000_000]

    try:
        decision = memory.observe(text)
    except InvalidInputError as error:
        assert "1000000 characters" in str(error)
        assert "max_input_chars" in str(error)
        assert_store_unchanged(memory, before)
    else:
        assert decision.turn == len(SEED_TURNS)
        assert memory.store.load(memory.session_id).version == before.version + 1
    assert_still_usable(memory)


def test_undecodable_bytes_rejected(memory: SessionMemory):
    before = memory.store.load(memory.session_id)

    with pytest.raises(InvalidInputError, match="not valid UTF-8"):
        memory.observe(b"caf\xe9 \xff\xfe broken")

    assert_store_unchanged(memory, before)
    assert_still_usable(memory)


def test_utf8_bytes_accepted(memory: SessionMemory):
    decision = memory.observe("Ich wohne in München.".encode())

    assert decision.text == "Ich wohne in München."


def test_lone_surrogate_rejected(memory: SessionMemory):
    before = memory.store.load(memory.session_id)
    try:
        with pytest.raises(InvalidInputError):
            memory.observe("file name \udcff from surrogateescape")
    finally:
        assert_store_unchanged(memory, before)


def test_lone_surrogate_keeps_state(memory: SessionMemory):
    before = memory.store.load(memory.session_id)

    with pytest.raises(InvalidInputError):
        memory.observe("file name \udcff from surrogateescape")

    assert_store_unchanged(memory, before)
    assert_still_usable(memory)


@pytest.mark.parametrize(
    "text",
    [
        "Меня зовут Иван, 我住在北京, and I love sushi 🍣🎉 — مرحبا بكم",
        "My cat is called 🐈‍⬛ Nyx and she is 👩🏽‍🔬 approved.",
        "e\u0301" * 40 + " accents everywhere",
        "Zero\u200bwidth\u200bjoiners and a right-to-left \u202emark",
        "control\x00characters\x1b[31m and a bell\x07 in my note",
    ],
)
def test_unusual_text_roundtrips(memory: SessionMemory, text: str):
    decision = memory.observe(text)
    reopened = SessionMemory(memory.model, memory.tokenizer, memory.store, memory.session_id)

    assert decision.text == text
    assert reopened.stats["turns"] == len(SEED_TURNS) + 1
    if decision.committed:
        assert text in [item.text for item in reopened.slots()]
    assert_still_usable(reopened)


@pytest.mark.parametrize("role", ["", "  ", None, 3])
def test_bad_role_rejected(memory: SessionMemory, role):
    before = memory.store.load(memory.session_id)

    with pytest.raises(InvalidInputError, match="role"):
        memory.observe("A perfectly fine turn.", role=role)

    assert_store_unchanged(memory, before)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 2.0, -1.5, True, "0.5"])
def test_bad_reward_rejected(memory: SessionMemory, value):
    before = memory.store.load(memory.session_id)

    with pytest.raises(InvalidInputError, match="reward"):
        memory.reward(value)

    assert_store_unchanged(memory, before)


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_bad_recall_k_rejected(memory: SessionMemory, k):
    with pytest.raises(InvalidInputError, match="k must be"):
        memory.recall("Jonas", k=k)


@pytest.mark.parametrize("timestamp", [float("nan"), float("inf")])
def test_nonfinite_timestamp_clear_error_or_handled(memory: SessionMemory, timestamp: float):
    before = memory.store.load(memory.session_id)

    try:
        memory.observe("My bike is a green Gazelle.", timestamp=timestamp)
    except InvalidInputError as error:
        assert "timestamp" in str(error)
        assert_store_unchanged(memory, before)
    else:
        assert memory.store.load(memory.session_id).version == before.version + 1
    assert memory.recall("What bike do I have?").query == "What bike do I have?"
    assert_still_usable(memory)


# -- loaded state -------------------------------------------------------------


def rewrite_tensors(blob: StateBlob, change) -> StateBlob:
    """Apply ``change`` to the blob's tensors and store a matching checksum, so only the engine's checks can object."""
    tensors = load_tensors(blob.files["state.safetensors"])
    change(tensors)
    tensor_bytes = save_tensors(tensors)
    document = json.loads(blob.files["state.json"])
    document["tensors_sha256"] = hashlib.sha256(tensor_bytes).hexdigest()
    return StateBlob({"state.json": json.dumps(document).encode(), "state.safetensors": tensor_bytes})


def set_value(name: str, value: float):
    def change(tensors):
        tensors[name].view(-1)[0] = value

    return change


def reshape(name: str):
    def change(tensors):
        tensors[name] = tensors[name][:-1].clone()

    return change


def rewrite_json(blob: StateBlob, change) -> StateBlob:
    document = json.loads(blob.files["state.json"])
    change(document)
    return StateBlob({"state.json": json.dumps(document).encode(), "state.safetensors": blob.files["state.safetensors"]})


BAD_STATES = {
    "nan in U": (lambda blob: rewrite_tensors(blob, set_value("U", math.nan)), "NaN or inf"),
    "inf in V": (lambda blob: rewrite_tensors(blob, set_value("V", math.inf)), "NaN or inf"),
    "-inf in projection": (lambda blob: rewrite_tensors(blob, set_value("projection", -math.inf)), "NaN or inf"),
    "nan in calibration": (lambda blob: rewrite_tensors(blob, set_value("calibration_mean", math.nan)), "NaN or inf"),
    "short U": (lambda blob: rewrite_tensors(blob, reshape("U")), "shape"),
    "short projection": (lambda blob: rewrite_tensors(blob, reshape("projection")), "shape"),
    "missing tensor": (lambda blob: rewrite_tensors(blob, lambda tensors: tensors.pop("V")), "lacks tensor 'V'"),
    "flipped tensor byte": (
        lambda blob: StateBlob({**blob.files, "state.safetensors": blob.files["state.safetensors"][:-1] + b"\x00"}),
        "checksum",
    ),
    "truncated tensors": (
        lambda blob: StateBlob({**blob.files, "state.safetensors": blob.files["state.safetensors"][:100]}),
        "checksum",
    ),
    "json not json": (lambda blob: StateBlob({**blob.files, "state.json": b"{oops"}), "not valid JSON"),
    "json not utf8": (lambda blob: StateBlob({**blob.files, "state.json": b"\xff\xfe"}), "not valid JSON"),
    "missing json": (lambda blob: StateBlob({"state.safetensors": blob.files["state.safetensors"]}), "state.json is missing"),
    "newer schema": (lambda blob: rewrite_json(blob, lambda d: d.update(schema_version=99)), "schema_version 99"),
    "nan gate mean": (lambda blob: rewrite_json(blob, lambda d: d["gate"].update(mean=math.nan)), "NaN or inf"),
    "short ledger": (lambda blob: rewrite_json(blob, lambda d: d.update(ledger=d["ledger"][:-1])), "ledger"),
    "pickle payload": (
        lambda blob: StateBlob({**blob.files, "state.safetensors": b"\x80\x04\x95" + b"cos\nsystem\n" + b"\x00" * 64}),
        "checksum",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_STATES))
def test_bad_state_rejected_by_load_blob(sidecar: Sidecar, case: str):
    make_bad, message = BAD_STATES[case]
    before = sidecar.to_blob()
    stats_before = sidecar.stats

    with pytest.raises(StateError, match=message):
        sidecar.load_blob(make_bad(before), where="test-state")

    assert sidecar.to_blob() == before
    assert sidecar.stats == stats_before


@pytest.mark.parametrize("case", ["nan in U", "short U", "newer schema"])
def test_bad_state_rejected_by_load_state(sidecar: Sidecar, tmp_path: Path, case: str):
    make_bad, message = BAD_STATES[case]
    good = sidecar.to_blob()
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    for name, data in make_bad(good).files.items():
        (bad_dir / name).write_bytes(data)

    with pytest.raises(StateError, match=message) as caught:
        sidecar.load_state(bad_dir)

    assert str(bad_dir) in str(caught.value)
    assert sidecar.to_blob() == good


@pytest.mark.parametrize("case", ["nan in U", "short projection", "missing tensor"])
def test_bad_state_in_store_keeps_backup(memory: SessionMemory, case: str):
    make_bad, message = BAD_STATES[case]
    good = memory.store.load(memory.session_id)
    memory.store.save(memory.session_id, make_bad(good.blob), expected_version=good.version)

    with pytest.raises(StateError, match=message) as caught:
        memory.observe("This turn must not be applied to a broken state.")
    assert "'jonas'" in str(caught.value)

    assert memory.store.load_previous(memory.session_id) == good
    memory.restore_previous()
    assert memory.stats["turns"] == len(SEED_TURNS)
    assert_still_usable(memory)
