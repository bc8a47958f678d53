"""Cost workload: observe latency, state size against turns, peers' write and read latency, and the
time memory adds to generation.
"""

import logging
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from benchmarks.peers import LangChainStorePeer, LlamaIndexVectorPeer, MemoryPeer, SidecarPeer, WindowPeer
from benchmarks.resources import Resources
from benchmarks.scoring import latency_summary

logger = logging.getLogger(__name__)

_NAMES = ("Ana", "Bilal", "Chen", "Dara", "Emeka", "Farah", "Goran", "Hana", "Ivo", "Jun", "Kira", "Lars")
_PLACES = ("the library", "the harbor", "a ramen bar", "the climbing gym", "the farmers market", "the old mill",
           "the train station", "a jazz club", "the botanical garden", "my cousin's flat", "the office", "the lake")
_ACTIVITIES = ("went running", "fixed a bike", "baked bread", "played chess", "watched a film", "painted a wall",
               "planted tomatoes", "read a thriller", "wrote some code", "practiced the violin", "cleaned windows",
               "studied Portuguese")
_FEELINGS = ("tired", "thrilled", "anxious", "relaxed", "curious", "annoyed", "proud", "homesick", "hopeful")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_TEMPLATES = (
    "On {day} I {activity} with {name} near {place} for {number} minutes.",
    "{name} told me the rent at {place} went up by {number} dollars.",
    "I felt {feeling} after I {activity} on {day}.",
    "Remind me that {name} owes me {number} euros from the trip to {place}.",
    "We {activity} at {place}; {name} was {feeling} the whole time.",
    "My step count was {number} thousand on {day} because I {activity}.",
    "Can you suggest something to do at {place} if I feel {feeling}?",
    "{name} and I {activity} until {hour} o'clock on {day}.",
)


def synthetic_turns(count: int, seed: int = 7) -> list[str]:
    """Return ``count`` varied short turns built from templates and random fillers (deterministic per seed)."""
    rng = random.Random(seed)
    turns = []
    for _ in range(count):
        template = rng.choice(_TEMPLATES)
        turns.append(
            template.format(
                day=rng.choice(_DAYS),
                activity=rng.choice(_ACTIVITIES),
                name=rng.choice(_NAMES),
                place=rng.choice(_PLACES),
                feeling=rng.choice(_FEELINGS),
                number=rng.randint(2, 990),
                hour=rng.randint(1, 12),
            )
        )
    return turns


@dataclass(frozen=True)
class CostSettings:
    checkpoints: tuple[int, ...] = (10, 100, 1000, 5000)
    rank: int = 64
    latency_writes: int = 200
    latency_reads: int = 50
    generate_repeats: int = 5
    generate_history: int = 100
    max_new_tokens: int = 32
    seed: int = 7


GENERATE_PROMPT = "What should I plan for this weekend, given what I told you?"


def measure_state_growth(resources: Resources, settings: CostSettings) -> dict[str, Any]:
    """State bytes of each peer after each checkpoint count of turns, and the sidecar's observe latency."""
    total = max(settings.checkpoints)
    turns = synthetic_turns(total, settings.seed)
    encoder = resources.encoder
    logger.info("encoding %d synthetic turns with MiniLM", total)
    encoder.prefill(turns)
    sidecar = SidecarPeer(resources.model, resources.tokenizer, rank=settings.rank, name="sidecar")
    peers: list[MemoryPeer] = [
        sidecar,
        LangChainStorePeer(encoder, settings.rank, name="langchain FIFO"),
        WindowPeer(settings.rank, name="window"),
        LangChainStorePeer(encoder, None, name="langchain uncapped"),
    ]
    growth: dict[str, dict[str, int]] = {peer.name: {} for peer in peers}
    checkpoints = set(settings.checkpoints)
    for index, text in enumerate(tqdm(turns, desc="state growth", unit="turn"), start=1):
        for peer in peers:
            peer.add(f"s{index}", text, "user")
            if index in checkpoints:
                growth[peer.name][str(index)] = peer.nbytes()
    return {
        "rank": settings.rank,
        "checkpoints": list(settings.checkpoints),
        "state_bytes": growth,
        "budgets": {"sidecar": settings.rank, "langchain FIFO": settings.rank, "window": settings.rank,
                    "langchain uncapped": None},
        "observe_latency": latency_summary(sidecar.observe_seconds),
        "sidecar_stats": {key: value for key, value in sidecar.sidecar.stats.items() if isinstance(value, (int, float))},
    }


def measure_peer_latency(resources: Resources, settings: CostSettings) -> list[dict[str, Any]]:
    """Write and read latency of each peer, with MiniLM encoding every text (no cache)."""
    cold = resources.encoder.with_cache(False)
    builders = {
        "sidecar": lambda: SidecarPeer(resources.model, resources.tokenizer, rank=settings.rank),
        "langchain FIFO": lambda: LangChainStorePeer(cold, settings.rank),
        "langchain uncapped": lambda: LangChainStorePeer(cold, None),
        "llamaindex uncapped": lambda: LlamaIndexVectorPeer(cold),
        "window": lambda: WindowPeer(settings.rank),
    }
    turns = synthetic_turns(settings.latency_writes + settings.latency_reads, settings.seed + 1)
    writes, queries = turns[: settings.latency_writes], turns[settings.latency_writes :]
    results = []
    for family, build in builders.items():
        peer = build()
        write_seconds = []
        for index, text in enumerate(tqdm(writes, desc=f"write latency {family}", unit="turn", leave=False)):
            start = time.perf_counter()
            peer.add(f"w{index}", text, "user")
            write_seconds.append(time.perf_counter() - start)
        read_seconds = []
        for query in queries:
            start = time.perf_counter()
            peer.search(query, 5)
            read_seconds.append(time.perf_counter() - start)
        if hasattr(peer, "close"):
            peer.close()
        results.append(
            {
                "family": family,
                "stored_turns": len(writes),
                "write": latency_summary(write_seconds),
                "read_top5": latency_summary(read_seconds),
            }
        )
    return results


def _plain_generate(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int) -> tuple[float, int, int]:
    """Greedy ``model.generate`` on the chat-formatted prompt. Returns (seconds, prompt tokens, new tokens)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])  # (1, T)
    start = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        )
    elapsed = time.perf_counter() - start
    return elapsed, ids.shape[1], output.shape[1] - ids.shape[1]


def measure_generate_overhead(resources: Resources, settings: CostSettings) -> dict[str, Any]:
    """Wall time of ``Sidecar.generate`` against plain ``model.generate``, interleaved in one run.

    Both decode greedily with ``min_new_tokens = max_new_tokens``, so both produce the same number of
    tokens. The sidecar's time includes recall, the longer prompt that carries the recall, and the commit
    of the prompt as a turn.
    """
    model, tokenizer = resources.model, resources.tokenizer
    peer = SidecarPeer(model, tokenizer, rank=settings.rank)
    for index, text in enumerate(synthetic_turns(settings.generate_history, settings.seed + 2)):
        peer.add(f"g{index}", text, "user")
    sidecar = peer.sidecar
    # Estimate of the memory text generate() adds: the same prompt recalled with the same memory count.
    # Configs without generate_memories put recall_k memories into the prompt.
    generate_memories = getattr(sidecar.config, "generate_memories", sidecar.config.recall_k)
    memory_prompt_tokens = resources.count_tokens(sidecar.recall(GENERATE_PROMPT, k=generate_memories).as_text())

    def run_sidecar() -> float:
        torch.manual_seed(settings.seed)
        start = time.perf_counter()
        sidecar.generate(
            GENERATE_PROMPT,
            max_new_tokens=settings.max_new_tokens,
            temperature=0.0,
            min_new_tokens=settings.max_new_tokens,
        )
        return time.perf_counter() - start

    def run_plain() -> float:
        torch.manual_seed(settings.seed)
        return _plain_generate(model, tokenizer, GENERATE_PROMPT, settings.max_new_tokens)[0]

    run_plain()  # warm-up, not timed
    run_sidecar()
    plain_seconds, sidecar_seconds = [], []
    for _ in tqdm(range(settings.generate_repeats), desc="generate overhead", unit="pair"):
        plain_seconds.append(run_plain())
        sidecar_seconds.append(run_sidecar())
    _, plain_prompt_tokens, new_tokens = _plain_generate(model, tokenizer, GENERATE_PROMPT, settings.max_new_tokens)
    plain_median = statistics.median(plain_seconds)
    sidecar_median = statistics.median(sidecar_seconds)
    return {
        "prompt": GENERATE_PROMPT,
        "max_new_tokens": settings.max_new_tokens,
        "new_tokens": new_tokens,
        "repeats": settings.generate_repeats,
        "history_turns": settings.generate_history,
        "plain_prompt_tokens": plain_prompt_tokens,
        "memory_text_tokens": memory_prompt_tokens,
        "plain_seconds": plain_seconds,
        "sidecar_seconds": sidecar_seconds,
        "plain_median_s": plain_median,
        "sidecar_median_s": sidecar_median,
        "ratio": sidecar_median / plain_median,
        "added_fraction": sidecar_median / plain_median - 1.0,
    }


def run_cost(resources: Resources, settings: CostSettings) -> dict[str, Any]:
    return {
        "state_growth": measure_state_growth(resources, settings),
        "peer_latency": measure_peer_latency(resources, settings),
        "generate": measure_generate_overhead(resources, settings),
    }
