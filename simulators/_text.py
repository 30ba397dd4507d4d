"""A user's text file decoded, with the line and byte of the first one that is not UTF-8.

It lives in the leaf package so that every package reads user files the same way: campaign
and instrument files (``loop.config``, ``instruments._instrument_file``), prior-data and
results CSVs (``loop.prior``, ``loop.asktell``), and a dataset's spec and data
(``simulators._datasets``). Each caller wraps :class:`NotUTF8Error` in its own error class,
which names the file.
"""

from __future__ import annotations


class NotUTF8Error(ValueError):
    """A user's file is not UTF-8 text: where its first bad byte is, for the caller's message.

    Attributes:
        line: 1-based line of the bad byte.
        offset: its 0-based position in the file (a byte-order mark counted, as an editor or
            ``xxd`` counts it).
        byte: its value (``0xff``).
    """

    def __init__(self, line: int, offset: int, byte: int) -> None:
        self.line = line
        self.offset = offset
        self.byte = byte
        super().__init__(f"line {line}: not UTF-8 text (byte {byte:#04x} at offset {offset})")

    @property
    def problem(self) -> str:
        """What every caller's message says after the file's name (its line comes apart)."""
        return f"is not UTF-8 text (byte {self.offset})"


def decode_text(raw: bytes) -> str:
    """A user's file (campaign, instrument file, prior-data or results CSV, dataset spec or
    data) as UTF-8 text.

    The one decoder of them all, so each names a bad byte's line and position alike, both
    counted in the file's own bytes. A leading byte-order mark is kept as ``\\ufeff`` (a
    campaign's text is stored as it always was): YAML ignores it, and the CSV readers drop
    it (spreadsheets write one). Decoding ``utf-8-sig`` gave the position in the bytes after
    the mark, so a line counted up to it in the file's bytes could be one short.

    Raises:
        NotUTF8Error: the bytes are not UTF-8; each caller wraps it in its own error class.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start  # in ``raw`` itself: nothing was stripped before decoding
        raise NotUTF8Error(raw[:offset].count(b"\n") + 1, offset, raw[offset]) from None
