"""Token ids -> text as they are made, with stop strings: what ``baobab generate`` prints.

``TextStream(decode, stop=(...))`` takes one token id at a time (``push``) and returns
the text that is now final: the decoding of all ids so far, minus what was already
returned, minus a tail that could still be the start of a stop string (or of an
unfinished UTF-8 character / multi-token word). When a stop string appears, the text
before it is returned, ``stopped`` becomes True and later ids are ignored.
``finish()`` returns what was held back. ``text`` is everything returned so far.

``decode(ids) -> str`` decodes a whole list of ids (byte tokens or a tokenizer's).
Decoding the whole list each time is what keeps multi-byte characters and merged
word pieces right; the cost is small next to a model step.

>>> stream = TextStream(lambda ids: bytes(ids).decode("utf-8", errors="replace"), stop=("\\n\\n",))
>>> [stream.push(t) for t in b"hi \\xc3\\xa9!\\n\\nmore"]
['h', 'i', ' ', '', 'é', '!', '', '', '', '', '', '']
>>> stream.stopped, stream.text
(True, 'hi é!')
"""

from __future__ import annotations

from typing import Callable, Sequence

__all__ = ["TextStream"]

_REPLACEMENT = "\ufffd"  # what decoding an unfinished UTF-8 sequence ends with


class TextStream:
    """Incremental decoding with stop strings (see the module docstring)."""

    def __init__(self, decode: Callable[[list[int]], str], *, stop: Sequence[str] = ()):
        if any(not s for s in stop):
            raise ValueError(f"stop strings must be non-empty, got {list(stop)!r}.")
        self._decode, self.stop = decode, tuple(stop)
        self._ids: list[int] = []
        self.text = ""
        self.stopped = False

    def _hold(self, decoded: str) -> int:
        """How many trailing characters might still change or begin a stop string."""
        hold = 1 if decoded.endswith(_REPLACEMENT) else 0
        for s in self.stop:
            for n in range(len(s) - 1, 0, -1):
                if decoded.endswith(s[:n]):
                    hold = max(hold, n)
                    break
        return hold

    def push(self, token: int) -> str:
        """Add one id; returns the newly final text ('' if none, or once stopped)."""
        if self.stopped:
            return ""
        self._ids.append(int(token))
        decoded = self._decode(self._ids)
        cut = min((i for i in (decoded.find(s, max(0, len(self.text) - len(s))) for s in self.stop) if i >= 0),
                  default=-1)
        if cut >= 0:
            self.stopped = True
            return self._emit(decoded[:cut])
        return self._emit(decoded[:len(decoded) - self._hold(decoded)])

    def finish(self) -> str:
        """The held-back tail, at the end of generation."""
        return "" if self.stopped else self._emit(self._decode(self._ids))

    def _emit(self, final: str) -> str:
        if not final.startswith(self.text):  # a tokenizer re-decoded earlier text differently: keep what was shown
            return ""
        new, self.text = final[len(self.text):], final
        return new
