"""A tiny random-weight chat model and LoRA adapter, built locally with no download.

`build_tiny_model(dir)` writes a Llama model (hidden 64, 2 layers, 2 heads of 32, about
1,000 tokens of vocabulary) with a byte-level BPE tokenizer trained on the English and
Chinese text below, ChatML special tokens and a ChatML chat template. It loads in
transformers and in vLLM's CPU server (whose attention wants a head size of 32 or more).
Its output is gibberish, but deterministic for a fixed seed: tests, benchmarks and
`bot models tiny DIR` use it where a real model would need the network or a GPU.

Needs the `local` extra (torch, transformers, tokenizers, safetensors); the LoRA
builder also needs peft.
"""

from __future__ import annotations

import importlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["TINY_MODEL_VERSION", "build_tiny_lora", "build_tiny_model"]

#: Bump when the recipe changes, so stale builds are rebuilt.
TINY_MODEL_VERSION = 1

_MARKER = "tiny-model.json"
_LORA_MARKER = "tiny-lora.json"

PAD_TOKEN = "<|pad|>"  # noqa: S105 - a vocabulary token, not a secret
BOS_TOKEN = "<|endoftext|>"  # noqa: S105
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, IM_START, IM_END)

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_VOCAB_SIZE = 1000

# Training text for the tokenizer. Chinese is here so that CJK gets merges of its own;
# byte-level BPE round-trips any text either way.
_CORPUS = """\
Samantha lives in a small house by the sea. Every morning she walks along the beach,
collects shells and talks to the fishermen about the weather, the tides and the news
from the town. She remembers the names of their children and asks about them often.
When people write to her, she answers warmly and a little playfully, and she never
forgets what they told her last week.

The bot framework keeps a ledger of every conversation. Moderators describe each
persona in a file, and the persona speaks in Discord servers, in Telegram chats and in
the terminal. Memories are recalled by meaning and by words, newest and most important
first. What do you think about that? I think it is wonderful, and I would like to hear
more about your day. How are you feeling today? Tell me about your friends and family.

Good morning! Good evening! Thank you very much. You are welcome. See you tomorrow.
The quick brown fox jumps over the lazy dog. One, two, three, four, five, six, seven,
eight, nine, ten. Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday.
Spring, summer, autumn and winter; rain, snow, wind and sunshine.

萨曼莎住在海边的一座小房子里。每天早上她沿着海滩散步，捡贝壳，和渔民们聊天气、潮汐和镇上的新闻。
她记得他们孩子的名字，也常常问起他们。有人给她写信时，她总是热情而俏皮地回答，
而且从不忘记别人上周告诉她的事情。

你好！早上好！晚上好！谢谢你。不客气。明天见。你今天感觉怎么样？
请告诉我你的朋友和家人。我觉得这很好，我想多听听你这一天过得怎么样。
我们一起去公园散步吧。今天天气很好，阳光明媚，风也很温柔。
春天、夏天、秋天和冬天；雨、雪、风和阳光。一、二、三、四、五、六、七、八、九、十。

こんにちは。ありがとう。안녕하세요. Bonjour, merci beaucoup! ¿Cómo estás? 😊
"""


def _lazy(module: str) -> Any:
    # Optional heavy dependencies, imported on use and typed as Any.
    return importlib.import_module(module)


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _prepare_target(out_dir: Path, marker: str, wanted: dict[str, Any]) -> bool:
    """True when `out_dir` already holds this build; refuses to overwrite foreign files."""
    if _read_marker(out_dir / marker) == wanted:
        return True
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / marker).exists():
        raise FileExistsError(
            f"{out_dir}: not empty and not a tiny-model build; refusing to overwrite"
        )
    return False


def _publish(tmp: Path, out_dir: Path, marker: str, wanted: dict[str, Any]) -> None:
    # Build beside the target and swap it in, so an interrupted build never looks complete.
    (tmp / marker).write_text(json.dumps(wanted, sort_keys=True) + "\n", encoding="utf-8")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)


def _train_tokenizer() -> Any:
    tokenizers = _lazy("tokenizers")
    pre_tokenizers = tokenizers.pre_tokenizers
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    return _lazy("transformers").PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        extra_special_tokens=[IM_START],
        chat_template=CHATML_TEMPLATE,
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )


def _portable_tokenizer_class(model_dir: Path) -> None:
    # transformers 5 writes its own class name, which transformers 4 cannot load; both
    # load the older name.
    path = model_dir / "tokenizer_config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def build_tiny_model(out_dir: Path, *, seed: int = 0) -> Path:
    """Write the tiny model and tokenizer to `out_dir` and return it.

    Idempotent: a directory already holding this version and seed is left as it is.
    Raises `FileExistsError` if `out_dir` holds other files. Uses no network, and does
    not disturb the process's global random state.
    """
    torch = _lazy("torch")
    transformers = _lazy("transformers")
    out_dir = Path(out_dir)
    wanted = {"version": TINY_MODEL_VERSION, "seed": seed, "kind": "model"}
    if _prepare_target(out_dir, _MARKER, wanted):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        tokenizer = _train_tokenizer()
        tokenizer.save_pretrained(tmp)
        _portable_tokenizer_class(tmp)
        special = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        config = transformers.LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            intermediate_size=128,
            max_position_embeddings=2048,
            bos_token_id=special[BOS_TOKEN],
            eos_token_id=special[IM_END],
            pad_token_id=special[PAD_TOKEN],
            tie_word_embeddings=False,
        )
        config.dtype = torch.float32
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = transformers.LlamaForCausalLM(config).to(torch.float32).eval()
        model.generation_config = transformers.GenerationConfig(
            bos_token_id=special[BOS_TOKEN],
            eos_token_id=special[IM_END],
            pad_token_id=special[PAD_TOKEN],
        )
        model.save_pretrained(tmp, safe_serialization=True)
        _publish(tmp, out_dir, _MARKER, wanted)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def build_tiny_lora(model_dir: Path, out_dir: Path, *, seed: int = 0, rank: int = 4) -> Path:
    """Write a LoRA adapter for the tiny model in `model_dir` to `out_dir` and return it.

    peft, rank `rank` on `q_proj`/`v_proj`; `lora_B` is random (peft starts it at
    zero) so that the adapter visibly changes greedy output. Idempotent like
    `build_tiny_model`.
    """
    torch = _lazy("torch")
    peft = _lazy("peft")
    transformers = _lazy("transformers")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    base_marker = _read_marker(model_dir / _MARKER)
    wanted = {"version": TINY_MODEL_VERSION, "seed": seed, "rank": rank, "base": base_marker}
    if _prepare_target(out_dir, _LORA_MARKER, wanted):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        base = transformers.LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        config = peft.LoraConfig(
            r=rank,
            lora_alpha=2 * rank,
            lora_dropout=0.0,
            target_modules=["q_proj", "v_proj"],
            task_type="CAUSAL_LM",
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            peft_model = peft.get_peft_model(base, config)
            with torch.no_grad():
                for name, param in peft_model.named_parameters():
                    if "lora_B" in name:
                        param.normal_(0.0, 1.0)
        peft_model.save_pretrained(tmp, safe_serialization=True)
        # vLLM and peft look the base model up by this name; point it at the local dir.
        cfg_path = tmp / "adapter_config.json"
        adapter_cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        adapter_cfg["base_model_name_or_path"] = str(model_dir.resolve())
        cfg_path.write_text(json.dumps(adapter_cfg, indent=2) + "\n", encoding="utf-8")
        _publish(tmp, out_dir, _LORA_MARKER, wanted)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
