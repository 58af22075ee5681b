"""A CLI flag for every setting, derived from its declaration in app/settings.py.

``--webhook-read-timeout-s 30`` is the flag of ``webhook_read_timeout_s`` (SYNC_WEBHOOK_READ_TIMEOUT_S),
with the declaration's doc line as its help. The flags go on the top-level parser and on every
subcommand's (``settings_parent()`` as a parent), each with a suppressed default, so a flag given before
the subcommand survives the subcommand's parsing and one given after it wins.
"""

from __future__ import annotations

import argparse
from typing import Any, Literal, get_args, get_origin

from pydantic.fields import FieldInfo

from .settings import Settings, env_name, render

_DEST = "setting_"  # namespace prefix: a setting can never collide with a subcommand's own argument


def flag(name: str) -> str:
    """``--webhook-read-timeout-s`` for ``webhook_read_timeout_s``."""
    return "--" + name.replace("_", "-")


def settings_parent() -> argparse.ArgumentParser:
    """A parent parser holding every setting's flag (``parents=[...]`` of each parser of the command)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("settings", "each flag overrides its environment variable (shown in [])")
    for name, field in Settings.model_fields.items():
        default = render(field.default)
        shown = "unset" if default is None else (default or "empty")
        doc = f"{field.description} [{env_name(name)}, default {shown}]".replace("%", "%%")
        group.add_argument(flag(name), dest=_DEST + name, default=argparse.SUPPRESS, help=doc, **_parsing(field))
    return parent


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags, by field name (for ``Settings.from_env``)."""
    return {name: getattr(args, _DEST + name) for name in Settings.model_fields if hasattr(args, _DEST + name)}


def _parsing(field: FieldInfo) -> dict[str, Any]:
    """How argparse reads the flag: a switch pair for booleans, choices for a fixed set, else typed text."""
    typ = field.annotation
    if typ is bool:
        return {"action": argparse.BooleanOptionalAction}
    if get_origin(typ) is Literal:
        return {"choices": get_args(typ)}
    if typ in (int, float):
        return {"type": typ, "metavar": typ.__name__.upper()}
    if get_origin(typ) is tuple:
        return {"metavar": "A,B,..."}  # validated as a comma-separated list, like the variable
    return {"metavar": "TEXT"}
