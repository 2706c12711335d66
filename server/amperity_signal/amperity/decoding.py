"""Undoing an answer's Content-Encoding in bounded steps, so that a cap can stop it.

httpx's decoders undo each piece read whole: one 64 KiB piece of gzip can decode to
64 MiB in one call, before anything could count it (a decompression bomb). ``Decoding``
undoes the same encodings as httpx (gzip and deflate, a deflate body with or without its
zlib header, several encodings in turn) but hands back at most ``STEP`` bytes at a time,
so the caller can stop past its cap holding no more than that.

Encodings other than these (``br``, ``zstd``, unknown ones, ``identity``) are left as
they are, as httpx leaves them without brotli or zstandard installed (this project
installs neither): such a body is handed over as it came.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import httpx

STEP = 64 * 1024
"""The most decoded bytes handed back at once."""


class Undecodable(httpx.DecodingError):
    """A body its Content-Encoding cannot undo.

    Attributes:
        encoding: The Content-Encoding, as the answer gave it.
    """

    def __init__(self, encoding: str, failure: str) -> None:
        super().__init__(f"cannot decode the body as {encoding!r}: {failure}")
        self.encoding = encoding


class _Inflate:
    """One gzip or deflate layer, undone ``STEP`` bytes at a time."""

    __slots__ = ("_first", "_gzip", "_zlib")

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._first = True
        self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16 if gzip else zlib.MAX_WBITS)

    def pieces(self, data: bytes) -> Iterator[bytes]:
        """``data`` decoded, in pieces of at most ``STEP`` bytes (raises ``zlib.error``)."""
        while True:
            try:
                piece = self._zlib.decompress(data, STEP)
            except zlib.error:
                # As httpx: a deflate body is zlib-wrapped, else (found at once) raw deflate.
                if not self._first or self._gzip:
                    raise
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                piece = self._zlib.decompress(data, STEP)
            self._first = False
            if piece:
                yield piece
            data = self._zlib.unconsumed_tail
            # A full step may leave output pending with no input left: ask again.
            if not data and len(piece) < STEP:
                return

    def flush(self) -> bytes:
        """What is left once all input was given: nothing past a step, as it was drained."""
        return self._zlib.flush()


class Decoding:
    """A body's Content-Encoding undone piece by piece; see the module docstring.

    Args:
        encoding: The Content-Encoding header, e.g. ``gzip`` or ``gzip, deflate`` ("" for
            none: the body as it came, in the pieces read).
    """

    __slots__ = ("_layers", "encoding")

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        applied = [value.strip().lower() for value in encoding.split(",")] if encoding else []
        # Listed in the order they were applied: undone last first.
        self._layers = tuple(
            _Inflate(gzip=value == "gzip")
            for value in reversed(applied)
            if value in ("gzip", "deflate")
        )

    def decode(self, data: bytes) -> Iterator[bytes]:
        """``data``, the next piece read, decoded in pieces of at most ``STEP`` bytes."""
        return self._guarded(self._through(0, data))

    def flush(self) -> Iterator[bytes]:
        """The rest, once the whole body was given to ``decode``."""
        return self._guarded(self._flushed())

    def _flushed(self) -> Iterator[bytes]:
        for index, layer in enumerate(self._layers):
            yield from self._through(index + 1, layer.flush())

    def _through(self, index: int, data: bytes) -> Iterator[bytes]:
        """``data`` passed through the layers from ``index`` on."""
        if index == len(self._layers):
            if data:
                yield data
            return
        for piece in self._layers[index].pieces(data):
            yield from self._through(index + 1, piece)

    def _guarded(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        try:
            yield from pieces
        except zlib.error as exc:
            raise Undecodable(self.encoding, str(exc)) from exc
