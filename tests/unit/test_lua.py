"""storage/lua.py: the script registry, the by-name calling convention and typed replies."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import msgpack
import pytest

from storage import lua

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "storage" / "scripts"
NAMED = re.compile(r"\bA\.(\w+)")


def _split(name: str) -> tuple[set[str], set[str]]:
    """(argument names the script's header comment lists, argument names its code reads)."""
    documented: set[str] = set()
    read: set[str] = set()
    for line in (SCRIPTS / f"{name}.lua").read_text().splitlines():
        if line.startswith("--"):
            documented |= set(re.findall(r"^--\s+A\.(\w+)", line))
        else:
            read |= set(NAMED.findall(line.split("--")[0]))
    return documented, read


def test_every_lua_file_is_registered_and_every_registered_script_has_a_file() -> None:
    files = {p.stem for p in SCRIPTS.glob("*.lua")}
    registered = set(get_args(lua.WriteScript)) | set(get_args(lua.PlainScript))
    assert files == registered | {lua.PRELUDE, lua.EPILOGUE, lua.PROBE}
    assert not set(get_args(lua.WriteScript)) & set(get_args(lua.PlainScript))


def test_each_header_lists_exactly_the_named_arguments_its_script_reads() -> None:
    common, common_read = _split(lua.PRELUDE)
    assert common == common_read == {
        "prefix", "now", "actor", "origin", "endpoint", "log_cap", "pub", "hist_keep", "hist_age_ms"
    }  # fmt: skip
    for name in (*get_args(lua.WriteScript), *get_args(lua.PlainScript)):
        documented, read = _split(name)
        assert documented == read - common, name
    epilogue, epilogue_read = _split(lua.EPILOGUE)
    assert epilogue == epilogue_read == {"ik", "itok"}


def test_scripts_read_arguments_only_by_name() -> None:
    for path in SCRIPTS.glob("*.lua"):
        code = "\n".join(line.split("--")[0] for line in path.read_text().splitlines())
        assert set(re.findall(r"ARGV\[(\w+)\]", code)) <= {"1"}, path.name
        if "ARGV[1]" in code:
            assert "cmsgpack.unpack(ARGV[1])" in code, path.name


def test_no_lua_in_python_strings() -> None:
    for package in ("app", "realtime", "storage"):
        for path in (ROOT / package).rglob("*.py"):
            source = path.read_text()
            assert "redis.call(" not in source and ".eval(" not in source, path


def test_pack_is_one_msgpack_map_without_bin_types() -> None:
    packed = lua.pack({"kind": "map", "ttl": "", "now": 1764670000123, "e": b"\x81\xa1t\x01", "absent": None})
    assert msgpack.unpackb(packed, raw=True) == {
        b"kind": b"map",
        b"ttl": b"",
        b"now": 1764670000123,
        b"e": b"\x81\xa1t\x01",
        b"absent": None,
    }
    assert b"\xc4" not in lua.pack({"e": b"xy"})  # bin 8, which Redis's cmsgpack refuses


def test_field_pairs_keeps_order() -> None:
    assert lua.field_pairs({"e": b"x", "u": "http://h", "n": 3}) == ["e", b"x", "u", "http://h", "n", 3]
    assert lua.field_pairs({}) == []


def test_script_reply_reads_typed_fields() -> None:
    reply = lua.ScriptReply([b"OK", 1, b"k\xc3\xa9", [b"sid", b"DO1"], b""])
    assert reply.number(1) == 1
    assert reply.text(2) == "ké"
    assert reply.raw(2) == b"k\xc3\xa9"
    assert reply.strings(3) == [b"sid", b"DO1"]
    assert reply.text(4) == ""


@pytest.mark.parametrize(
    ("method", "index"),
    [("number", 2), ("raw", 1), ("text", 3), ("strings", 2), ("strings", 4), ("raw", 5)],
)
def test_script_reply_refuses_a_field_of_another_type(method: str, index: int) -> None:
    reply = lua.ScriptReply([b"OK", 1, b"x", [b"a"], [b"a", 2], None])
    with pytest.raises(TypeError):
        getattr(reply, method)(index)


async def test_a_server_without_shebangs_is_refused_at_connect_in_one_line() -> None:
    from redis.exceptions import ResponseError

    class Old:  # what Redis 6 answers to SCRIPT LOAD of a script with a shebang
        async def script_load(self, text: str) -> str:
            assert text.startswith("#!lua flags=no-writes\n")
            raise ResponseError("Error compiling script (new function): user_script:1: unexpected symbol near '#'")

    class New:
        async def script_load(self, text: str) -> str:
            return "sha"

    with pytest.raises(ValueError, match=r"needs Redis or Valkey 7\.0 or later .*unexpected symbol near '#'"):
        await lua.check_shebang(Old())  # type: ignore[arg-type]
    await lua.check_shebang(New())  # type: ignore[arg-type]


def test_write_scripts_start_with_a_shebang_and_only_deletes_may_run_out_of_memory() -> None:
    for name in get_args(lua.WriteScript):
        first = lua.write_text(name).split("\n", 1)[0]
        assert first == ("#!lua flags=allow-oom" if name in ("object_delete", "item_delete") else "#!lua"), name
