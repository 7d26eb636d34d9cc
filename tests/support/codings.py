"""Content codings the gateway does not decode, written by hand so the tests need no codec.

Both are real, decodable streams (checked against the ``brotli`` and ``zstandard`` packages
when they are installed): a vendor answering with them hands the agent readable bytes, so the
gateway must refuse them rather than pass them on unscanned.
"""

from __future__ import annotations


def brotli_stored(data: bytes) -> bytes:
    """A brotli stream holding ``data`` in uncompressed meta-blocks (RFC 7932, section 9.2)."""
    bits: list[int] = [0]  # WBITS: 16
    out = bytearray()

    def put(value: int, count: int) -> None:
        bits.extend((value >> shift) & 1 for shift in range(count))

    def flush() -> None:
        bits.extend([0] * (-len(bits) % 8))
        for start in range(0, len(bits), 8):
            out.append(sum(bit << shift for shift, bit in enumerate(bits[start : start + 8])))
        bits.clear()

    for start in range(0, len(data), 65536):
        piece = data[start : start + 65536]
        put(0, 1)  # ISLAST
        put(0, 2)  # MNIBBLES: four nibbles of length
        put(len(piece) - 1, 16)  # MLEN - 1
        put(1, 1)  # ISUNCOMPRESSED
        flush()
        out += piece
    put(1, 1)  # ISLAST
    put(1, 1)  # ISLASTEMPTY
    flush()
    return bytes(out)


def zstd_raw(data: bytes) -> bytes:
    """A zstd frame holding ``data`` in raw blocks (RFC 8878, section 3.1.1)."""
    frame = bytearray(b"\x28\xb5\x2f\xfd")  # magic number
    frame.append(0xA0)  # single segment, 4-byte content size, no checksum, no dictionary
    frame += len(data).to_bytes(4, "little")
    pieces = [data[start : start + 131072] for start in range(0, len(data), 131072)] or [b""]
    for index, piece in enumerate(pieces):
        last = int(index == len(pieces) - 1)
        frame += (last | len(piece) << 3).to_bytes(3, "little")  # block type 0: raw
        frame += piece
    return bytes(frame)
