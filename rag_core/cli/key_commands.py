"""``rag tenant key create|list|rotate|revoke``: a tenant's API keys for the HTTP service.

Administration, like ``rag tenant create``: the commands use the admin connection and fail
with ``configuration_invalid`` in a ``RAG_RUNTIME_ONLY`` process. A key is printed once, by
the command that issues it (``create``, ``rotate``); the database keeps only its hash, so
a lost key is replaced (``rotate``), never shown again. With ``--json`` the key is in the
last line's object only (``"key"``), not also in human output: a script that captures
stdout gets exactly one copy.

Revocation and rotation reach every serving process within ``RAG_API__API_KEY_CACHE_TTL_S``
(resolved keys are kept that long in memory).
"""

from __future__ import annotations

from typing import Annotated

import typer

from rag_core.cli._output import console, emit_json, err_console, fail_cleanly
from rag_core.composition import Platform
from rag_core.config import get_settings
from rag_core.db.api_keys import ApiKeyInfo, IssuedKey

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")]
TenantArg = Annotated[str, typer.Argument(help="the tenant id (tn_ + 32 hex characters)")]
KeyIdArg = Annotated[str, typer.Argument(help="the key id (the 12 hex characters after rag_)")]

key_app = typer.Typer(help="API keys of a tenant (for the HTTP service).", no_args_is_help=True)


def _show_issued(issued: IssuedKey, *, as_json: bool, verb: str) -> None:
    if as_json:
        emit_json(issued.as_dict())
        return
    info = issued.info
    replaced = f", replacing {issued.replaces} (revoked)" if issued.replaces else ""
    console.print(f"{verb} key {info.key_id} for {info.tenant_id}{replaced}:", highlight=False,
                  markup=False)
    console.print(issued.key, highlight=False, markup=False, soft_wrap=True)
    err_console.print("This key will not be shown again: store it now.", style="yellow",
                      highlight=False, markup=False)


def _line(info: ApiKeyInfo) -> str:
    state = "live" if info.live else f"revoked {info.revoked_at:%Y-%m-%d %H:%M:%S %Z}"
    if info.replaced_by:
        state += f" (replaced by {info.replaced_by})"
    name = info.name or "-"
    return f"{info.key_id}  {name}  created {info.created_at:%Y-%m-%d %H:%M:%S %Z}  {state}"


@key_app.command("create")
@fail_cleanly
def create(tenant_id: TenantArg,
           name: Annotated[str, typer.Option("--name", help="what the key is for")] = "",
           as_json: JsonFlag = False) -> None:
    """Issue a new API key for TENANT_ID; it is printed once."""
    with Platform(get_settings()) as platform:
        issued = platform.api_keys.create(tenant_id, name)
    _show_issued(issued, as_json=as_json, verb="new")


@key_app.command("list")
@fail_cleanly
def list_keys(tenant_id: TenantArg, as_json: JsonFlag = False) -> None:
    """The keys of TENANT_ID, live and revoked (never the keys themselves)."""
    with Platform(get_settings()) as platform:
        keys = platform.api_keys.list(tenant_id)
    if as_json:
        emit_json({"tenant_id": tenant_id, "keys": [k.as_dict() for k in keys]})
        return
    for info in keys:
        console.print(_line(info), highlight=False, markup=False)
    console.print(f"{sum(k.live for k in keys)} live of {len(keys)} keys", highlight=False)


@key_app.command("rotate")
@fail_cleanly
def rotate(tenant_id: TenantArg, key_id: KeyIdArg, as_json: JsonFlag = False) -> None:
    """Issue a new key named like KEY_ID and revoke KEY_ID; the new key is printed once."""
    with Platform(get_settings()) as platform:
        issued = platform.api_keys.rotate(tenant_id, key_id)
    _show_issued(issued, as_json=as_json, verb="rotated: new")


@key_app.command("revoke")
@fail_cleanly
def revoke(tenant_id: TenantArg, key_id: KeyIdArg, as_json: JsonFlag = False) -> None:
    """Revoke KEY_ID of TENANT_ID (again: no change)."""
    with Platform(get_settings()) as platform:
        info = platform.api_keys.revoke(tenant_id, key_id)
    if as_json:
        emit_json(info.as_dict())
        return
    console.print(_line(info), highlight=False, markup=False)


def register(tenant_app: typer.Typer) -> None:
    """Mount the commands as ``rag tenant key ...``."""
    tenant_app.add_typer(key_app, name="key")
