"""The transformers backend's worker thread: loading the model, LoRA adapters, and
one generation at a time (a part of `TransformersBackend`, bot/llm/transformers_backend.py,
which owns the state declared here and submits these calls to its one thread).

torch, transformers and peft are imported only here, and only when a model is loaded.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import structlog

from bot.errors import BackendError, BackendUnavailable
from bot.llm.base import ChatMessage, ChatRequest, Completion, TokenCounter
from bot.llm.control_tokens import ControlTokens
from bot.llm.tokens import HFTokenCounter, encode_chat
from bot.llm.transformers_feed import _TextFeed

# Logged under the backend module's name, as before this part moved out of it.
_log = structlog.get_logger("bot.llm.transformers_backend")

_INSTALL_HINT = "install the local extra: pip install 'personabot[local]'"
_TINY_HINT = (
    "Pass a local model directory (llm.model in bot.toml, BOT_LLM__MODEL, or --model), "
    "or for tests build the tiny random model with `bot models tiny DIR` "
    "(bot.llm.tiny.build_tiny_model)."
)


def _lazy(module: str) -> Any:
    # Heavy optional dependencies are imported on first use, and typed as Any so that
    # nothing here depends on their stubs.
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailable(
            f"the transformers backend needs {module}: {_INSTALL_HINT}"
        ) from exc


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or Path(name).exists() or "\\" in name


@dataclass
class _Loaded:
    """What the worker thread owns once the model is loaded."""

    tokenizer: Any
    model: Any
    device: Any
    context: int | None
    control: ControlTokens  # this tokenizer's control tokens, defused in every content
    # adapter dir -> peft adapter name, least recently used first; non-empty once the
    # model is wrapped by peft.
    adapters: OrderedDict[str, str] = field(default_factory=OrderedDict)
    adapter_serial: int = 0


@dataclass(eq=False)  # identity: jobs live in a set
class _Job:
    """One generation, as the worker thread sees it."""

    request: ChatRequest
    emit: Callable[[str], None] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


class _WorkerThread:
    """What `TransformersBackend` runs on its worker thread (a part of it)."""

    name: str
    model: str
    device: str
    dtype: str
    max_adapters: int
    tokens: TokenCounter
    _loaded: _Loaded | None
    _warned_adapters: set[str]

    def _load_sync(self) -> _Loaded:
        if self._loaded is not None:
            return self._loaded
        torch = _lazy("torch")
        transformers = _lazy("transformers")
        source = self.model
        if _looks_like_path(source) and not Path(source).expanduser().is_dir():
            raise BackendUnavailable(f"model {source!r}: no such directory. {_TINY_HINT}")
        if _looks_like_path(source):
            source = str(Path(source).expanduser())
        device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu")
            if self.device == "auto"
            else self.device
        )
        if self.dtype == "auto":
            # CPUs are slow at half precision; elsewhere take the dtype the model ships in.
            dtype: Any = torch.float32 if device.type == "cpu" else "auto"
        else:
            dtype = getattr(torch, self.dtype)
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(source)
            # The event loop counts tokens while this thread generates; fast tokenizers
            # are not safe to share across threads, so the counter gets its own copy.
            counter_tokenizer = transformers.AutoTokenizer.from_pretrained(source)
            model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
            model.to(device).eval()
        except OSError as exc:
            raise BackendUnavailable(
                f"model {self.model!r} cannot be loaded: it is not a local model directory "
                f"and could not be fetched from the Hugging Face hub or found in its cache "
                f"(offline? HF_HUB_OFFLINE is honoured). {_TINY_HINT} ({exc})"
            ) from exc
        except Exception as exc:
            raise BackendUnavailable(
                f"model {self.model!r} cannot be loaded on {device}: {type(exc).__name__}: {exc}"
            ) from exc
        context = getattr(model.config, "max_position_embeddings", None)
        if not isinstance(context, int) or context <= 0:
            context = None
        self._loaded = _Loaded(
            tokenizer=tokenizer,
            model=model,
            device=device,
            context=context,
            control=ControlTokens.for_tokenizer(tokenizer),
        )
        self.tokens = HFTokenCounter(counter_tokenizer, context_limit=context)
        _log.info("llm_model_loaded", backend=self.name, model=self.model, device=str(device))
        return self._loaded

    def _adapter_dir(self, adapter: str | None) -> Path | None:
        """The adapter directory to use, or None for the base model.

        A name that is no local adapter directory (a persona written for vLLM names the
        adapter vLLM serves) cannot be loaded here: the base model answers, with a
        warning the first time, and the `Completion` names the base model.
        """
        if adapter is None:
            return None
        path = Path(adapter).expanduser()
        if (path / "adapter_config.json").is_file():
            return path
        if adapter not in self._warned_adapters:
            self._warned_adapters.add(adapter)
            _log.warning(
                "llm_adapter_skipped",
                backend=self.name,
                adapter=adapter,
                reason="not a LoRA adapter directory (no adapter_config.json); "
                "the transformers backend loads adapters from local directories",
                fallback=f"base model {self.model}",
            )
        return None

    def _use_adapter(self, loaded: _Loaded, path: Path | None) -> AbstractContextManager[Any]:
        """Point the model at the adapter in `path` (loaded once); a context for generating."""
        if path is None:
            if loaded.adapters:  # the model is wrapped by peft: switch the adapters off
                return cast(AbstractContextManager[Any], loaded.model.disable_adapter())
            return contextlib.nullcontext()
        key = str(path.resolve())
        name = loaded.adapters.get(key)
        if name is None:
            peft = _lazy("peft")
            loaded.adapter_serial += 1
            name = f"adapter{loaded.adapter_serial}"
            try:
                if loaded.adapters:
                    loaded.model.load_adapter(key, adapter_name=name)
                else:
                    loaded.model = peft.PeftModel.from_pretrained(
                        loaded.model, key, adapter_name=name
                    )
                loaded.model.eval()
            except Exception as exc:
                raise BackendError(f"adapter {str(path)!r} cannot be loaded: {exc}") from exc
            loaded.adapters[key] = name
            while len(loaded.adapters) > self.max_adapters:
                _, old = loaded.adapters.popitem(last=False)
                loaded.model.delete_adapter(old)
        loaded.adapters.move_to_end(key)
        loaded.model.set_adapter(name)
        return contextlib.nullcontext()

    def _generation_config(self, loaded: _Loaded, request: ChatRequest) -> Any:
        sampling = request.sampling
        config = copy.deepcopy(loaded.model.generation_config)
        config.max_new_tokens = sampling.max_tokens
        if sampling.temperature <= 0:
            config.do_sample = False
            # Unset sampling options so transformers does not warn they are unused.
            config.temperature = config.top_p = config.top_k = None
        else:
            config.do_sample = True
            config.temperature = sampling.temperature
            config.top_p = sampling.top_p
        tokenizer = loaded.tokenizer
        if config.pad_token_id is None:
            config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
        if config.eos_token_id is None:
            config.eos_token_id = tokenizer.eos_token_id
        for key, value in sampling.extra.items():
            if hasattr(config, key) and key not in {"max_new_tokens", "streamer"}:
                setattr(config, key, value)
            else:
                _log.debug("llm_option_ignored", backend=self.name, option=key)
        return config

    def _prompt_ids(self, loaded: _Loaded, messages: Sequence[ChatMessage]) -> Any:
        # The template's rendering is tokenized with special tokens parsed, so every
        # content reaches it with control-token look-alikes defused; the token counter
        # encodes with the same function, so its counts are these ids' length.
        ids = encode_chat(loaded.tokenizer, messages, loaded.control)
        return _lazy("torch").tensor([ids], dtype=_lazy("torch").long)

    def _generate_sync(self, job: _Job) -> Completion:
        request = job.request
        loaded = self._load_sync()
        torch = _lazy("torch")
        transformers = _lazy("transformers")
        input_ids = self._prompt_ids(loaded, request.messages).to(loaded.device)
        prompt_len = int(input_ids.shape[1])
        if loaded.context and prompt_len + request.sampling.max_tokens > loaded.context:
            raise BackendError(
                f"prompt of {prompt_len} tokens plus max_tokens {request.sampling.max_tokens} "
                f"exceeds the context of {loaded.context} tokens of {self.model!r}"
            )
        feed = _TextFeed(loaded.tokenizer, request.sampling.stop, job.emit)
        stopping_criteria: Any = transformers.StoppingCriteria

        class _Watch(stopping_criteria):  # type: ignore[misc]
            # Runs after every new token: feeds the text out and stops at a stop string
            # or when the caller went away. (A streamer's put() comes a step later in
            # some transformers versions, which would overshoot the stop by a token.)
            def __call__(self, ids: Any, scores: Any, **kwargs: Any) -> Any:
                feed.update(ids[0, prompt_len:].tolist())
                done = feed.stopped or job.cancel.is_set()
                return torch.full((ids.shape[0],), done, dtype=torch.bool, device=ids.device)

        config = self._generation_config(loaded, request)
        adapter = self._adapter_dir(request.adapter)
        seed = request.sampling.seed
        # fork_rng: a seeded request must not reset the process's random state.
        cuda = loaded.device.type == "cuda"
        devices = [loaded.device.index or 0] if cuda else []
        with (
            torch.random.fork_rng(devices=devices, enabled=seed is not None),
            torch.inference_mode(),
            self._use_adapter(loaded, adapter),
        ):
            if seed is not None:
                torch.manual_seed(seed)
            output = loaded.model.generate(
                input_ids=input_ids,
                # One unpadded sequence; explicit so models whose pad is eos don't warn.
                attention_mask=torch.ones_like(input_ids),
                generation_config=config,
                stopping_criteria=transformers.StoppingCriteriaList([_Watch()]),
            )
        generated = output[0, prompt_len:].tolist()
        feed.update(generated, final=True)
        eos = config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        if feed.stopped or (generated and generated[-1] in eos_ids):
            finish = "stop"
        elif job.cancel.is_set():
            finish = "cancelled"
        else:
            finish = "length"
        return Completion(
            text=feed.text,
            model=self.model if adapter is None else (request.adapter or self.model),
            prompt_tokens=prompt_len,
            completion_tokens=len(generated),
            finish_reason=finish,
        )
