"""Builds the tiny random-weight Llama the real vLLM serves in tests and the demo (no download).

Run with the vLLM venv's python (it has torch, transformers and tokenizers):
    $VLLM_VENV/bin/python scripts/vllm/build_model.py [MODEL_DIR]
MODEL_DIR defaults to $VLLM_MODEL_DIR, else .cache/vllm-tiny-llama in the repository root.
A directory that is already complete is left alone; a new one is built beside it and renamed into
place, so two builds at once never leave a half-written model.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

# Bump when what is built changes: an older model directory is then rebuilt.
BUILD_VERSION = "1"
COMPLETE_MARKER = ".complete"

# A few lines the tokenizer learns its merges from; the weights are random, so what it says is noise.
TRAINING_TEXT = [
    "The exporter walks the chain of an inference service and names the first broken link.",
    "A client probe sends a request as a user would and times every phase of the answer.",
    "The engine computes tokens in a child process while the API server answers requests.",
    "Queues grow when requests arrive faster than the engine can generate their tokens.",
    "Hello! How can I help you today? Tell me about the weather, numbers 0 1 2 3 4 5 6 7 8 9.",
]
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
# A plain role-tagged chat format; generation starts after the assistant tag.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}{{ eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
VOCAB_SIZE = 512
MAX_POSITIONS = 2048


def default_model_dir() -> Path:
    repo = Path(__file__).resolve().parents[2]
    return Path(os.environ.get("VLLM_MODEL_DIR") or repo / ".cache" / "vllm-tiny-llama")


def is_complete(model_dir: Path) -> bool:
    marker = model_dir / COMPLETE_MARKER
    return marker.is_file() and marker.read_text().strip() == BUILD_VERSION


def build_tokenizer(target: Path) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TRAINING_TEXT, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=MAX_POSITIONS,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(target)
    return len(fast)


def build_weights(target: Path, vocab_size: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,  # head_dim 64: vLLM's CPU attention refuses 16
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(target, safe_serialization=True)


def build(model_dir: Path) -> Path:
    if is_complete(model_dir):
        return model_dir
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=model_dir.name + ".building-", dir=model_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the model is for every user of the machine
    try:
        vocab_size = build_tokenizer(staging)
        build_weights(staging, vocab_size)
        (staging / COMPLETE_MARKER).write_text(BUILD_VERSION + "\n")
        if model_dir.exists() and not is_complete(model_dir):
            shutil.rmtree(model_dir)  # a stale or half-built one
        try:
            staging.rename(model_dir)
        except OSError:
            if not is_complete(model_dir):  # another build finished first: keep its result
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model_dir


def main(argv: list[str]) -> int:
    model_dir = Path(argv[1]) if len(argv) > 1 else default_model_dir()
    built = build(model_dir)
    config = json.loads((built / "config.json").read_text())
    print(f"tiny llama in {built}: {config['num_hidden_layers']} layers, vocab {config['vocab_size']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
