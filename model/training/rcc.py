"""Read the files inside a Qt resource bundle (``.rcc``), as gcompris-qt-data ships its sounds.

The format (Qt's ``rcc`` binary output, versions 1-3): a header ``qres``, version, and the
offsets of three tables. The tree table holds fixed-size entries (14 bytes in version 1,
22 from version 2 on, which adds a modification time): name offset, flags, then either a
child count and first child index (directories) or locale and data offset (files). Names are
length-prefixed UTF-16BE after a 4-byte hash; data is length-prefixed, zlib-compressed with
a 4-byte size prefix when flag 1 is set (Qt's ``qCompress``). Zstandard (flag 4) is not
used by the packages read here and is refused.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from ..errors import InvalidInputError

_DIRECTORY, _ZLIB, _ZSTD = 2, 1, 4


def rcc_files(path: str | Path) -> dict[str, bytes]:
    """All files of the bundle at ``path`` -> ``{"/resource/path": bytes}``."""
    d = Path(path).read_bytes()
    if d[:4] != b"qres":
        raise InvalidInputError(f"{path} is not a Qt resource bundle (no 'qres' magic)")
    version, tree, data, names = struct.unpack(">IIII", d[4:20])
    entry = 14 if version == 1 else 22

    def name(offset: int) -> str:
        (length,) = struct.unpack(">H", d[names + offset : names + offset + 2])
        start = names + offset + 6  # after the length and the 4-byte hash
        return d[start : start + 2 * length].decode("utf-16-be")

    out: dict[str, bytes] = {}
    todo = [(0, "")]
    while todo:
        index, prefix = todo.pop()
        e = tree + index * entry
        name_offset, flags = struct.unpack(">IH", d[e : e + 6])
        path_here = prefix + "/" + name(name_offset) if index else ""
        if flags & _DIRECTORY:
            count, first = struct.unpack(">II", d[e + 6 : e + 14])
            todo += [(c, path_here) for c in range(first, first + count)]
            continue
        if flags & _ZSTD:
            raise InvalidInputError(f"{path}: {path_here} is zstd-compressed, not supported")
        (offset,) = struct.unpack(">I", d[e + 10 : e + 14])
        (size,) = struct.unpack(">I", d[data + offset : data + offset + 4])
        blob = d[data + offset + 4 : data + offset + 4 + size]
        out[path_here] = zlib.decompress(blob[4:]) if flags & _ZLIB else blob
    return out
