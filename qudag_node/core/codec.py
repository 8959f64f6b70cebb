"""Strict primitives of the canonical binary encoding.

Integers are big-endian and fixed-width; byte strings carry an explicit length.
A :class:`Reader` refuses short input and, through :meth:`Reader.finish`, trailing
bytes, so every decoder built on it accepts exactly one encoding per value.
"""

from __future__ import annotations

import struct

from qudag_node.core.errors import InputRejected, Reason

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class Reader:
    """Reads fields from a byte string, front to back."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def position(self) -> int:
        """How many bytes have been consumed."""
        return self._pos

    def _take(self, size: int, what: str) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise InputRejected(Reason.TRUNCATED, f"{what}: needs {size} bytes at {self._pos}")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u8(self, what: str) -> int:
        """One unsigned byte."""
        return int(_U8.unpack(self._take(1, what))[0])

    def u16(self, what: str) -> int:
        """A 16-bit unsigned integer."""
        return int(_U16.unpack(self._take(2, what))[0])

    def u32(self, what: str) -> int:
        """A 32-bit unsigned integer."""
        return int(_U32.unpack(self._take(4, what))[0])

    def u64(self, what: str) -> int:
        """A 64-bit unsigned integer."""
        return int(_U64.unpack(self._take(8, what))[0])

    def fixed(self, size: int, what: str) -> bytes:
        """Exactly ``size`` bytes."""
        return self._take(size, what)

    def remaining(self) -> bytes:
        """Everything not read yet."""
        return self._take(len(self._data) - self._pos, "rest")

    def finish(self, what: str) -> None:
        """Require that every byte has been read."""
        if self._pos != len(self._data):
            raise InputRejected(
                Reason.TRAILING_BYTES, f"{what}: {len(self._data) - self._pos} bytes left over"
            )


def u8(value: int) -> bytes:
    """Encode one unsigned byte."""
    return _U8.pack(value)


def u16(value: int) -> bytes:
    """Encode a 16-bit unsigned integer."""
    return _U16.pack(value)


def u32(value: int) -> bytes:
    """Encode a 32-bit unsigned integer."""
    return _U32.pack(value)


def u64(value: int) -> bytes:
    """Encode a 64-bit unsigned integer."""
    return _U64.pack(value)
