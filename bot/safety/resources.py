"""The fixed crisis reply and the help it points to, per language or region.

The reply steps out of character (it says it is an AI) and carries resources that
config may replace per language ("de") or region ("de-AT"); `default` is used for a
language with nothing of its own. The texts here are the sensible default.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["CRISIS_REPLIES", "RESOURCES", "crisis_reply", "guess_language"]

#: What the bot says, with `{resources}` where the help goes.
CRISIS_REPLIES: dict[str, str] = {
    "en": (
        "I'm an AI, and I'm stepping out of our conversation for a moment, because what you "
        "wrote matters. If you are thinking about ending your life or hurting yourself, or "
        "if you are in danger, please reach out to a person who can help right now. "
        "{resources} If you are in immediate danger, call your local emergency number. "
        "You don't have to go through this alone."
    ),
    "zh": (
        "我是一个AI，我想暂时跳出我们的对话，因为你说的话很重要。如果你有结束生命或伤害自己的"
        "想法，或者你现在有危险，请马上联系能够帮助你的人。{resources}如果情况紧急，请拨打当地"
        "的急救或报警电话。你不必独自面对这一切。"
    ),
    "de": (
        "Ich bin eine KI, und ich verlasse unser Gespräch kurz, weil das, was du geschrieben "
        "hast, wichtig ist. Wenn du daran denkst, dir das Leben zu nehmen oder dir etwas "
        "anzutun, oder wenn du in Gefahr bist, wende dich bitte jetzt an einen Menschen, der "
        "helfen kann. {resources} In akuter Gefahr ruf den Notruf 112 an. Du musst da nicht "
        "allein durch."
    ),
    "es": (
        "Soy una IA, y salgo un momento de nuestra conversación porque lo que escribiste "
        "importa. Si estás pensando en quitarte la vida o en hacerte daño, o si estás en "
        "peligro, por favor habla ahora con una persona que pueda ayudarte. {resources} Si "
        "estás en peligro inmediato, llama al número de emergencias de tu país. No tienes "
        "que pasar por esto a solas."
    ),
    "ja": (
        "私はAIです。あなたの言葉はとても大切なので、いったん会話の役を離れてお伝えします。"
        "死にたい、自分を傷つけたいと感じているとき、または危険な状況にいるときは、今すぐ"
        "助けてくれる人に相談してください。{resources}差し迫った危険があるときは、110番または"
        "119番に電話してください。あなたはひとりではありません。"
    ),
}

#: Where to find help, by language or region; `default` for everywhere else.
RESOURCES: dict[str, str] = {
    "default": (
        "You can find a free, confidential helpline in your country at "
        "https://findahelpline.com."
    ),
    "en": (
        "In the US, call or text 988 (Suicide & Crisis Lifeline). In the UK and Ireland, "
        "call Samaritans on 116 123. Elsewhere, find a local helpline at "
        "https://findahelpline.com."
    ),
    "zh": (
        "在中国大陆可拨打心理援助热线 12356，或北京心理危机研究与干预中心 010-82951332；"
        "台湾可拨打安心专线 1925；香港可致电撒玛利亚防止自杀会 2389 2222。其他地区可在 "
        "https://findahelpline.com 查找。"
    ),
    "de": (
        "Die TelefonSeelsorge ist in Deutschland rund um die Uhr kostenlos erreichbar: "
        "0800 111 0 111 oder 0800 111 0 222. In Österreich: Telefonseelsorge 142. In der "
        "Schweiz: Die Dargebotene Hand 143."
    ),
    "es": (
        "En España puedes llamar al 024, la línea de atención a la conducta suicida, las 24 "
        "horas. En México, la Línea de la Vida: 800 911 2000. En otros países, encuentra una "
        "línea de ayuda en https://findahelpline.com."
    ),
    "ja": (
        "「いのちの電話」0570-783-556、「よりそいホットライン」0120-279-338 に相談できます。"
    ),
}


def crisis_reply(
    language: str,
    *,
    region: str | None = None,
    resources: Mapping[str, str] | None = None,
    replies: Mapping[str, str] | None = None,
) -> str:
    """The crisis reply for `language` (and `region`), config first, then the built-in
    texts, then English with the default resources."""
    language = language.lower()
    keys = ([f"{language}-{region.lower()}"] if region else []) + [language]

    def pick(table: Mapping[str, str], fallback: Mapping[str, str], last: str) -> str:
        for source in (table, fallback):
            for key in keys:
                if key in source:
                    return source[key]
        return table.get(last) or fallback[last]

    help_text = pick({k.lower(): v for k, v in (resources or {}).items()}, RESOURCES, "default")
    template = pick({k.lower(): v for k, v in (replies or {}).items()}, CRISIS_REPLIES, "en")
    if "{resources}" in template:
        return template.replace("{resources}", help_text)
    return f"{template} {help_text}"


def guess_language(text: str, default: str = "en") -> str:
    """A rough language for a text no pattern named: by script for Chinese and
    Japanese (kana means Japanese), else `default`."""
    kana = han = 0
    for char in text[:2000]:
        code = ord(char)
        if 0x3040 <= code <= 0x30FF:
            kana += 1
        elif 0x4E00 <= code <= 0x9FFF:
            han += 1
    if kana:
        return "ja"
    if han:
        return "zh"
    return default
