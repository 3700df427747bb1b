"""The selection grammar: what each expression selects, and where a bad one is pointed at."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleettui.aggregator.state import NodeState
from fleettui.select import FIELDS, SelectError, match_word, parse, select_views
from fleettui.testing.sample import sample_views

VIEWS = sample_views()


def names(expr: str) -> list[str]:
    sel = parse(expr)
    return [v.name for v in VIEWS if sel.matches(v)]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("state=OFFLINE", ["edge-lab-7"]),
        ("state=offline", ["edge-lab-7"]),
        ("state!=ONLINE", ["gpu-b1", "edge-lab-7", "gpu-c1", "new-node-9"]),
        ("power>300 and engine=vllm", ["gpu-a1", "gpu-a2", "gpu-b1", "gpu-b2"]),
        ("power>1.5kW", ["gpu-a1"]),
        ("power<=96", ["mac-studio-1", "edge-lab-7"]),
        ("engine=vllm and not state=ONLINE", ["gpu-b1"]),
        ("tag=h100", ["gpu-a1", "gpu-a2", "gpu-c1"]),
        ("tag!=h100 and tag=l40s", ["gpu-b1", "gpu-b2"]),
        ("role~embed", ["embed-1"]),
        ("name~^gpu-a", ["gpu-a1", "gpu-a2"]),
        ("name=GPU-A1", ["gpu-a1"]),
        ("model~qwen", ["gpu-a1", "gpu-a2", "mac-studio-1", "edge-lab-7", "gpu-c1"]),
        ("model='llama3.1:8b'", ["gpu-a1", "gpu-b1", "mac-studio-1", "gpu-c1"]),
        ("gpu_mem>90", ["gpu-a2"]),
        ("gpu_mem>=100GB", ["gpu-a1", "gpu-a2"]),
        ("latency>1s", ["rtx-desk-2"]),
        ("latency<10", ["embed-1"]),
        ("cost>=100", ["gpu-a1", "gpu-a2", "gpu-b2"]),
        ("cost>€200", ["gpu-a1", "gpu-a2"]),
        # precedence: and binds tighter than or; parentheses override
        ("state=OFFLINE or tag=mac and power<100", ["mac-studio-1", "edge-lab-7"]),
        ("(state=OFFLINE or tag=mac) and power<90", ["mac-studio-1"]),
        ("not not state=OFFLINE", ["edge-lab-7"]),
        ("state=INITIALIZING", ["new-node-9"]),
    ],
)
def test_expression_selects(expr: str, expected: list[str]) -> None:
    assert names(expr) == expected


def test_unknown_values_match_no_comparison() -> None:
    """A node that never answered has no power: it matches neither power>0 nor power<=0."""
    assert "new-node-9" not in names("power>0")
    assert "new-node-9" not in names("power<=0")
    assert "new-node-9" in names("not power>0")
    assert "embed-1" not in names("engine=vllm")  # multi-valued: no vllm among its engines


@pytest.mark.parametrize(
    ("expr", "pos", "words"),
    [
        ("powr>300", 0, "unknown field 'powr' (did you mean 'power'?"),
        ("power>", 6, "expected a value"),
        ("power>abc", 6, "power needs a number"),
        ("gpu_mem>12 parsecs", 11, "expected 'and', 'or' or the end"),
        ("(state=ONLINE", 0, "'(' is never closed"),
        ("state=ONLINE)", 12, "')' without a matching '('"),
        ("state=ONLINE and", 16, "ends too early"),
        ("name>3", 4, "'>' compares numbers; name is text"),
        ("power~3", 5, "'~' matches text; power is a number"),
        ("state=ONLIEN", 6, "unknown state 'ONLIEN'"),
        ("model~[", 6, "bad regular expression"),
        ("name='abc", 5, "unterminated quote"),
        ("state ONLINE", 6, "expected an operator"),
        ("", 0, "empty expression"),
        ("   ", 0, "empty expression"),
        ("name!a", 4, "'!' must be followed by '='"),
        ("and state=ONLINE", 0, "unknown field 'and'"),
        ("power>300 or or", 13, "unknown field 'or'"),
        ("=3", 0, "expected a field"),
    ],
)
def test_bad_expression_points_at_the_problem(expr: str, pos: int, words: str) -> None:
    with pytest.raises(SelectError) as info:
        parse(expr)
    err = info.value
    assert err.pos == pos
    assert words in err.message
    expr_line, caret_line = str(err).splitlines()[1:]
    assert expr_line == "  " + expr
    assert caret_line == "  " + " " * pos + "^"
    assert f"column {pos + 1}" in str(err)


def test_select_views_by_names_and_filter() -> None:
    got = select_views(VIEWS, names=["gpu-a1", "gpu-b1", "embed-1"], expr="engine=vllm")
    assert [v.name for v in got] == ["gpu-a1", "gpu-b1"]
    assert [v.name for v in select_views(VIEWS, names=["embed-1"])] == ["embed-1"]
    assert len(select_views(VIEWS)) == len(VIEWS)


ATOMS = st.sampled_from(
    [
        "state=ONLINE",
        "state=OFFLINE",
        "power>300",
        "engine=vllm",
        "tag=h100",
        "model~llama",
        "gpu_mem>50",
        "latency<20",
        "cost>=50",
        "role=dev",
    ]
)


def exprs() -> st.SearchStrategy[str]:
    return st.recursive(
        ATOMS,
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"
            ),
            inner.map(lambda e: f"not {e}"),
        ),
        max_leaves=6,
    )


@settings(max_examples=150, deadline=None)
@given(exprs())
def test_not_is_the_complement_and_logic_holds(expr: str) -> None:
    yes = set(names(expr))
    no = set(names(f"not ({expr})"))
    assert yes | no == {v.name for v in VIEWS}
    assert not yes & no


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abcdegilmnoprstuwy_=!<>~()'\" 0123456789.%", max_size=30))
def test_any_input_parses_or_raises_select_error(text: str) -> None:
    try:
        sel = parse(text)
    except SelectError as err:
        assert 0 <= err.pos <= len(text)
        return
    for v in VIEWS:
        assert sel.matches(v) in (True, False)


def test_fields_cover_the_issue() -> None:
    assert set(FIELDS) == {
        "name",
        "role",
        "tag",
        "state",
        "engine",
        "model",
        "fit",
        "power",
        "cost",
        "gpu_mem",
        "latency",
    }
    with pytest.raises(SelectError) as info:
        parse("state=x")
    assert NodeState.OFFLINE.value in str(info.value)


def test_fit_reads_the_answer_to_the_fit_question() -> None:
    from fleettui.capacity.fit import FitRequest
    from fleettui.testing.sample import SampleSource

    source = SampleSource()
    assert names("fit=yes") == []  # no question asked: nothing matches
    source.set_fit(FitRequest("llama3.1:8b"))
    views = source.snapshots()
    by = {v.name: v.fit.verdict for v in views if v.fit is not None}
    assert set(by) == {v.name for v in views}  # every node answers, "unknown" included
    for word, verdict in (("yes", "fits"), ("no", "no"), ("unknown", "unknown")):
        got = [v.name for v in select_views(views, expr=f"fit={word}")]
        assert got == [n for n, x in by.items() if x == verdict], word
    assert "edge-lab-7" in [v.name for v in select_views(views, expr="fit=unknown")]  # OFFLINE
    assert [v.name for v in select_views(views, expr="fit!=yes and fit!=no and fit!=unknown")] == [
        n for n, x in by.items() if x == "evict"
    ]
    with pytest.raises(
        SelectError, match="unknown fit 'fits' \\(one of yes, evict, no, unknown\\)"
    ):
        parse("fit=fits")


# --- bare words ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("rtx-desk-2", ["rtx-desk-2"]),  # a whole name
        ("RTX-DESK", ["rtx-desk-2"]),  # case ignored
        ("llamacpp", ["gpu-b2", "rtx-desk-2"]),  # an engine
        ("vllm", ["gpu-a1", "gpu-a2", "gpu-b1", "gpu-b2"]),
        ("embedding", ["embed-1"]),  # a role
        ("h100", ["gpu-a1", "gpu-a2", "gpu-c1"]),  # a tag
        ("nomic", ["embed-1", "gpu-c1"]),  # a resident model
        ("qwencoder", ["gpu-a1", "edge-lab-7", "gpu-c1"]),  # in two pieces: qwen2.5-coder
        ("gpub", ["gpu-b1", "gpu-b2"]),
        ("'llama3.1:8b'", ["gpu-a1", "gpu-b1", "mac-studio-1", "gpu-c1"]),  # as model=
        ('"state"', []),  # a field name quoted is a word
        ("zzz", []),
        (
            "llama state=ONLINE",
            ["gpu-a1", "gpu-a2", "gpu-b2", "embed-1", "mac-studio-1", "rtx-desk-2"],
        ),
        (
            "state=ONLINE llama",
            ["gpu-a1", "gpu-a2", "gpu-b2", "embed-1", "mac-studio-1", "rtx-desk-2"],
        ),
        ("vllm not tag=h100", ["gpu-b1", "gpu-b2"]),
        ("vllm and power>1kW", ["gpu-a1", "gpu-a2"]),
        ("power>1kW vllm", ["gpu-a1", "gpu-a2"]),  # a unit, then a word: an implied `and`
        ("(mlx or llamacpp) tag!=h100", ["gpu-b2", "mac-studio-1", "rtx-desk-2"]),
        ("not vllm and state=ONLINE", ["embed-1", "mac-studio-1", "rtx-desk-2"]),
    ],
)
def test_bare_word_selects(expr: str, expected: list[str]) -> None:
    assert names(expr) == expected


@pytest.mark.parametrize(
    ("word", "text", "score", "positions"),
    [
        ("demo-003", "demo-003", 0, range(8)),
        ("DEMO", "demo-003", 1, range(4)),
        ("llama", "llama3.1:8b", 1, range(5)),
        ("llama", "llamacpp", 1, range(5)),
        ("llama", "meta-llama/Llama-3.1-8B", 2, range(5, 10)),
        ("llama", "ollama", 3, range(1, 6)),
        ("l8b", "llama3.1:8b", 6, (1, 9, 10)),  # the tightest: the last l before 8b
        ("qwencoder", "qwen2.5-coder:7b", 6, (0, 1, 2, 3, 8, 9, 10, 11, 12)),
    ],
)
def test_match_word_ranks_and_places(word: str, text: str, score: int, positions) -> None:
    hit = match_word(word, text)
    assert hit is not None and hit.score == score and hit.positions == tuple(positions)
    assert all(text[p].lower() == c.lower() for p, c in zip(hit.positions, word, strict=True))


@pytest.mark.parametrize(
    ("word", "text"),
    [
        ("ll", "l-l"),  # two letters: a substring or nothing
        ("dsr1", "deepseek-r1:70b"),  # d, s, r1: three pieces for a 4-letter word
        ("abcdefghijklmnop", "a-b-c-d-e-f-g-h-i-j-k-l-m-n-o-p"),  # strewn: at most 4 pieces
        ("llamas", "llama3"),
        ("demo-003", "demo-030"),
        ("", "anything"),
    ],
)
def test_match_word_refuses_strewn_letters(word: str, text: str) -> None:
    assert match_word(word, text) is None


def test_exact_ranks_first_then_prefix_then_inside() -> None:
    from fleettui.testing.sample import generated_views

    views = generated_views(300)
    sel = parse(views[3].name)  # n0003: also a prefix of nothing, inside nothing else
    assert [v.name for v in sorted(select_views(views, expr=sel), key=sel.rank)] == ["n0003"]
    sel = parse("gpu-a")
    got = sorted(select_views(VIEWS, expr=sel), key=sel.rank)
    assert [v.name for v in got] == ["gpu-a1", "gpu-a2"]
    sel = parse("gpu-b1")
    assert sorted(select_views(VIEWS, expr="gpu-b"), key=sel.rank)[0].name == "gpu-b1"


def test_words_are_what_a_view_highlights() -> None:
    assert parse("llama state=ONLINE 'mlx' not vllm llama").words == ("llama", "mlx")
    assert parse("state=ONLINE").words == ()


@pytest.mark.parametrize(
    ("expr", "pos", "words"),
    [
        ("gpu_mem>12 GB", 11, "a unit goes right after the number"),
        ("power>300 llama", 10, "'and' before a search word"),
        ("state ONLINE", 6, "expected an operator"),  # a field name is never a word
        ("llama=3", 0, "unknown field 'llama'"),
        ("''", 0, "an empty quoted word"),
        ("'" + "x" * 101 + "'", 0, "a search word is at most 100 characters"),
        ("x" * 1001, 1000, "longer than 1000 characters"),
        ("not " * 33 + "x", 128, "nested deeper than 32 levels"),
        ("(" * 33 + "x" + ")" * 33, 32, "nested deeper than 32 levels"),
    ],
)
def test_bad_bare_words_point_at_the_problem(expr: str, pos: int, words: str) -> None:
    with pytest.raises(SelectError) as info:
        parse(expr)
    assert info.value.pos == pos
    assert words in info.value.message


def test_hostile_input_is_bounded() -> None:
    """What a paste can hold: refused with a SelectError, or matched quickly, never a
    RecursionError or a long wait."""
    import time

    for expr in ("(" * 5000, "not " * 5000 + "x", "a" * 100 + " " + "b" * 100, "a " * 499):
        start = time.perf_counter()
        try:
            sel = parse(expr)
        except SelectError:
            continue
        for v in VIEWS:
            sel.matches(v)
            sel.rank(v)
        assert time.perf_counter() - start < 5  # generous: a bound, not a benchmark
    assert match_word("a" * 100, "a" * 99 + "b") is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=12), st.text(max_size=40))
def test_a_hit_points_at_the_word_in_order(word: str, text: str) -> None:
    hit = match_word(word, text)
    if hit is None:
        return
    assert list(hit.positions) == sorted(set(hit.positions)) and len(hit.positions) == len(word)
    assert all(0 <= p < len(text) for p in hit.positions)


def test_a_node_is_judged_again_when_its_values_move() -> None:
    """One selector lives as long as the dashboard's filter: the scores it keeps per node
    follow a new snapshot, role or tags (same name, same version)."""
    from dataclasses import replace

    sel = parse("llamacpp")
    view = next(v for v in VIEWS if v.name == "rtx-desk-2")
    assert sel.matches(view)
    snap = view.snapshot.model_copy(deep=True)
    snap.engines = [e for e in snap.engines if e.name != "llamacpp"]
    moved = replace(view, snapshot=snap)  # new facts, same name and version
    assert not sel.matches(moved)
    assert sel.matches(replace(moved, role="llamacpp box"))
    tagged = parse("lab")
    assert not tagged.matches(moved)
    assert tagged.matches(replace(moved, tags=["lab"]))
