"""Sign in with Discord against a fake OAuth2 provider on loopback: guild roles map
to ours (the highest wins, persona limits by role), and every way it can go wrong is
a refusal page with no session: a forged or missing state, a member without a
dashboard role, someone not in the guild, a refused code, Discord unreachable."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from bot.config import load_settings
from bot.errors import ConfigError
from tests.dashboard.conftest import DashUnderTest, open_dash
from tests.fakes.discord_oauth import FakeDiscordOAuth

ADMINS, MODS, ALICE_MODS, VIEWERS, OTHER = "900", "901", "902", "903", "999"


def discord_overrides(fake: FakeDiscordOAuth) -> dict[str, Any]:
    return {
        "dashboard": {
            "discord_client_id": fake.client_id,
            "discord_client_secret": fake.client_secret,
            "discord_guild_id": fake.guild_id,
            "discord_roles": {
                ADMINS: "admin",
                MODS: "moderator",
                ALICE_MODS: "moderator",
                VIEWERS: "viewer",
            },
            "discord_role_personas": {ALICE_MODS: ["alice"]},
            "discord_authorize_url": fake.authorize_url,
            "discord_api_url": fake.api_url,
        }
    }


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscordOAuth]:
    async with FakeDiscordOAuth() as fake:
        fake.members.update(
            {
                "42": {"username": "ann", "roles": [VIEWERS, ADMINS]},
                "43": {"username": "bo", "roles": [ALICE_MODS]},
                "44": {"username": "cy", "roles": [OTHER]},
                "45": {"username": "di", "roles": [VIEWERS]},
            }
        )
        yield fake


@pytest.fixture
async def oauth_dash(
    tmp_path: Path, database_url: str, fake_discord: FakeDiscordOAuth
) -> AsyncIterator[DashUnderTest]:
    async with open_dash(tmp_path, database_url, overrides=discord_overrides(fake_discord)) as d:
        yield d


async def _discord_sign_in(
    http: httpx.AsyncClient, fake: FakeDiscordOAuth, member: str, *, next_path: str = "/"
) -> httpx.Response:
    """Click "Sign in with Discord", approve as `member`, come back: the callback's answer."""
    fake.next_member = member
    start = await http.get("/oauth/discord", params={"next": next_path})
    assert start.status_code == 303
    location = start.headers["location"]
    assert location.startswith(fake.authorize_url)
    query = parse_qs(urlsplit(location).query)
    assert query["scope"] == ["identify guilds.members.read"]
    assert query["client_id"] == [fake.client_id]
    approved = await http.get(location)
    assert approved.status_code == 302
    return await http.get(approved.headers["location"])


async def test_a_discord_admin_signs_in(
    oauth_dash: DashUnderTest, fake_discord: FakeDiscordOAuth
) -> None:
    async with httpx.AsyncClient(base_url=oauth_dash.url) as http:
        login = await http.get("/login")
        assert "Sign in with Discord" in login.text
        back = await _discord_sign_in(http, fake_discord, "42", next_path="/audit")
        # A page of ours that continues (the Strict session cookie is sent from there).
        assert back.status_code == 200 and 'href="/audit"' in back.text
        assert "SameSite=Strict" in back.headers["set-cookie"]
        page = await http.get("/audit")
        assert page.status_code == 200 and "discord:42" in page.text
        assert fake_discord.client_secret not in back.text + page.text
    who = oauth_dash.bot.db
    from bot.web.dashboard.store import find_moderator

    account = await who.read(lambda conn: find_moderator(conn, "discord:42"))
    assert account is not None and account.role.label == "admin" and account.via == "discord"


async def test_guild_roles_limit_a_moderator_to_personas_and_follow_role_changes(
    oauth_dash: DashUnderTest, fake_discord: FakeDiscordOAuth
) -> None:
    async with httpx.AsyncClient(base_url=oauth_dash.url) as http:
        await _discord_sign_in(http, fake_discord, "43")
        home = await http.get("/")
        assert "discord:43" in home.text and "Personas you may change: alice" in home.text
        csrf = home.text.split('name="csrf-token" content="')[1].split('"')[0]
        refused = await http.post("/probe/persona/tester", data={"csrf": csrf, "note": "x"})
        assert refused.status_code == 403
        allowed = await http.post("/probe/persona/alice", data={"csrf": csrf, "note": "x"})
        assert allowed.status_code == 303
    # Demoted on Discord: the next sign-in says so.
    fake_discord.members["43"]["roles"] = [VIEWERS]
    async with httpx.AsyncClient(base_url=oauth_dash.url) as http:
        await _discord_sign_in(http, fake_discord, "43")
        home = await http.get("/")
        assert "discord:43 (viewer)" in home.text


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ("44", "none of your roles on the server is a dashboard role"),
        ("77", "you are not a member of the moderators&#39; server"),
        ("deny", "access_denied"),
    ],
)
async def test_refused_members_get_no_session(
    oauth_dash: DashUnderTest, fake_discord: FakeDiscordOAuth, member: str, message: str
) -> None:
    async with httpx.AsyncClient(base_url=oauth_dash.url) as http:
        back = await _discord_sign_in(http, fake_discord, member)
        assert back.status_code == 403 and message in back.text
        assert "dash_session" not in back.headers.get("set-cookie", "")
        assert (await http.get("/")).status_code == 303


async def test_a_forged_or_missing_state_is_refused(
    oauth_dash: DashUnderTest, fake_discord: FakeDiscordOAuth
) -> None:
    async with httpx.AsyncClient(base_url=oauth_dash.url) as http:
        fake_discord.next_member = "42"
        start = await http.get("/oauth/discord")
        approved = await httpx.AsyncClient().get(start.headers["location"])
        callback = approved.headers["location"]
        forged = callback.replace("state=", "state=x")
        assert (await http.get(forged)).status_code == 403
    async with httpx.AsyncClient(base_url=oauth_dash.url) as stranger:
        # Someone else's callback URL, without the state cookie of the browser that began.
        refused = await stranger.get(callback)
        assert refused.status_code == 403 and "state does not match" in refused.text
    for hostile in ("?code=&state=", "?code=" + "x" * 600 + "&state=a", "?error=" + "<b>" * 50):
        async with httpx.AsyncClient(base_url=oauth_dash.url) as http:
            page = await http.get("/oauth/discord/callback" + hostile)
            assert page.status_code == 403 and "<b>" not in page.text


async def _once(
    folder: Path, url: str, overrides: dict[str, Any], fake: FakeDiscordOAuth
) -> httpx.Response:
    folder.mkdir(exist_ok=True)
    async with (
        open_dash(folder, url, overrides=overrides) as d,
        httpx.AsyncClient(base_url=d.url) as http,
    ):
        return await _discord_sign_in(http, fake, "42")


async def test_a_refused_code_or_an_unreachable_discord_is_a_refusal(
    tmp_path: Path, fake_discord: FakeDiscordOAuth
) -> None:
    url = f"sqlite:///{tmp_path}/o.db"
    fake_discord.token_status = 500
    back = await _once(tmp_path / "a", url, discord_overrides(fake_discord), fake_discord)
    assert back.status_code == 403 and "Discord refused the code (HTTP 500)" in back.text
    fake_discord.token_status = None
    wrong = discord_overrides(fake_discord)
    wrong["dashboard"]["discord_client_secret"] = "not-the-secret"
    back = await _once(tmp_path / "w", url, wrong, fake_discord)
    assert back.status_code == 403 and "HTTP 401" in back.text
    assert "not-the-secret" not in back.text
    gone = discord_overrides(fake_discord)
    gone["dashboard"]["discord_api_url"] = "http://127.0.0.1:9/api"
    back = await _once(tmp_path / "g", url, gone, fake_discord)
    assert back.status_code == 403 and "Discord could not be reached" in back.text


def test_the_client_secret_is_never_read_from_the_file_nor_shown(tmp_path: Path) -> None:
    toml = tmp_path / "bot.toml"
    toml.write_text('[dashboard]\ndiscord_client_secret = "s3cret-value"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_settings(toml)
    assert "BOT_DASHBOARD__DISCORD_CLIENT_SECRET" in str(err.value)
    assert "s3cret-value" not in str(err.value)
    settings = load_settings(
        None,
        {
            "dashboard": {
                "discord_client_id": "1",
                "discord_guild_id": "2",
                "discord_client_secret": "s3cret-value",
            }
        },
    )
    assert "s3cret-value" not in str(settings.shown())
    with pytest.raises(ConfigError, match="discord_guild_id"):
        load_settings(None, {"dashboard": {"discord_client_id": "1"}})
    with pytest.raises(ConfigError, match="role"):
        load_settings(None, {"dashboard": {"discord_roles": {"1": "god"}}})


async def test_discord_sign_in_in_chromium_across_sites(tmp_path: Path, browser: Any) -> None:
    # The provider on `localhost` and the dashboard on 127.0.0.1 are two sites, as
    # discord.com and the dashboard are: the Strict session cookie must still arrive.
    async with FakeDiscordOAuth(host="localhost") as fake:
        fake.members["42"] = {"username": "ann", "roles": [ADMINS]}
        fake.next_member = "42"
        url = f"sqlite:///{tmp_path}/b.db"
        async with open_dash(tmp_path, url, overrides=discord_overrides(fake)) as d:
            context = await browser.new_context(locale="en-US")
            page = await context.new_page()
            await page.goto(d.url + "/audit")
            await page.click("text=Sign in with Discord")
            await page.wait_for_url(d.url + "/audit")
            await page.wait_for_selector("h1")
            assert await page.text_content("h1") == "Audit log"
            assert "discord:42" in await page.text_content("header")
            await context.close()
