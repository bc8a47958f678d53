"""The engine on the real embedded model: gating, conflict, recall, persistence, generation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar_memory import InvalidInputError, Sidecar, SidecarConfig, SidecarV3, StateError

REPO = Path(__file__).resolve().parents[1]
MUNDANE = [
    "Hi, how are you?",
    "I'm fine, thanks.",
    "Ok.",
    "Sounds good.",
    "Cool, see you.",
    "Yeah.",
]


@pytest.fixture()
def sidecar(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    return Sidecar(model, tokenizer, rank=16)


def warm_up(sc: Sidecar) -> None:
    for text in MUNDANE:
        sc.observe(text)


def test_mundane_turn_not_committed(sidecar):
    warm_up(sidecar)
    decision = sidecar.observe("Ok, thanks.")
    assert not decision.committed
    assert decision.slot is None
    assert decision.G <= decision.tau


def test_hazard_turn_committed(sidecar):
    warm_up(sidecar)
    decision = sidecar.observe("I'm hiking in Death Valley tomorrow, it will be 120°F and I have little water!")
    assert decision.committed
    assert decision.A > 0.5
    assert decision.slot is not None


def test_hazard_makes_prefix_cautious(sidecar):
    warm_up(sidecar)
    sidecar.observe("Warning: there is a gas leak in my kitchen, it smells dangerous.")
    prefix = sidecar.recall("what should I do tonight?").prefix
    assert "cautious" in prefix.lower()


CONFLICTS = [
    ("My favorite color is blue.", "Actually my favorite color is green now.", "What is my favorite color?", "green", "blue"),
    ("I like coffee.", "Not coffee anymore, tea now.", "What do I drink now?", "tea", "I like coffee"),
    ("I'm vegetarian.", "I started eating fish, I'm pescatarian now.", "What is my diet?", "pescatarian", "I'm vegetarian"),
    ("I live in Boston.", "We moved to Denver last month.", "Which city do I live in?", "Denver", "Boston"),
]


@pytest.mark.parametrize("old, new, question, current, stale", CONFLICTS, ids=["color", "drink", "diet", "city"])
def test_conflict_replaces_old_fact(sidecar, old, new, question, current, stale):
    warm_up(sidecar)
    first = sidecar.observe(old)
    sidecar.observe("The weather was nice today.")
    second = sidecar.observe(new)
    assert first.committed
    assert second.C == 1.0
    assert second.committed
    assert second.replaced_slot == first.slot
    texts = [m.text for m in sidecar.recall(question, k=3).memories]
    assert current.lower() in texts[0].lower()
    assert not any(stale.lower() in t.lower() for t in texts)


def test_speakers_do_not_overwrite_each_other(sidecar):
    warm_up(sidecar)
    sidecar.observe("Anna: My favorite color is blue.")
    decision = sidecar.observe("Ben: My favorite color is red.")
    assert decision.C == 0.0


def test_reward_cue_raises_r(sidecar):
    warm_up(sidecar)
    decision = sidecar.observe("Remember this: my locker code is 4471.")
    assert decision.R == 1.0
    assert decision.committed


def test_reward_call_commits_last_turn(sidecar):
    warm_up(sidecar)
    decision = sidecar.observe("Ok.")
    assert not decision.committed
    rewarded = sidecar.reward(1.0)
    assert rewarded is not None
    assert rewarded.committed
    assert any(m.text == "Ok." for m in sidecar.slots())


def test_reward_rejects_out_of_range(sidecar):
    sidecar.observe("Hello there, my name is Alex.")
    with pytest.raises(InvalidInputError, match="reward value"):
        sidecar.reward(5.0)


def test_trace_binds_preceding_turn(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    sidecar = Sidecar(model, tokenizer, rank=16, fixed_tau=1.2)
    before = sidecar.observe("So what did you bring?")
    after = sidecar.observe("Remember this: I brought my grandmother's lasagna recipe to the potluck!")
    assert not before.committed
    assert after.committed
    assert before.turn in after.bound_turns
    slot = next(m for m in sidecar.slots() if m.slot == after.slot)
    assert "what did you bring" in slot.context


def test_recall_returns_text_most_relevant_first(sidecar):
    warm_up(sidecar)
    sidecar.observe("My sister Maria adopted a golden retriever puppy named Biscuit.")
    sidecar.observe("I finished the marathon in Chicago in four hours and ten minutes!")
    memories = sidecar.recall("What is the name of Maria's dog?", k=2).memories
    assert "Biscuit" in memories[0].text
    assert memories[0].score >= memories[1].score


def test_state_size_constant(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    sc = Sidecar(model, tokenizer, rank=8, max_text_chars=80, max_context_chars=40)
    for i in range(10):
        sc.observe(f"Turn {i}: I visited museum number {i} and loved painting {i * 7}.")
    tensor_bytes = len(sc.to_blob().files["state.safetensors"])
    for i in range(10, 60):
        sc.observe(f"Turn {i}: I visited museum number {i} and loved painting {i * 7}, with a long story " * 3)
    blob = sc.to_blob()
    assert len(blob.files["state.safetensors"]) == tensor_bytes
    bound = 8 * (80 + 40) * 4 + 200_000  # ledger text (UTF-8, <= 4 bytes a char) plus fixed fields
    assert len(blob.files["state.json"]) < bound
    assert sc.stats["slots_used"] <= 8


def test_save_load_roundtrip(sidecar, model_and_tokenizer, tmp_path):
    warm_up(sidecar)
    sidecar.observe("My favorite color is green.")
    sidecar.save_state(tmp_path / "state")
    model, tokenizer = model_and_tokenizer
    loaded = Sidecar(model, tokenizer)
    loaded.load_state(tmp_path / "state")
    assert loaded.config.rank == 16
    assert loaded.stats == sidecar.stats
    assert loaded.recall("favorite color?", k=1).memories[0].text == "My favorite color is green."


def test_new_process_recalls_saved_fact(sidecar, tmp_path):
    warm_up(sidecar)
    sidecar.observe("My cat is called Pixel and she is afraid of thunder storms.")
    sidecar.save_state(tmp_path / "state")
    script = (
        "import sys; from sidecar_memory import Sidecar, load_default_model\n"
        "m, t = load_default_model(); s = Sidecar.from_state(m, t, sys.argv[1])\n"
        "print(s.recall('What is my cat called?', k=1).memories[0].text)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "state")], capture_output=True, text=True,
                         check=True, timeout=300)
    assert "Pixel" in out.stdout


def test_load_missing_directory_raises(sidecar, tmp_path):
    with pytest.raises(StateError, match="does not exist"):
        sidecar.load_state(tmp_path / "nope")


def test_corrupt_state_leaves_memory_unchanged(sidecar, tmp_path):
    warm_up(sidecar)
    sidecar.observe("My passport number ends in 7731.")
    sidecar.save_state(tmp_path / "state")
    tensor_file = tmp_path / "state" / "state.safetensors"
    data = bytearray(tensor_file.read_bytes())
    data[-10] ^= 0xFF
    tensor_file.write_bytes(bytes(data))
    before = sidecar.stats
    with pytest.raises(StateError, match="checksum"):
        sidecar.load_state(tmp_path / "state")
    assert sidecar.stats == before


def test_newer_schema_rejected(sidecar, tmp_path):
    sidecar.observe("Hello, I am Sam and I live in Oslo.")
    sidecar.save_state(tmp_path / "state")
    json_file = tmp_path / "state" / "state.json"
    document = json.loads(json_file.read_text())
    document["schema_version"] = 99
    json_file.write_text(json.dumps(document))
    with pytest.raises(StateError, match="schema_version 99"):
        sidecar.load_state(tmp_path / "state")


@pytest.mark.parametrize("bad", ["", "   \n\t", None, 42])
def test_observe_rejects_bad_text(sidecar, bad):
    with pytest.raises(InvalidInputError):
        sidecar.observe(bad)


def test_observe_rejects_oversized_text(sidecar):
    with pytest.raises(InvalidInputError, match="max_input_chars"):
        sidecar.observe("x" * (sidecar.config.max_input_chars + 1))


def test_config_rejects_bad_values():
    with pytest.raises(InvalidInputError, match="rank"):
        SidecarConfig(rank=0)
    with pytest.raises(InvalidInputError, match="key_mode"):
        SidecarConfig(key_mode="random")
    with pytest.raises(InvalidInputError, match="affect_weights"):
        SidecarConfig(affect_weights=(1.0, 2.0))


def test_sidecar_v3_accepts_original_arguments(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    sc = SidecarV3(model, tokenizer, d_key=256, d_state=512, rank=64, key_topk=32, decay=0.995, eta0=0.1,
                   temp=0.5, affect_weights=(1.0, 0.5, 0.6, 1.0, 1.0), fixed_tau=None, min_events=2,
                   warmup_tau=0.9, s_mode="blend", s_alpha=0.6)
    decision = sc.observe("I'm allergic to peanuts, this is important!")
    assert decision.committed
    assert sc.config.d_key == 256


@pytest.mark.parametrize("s_mode", ["blend", "nll", "novelty"])
def test_s_modes_give_bounded_surprisal(model_and_tokenizer, s_mode):
    model, tokenizer = model_and_tokenizer
    sc = Sidecar(model, tokenizer, s_mode=s_mode, rank=4)
    for text in MUNDANE + ["I started a pottery class on Thursdays with my neighbour Lena."]:
        decision = sc.observe(text)
        assert 0.0 <= decision.S <= 1.0


def test_generate_kv_follows_memory(sidecar):
    answer = sidecar.generate_kv(
        "The user's favorite color is green.",
        "What is my favorite color? Answer with one word.",
        allowed_words=["blue", "green", "red", "yellow"],
    )
    assert answer.lower() == "green"


def test_generate_kv_multi_token_word(sidecar, model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    word = "pescatarian"
    assert len(tokenizer(" " + word, add_special_tokens=False)["input_ids"]) > 1
    answer = sidecar.generate_kv(
        "The user is pescatarian now; they eat fish but no meat.",
        "What is my diet? Answer with one word.",
        allowed_words=["vegan", word, "omnivore"],
    )
    assert answer.lower() == word


def test_generate_kv_rejects_empty_allowed_words(sidecar):
    with pytest.raises(InvalidInputError, match="allowed_words"):
        sidecar.generate_kv("memory", "question?", allowed_words=["  "])


def test_generate_uses_memory(sidecar):
    warm_up(sidecar)
    sidecar.observe("My dog is called Rex.")
    reply = sidecar.generate("What is my dog called?", max_new_tokens=24, temperature=0.0)
    assert "Rex" in reply


def test_forget_by_query_and_all(sidecar):
    warm_up(sidecar)
    sidecar.observe("My bank PIN is 9921, remember this.")
    sidecar.observe("I'm training for a triathlon in Nice next June.")
    assert sidecar.forget(query="bank PIN") >= 1
    assert not any("PIN" in m.text for m in sidecar.slots())
    sidecar.forget(all=True)
    assert sidecar.stats["slots_used"] == 0
    assert sidecar.stats["turns"] == 0
