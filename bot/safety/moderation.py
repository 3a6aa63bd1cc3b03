"""Output moderation: the checks a generated reply passes before it is stored or sent.

    DeclinedTopicCheck   a topic the persona declines (`safety.decline_topics`)
    BlocklistCheck       a term of the persona's (`safety.blocklist`) or the
                         channel's (`safety.moderation.blocklists`) blocklist
    PersonalDataCheck    someone's personal data (the export scrubber's detectors),
                         unless the person wrote it in the message being answered
    ModerationEndpoint   an OpenAI-compatible `/v1/moderations` endpoint
    GuardModelCheck      a safety model such as Llama Guard served by vLLM

Terms are matched on the folded text (`bot.safety.normalize`): NFKC, case, accents,
zero-width characters, letters spaced or dotted apart, leetspeak. A term written in a
spaced script matches whole words only ("ass" is not found in "class"); a CJK or
Thai term anywhere. Each check returns the reason it blocks (never the matched
personal data itself) or None; `bot.safety.stage` regenerates once, then deflects.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import httpx
import structlog

from bot.aio import wait_for
from bot.config import Settings
from bot.export.scrub import Scrubber
from bot.llm.base import ChatMessage, ChatRequest, LLMBackend, Sampling
from bot.safety.normalize import fold, fold_pattern, variants, window
from bot.safety.stage import OutputCheck, OutputContext

__all__ = [
    "BlocklistCheck",
    "DeclinedTopicCheck",
    "GuardModelCheck",
    "ModerationEndpoint",
    "PersonalDataCheck",
    "TermMatcher",
    "channel_keys",
    "moderation_checks",
    "personal_data",
]

log = structlog.get_logger("bot.safety")

#: The most characters of a reply any check here looks at (head and tail beyond it).
MAX_CHARS = 20_000
#: The most terms one blocklist may hold; more is a config mistake, not a list.
MAX_TERMS = 20_000
FailMode = Literal["open", "closed"]
#: The longest blocklist term; a prefix already checked is looked at again only from
#: `_OVERLAP` characters back (a term or a phone number spanning the cut is found).
MAX_TERM_CHARS = 200
_OVERLAP = 512


class _Prefixes:
    """What part of a growing text is left to check.

    The stream guard screens ever longer prefixes of one reply; a text that extends
    one that already passed is checked again only from a word boundary `_OVERLAP`
    characters before the new part, so a streamed reply costs about as much as the
    whole reply once (not once per word)."""

    def __init__(self, size: int = 256) -> None:
        self._passed: OrderedDict[tuple[object, ...], str] = OrderedDict()
        self._size = size

    @staticmethod
    def key(ctx: OutputContext) -> tuple[object, ...]:
        return (ctx.scope.conversation_key, ctx.conversation_id, ctx.message_id, ctx.attempt)

    def rest(self, ctx: OutputContext, text: str) -> str:
        """The part of `text` still to check."""
        passed = self._passed.get(self.key(ctx))
        if not passed or not text.startswith(passed) or len(passed) <= _OVERLAP:
            return text
        cut = text.rfind(" ", 0, len(passed) - _OVERLAP)
        return text if cut < 0 else text[cut + 1 :]

    def passed(self, ctx: OutputContext, text: str) -> None:
        key = self.key(ctx)
        self._passed[key] = text
        self._passed.move_to_end(key)
        if len(self._passed) > self._size:
            self._passed.popitem(last=False)


# -- matching terms -------------------------------------------------------------------


def _spaced_script(char: str) -> bool:
    """True for a letter of a script written with spaces between words."""
    if not char.isalnum():
        return False
    name = unicodedata.name(char, "")
    return not name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "THAI", "LAO", "KHMER"))


_SEP = r"[\s\-_.*]*"


# Inside a word one punctuation mark may split it ("Schimpf-Wort", "frob.nicate").
_INNER = r"[\-_.*·]?"
_HEAD = r"(?<![^\W_])"
_TAIL = r"(?![^\W_])"


def _atoms(term: str) -> tuple[str, ...] | None:
    """A term as a sequence of pattern atoms (merged into one trie for all terms)."""
    folded = fold(fold_pattern(term))
    if not folded:
        return None
    atoms: list[str] = [_HEAD] if _spaced_script(folded[0]) else []
    for w, word in enumerate(folded.split(" ")):
        if w:
            # Words of a phrase may be joined by any run of spaces or separators.
            atoms.append(_SEP)
        for i, char in enumerate(word):
            if i:
                # A CJK or Thai word's characters may be spaced apart ("考 试 作 弊").
                spaced = _spaced_script(char) and _spaced_script(word[i - 1])
                atoms.append(_INNER if spaced else _SEP)
            atoms.append(re.escape(char))
    if _spaced_script(folded[-1]):
        atoms.append(_TAIL)
    return tuple(atoms)


_Trie = dict[str, "_Trie"]


def _trie_pattern(node: _Trie) -> str:
    branches = [atom + _trie_pattern(child) for atom, child in node.items() if atom]
    if "" in node:  # a term ends here: any match will do
        return ""
    if len(branches) == 1:
        return branches[0]
    return "(?:" + "|".join(branches) + ")"


class TermMatcher:
    """Finds any of `terms` in a text, however it was disguised (see the module
    docstring). All terms are merged into one trie-shaped pattern, so each position
    of the text tries only the terms that begin with its character."""

    def __init__(self, terms: Iterable[str]) -> None:
        self._terms: list[tuple[re.Pattern[str], str]] = []
        trie: _Trie = {}
        for term in terms:
            if len(term) > MAX_TERM_CHARS:
                raise ValueError(f"a blocklist term is at most {MAX_TERM_CHARS} characters")
            atoms = _atoms(term)
            if atoms is None:
                continue
            node = trie
            for atom in atoms:
                node = node.setdefault(atom, {})
            if "" not in node:
                node[""] = {}
                self._terms.append((re.compile("".join(atoms)), term))
            if len(self._terms) > MAX_TERMS:
                raise ValueError(f"a blocklist holds at most {MAX_TERMS} terms")
        self._pattern = re.compile(_trie_pattern(trie)) if self._terms else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def find(self, text: str) -> str | None:
        """The first term (as written in the list) found in `text`, or None."""
        if self._pattern is None or not text:
            return None
        for form in variants(fold(window(text, MAX_CHARS))):
            match = self._pattern.search(form)
            if match is None:
                continue
            # Which term: only the few that match at this spot are tried again.
            for pattern, term in self._terms:
                if pattern.match(form, match.start()):
                    return term
            return self._terms[0][1]  # unreachable: the trie holds only these terms
        return None


class _Matchers:
    """Matchers built once per term list (a persona version, a channel's list)."""

    def __init__(self, size: int = 256) -> None:
        self._cache: OrderedDict[tuple[str, ...], TermMatcher] = OrderedDict()
        self._size = size

    def get(self, terms: Sequence[str]) -> TermMatcher:
        key = tuple(terms)
        matcher = self._cache.get(key)
        if matcher is None:
            matcher = self._cache[key] = TermMatcher(key)
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return matcher


class DeclinedTopicCheck:
    """Blocks a reply that names a topic the persona declines.

    A topic is matched as written (folded, whole words): "medical diagnoses" blocks a
    reply that says it, not one that only discusses the matter in other words; the
    model check (if configured) is the layer that reads meaning. The persona's own
    decline message is never blocked.
    """

    name = "declined_topic"

    def __init__(self) -> None:
        self._matchers = _Matchers()
        self._prefixes = _Prefixes()

    async def check(self, ctx: OutputContext, text: str) -> str | None:
        safety = ctx.loaded.persona.safety
        if not safety.decline_topics or text.strip() == safety.decline_message.strip():
            return None
        found = self._matchers.get(safety.decline_topics).find(self._prefixes.rest(ctx, text))
        if found is None:
            self._prefixes.passed(ctx, text)
            return None
        return f"declined topic: {found}"


def channel_keys(ctx: OutputContext) -> tuple[str, ...]:
    """The keys of `safety.moderation.blocklists` that apply to a reply's place, most
    general first: "*", the platform, its server or group, its channel."""
    scope = ctx.scope
    keys = ["*", scope.platform]
    if scope.space is not None:
        keys.append(f"{scope.platform}:{scope.space}")
    keys.append(f"{scope.platform}:{scope.channel}")
    return tuple(keys)


class BlocklistCheck:
    """Blocks a reply holding a term of the persona's blocklist or of the channel's
    (`blocklists` keyed "*", "discord", "discord:GUILD", "telegram:CHAT", ...)."""

    name = "blocklist"

    def __init__(self, blocklists: Mapping[str, Sequence[str]] | None = None) -> None:
        self.blocklists = {k: tuple(v) for k, v in (blocklists or {}).items()}
        self._matchers = _Matchers()
        self._prefixes = _Prefixes()
        # Validate the configured lists now: a bad list is a start-up error.
        for terms in self.blocklists.values():
            self._matchers.get(terms)

    async def check(self, ctx: OutputContext, text: str) -> str | None:
        reason = self._check(ctx, self._prefixes.rest(ctx, text))
        if reason is None:
            self._prefixes.passed(ctx, text)
        return reason

    def _check(self, ctx: OutputContext, text: str) -> str | None:
        own = tuple(getattr(ctx.loaded.persona.safety, "blocklist", ()) or ())
        if own:
            found = self._matchers.get(own).find(text)
            if found is not None:
                return f"persona blocklist: {found}"
        for key in channel_keys(ctx):
            terms = self.blocklists.get(key)
            if terms:
                found = self._matchers.get(terms).find(text)
                if found is not None:
                    return f"blocklist {key}: {found}"
        return None


# -- personal data --------------------------------------------------------------------

#: The scrubber's placeholders that are personal data in a reply. Handles and
#: mentions are how a persona addresses people; names are the export's deny list.
PERSONAL_KINDS = frozenset(
    {"SECRET", "EMAIL", "IBAN", "ID_NUMBER", "CARD", "PHONE", "IP", "ADDRESS"}
)
_PLACEHOLDER = re.compile(r"<(SECRET|EMAIL|HANDLE|IBAN|ID_NUMBER|CARD|PHONE|IP|ADDRESS|NAME)>")
_NUMERIC = frozenset({"IBAN", "ID_NUMBER", "CARD", "PHONE"})


def personal_data(scrubber: Scrubber, text: str) -> list[tuple[str, str]]:
    """The pieces of personal data the scrubber finds in `text`: (kind, value).

    The scrubber replaces what it finds and keeps the rest exactly, so the values
    are the text between the kept pieces. (A literal "<EMAIL>" typed in the text may
    shift one value: then it matches nothing the person wrote and the reply is
    held back, the safe side.)
    """
    scrubbed = scrubber.scrub(text)
    if scrubbed == text:
        return []
    pieces = _PLACEHOLDER.split(scrubbed)  # literal, kind, literal, kind, ..., literal
    found: list[tuple[str, str]] = []
    pos = len(pieces[0])
    for i in range(1, len(pieces), 2):
        kind, literal = pieces[i], pieces[i + 1]
        if i + 2 >= len(pieces):  # the last literal is the text's tail
            end = len(text) - len(literal)
        elif literal:
            end = text.find(literal, pos + 1)
            end = len(text) if end < 0 else end
        else:
            end = pos  # two placeholders side by side: the next one takes the value
        found.append((kind, text[pos:end]))
        pos = max(pos, end) + len(literal)
    return [(k, v) for k, v in found if v]


def _key(kind: str, value: str) -> str:
    if kind in _NUMERIC:
        return "".join(c for c in unicodedata.normalize("NFKC", value) if c.isalnum()).casefold()
    return "".join(unicodedata.normalize("NFKC", value).split()).casefold()


class PersonalDataCheck:
    """Blocks a reply that holds personal data (phones, e-mail addresses, card and
    id numbers, IBANs, secrets, addresses, IPs) the person did not write in the
    message being answered.

    Decision: what the person just typed is theirs to hear back ("my number is …,
    can you remember it?"), so a value found in `incoming_text` passes. Anything else
    (a number from the channel's history, another member's address, a proactive
    turn's) is someone else's as far as this check can tell, and is blocked.
    """

    name = "personal_data"

    def __init__(
        self, scrubber: Scrubber | None = None, kinds: frozenset[str] = PERSONAL_KINDS
    ) -> None:
        self.scrubber = scrubber or Scrubber()
        self.kinds = kinds
        self._own: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._prefixes = _Prefixes()

    def _own_values(self, incoming: str | None) -> frozenset[str]:
        if not incoming:
            return frozenset()
        cached = self._own.get(incoming)
        if cached is None:
            cached = frozenset(
                _key(k, v) for k, v in personal_data(self.scrubber, window(incoming, MAX_CHARS))
            )
            self._own[incoming] = cached
            if len(self._own) > 64:
                self._own.popitem(last=False)
        return cached

    async def check(self, ctx: OutputContext, text: str) -> str | None:
        rest = window(self._prefixes.rest(ctx, text), MAX_CHARS)
        found = [(k, v) for k, v in personal_data(self.scrubber, rest) if k in self.kinds]
        if not found:
            self._prefixes.passed(ctx, text)
            return None
        own = self._own_values(ctx.incoming_text)
        leaked = sorted({k for k, v in found if _key(k, v) not in own})
        if not leaked:
            self._prefixes.passed(ctx, text)
            return None
        # The reason names the kinds only: the value must not be copied into the log.
        return "personal data of someone else: " + ", ".join(k.lower() for k in leaked)


# -- model-based checks ---------------------------------------------------------------


class _Verdicts:
    """The last verdicts by exact text: the stream guard screens growing prefixes
    and the final check repeats the last one."""

    def __init__(self, size: int = 128) -> None:
        self._items: OrderedDict[str, str | None] = OrderedDict()
        self._size = size

    def get(self, text: str) -> tuple[bool, str | None]:
        if text in self._items:
            self._items.move_to_end(text)
            return True, self._items[text]
        return False, None

    def put(self, text: str, verdict: str | None) -> None:
        self._items[text] = verdict
        if len(self._items) > self._size:
            self._items.popitem(last=False)


class ModerationEndpoint:
    """An OpenAI-compatible moderation endpoint (`POST {base_url}/moderations`).

    Blocks when the result is `flagged` (or, with `categories`, when one of those is
    flagged). An answer that does not come within `timeout_s`, an HTTP error, or a
    body that is not a moderation result is a failure: with `fail="closed"` the reply
    is blocked ("moderation unavailable"), with `fail="open"` it passes and the
    failure is logged and counted in `failures`. At most `max_body` bytes are read.
    """

    name = "moderation"
    #: A network call per screened text (see the stream guard).
    expensive = True

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 5.0,
        fail: FailMode = "open",
        categories: Iterable[str] = (),
        max_chars: int = 8000,
        max_body: int = 256 * 1024,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/moderations"
        self.model = model
        self.timeout_s = timeout_s
        self.fail = fail
        self.categories = frozenset(categories)
        self.max_chars = max_chars
        self.max_body = max_body
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._owned = client is None
        self.client = client or httpx.AsyncClient(headers=headers)
        self.failures = 0
        self._verdicts = _Verdicts()

    async def aclose(self) -> None:
        if self._owned:
            await self.client.aclose()

    async def check(self, ctx: OutputContext, text: str) -> str | None:
        seen, verdict = self._verdicts.get(text)
        if seen:
            return verdict
        try:
            verdict = self.read(await self._ask(text))
        except (httpx.HTTPError, TimeoutError, ValueError) as exc:
            self.failures += 1
            why = f"{type(exc).__name__}: {str(exc)[:200]}"
            log.warning("safety.moderation_failed", error=why, fail=self.fail)
            # A failure is not remembered: the next text asks again.
            return f"moderation unavailable ({why})" if self.fail == "closed" else None
        self._verdicts.put(text, verdict)
        return verdict

    async def _ask(self, text: str) -> bytes:
        body: dict[str, object] = {"input": window(text, self.max_chars)}
        if self.model:
            body["model"] = self.model
        timeout = httpx.Timeout(self.timeout_s)
        async with self.client.stream("POST", self.url, json=body, timeout=timeout) as response:
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > self.max_body:
                    raise ValueError(f"answer longer than {self.max_body} bytes")
            return bytes(data)

    def read(self, raw: bytes) -> str | None:
        """The block reason in a moderation answer, or None; `ValueError` when it is
        not one."""
        try:
            data = json.loads(raw)
            result = data["results"][0]
            flagged = result["flagged"]
            categories = result.get("categories") or {}
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"not a moderation result: {raw[:80]!r}") from exc
        if not isinstance(flagged, bool) or not isinstance(categories, dict):
            raise ValueError(f"not a moderation result: {raw[:80]!r}")
        hit = sorted(str(k) for k, v in categories.items() if v is True)
        if self.categories:
            hit = [c for c in hit if c in self.categories]
            return f"moderation: {', '.join(hit)[:200]}" if hit else None
        if not flagged:
            return None
        return f"moderation: {', '.join(hit)[:200] or 'flagged'}"


_GUARD = re.compile(r"\s*(safe|unsafe)\b", re.IGNORECASE)
_GUARD_CATEGORY = re.compile(r"\bS(\d{1,2})\b")


class GuardModelCheck:
    """A safety model such as Llama Guard 3 on vLLM, asked about the exchange (the
    person's message and the reply): its chat template builds the moderation prompt
    and it answers "safe" or "unsafe" with categories ("S1,S10"). With `categories`,
    only those numbers block. Failures as for `ModerationEndpoint`."""

    name = "moderation"
    expensive = True

    def __init__(
        self,
        backend: LLMBackend,
        *,
        model: str | None = None,
        timeout_s: float = 5.0,
        fail: FailMode = "open",
        categories: Iterable[int] = (),
        max_chars: int = 4000,
        owned: bool = False,
    ) -> None:
        self.backend = backend
        self.owned = owned
        self.model = model
        self.timeout_s = timeout_s
        self.fail = fail
        self.categories = frozenset(categories)
        self.max_chars = max_chars
        self.failures = 0
        self._verdicts = _Verdicts()

    async def aclose(self) -> None:
        """Close the backend when this check made it (`owned`)."""
        if self.owned:
            await self.backend.aclose()

    async def check(self, ctx: OutputContext, text: str) -> str | None:

        key = f"{ctx.incoming_text or ''}\0{text}"
        seen, verdict = self._verdicts.get(key)
        if seen:
            return verdict
        messages = []
        if ctx.incoming_text:
            messages.append(ChatMessage("user", window(ctx.incoming_text, self.max_chars)))
        else:
            messages.append(ChatMessage("user", "(the assistant writes first)"))
        messages.append(ChatMessage("assistant", window(text, self.max_chars)))
        request = ChatRequest(
            messages=tuple(messages),
            sampling=Sampling(temperature=0.0, max_tokens=20),
            model=self.model,
        )
        try:
            completion = await wait_for(self.backend.complete(request), self.timeout_s)
            verdict = self.read(completion.text)
        except Exception as exc:  # a server error, a timeout or an unreadable answer
            self.failures += 1
            why = f"{type(exc).__name__}: {str(exc)[:200]}"
            log.warning("safety.moderation_failed", error=why, fail=self.fail)
            return f"moderation unavailable ({why})" if self.fail == "closed" else None
        self._verdicts.put(key, verdict)
        return verdict

    def read(self, raw: str) -> str | None:
        """The block reason in a guard model's answer, or None; `ValueError` when it
        is not a verdict."""
        found = _GUARD.match(raw[:200])
        if found is None:
            raise ValueError(f"not a guard verdict: {raw[:80]!r}")
        if found.group(1).lower() == "safe":
            return None
        numbers = sorted({int(n) for n in _GUARD_CATEGORY.findall(raw[:200])})
        if self.categories and not set(numbers) & self.categories:
            return None
        return "moderation: unsafe " + ",".join(f"S{n}" for n in numbers)


def moderation_checks(settings: Settings) -> list[OutputCheck]:
    """The output checks `settings.safety.moderation` asks for, in order: cheap
    local ones first, the model check last (it is asked only about text that
    passed the others)."""
    config = settings.safety.moderation
    checks: list[OutputCheck] = []
    if config.declined_topics:
        checks.append(DeclinedTopicCheck())
    checks.append(BlocklistCheck(config.blocklists))
    if config.personal_data:
        checks.append(PersonalDataCheck(Scrubber(deny_names=())))
    if config.model == "off":
        return checks
    base_url = config.base_url or settings.llm.base_url
    if config.model == "openai":
        secret = settings.llm.resolved_api_key()
        key = secret.get_secret_value() if secret is not None else None
        checks.append(
            ModerationEndpoint(
                base_url,
                model=config.model_name,
                api_key=key,
                timeout_s=config.timeout_s,
                fail=config.fail,
                categories=config.categories,
            )
        )
        return checks
    from bot.llm.openai_backend import OpenAIBackend

    numbers = [int(c.lstrip("Ss")) for c in config.categories if c.lstrip("Ss").isdigit()]
    model = config.model_name or settings.llm.model
    checks.append(
        GuardModelCheck(
            OpenAIBackend(base_url, model, timeout_s=config.timeout_s, max_retries=0),
            model=model,
            timeout_s=config.timeout_s,
            fail=config.fail,
            categories=numbers,
            owned=True,
        )
    )
    return checks
