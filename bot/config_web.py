"""The sections of the HTTP ports: the operations port (metrics, health) and the
moderators' dashboard.

Re-exported by `bot.config`; callers keep importing them from there.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from bot.config_core import _Section

__all__ = ["DashboardSettings", "OpsSettings", "Role"]


class OpsSettings(_Section):
    """The HTTP port of `bot run` for operations: `/metrics` (Prometheus), `/healthz`
    and `/readyz` (bot/web; docs/deploy.md). Off unless `port` is set."""

    #: The address to listen on: 127.0.0.1 keeps it on this machine; 0.0.0.0 (or ::)
    #: for a Prometheus elsewhere, as in a container.
    host: str = "127.0.0.1"
    #: The port; None: no HTTP port. 0 takes any free port (tests; it is logged).
    port: int | None = Field(default=None, ge=0, le=65535)
    #: A scrape reuses the database's queue counts for this long (0: query each time).
    metrics_cache_s: float = Field(default=5.0, ge=0, le=300)
    #: `/readyz` answers not ready when the database has not answered within this.
    ready_timeout_s: float = Field(default=2.0, gt=0, le=60)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        if not text or any(c in text for c in "/ @?#") or (":" in text and text.count(":") < 2):
            raise ValueError(
                f"a host name or IP address to listen on, such as 127.0.0.1 or 0.0.0.0, "
                f"not {value!r} (no scheme, port or path: the port is ops.port)"
            )
        return text


Role = Literal["admin", "moderator", "viewer"]


class DashboardSettings(_Section):
    """The moderators' web dashboard (bot/web/dashboard; docs/dashboard.md): served by
    `bot dashboard`, and by `bot run` when `enabled`."""

    #: Serve the dashboard inside `bot run` (`bot dashboard` serves it regardless).
    enabled: bool = False
    #: The address to listen on; 127.0.0.1 keeps it on this machine (put a TLS proxy
    #: in front of it to reach it from elsewhere).
    host: str = "127.0.0.1"
    #: The port; 0 takes any free port (tests; it is logged).
    port: int = Field(default=8080, ge=0, le=65535)
    #: The address people reach it at, e.g. https://mod.example.org (Discord's
    #: redirect URI is built from it; unset: from each request's Host).
    public_url: str | None = None
    #: A session ends this long after sign-in.
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    #: Cookies carry `Secure`: `auto` when the request came over https.
    secure_cookies: Literal["auto", "always", "never"] = "auto"
    #: Believe X-Forwarded-For / X-Forwarded-Proto (only behind your own proxy).
    trust_proxy: bool = False
    #: Failed sign-ins allowed per account name, and per address, in `login_window_s`.
    login_failures_per_name: int = Field(default=5, ge=1, le=1000)
    login_failures_per_ip: int = Field(default=20, ge=1, le=10000)
    login_window_s: int = Field(default=900, ge=10, le=86400)
    #: The largest request body (a card upload is the largest thing sent).
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    #: Sign in with Discord: the application's id (unset: password sign-in only).
    discord_client_id: str | None = None
    #: Its secret: from BOT_DASHBOARD__DISCORD_CLIENT_SECRET only.
    discord_client_secret: SecretStr | None = None
    #: The guild whose roles decide ours, and the map from a Discord role id to our
    #: role (the highest one a member holds wins; none: refused).
    discord_guild_id: str | None = None
    discord_roles: dict[str, Role] = Field(default_factory=dict)
    #: Limits a moderator to these personas when it holds this Discord role (a member
    #: with several such roles gets their union; none: every persona).
    discord_role_personas: dict[str, list[str]] = Field(default_factory=dict)
    #: Discord's endpoints (a test points them at a fake server).
    discord_authorize_url: str = "https://discord.com/oauth2/authorize"
    discord_api_url: str = "https://discord.com/api/v10"

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return OpsSettings._host(value)

    @field_validator("public_url", "discord_authorize_url", "discord_api_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip().rstrip("/")
        if not text.startswith(("http://", "https://")) or any(c in text for c in " \n\r"):
            raise ValueError(f"an http(s) URL, not {value!r}")
        return text

    @model_validator(mode="after")
    def _discord(self) -> DashboardSettings:
        if self.discord_client_id is not None and self.discord_guild_id is None:
            raise ValueError("discord_client_id is set: set discord_guild_id too")
        return self
