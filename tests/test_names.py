"""Descriptions: every format in the wild decoded, hostile ones contained."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glacierfs import names


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def mt(version: str, fields: dict) -> str:
    raw = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
    if version == "mt1":
        raw = raw.decode("latin-1").encode()  # UTF-8 encoded twice
    return f"{version} " + base64.urlsafe_b64encode(raw).decode().rstrip("=")


CASES = [
    (names.encode("dir/ü file.txt", 1_600_000_000), "dir/ü file.txt", 1_600_000_000),
    (f"<m><v>3</v><p>{b64('a/b.txt')}</p><lm>20200101T000000Z</lm><ce>c:e:0123</ce></m>", "a/b.txt", 1_577_836_800),
    (f"<ArchiveMetadata><Path>{b64('old/v1.doc')}</Path></ArchiveMetadata>", "old/v1.doc", None),
    (mt("mt2", {"mtime": "20190102T030405Z", "filename": "photos/ñ.jpg"}), "photos/ñ.jpg", 1_546_398_245),
    (mt("mt1", {"filename": "docs/ü.pdf", "mtime": "20180101T000000Z"}), "docs/ü.pdf", 1_514_764_800),
    (
        json.dumps({"Path": "C:\\Users\\me\\f.txt", "UTCDateModified": "20170101T000000Z", "Flags": 0}),
        "C:/Users/me/f.txt",
        1_483_228_800,
    ),
    (json.dumps({"path": "/share/x.bin", "type": "file"}), "share/x.bin", None),
    ("glacier-cli name.tar", "glacier-cli name.tar", None),
]


@pytest.mark.parametrize(("description", "path", "mtime"), CASES)
def test_every_format_decodes(description: str, path: str, mtime: float | None) -> None:
    decoded = names.decode(description)
    assert decoded is not None and decoded.path == path and decoded.mtime == mtime


@pytest.mark.parametrize(
    "description",
    [
        "",
        "   ",
        "..",
        "/./../",
        "<m><v>4</v><p>!!!</p><lm>20200101T000000Z</lm></m>",
        "<ArchiveMetadata><Path>%%%</Path></ArchiveMetadata>",
        "{not json",
        '{"Other": 1}',
        "mt2 ***",
        "mt1 e30",
        "mt2 MA",
        "mt2 WzFd",
        f"<m><v>4</v><p>{base64.b64encode(bytes([0xFF, 0xFE])).decode()}</p><lm>20200101T000000Z</lm></m>",
    ],
)
def test_broken_or_empty_descriptions_name_nothing(description: str) -> None:
    assert names.decode(description) is None


@pytest.mark.parametrize(
    ("hostile", "expected"),
    [
        ("../../etc/passwd", "etc/passwd"),
        ("a/./b//c/../d", "a/b/c/d"),
        ("nul\x00and\x07bell/\x1bx", "nulandbell/x"),
        ("/absolute/path", "absolute/path"),
        ("x" * 300 + "/y", "x" * 255 + "/y"),
    ],
)
def test_hostile_paths_are_contained(hostile: str, expected: str) -> None:
    assert names.sanitize(hostile) == expected
    decoded = names.decode(names.encode(hostile, 0))
    assert decoded is not None and decoded.path == expected


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.text().map(lambda t: names.encode(t, 0)),
        st.text().map(lambda t: "mt2 " + base64.urlsafe_b64encode(t.encode()).decode()),
        st.binary().map(
            lambda b: "<m><v>4</v><p>" + base64.b64encode(b).decode() + "</p><lm>20200101T000000Z</lm></m>"
        ),
    )
)
def test_no_description_escapes_its_vault(description: str) -> None:
    decoded = names.decode(description)
    if decoded is None:
        return
    parts = decoded.path.split("/")
    assert decoded.path and not decoded.path.startswith("/")
    assert all(part not in ("", ".", "..") for part in parts)
    # A backslash is an ordinary character of a POSIX name: it stays (and never separates).
    assert all(ord(char) >= 0x20 and ord(char) != 0x7F for char in decoded.path)
    assert all(len(part.encode("utf-8", "surrogateescape")) <= 255 for part in parts)


def test_rsync_temporary_names_map_to_their_final_name() -> None:
    assert names.likely_final_name(".report.pdf.Ab12Cd") == "report.pdf"
    assert names.likely_final_name(".hidden") == ".hidden"
    assert names.likely_final_name("plain.txt") == "plain.txt"


@pytest.mark.parametrize(
    "path",
    [" lead space.txt", "trail space.txt ", "back\\slash.txt", "dir/ inner /x", "a\\b/c\\d", "C:\\not\\windows"],
)
def test_names_glacierfs_wrote_come_back_exactly(path: str) -> None:
    """Without the manifest, a name comes back from its FastGlacier description alone."""
    decoded = names.decode(names.encode(path, 1_600_000_000))
    assert decoded is not None and decoded.path == path


@pytest.mark.parametrize(
    ("description", "path"),
    [
        ("dos\\style\\path.txt", "dos/style/path.txt"),  # a Windows path: no '/' at all
        ("..\\..\\etc\\passwd", "etc/passwd"),
        ("unix/with\\backslash", "unix/with\\backslash"),  # has '/': the backslash is part of a name
        ("<ArchiveMetadata><Path>" + b64("C:\\old\\v1.doc") + "</Path></ArchiveMetadata>", "C:/old/v1.doc"),
        (json.dumps({"path": "/share/a\\b", "type": "file"}), "share/a\\b"),
    ],
)
def test_backslashes_separate_only_in_windows_paths(description: str, path: str) -> None:
    decoded = names.decode(description)
    assert decoded is not None and decoded.path == path


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1))
def test_every_safe_path_round_trips(path: str) -> None:
    safe = names.sanitize(path)
    if not safe:
        return
    decoded = names.decode(names.encode(safe, 0))
    assert decoded is not None and decoded.path == safe


def _plain(path: str, stamp: str = "20200101T000000Z") -> str:
    return f"<m><v>4</v><p>{b64(path)}</p><lm>{stamp}</lm></m>"


def _mt2(path: str) -> str:
    fields = json.dumps({"filename": path, "mtime": "20200101T000000Z"})
    return "mt2 " + base64.urlsafe_b64encode(fields.encode()).decode().rstrip("=")


BATCH = [
    *(case[0] for case in CASES),
    _plain("dir/file.txt"),
    _plain("dir/file.txt").replace("<v>4</v>", "<v>3</v>").replace("</m>", "<ce>0:0:abc</ce></m>"),  # FastGlacier v3
    _plain("dir/v4-ce.txt").replace("</m>", "<ce></ce></m>"),
    _plain("a/./b//c/../d"),  # sanitized, in a batch otherwise clean
    _plain("nul\x00and/x"),
    _plain("x" * 300),
    _plain(""),  # names nothing
    _plain("."),
    _plain("dir/f", "20201340T000000Z"),  # no such day: a path, no mtime
    _plain("dir/f", "20200101T250000Z"),  # no such hour: the long way, a path, no mtime
    _plain("dir/f", "20200229T235959Z"),
    " " + _plain("spaced/f") + " ",
    "<m><v>4</v><p>!!!</p><lm>20200101T000000Z</lm></m>",
    f"<m><v>4</v><p>{base64.b64encode(bytes([0xFF])).decode()}</p><lm>20200101T000000Z</lm></m>",
    "raw/name\nwith a newline",
    "",
    "ü raw",
    _mt2("mt/../up/./x"),  # other tools' paths to sanitize, in a batch otherwise clean
    json.dumps({"Path": "C:\\cb\\..\\x"}),
    "<ArchiveMetadata><Path>" + b64("v1//x") + "</Path></ArchiveMetadata>",
]


@pytest.mark.parametrize(
    "batch",
    [
        BATCH,
        [_plain(f"d/f{i}") for i in range(50)],  # glacierfs's own, every one plain
        [_plain("d/a"), _plain("d/../b")],  # plain, one to sanitize
        [_plain("d/a"), None, 5, _plain("d/b")],  # not all strings
        [],
    ],
)
def test_a_batch_decodes_as_each_description_does(batch: list) -> None:
    assert names.decode_many(batch) == one_by_one(batch)


def one_by_one(batch: list) -> tuple[list, list]:
    decoded = [names.decode(text) if isinstance(text, str) else None for text in batch]
    return [one and one.path for one in decoded], [one and one.mtime for one in decoded]


# Other tools' descriptions of any path: a batch reads them one by one and checks
# their paths together (sanitize's work only where one needs it).
OTHER_TOOLS = (
    _mt2,
    lambda path: json.dumps({"Path": path, "UTCDateModified": "20200101T000000Z"}),  # CloudBerry
    lambda path: json.dumps({"path": path, "type": "file"}),  # QNAP
    lambda path: f"<ArchiveMetadata><Path>{b64(path)}</Path></ArchiveMetadata>",  # FastGlacier v1
)
UNSURROGATED = st.characters(exclude_categories=("Cs",))  # what UTF-8 (base64'd) can hold


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(),
            st.text().map(lambda t: names.encode(t, 1_600_000_000)),
            st.text().map(
                lambda t: names.encode(t, 1_600_000_000).replace("<v>4", "<v>3").replace("</m>", "<ce>c</ce></m>")
            ),
            st.tuples(st.sampled_from(OTHER_TOOLS), st.text(UNSURROGATED)).map(lambda pair: pair[0](pair[1])),
            st.tuples(
                st.sampled_from(OTHER_TOOLS),
                st.lists(st.sampled_from(["d", "é", "..", "", "\\x", " s "])).map("/".join),
            ).map(lambda pair: pair[0](pair[1])),
        ),
        max_size=8,
    )
)
def test_any_batch_decodes_as_each_description_does(batch: list[str]) -> None:
    assert names.decode_many(batch) == one_by_one(batch)


# Any code point, lone surrogates among them: a JSON description's "\udc80" decodes to one.
ANY_CHARACTER = st.characters(exclude_categories=())


def sanitized_char_by_char(path: str) -> str:
    """The rule sanitize keeps, written out plainly."""
    parts = []
    for component in path.split("/"):
        kept = "".join(char for char in component if ord(char) >= 0x20 and ord(char) != 0x7F)
        if kept in ("", ".", ".."):
            continue
        kept = "".join("\ufffd" if 0xD800 <= ord(char) <= 0xDFFF else char for char in kept)
        encoded = kept.encode("utf-8")
        parts.append(encoded[:255].decode("utf-8", "ignore") if len(encoded) > 255 else kept)
    return "/".join(parts)


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.text(ANY_CHARACTER),
        st.lists(st.sampled_from(["é", "ü/", "..", ".", "/", "\x00", "\udc80", "\ud800", "x" * 100, "日本" * 30])).map(
            "".join
        ),
    )
)
def test_sanitize_keeps_the_rule_at_c_speed(path: str) -> None:
    """The checks at C speed (ASCII or not) leave alone only what the rule leaves
    alone, and what the rule mends is mended alike."""
    assert names.sanitize(path) == sanitized_char_by_char(path)


@pytest.mark.parametrize(
    ("description", "path"),
    [
        (json.dumps({"Path": "C:\\photos\\a\ud800b.jpg"}), "C:/photos/a\ufffdb.jpg"),  # CloudBerry
        (json.dumps({"path": "/share/\udc80x", "type": "file"}), "share/\ufffdx"),  # QNAP
        ("mt2 " + base64.urlsafe_b64encode(b'{"filename": "dir/\\udfff.txt"}').decode(), "dir/\ufffd.txt"),
    ],
)
def test_a_lone_surrogate_in_a_json_description_becomes_a_replacement_character(description: str, path: str) -> None:
    """Such a name has no UTF-8, so neither the catalog nor the kernel could take
    it: a whole inventory failed on one."""
    assert names.decode(description) == (path, None)
    assert names.decode_many([description, _plain("d/ü")]) == ([path, "d/ü"], [None, 1_577_836_800])
