"""Streamed pages: CRIU pagemap images parsed for the size of the pages file they describe,
and the target-side command that writes them over the file set aside for them."""

import os
import subprocess
from pathlib import Path

import pytest

from migrator import hostscripts
from migrator.errors import MigratorError
from migrator.images import PE_PARENT, PE_PRESENT, expected_pages, pages_size


def _varint(v: int) -> bytes:
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def _msg(**fields: int) -> bytes:
    body = b"".join(_varint(int(k[1:]) << 3) + _varint(v) for k, v in fields.items())
    return len(body).to_bytes(4, "little") + body


def test_present_pages_are_counted_by_either_size_field() -> None:
    img = (b"\x19\x43\x56\x54" + b"\x00" * 4 + _msg(f1=3)
           + _msg(f1=0x7F0000000000, f2=2, f4=PE_PRESENT)
           + _msg(f1=0x7F0000100000, f2=0, f4=PE_PRESENT, f5=300)
           + _msg(f1=0x7F0000200000, f2=5, f4=PE_PARENT)
           + _msg(f1=0x7F0000300000, f2=7))  # no flags: the old format, in the file
    assert pages_size(img) == (3, (2 + 300 + 7) * 4096)


def test_expected_pages_names_each_pages_file_with_a_size() -> None:
    head = b"\x19\x43\x56\x54" + b"\x00" * 4
    one = head + _msg(f1=1) + _msg(f1=0x1000, f2=3, f4=PE_PRESENT)
    two = head + _msg(f1=2) + _msg(f1=0x1000, f2=4, f4=PE_PRESENT) + _msg(f1=0x9000, f2=1, f4=PE_PRESENT)
    empty = head + _msg(f1=3) + _msg(f1=0x1000, f2=9, f4=PE_PARENT)  # all in the parent: no file to check
    assert expected_pages([one, two, empty]) == {"pages-1.img": 3 * 4096, "pages-2.img": 5 * 4096}


def test_an_image_without_a_head_is_refused() -> None:
    with pytest.raises(ValueError):
        pages_size(b"\x00" * 8)
    with pytest.raises(MigratorError, match="not restoring from it"):  # an error the migration rolls back on
        expected_pages([b"\x00" * 8])
    with pytest.raises(MigratorError):  # cut inside a varint
        expected_pages([b"\x19\x43\x56\x54" + b"\x00" * 4 + b"\x02\x00\x00\x00\x08\xff"])


def test_in_place_overwrites_and_cuts_to_what_came(tmp_path: Path) -> None:
    f = tmp_path / "a dir; $(x)" / "pages-1.img"
    f.parent.mkdir()
    f.write_bytes(b"\0" * 300_000)  # set aside in advance, larger than what comes
    data = os.urandom(123_457)
    r = subprocess.run(["bash", f"{hostscripts.local_dir()}/receive.sh", "--", "pages", "0", str(f), "p1"],
                       input=data, capture_output=True, check=True)
    assert f.read_bytes() == data
    assert r.stderr.decode().strip() == "Jp1 123457 bytes"
