"""The SSE timing loop on exact byte sequences (unit level: a scripted line reader)."""

from __future__ import annotations

import itertools

from harness.client.sse import iter_events


def events_of(*lines: bytes) -> list[tuple[int, bytes, bytes | None]]:
    it = iter(lines)
    clock = itertools.count(1).__next__
    return list(iter_events(lambda: next(it, b""), clock=clock))


def test_lf_and_crlf_and_optional_space():
    evs = events_of(b"data: a\n", b"\n", b"data:b\r\n", b"\r\n", b"data:  c\n", b"\n")
    assert [e[1] for e in evs] == [b"a", b"b", b" c"]  # only one leading space is removed


def test_comments_keepalives_and_unknown_fields_are_not_events():
    evs = events_of(b":\n", b"\n", b": keep-alive\r\n", b"\r\n", b"id: 7\n", b"retry: 100\n", b"foo: bar\n",
                    b"data: x\n", b"\n")
    assert [e[1] for e in evs] == [b"x"]


def test_multi_line_data_is_joined_with_newline_and_stamped_at_first_line():
    evs = events_of(b"data: {\"a\":\n", b"data: 1}\n", b"\n")
    assert evs == [(1, b'{"a":\n1}', None)]


def test_event_name_is_reported_and_reset():
    evs = events_of(b"event: error\n", b"data: {}\n", b"\n", b"data: y\n", b"\n")
    assert evs[0][2] == b"error" and evs[1][2] is None


def test_empty_data_and_data_without_colon():
    evs = events_of(b"data:\n", b"\n", b"data\n", b"\n")
    assert [e[1] for e in evs] == [b"", b""]


def test_truncated_last_line_and_undispatched_event_are_discarded():
    assert events_of(b"data: a\n", b"\n", b"data: {\"tok") == [(1, b"a", None)]
    assert events_of(b"data: a\n", b"\n", b"data: b\n") == [(1, b"a", None)]


def test_blank_lines_without_data_dispatch_nothing():
    assert events_of(b"\n", b"\r\n", b"\n") == []


def test_utf8_bytes_are_passed_through_undecoded():
    payload = "data: {\"t\":\"中文 é\"}\n".encode()
    evs = events_of(payload, b"\n")
    assert evs[0][1].decode() == '{"t":"中文 é"}'


def test_pieces_with_arbitrary_boundaries_crlf_split_and_shared_stamps():
    stream = "data: {\"t\":\"中\"}\r\n\r\n: ka\r\n\r\ndata: b\r\n\r\ndata: c\n\n".encode()
    cut = stream.index("中".encode()) + 1
    crlf = stream.index(b"\r\n\r\n: ka") + 1  # between a CR and its LF
    pieces = [stream[:cut], stream[cut:crlf], stream[crlf:]]
    it = iter(pieces)
    clock = itertools.count(1).__next__
    evs = list(iter_events(lambda: next(it, b""), clock=clock))
    assert [e[1] for e in evs] == ['{"t":"中"}'.encode(), b"b", b"c"]
    # the first data line ended with the CR of piece 2 (a CR alone is an SSE line end; the LF that
    # starts piece 3 is its partner); b and c arrived with piece 3
    assert [e[0] for e in evs] == [2, 3, 3]


def test_check_is_called_per_piece_after_check_time():
    calls = []

    def check(t):
        calls.append(t)
        return t + 2

    it = iter([b"data: a\n\n"] * 6)
    list(iter_events(lambda: next(it, b""), clock=itertools.count(1).__next__, check_at_ns=3, check=check))
    assert calls == [3, 5]
