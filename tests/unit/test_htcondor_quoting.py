"""Quoting for HTCondor's submit language (sidecars/htcondor/submitlang.py), checked against
HTCondor's own parsers (htcondor2.Submit, classad2 in the old syntax condor_submit uses)."""

from __future__ import annotations

import classad2
import htcondor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecars.htcondor import submitlang as sl

NASTY = st.lists(st.sampled_from(list("ab \"'\\$()#=,;\n\t\r{}[]+-.") + ["queue", "\u2028", "é"]), max_size=20).map(
    "".join
)


def submit_with(line: str) -> htcondor2.Submit:
    return htcondor2.Submit(f"executable = /bin/true\n{line}\nqueue\n")


def old_classad_string(literal: str) -> str:
    return classad2.parseOne(f"A = {literal}\n", classad2.ParserType.Old)["A"]


# ---- reference decoders of the "new syntax", written from the condor_submit manual


def decode_new_syntax(value: str) -> list[str]:
    assert value[0] == '"' and value[-1] == '"'
    body, words, current, quoted, started, i = value[1:-1], [], [], False, False, 0
    while i < len(body):
        c = body[i]
        if c == '"':
            assert body[i + 1] == '"', "a lone double quote"
            current.append('"')
            started, i = True, i + 2
        elif quoted and c == "'":
            if body[i + 1 : i + 2] == "'":
                current.append("'")
                i += 2
            else:
                quoted, i = False, i + 1
        elif quoted:
            current.append(c)
            i += 1
        elif c == "'":
            quoted, started, i = True, True, i + 1
        elif c in " \t":
            if current or started:
                words.append("".join(current))
            current, started, i = [], False, i + 1
        else:
            current.append(c)
            started, i = True, i + 1
    assert not quoted, "unterminated single quote"
    if current or started:
        words.append("".join(current))
    return words


# ---- ClassAd strings


@pytest.mark.parametrize(
    "value",
    [
        "",
        "plain",
        'a "quoted" word',
        'ends with "',
        '"',
        '\\"',
        'a\\"b',
        "back\\slash",
        '\\\\"x',
        "x = 1",
        "queue",
        "# c",
        "ünïcödé",
        "[a = 1]",
        "' single",
    ],
)
def test_classad_strings_round_trip(value):
    literal = sl.classad_string(value)
    assert old_classad_string(literal) == value
    sub = submit_with(f"+A = {literal}")
    assert sub["MY.A"] == literal and sub.expand("MY.A") == literal
    assert set(sub.keys()) == {"executable", "MY.A"}


@pytest.mark.parametrize(
    "value", ["a\nb", "a\rb", "a\x00", "a\tb", "\u2028", "$", "$(x)", "$$(Memory)", "$ENV(HOME)", "ends\\"]
)
def test_classad_strings_refuse_what_cannot_be_written(value):
    with pytest.raises(sl.SubmitQuoteError):
        sl.classad_string(value)


@settings(max_examples=300, deadline=None)
@given(NASTY)
def test_any_string_is_written_exactly_or_refused(value):
    try:
        literal = sl.classad_string(value)
    except sl.SubmitQuoteError:
        assert any(c in value for c in "\n\r\t\u2028$") or value.endswith("\\")
        return
    assert old_classad_string(literal) == value
    sub = submit_with(f"+A = {literal}")
    assert set(sub.keys()) == {"executable", "MY.A"} and sub.getQArgs() == ""


# ---- plain values


@pytest.mark.parametrize("value", ["/a/b c/job.sh", "/x/'q'/\"d\"", "a#b", "a=b", "queue"])
def test_plain_values_are_kept(value):
    assert submit_with(f"output = {sl.plain_value(value)}").expand("output") == value


@pytest.mark.parametrize("value", ["", " lead", "trail ", "a\\", "a\nqueue", "$(x)", "a$b", "x\x7f"])
def test_plain_values_refuse_what_the_parser_would_change(value):
    with pytest.raises(sl.SubmitQuoteError):
        sl.plain_value(value)


def test_file_lists():
    assert sl.file_list(["/a/b", "/c d/e"]) == "/a/b, /c d/e"
    for bad in (["/a,b"], [], ["/a\n"]):
        with pytest.raises(sl.SubmitQuoteError):
            sl.file_list(bad)


# ---- arguments and environment, new syntax


@pytest.mark.parametrize(
    "words",
    [
        ["one", "two"],
        ["with space", "'single'", '"double"', "", "mixed ' and \" both"],
        ["--opt=a b", "\\backslash\\"],
        ["tab-less", "a,b;c"],
    ],
)
def test_arguments_new_syntax(words):
    value = sl.arguments(words)
    assert decode_new_syntax(value) == words
    assert submit_with(f"arguments = {value}")["arguments"] == value


def test_arguments_refuse_macros_and_line_breaks():
    for bad in (["$(x)"], ["a\nqueue"], ["a\tb"]):
        with pytest.raises(sl.SubmitQuoteError):
            sl.arguments(bad)


def test_environment_new_syntax():
    value = sl.environment(
        {
            "A": "1",
            "B": "two words",
            "C": 'it\'s "x"',
            "EMPTY": "",
            "ILP_JOB_ID": sl.SubmitText("$(Cluster).$(Process)"),
        }
    )
    assert decode_new_syntax(value) == [
        "A=1",
        "B=two words",
        'C=it\'s "x"',
        "EMPTY=",
        "ILP_JOB_ID=$(Cluster).$(Process)",
    ]
    sub = submit_with(f"environment = {value}")
    assert sub.expand("environment").endswith('ILP_JOB_ID=1.0"')  # our own macros stay live
    for bad in ({"1A": "x"}, {"A B": "x"}, {"A": "$HOME"}, {"A": "x\ny"}):
        with pytest.raises(sl.SubmitQuoteError):
            sl.environment(bad)


# ---- site commands and whole descriptions


def test_site_commands():
    assert sl.site_command("+AccountingGroup", ' "g.u" ', "x") == ("+AccountingGroup", '"g.u"')
    assert sl.parse_site_command('MY.Project = "p = q"', "x") == ("MY.Project", '"p = q"')
    for key, value in (("queue", "1"), ("a b", "1"), ("+A", "1\nqueue"), ("+A", ""), ("+A", "x\\"), ("=", "1")):
        with pytest.raises(sl.SubmitQuoteError):
            sl.site_command(key, value, "x")
    with pytest.raises(sl.SubmitQuoteError):
        sl.parse_site_command("--partition=gpu", "x")


GOOD = 'executable = /bin/true\n+A = "x"\n# a comment\nqueue\n'


def test_check_description_accepts_what_was_meant():
    sl.check_description(GOOD, {"executable": "/bin/true", "+A": '"x"'})


@pytest.mark.parametrize(
    "text, problem",
    [
        (GOOD.replace("queue", "queue 5"), "bare `queue`"),
        (GOOD + "+B = 1\nqueue\n", "queue"),
        ('executable = /bin/true\n+A = "x"\n+B = 1\nqueue\n', "unexpected"),
        ('executable = /bin/sh\n+A = "x"\nqueue\n', "executable"),
        ('executable = /bin/true\n+A = "x" \\\n+B = 1\nqueue\n', "continues"),
        ('executable = /bin/true\nexecutable = /bin/true\n+A = "x"\nqueue\n', "twice"),
        ('executable = /bin/true\n+A = "x"\nB @=end\nx\n@end\nqueue\n', "command = value"),
    ],
)
def test_check_description_catches_anything_else(text, problem):
    with pytest.raises(sl.DescriptionError, match=problem):
        sl.check_description(text, {"executable": "/bin/true", "+A": '"x"'})


def test_check_description_without_the_bindings(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_htcondor(name, *args, **kwargs):
        if name == "htcondor2":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_htcondor)
    sl.check_description(GOOD, {"executable": "/bin/true", "+A": '"x"'})  # line by line only
    with pytest.raises(sl.DescriptionError):
        sl.check_description(GOOD, {"executable": "/bin/sh", "+A": '"x"'})
