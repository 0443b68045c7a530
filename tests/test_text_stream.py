"""TextStream: generated ids become final text piece by piece, stopping before a stop string."""

import pytest

from baobab.text_stream import TextStream


def _bytes_decode(ids):
    return bytes(ids).decode("utf-8", errors="replace")


def _run(stream, ids):
    pieces = [stream.push(t) for t in ids]
    return pieces, pieces + [stream.finish()]


def test_pieces_join_to_the_decoded_text_and_hold_back_unfinished_characters():
    ids = list("naïve café ✓".encode())
    pieces, everything = _run(TextStream(_bytes_decode), ids)
    assert "".join(everything) == "naïve café ✓"
    assert all("\ufffd" not in p for p in everything)  # half a character is never shown
    assert sum(1 for p in pieces if p) >= 10  # streamed: one character at a time, not at the end


def test_a_stop_string_split_across_tokens_stops_before_it():
    stream = TextStream(_bytes_decode, stop=("END", "\n\n"))
    pieces, everything = _run(stream, list(b"one EN two END three"))
    assert stream.stopped and stream.text == "one EN two " == "".join(everything)
    assert "E" in "".join(pieces[:8])  # "EN" was shown once it could not start "END"


def test_the_earliest_stop_string_wins_and_later_ids_are_ignored():
    stream = TextStream(_bytes_decode, stop=("cd", "b"))
    _run(stream, list(b"abcdef"))
    assert stream.text == "a" and stream.push(ord("z")) == ""


def test_a_tokenizer_that_re_decodes_earlier_text_never_repeats_it():
    words = {1: "Hello", 2: " world", 3: "!"}
    stream = TextStream(lambda ids: "".join(words[i] for i in ids))
    _, everything = _run(stream, [1, 2, 3])
    assert "".join(everything) == "Hello world!"


def test_empty_stop_strings_are_refused():
    with pytest.raises(ValueError, match="non-empty"):
        TextStream(_bytes_decode, stop=("",))
