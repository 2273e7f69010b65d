"""kernel.textstream: incremental UTF-8 decoding and stop strings that span token pieces (no model needed)."""

from __future__ import annotations

from aiosh.kernel.textstream import TextStream
from hypothesis import given
from hypothesis import strategies as st


def run(pieces: list[bytes], stop: list[str]) -> tuple[list[str], str, TextStream]:
    """Feed pieces one by one, then finish; return the chunks released by each call, their join, the stream."""
    ts = TextStream(stop)
    chunks = [ts.feed(p) for p in pieces]
    chunks.append(ts.finish())
    return chunks, "".join(chunks), ts


def test_no_stop_passes_pieces_through():
    chunks, out, ts = run([b"Hello", b",", b" world"], [])
    assert chunks == ["Hello", ",", " world", ""]
    assert out == ts.text == "Hello, world"
    assert not ts.stopped


def test_stop_spanning_two_pieces():
    chunks, out, ts = run([b"The answer", b" is 4", b"2.\nQ", b"uestion: more"], ["\nQuestion"])
    assert out == ts.text == "The answer is 42."
    assert ts.stopped
    assert "\nQ" not in "".join(chunks)


def test_stop_spanning_three_pieces_starting_and_ending_inside_pieces():
    # "END" starts inside piece 2 and ends inside piece 4.
    chunks, out, ts = run([b"abc", b"xxE", b"N", b"Dyy", b"zzz"], ["END"])
    assert out == ts.text == "abcxx"
    assert ts.stopped
    # Nothing after the stop is released, not even by finish() or later feeds.
    assert ts.feed(b"more") == "" and ts.finish() == ""
    assert ts.text == "abcxx"


def test_possible_stop_prefix_is_held_back_then_released():
    ts = TextStream(["STOP"])
    assert ts.feed(b"go ST") == "go "  # "ST" might begin the stop: held
    assert ts.feed(b"O") == ""  # "STO" still might
    assert ts.feed(b"RM") == "STORM"  # it did not: released at once
    assert ts.text == "go STORM"
    assert not ts.stopped


def test_partial_stop_prefix_is_flushed_at_finish():
    ts = TextStream(["<|end|>"])
    assert ts.feed(b"value <|en") == "value "
    assert ts.finish() == "<|en"
    assert ts.text == "value <|en"
    assert not ts.stopped


def test_utf8_character_split_across_pieces():
    data = "café 中文".encode()
    # Split inside "é" (2 bytes) and inside "中" (3 bytes: split 1+2) and "文" (3 bytes: split 2+1).
    e = data.index("é".encode())
    z = data.index("中".encode())
    w = data.index("文".encode())
    pieces = [data[: e + 1], data[e + 1 : z + 1], data[z + 1 : w + 2], data[w + 2 :]]
    chunks, out, ts = run(pieces, [])
    assert out == "café 中文"
    assert all("\ufffd" not in c for c in chunks)
    assert chunks[0] == "caf"  # the first byte of "é" is not shown as a replacement character


def test_stop_made_of_multibyte_characters_split_mid_character():
    data = "a→b中止c".encode()
    pieces = [data[i : i + 1] for i in range(len(data))]  # one byte at a time
    chunks, out, ts = run(pieces, ["中止"])
    assert out == "a→b"
    assert ts.stopped
    assert all("\ufffd" not in c for c in chunks)


def test_earliest_of_several_stops_and_empty_stops_ignored():
    chunks, out, ts = run([b"one two", b" three"], ["", "three", "two"])
    assert out == "one "
    assert ts.stopped


def test_stop_found_within_a_single_piece():
    chunks, out, ts = run([b"ab", b"cSTOPdef"], ["STOP"])
    assert chunks[:2] == ["ab", "c"]
    assert out == "abc"


def test_invalid_bytes_become_replacement_character_not_an_exception():
    chunks, out, ts = run([b"ok \xff", b"!"], [])
    assert out == "ok \ufffd!"


ALPHABET = "abAB é中\n"


@given(
    text=st.text(alphabet=ALPHABET, max_size=40),
    stop=st.text(alphabet=ALPHABET, min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=12),
)
def test_property_any_byte_split_gives_text_up_to_first_stop(text: str, stop: str, cuts: list[int]):
    data = text.encode()
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:])]
    chunks, out, ts = run(pieces, [stop])
    i = text.find(stop)
    assert out == ts.text == (text[:i] if i >= 0 else text)
    assert ts.stopped == (i >= 0)
    assert all("\ufffd" not in c for c in chunks)


@given(
    data=st.binary(max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=12),
)
def test_property_no_stop_fast_path_is_the_whole_decode(data: bytes, cuts: list[int]):
    """Without stop strings the stream only decodes: any split of any bytes (invalid ones too) gives exactly
    what decoding the whole at once gives, and `text` read mid-stream is what was released so far."""
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    ts = TextStream([])
    released = ""
    for a, b in zip(bounds, bounds[1:]):
        released += ts.feed(data[a:b])
        assert ts.text == released
    released += ts.finish()
    assert released == ts.text == data.decode("utf-8", errors="replace")
