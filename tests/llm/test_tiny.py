"""The tiny local model: built offline, idempotent, loadable, with a working LoRA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.llm.tiny import IM_END, IM_START, build_tiny_lora, build_tiny_model


def test_config_fits_vllm_cpu_attention(tiny_model_dir: Path) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["hidden_size"] // config["num_attention_heads"] == 32  # CPU attention needs >= 32
    assert (config["num_hidden_layers"], config["intermediate_size"]) == (2, 128)
    assert config["max_position_embeddings"] == 2048
    assert config["dtype"] == "float32"
    assert (tiny_model_dir / "model.safetensors").is_file()


def test_tokenizer_has_chatml_and_round_trips_cjk(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert 900 <= len(tokenizer) <= 1100
    assert tokenizer.eos_token == IM_END
    assert tokenizer.pad_token is not None and tokenizer.bos_token is not None
    assert len(tokenizer.encode(IM_START, add_special_tokens=False)) == 1
    text = "Samantha 住在海边的小房子里。Good morning! 😊"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "你好"}], add_generation_prompt=True, tokenize=False
    )
    assert rendered == "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"


def test_build_is_idempotent(tiny_model_dir: Path) -> None:
    weights = tiny_model_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert build_tiny_model(tiny_model_dir) == tiny_model_dir
    assert weights.stat().st_mtime_ns == before


def test_same_seed_same_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_model(tmp_path / "again")
    assert (again / "model.safetensors").read_bytes() == (
        tiny_model_dir / "model.safetensors"
    ).read_bytes()
    assert (again / "tokenizer.json").read_bytes() == (
        tiny_model_dir / "tokenizer.json"
    ).read_bytes()


def test_other_seed_rebuilds(tmp_path: Path) -> None:
    first = (build_tiny_model(tmp_path / "m", seed=1) / "model.safetensors").read_bytes()
    second = (build_tiny_model(tmp_path / "m", seed=2) / "model.safetensors").read_bytes()
    assert first != second
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp dirs left"


def test_refuses_to_overwrite_other_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        build_tiny_model(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_does_not_disturb_global_random_state(tmp_path: Path) -> None:
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model(tmp_path / "m", seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_lora_targets_q_and_v(tiny_model_dir: Path, tiny_lora_dir: Path) -> None:
    config = json.loads((tiny_lora_dir / "adapter_config.json").read_text())
    assert config["r"] == 4
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert config["base_model_name_or_path"] == str(tiny_model_dir.resolve())
    assert build_tiny_lora(tiny_model_dir, tiny_lora_dir) == tiny_lora_dir
