"""Turn a sequence's token pieces into text that is safe to stream.

Two things make naive streaming wrong: a token's bytes can end inside a UTF-8 character, and a stop string can
span several tokens. So bytes go through an incremental decoder, and text that could still be the start of a
stop string is held back until it cannot be.
"""

from __future__ import annotations

import codecs


class TextStream:
    """Incremental detokeniser with stop strings; `feed` returns the text that may be shown now."""

    def __init__(self, stop: list[str] | tuple[str, ...] = ()) -> None:
        self._decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        self._stop = [s for s in stop if s]
        self._held = ""
        self._parts: list[str] = []  # everything released so far (joined on demand: no quadratic appends)
        self.stopped = False

    @property
    def text(self) -> str:
        """Everything released so far."""
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def feed(self, piece: bytes) -> str:
        """Add one token's bytes; return newly releasable text ('' while held back or after a stop)."""
        if self.stopped:
            return ""
        if not self._stop:  # nothing to hold back but the tail of a UTF-8 character, which the decoder keeps
            out = self._decode(piece)
            if out:
                self._parts.append(out)
            return out
        self._held += self._decode(piece)
        return self._release(final=False)

    def finish(self) -> str:
        """The sequence ended: flush whatever is held (a partial stop prefix is real text then)."""
        if self.stopped:
            return ""
        self._held += self._decode(b"", final=True)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        held = self._held
        cut = -1
        for s in self._stop:
            i = held.find(s)
            if i >= 0 and (cut < 0 or i < cut):
                cut = i
        if cut >= 0:
            self.stopped = True
            out, self._held = held[:cut], ""
            self._parts.append(out)
            return out
        keep = 0 if final else self._longest_stop_prefix_suffix(held)
        out, self._held = held[: len(held) - keep], held[len(held) - keep :]
        if out:
            self._parts.append(out)
        return out

    def _longest_stop_prefix_suffix(self, text: str) -> int:
        """Length of the longest tail of text that is a proper prefix of some stop string."""
        best = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:n]):
                    best = n
                    break
        return best
