"""The engine on GPT-2, NeoX and Llama architectures (tiny random models, real code paths)."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

from sidecar_memory import Sidecar

VOCAB = 49152  # the embedded tokenizer's vocabulary, reused so no tokenizer download is needed


def tiny_models():
    torch.manual_seed(0)
    yield "gpt2", GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=48, n_layer=3, n_head=2, n_positions=512))
    yield "neox", GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=VOCAB, hidden_size=40, num_hidden_layers=3,
                                                   num_attention_heads=2, intermediate_size=80))
    yield "llama", LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3,
                                                num_attention_heads=2, num_key_value_heads=1, intermediate_size=64))


@pytest.mark.parametrize("name, model", list(tiny_models()), ids=lambda v: v if isinstance(v, str) else "")
def test_observe_recall_on_architecture(name, model, model_and_tokenizer, tmp_path):
    _, tokenizer = model_and_tokenizer
    model.eval()
    sc = Sidecar(model, tokenizer, key_layer=2, rank=4, d_key=64)
    sc.observe("My favorite color is blue.")
    sc.observe("I'm planning a trip to Death Valley at 120°F!")
    memories = sc.recall("favorite color", k=1).memories
    assert memories
    sc.save_state(tmp_path / name)
    again = Sidecar(model, tokenizer, key_layer=2, rank=4, d_key=64)
    again.load_state(tmp_path / name)
    assert again.recall("favorite color", k=1).memories[0].text == memories[0].text


def test_key_layer_out_of_range(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    with pytest.raises(ValueError, match="key_layer"):
        Sidecar(model, tokenizer, key_layer=99)
