"""The dashboard's words in English and Chinese, chosen by the browser's language.

`Catalogue` holds `{lang: {key: text}}`; a page module adds its own strings with
`pages.strings({...})` at registration, so no one file collects every page's words.
A key missing in Chinese falls back to English, and a key missing in both shows as
itself (visible in tests, never an error). Texts are `str.format` templates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["LANGUAGES", "Catalogue", "negotiate"]

#: The interface languages, the first being the fallback.
LANGUAGES = ("en", "zh")
LANGUAGE_NAMES = {"en": "English", "zh": "中文"}

BASE: dict[str, dict[str, str]] = {
    "en": {
        "app.title": "Persona bot dashboard",
        "nav.home": "Overview",
        "nav.audit": "Audit log",
        "nav.signout": "Sign out",
        "nav.language": "Language",
        "login.title": "Sign in",
        "login.name": "Name",
        "login.password": "Password",
        "login.submit": "Sign in",
        "login.discord": "Sign in with Discord",
        "login.failed": "Wrong name or password.",
        "login.limited": "Too many failed sign-ins. Try again in {minutes} minute(s).",
        "login.discord_failed": "Discord sign-in failed: {reason}",
        "login.discord_continue": "Signed in. Continue to the dashboard",
        "role.admin": "admin",
        "role.moderator": "moderator",
        "role.viewer": "viewer",
        "home.title": "Overview",
        "home.signed_in": "Signed in as {name} ({role}).",
        "home.personas": "Personas you may change: {personas}",
        "home.all_personas": "all",
        "home.none": "none (you can read every page)",
        "home.recent": "Recent changes",
        "audit.title": "Audit log",
        "audit.at": "When",
        "audit.actor": "Who",
        "audit.action": "What",
        "audit.target": "Target",
        "audit.before": "Before",
        "audit.after": "After",
        "audit.empty": "No changes recorded yet.",
        "audit.older": "Older",
        "error.title": "Something went wrong",
        "error.400": "The request was not understood: {detail}",
        "error.403": "You may not do this: {detail}",
        "error.404": "There is no such page.",
        "error.405": "This page does not take that method.",
        "error.413": "The upload is too large (at most {limit}).",
        "error.429": "Too many requests. Try again later.",
        "error.500": "The dashboard failed to answer; the server's log says why.",
        "error.csrf": "The form expired or did not come from this dashboard; reload the page "
        "and try again.",
        "error.back": "Back to the overview",
        "common.save": "Save",
        "common.cancel": "Cancel",
        "common.next": "Next",
        "common.previous": "Previous",
        "common.search": "Search",
        "common.none": "—",
    },
    "zh": {
        "app.title": "人设机器人管理面板",
        "nav.home": "概览",
        "nav.audit": "审计日志",
        "nav.signout": "退出登录",
        "nav.language": "语言",
        "login.title": "登录",
        "login.name": "用户名",
        "login.password": "密码",
        "login.submit": "登录",
        "login.discord": "使用 Discord 登录",
        "login.failed": "用户名或密码错误。",
        "login.limited": "登录失败次数过多，请在 {minutes} 分钟后重试。",
        "login.discord_failed": "Discord 登录失败：{reason}",
        "login.discord_continue": "已登录。进入管理面板",
        "role.admin": "管理员",
        "role.moderator": "版主",
        "role.viewer": "只读",
        "home.title": "概览",
        "home.signed_in": "当前登录：{name}（{role}）。",
        "home.personas": "你可以修改的人设：{personas}",
        "home.all_personas": "全部",
        "home.none": "无（你可以查看所有页面）",
        "home.recent": "最近的修改",
        "audit.title": "审计日志",
        "audit.at": "时间",
        "audit.actor": "操作者",
        "audit.action": "操作",
        "audit.target": "对象",
        "audit.before": "修改前",
        "audit.after": "修改后",
        "audit.empty": "尚无修改记录。",
        "audit.older": "更早",
        "error.title": "出错了",
        "error.400": "无法理解该请求：{detail}",
        "error.403": "你无权执行此操作：{detail}",
        "error.404": "页面不存在。",
        "error.405": "此页面不接受该请求方法。",
        "error.413": "上传内容过大（最多 {limit}）。",
        "error.429": "请求过于频繁，请稍后再试。",
        "error.500": "管理面板未能响应；原因见服务器日志。",
        "error.csrf": "表单已过期或并非来自本管理面板；请刷新页面后重试。",
        "error.back": "返回概览",
        "common.save": "保存",
        "common.cancel": "取消",
        "common.next": "下一页",
        "common.previous": "上一页",
        "common.search": "搜索",
        "common.none": "—",
    },
}


class Catalogue:
    """Every string of the dashboard, by language and key."""

    def __init__(self) -> None:
        self._texts: dict[str, dict[str, str]] = {lang: {} for lang in LANGUAGES}
        self.add(BASE)

    def add(self, texts: Mapping[str, Mapping[str, str]]) -> None:
        """Add (or replace) strings: `{"en": {key: text}, "zh": {key: text}}`."""
        for lang, entries in texts.items():
            if lang not in self._texts:
                raise ValueError(f"language {lang!r}: the dashboard speaks {LANGUAGES}")
            self._texts[lang].update(entries)

    def text(self, lang: str, key: str, **values: Any) -> str:
        """The string `key` in `lang` (English when it has none), formatted."""
        template = self._texts.get(lang, {}).get(key) or self._texts["en"].get(key) or key
        if not values:
            return template
        try:
            return template.format(**values)
        except (KeyError, IndexError, ValueError):
            return template

    def keys(self, lang: str) -> set[str]:
        """The keys `lang` has its own text for."""
        return set(self._texts[lang])


def negotiate(accept_language: str | None, chosen: str | None = None) -> str:
    """The interface language: `chosen` (the switch's cookie) when it is one we
    speak, else the first of Accept-Language's ranges we speak (by q), else English."""
    if chosen in LANGUAGES:
        return chosen
    best: tuple[float, int, str] | None = None
    for index, part in enumerate((accept_language or "")[:512].split(",")[:32]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and q > 0 and (best is None or (q, -index) > best[:2]):
            best = (q, -index, primary)
    return best[2] if best is not None else LANGUAGES[0]
