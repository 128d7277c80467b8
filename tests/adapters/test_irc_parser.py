"""The IRC line parser against the cases of the message grammar (RFC 1459 §2.3.1, IRCv3 message-tags).

The cases are written here from the specifications, covering the same ground as the public irc-parser-tests
"msg-split" vectors: parameter splitting, trailing parameters, sources, tag escaping and duplicates.
"""

from __future__ import annotations

import pytest

from livecart.adapters.twitch import parse_line

CASES: list[tuple[str, dict[str, str], str, str, list[str]]] = [
    # line, tags, source, command, params
    ("foo bar baz asdf", {}, "", "FOO", ["bar", "baz", "asdf"]),
    (":coolguy foo bar baz asdf", {}, "coolguy", "FOO", ["bar", "baz", "asdf"]),
    ("foo bar baz :asdf quux", {}, "", "FOO", ["bar", "baz", "asdf quux"]),
    ("foo bar baz :", {}, "", "FOO", ["bar", "baz", ""]),
    ("foo bar baz ::asdf", {}, "", "FOO", ["bar", "baz", ":asdf"]),
    (":coolguy foo bar baz :  asdf quux ", {}, "coolguy", "FOO", ["bar", "baz", "  asdf quux "]),
    (":coolguy PRIVMSG bar :lol :) ", {}, "coolguy", "PRIVMSG", ["bar", "lol :) "]),
    (":coolguy foo bar baz :  ", {}, "coolguy", "FOO", ["bar", "baz", "  "]),
    # several spaces separate like one; a trailing space adds no empty parameter
    (":gravel.mozilla.org 432  #momo :Erroneous Nickname: Illegal characters", {}, "gravel.mozilla.org", "432",
     ["#momo", "Erroneous Nickname: Illegal characters"]),
    (":gravel.mozilla.org MODE #tckk +n ", {}, "gravel.mozilla.org", "MODE", ["#tckk", "+n"]),
    (":services.esper.net MODE #foo-bar +o foobar  ", {}, "services.esper.net", "MODE", ["#foo-bar", "+o", "foobar"]),
    (":src AWAY", {}, "src", "AWAY", []),
    (":src AWAY ", {}, "src", "AWAY", []),
    (":src JOIN #chan", {}, "src", "JOIN", ["#chan"]),
    (":src JOIN :#chan", {}, "src", "JOIN", ["#chan"]),
    ("COMMAND", {}, "", "COMMAND", []),
    (":SomeOp MODE #channel :+i", {}, "SomeOp", "MODE", ["#channel", "+i"]),
    (":SomeOp MODE #channel +oo SomeUser :AnotherUser", {}, "SomeOp", "MODE",
     ["#channel", "+oo", "SomeUser", "AnotherUser"]),
    # SPACE only: a tab or an ideographic space (U+3000) stays inside its parameter
    ("foo bar\tbaz asdf", {}, "", "FOO", ["bar\tbaz", "asdf"]),
    ("PRIVMSG #c\u3000d x", {}, "", "PRIVMSG", ["#c\u3000d", "x"]),
    ("PRIVMSG #chan :来两盒\u3000+1", {}, "", "PRIVMSG", ["#chan", "来两盒\u3000+1"]),
    (":cool\tguy foo bar baz", {}, "cool\tguy", "FOO", ["bar", "baz"]),
    (":coolguy!ag@net\x035w\x03ork.admin PRIVMSG foo :bar baz", {}, "coolguy!ag@net\x035w\x03ork.admin", "PRIVMSG",
     ["foo", "bar baz"]),
    # tags: bare keys and empty values are "", escapes undone, the last duplicate wins
    ("@a=b;c=32;k;rt=ql7 foo", {"a": "b", "c": "32", "k": "", "rt": "ql7"}, "", "FOO", []),
    ("@a=b\\\\and\\nk;c=72\\s45;d=gh\\:764 foo", {"a": "b\\and\nk", "c": "72 45", "d": "gh;764"}, "", "FOO", []),
    ("@c;h=;a=b :quux ab cd", {"c": "", "h": "", "a": "b"}, "quux", "AB", ["cd"]),
    ("@tag1=value1;tag2;vendor1/tag3=value2;vendor2/tag4= :irc.example.com COMMAND param1 param2 :param3 param3",
     {"tag1": "value1", "tag2": "", "vendor1/tag3": "value2", "vendor2/tag4": ""}, "irc.example.com", "COMMAND",
     ["param1", "param2", "param3 param3"]),
    ("@foo=\\\\\\\\\\:\\\\s\\s\\r\\n COMMAND", {"foo": "\\\\;\\s \r\n"}, "", "COMMAND", []),
    ("@tag1=value\\\\ntest COMMAND", {"tag1": "value\\ntest"}, "", "COMMAND", []),
    ("@tag1=value\\1 COMMAND", {"tag1": "value1"}, "", "COMMAND", []),
    ("@tag1=value1\\ COMMAND", {"tag1": "value1"}, "", "COMMAND", []),
    ("@tag1=1;tag2=3;tag3=4;tag1=5 COMMAND", {"tag1": "5", "tag2": "3", "tag3": "4"}, "", "COMMAND", []),
    ("@tag1=1;tag2=3;tag3=4;tag1=5;vendor/tag2=8 COMMAND",
     {"tag1": "5", "tag2": "3", "tag3": "4", "vendor/tag2": "8"}, "", "COMMAND", []),
]


@pytest.mark.parametrize(("line", "tags", "source", "command", "params"), CASES)
def test_message_split(line: str, tags: dict[str, str], source: str, command: str, params: list[str]) -> None:
    msg = parse_line(line)
    assert (msg.tags, msg.prefix, msg.command, list(msg.params)) == (tags, source, command, params)


def test_a_twitch_privmsg_with_a_tab_in_the_channel_param_is_not_split() -> None:
    msg = parse_line("@id=x;tmi-sent-ts=1 :a!a@a.tmi.twitch.tv PRIVMSG #shop\tfront :A1 +1")
    assert msg.params == ("#shop\tfront", "A1 +1")
