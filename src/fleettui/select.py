"""The selection grammar shared by `fleet bulk --filter` and the dashboard's `/` filter.

One small language so an operator who learned it in the TUI can paste it into a cron line:

    state=OFFLINE
    power>300 and engine=vllm
    not (tag=gpu or role~embed) and latency>=200ms

A bare word (no operator after it; quote one that is a field name or holds spaces) searches
the node's name, role, tags, engines and resident models the way a fuzzy finder does
(`match_word`); words and comparisons side by side must all hold: `llama state=ONLINE`.

Fields: name, role, tag, state, engine, model (text; tag/engine/model match any of a node's
values), fit (the answer to the dashboard's fit question, `F`: yes, evict, no or unknown; a
node matches none of them while no question is asked) and power (W), cost (7-day total),
gpu_mem (% used, or an amount with MB/GB), latency (ms, or with ms/s). Operators
`= != > < >= <= ~` (`~` is a case-insensitive regex search, so a plain word is a substring
match); `and`, `or`, `not`, parentheses. Text comparisons ignore case.
A node that has no value for a numeric field (never answered, no GPU) matches no comparison.

A bad expression raises SelectError with the offending position; its str() carries a caret line.
Pure Python over aggregator.state.NodeView: no textual, no rich, no I/O.
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import pairwise

from fleettui.aggregator.fitwatch import FILTER_WORDS
from fleettui.aggregator.state import NodeState, NodeView

TEXT_FIELDS = ("name", "role", "tag", "state", "engine", "model", "fit")
NUMBER_FIELDS = ("power", "cost", "gpu_mem", "latency")
FIELDS = TEXT_FIELDS + NUMBER_FIELDS
OPERATORS = ("=", "!=", ">", "<", ">=", "<=", "~")
SEARCHED = ("name", "role", "tag", "engine", "model")  # what a bare word searches
MAX_EXPR = 1000  # characters: the dashboard re-parses as one types, a paste can be anything
MAX_DEPTH = 32  # nested parentheses and `not`s (the parser recurses)
MAX_WORD = 100  # characters of a bare word
_OP_CHARS = "=!<>~"
_STOP = set(" \t\r\n()'\"") | set(_OP_CHARS)


class SelectError(ValueError):
    """A filter expression that cannot be used; `pos` is the 0-based offending column."""

    def __init__(self, expr: str, pos: int, message: str) -> None:
        self.expr = expr
        self.pos = max(0, min(pos, len(expr)))
        self.message = message
        super().__init__(str(self))

    @property
    def caret(self) -> str:
        """Two lines: the expression and a caret under the offending position."""
        return f"{self.expr}\n{' ' * self.pos}^"

    def __str__(self) -> str:
        return f"{self.message} (at column {self.pos + 1})\n  {self.expr}\n  {' ' * self.pos}^"


# --- tokens ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tok:
    kind: str  # word | string | op | ( | ) | end
    text: str
    pos: int


def _tokenize(expr: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c.isspace():
            i += 1
        elif c in "()":
            toks.append(_Tok(c, c, i))
            i += 1
        elif c in "'\"":
            end = expr.find(c, i + 1)
            if end < 0:
                raise SelectError(expr, i, f"unterminated quote {c}")
            toks.append(_Tok("string", expr[i + 1 : end], i))
            i = end + 1
        elif c in _OP_CHARS:
            two = expr[i : i + 2]
            if two in ("!=", ">=", "<=", "=="):
                toks.append(_Tok("op", "=" if two == "==" else two, i))
                i += 2
            elif c == "!":
                raise SelectError(expr, i, "'!' must be followed by '=' (use 'not' to negate)")
            else:
                toks.append(_Tok("op", c, i))
                i += 1
        else:
            j = i
            while j < n and expr[j] not in _STOP:
                j += 1
            toks.append(_Tok("word", expr[i:j], i))
            i = j
    toks.append(_Tok("end", "", n))
    return toks


# --- values ------------------------------------------------------------------------------

_NUM_RE = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*([A-Za-z%€$£]*)$")
_UNITS: dict[str, dict[str, tuple[str, float]]] = {
    # field -> unit suffix (lower case) -> (quantity, factor to the field's base unit)
    "power": {"": ("w", 1), "w": ("w", 1), "kw": ("w", 1000)},
    "cost": {"": ("c", 1), "€": ("c", 1), "$": ("c", 1), "£": ("c", 1), "eur": ("c", 1)},
    "latency": {"": ("ms", 1), "ms": ("ms", 1), "s": ("ms", 1000)},
    "gpu_mem": {
        "": ("pct", 1),
        "%": ("pct", 1),
        "mb": ("mb", 1),
        "mib": ("mb", 1),
        "gb": ("mb", 1024),
        "gib": ("mb", 1024),
        "g": ("mb", 1024),
        "tb": ("mb", 1024 * 1024),
    },
}
_EXAMPLES = {
    "power": "power>300 or power>1.5kW",
    "cost": "cost>=20",
    "latency": "latency>200 or latency>1.5s",
    "gpu_mem": "gpu_mem>90 (percent) or gpu_mem>40GB",
}


def _number(field: str, tok: _Tok, expr: str) -> tuple[str, float]:
    raw = tok.text.strip()
    for sym in "€$£":  # allow a leading currency sign: cost>€20
        if field == "cost" and raw.startswith(sym):
            raw = raw[1:] + sym
    m = _NUM_RE.match(raw)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS[field]:
        raise SelectError(
            expr, tok.pos, f"{field} needs a number, got {tok.text!r} (e.g. {_EXAMPLES[field]})"
        )
    qty, factor = _UNITS[field][unit]
    return qty, float(m.group(1)) * factor


# --- what a field reads from a node ------------------------------------------------------


def _texts(view: NodeView, field: str) -> list[str]:
    if field == "name":
        return [view.name]
    if field == "role":
        return [view.role]
    if field == "tag":
        return list(view.tags)
    if field == "state":
        return [view.state.value]
    if field == "fit":
        return [FILTER_WORDS[view.fit.verdict]] if view.fit is not None else []
    facts = view.facts  # not view.snapshot: a filter must not parse every node's snapshot
    if field == "engine":
        return list(facts.engine_names) if facts else []
    if field == "model":
        return list(facts.model_names) if facts else []
    raise AssertionError(field)


def gpu_memory(view: NodeView) -> tuple[float, float] | None:
    """(used MB, total MB) over every GPU of the node, or None when unknown."""
    return view.facts.gpu_mem_mb if view.facts else None


def _numeric(view: NodeView, field: str, qty: str) -> float | None:
    facts = view.facts  # not view.snapshot: a filter must not parse every node's snapshot
    if field == "power":
        return facts.watts if facts else None
    if field == "cost":
        return facts.cost_7d if facts else None
    if field == "latency":
        return view.latency_ms
    if field == "gpu_mem":
        mem = gpu_memory(view)
        if mem is None:
            return None
        used, total = mem
        if qty == "mb":
            return used
        return 100.0 * used / total if total else None
    raise AssertionError(field)


# --- bare words --------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """Where a bare word matched one value: `score` ranks (lower is better), `positions`
    are the matched characters' indexes (what the table highlights)."""

    score: int
    positions: tuple[int, ...]


def _fold(text: str) -> str:
    """Lower case, one character for one, so positions in the folded text are the text's."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def match_word(needle: str, text: str) -> Hit | None:
    """The one rule of a bare word, case ignored: the whole value (score 0), a prefix (1), a
    substring at a word start (2) or anywhere (3); else its letters in order in at most
    1 + len/3 pieces, never more than 4 (`l8b` in `llama3.1:8b`, `qwencoder` in
    `qwen2.5-coder`; score 4 + pieces), so a long word cannot match letters strewn about."""
    w, t = _fold(needle), _fold(text)
    if not w:
        return None
    i = t.find(w)
    if i >= 0:
        score = 0 if len(w) == len(t) else 1 if i == 0 else 2 if not t[i - 1].isalnum() else 3
        return Hit(score, tuple(range(i, i + len(w))))
    end = -1
    for c in w:  # forward: the first place where all of it has appeared in order ...
        end = t.find(c, end + 1)
        if end < 0:
            return None
    positions, k = [], end + 1
    for c in reversed(w):  # ... then backward from there: the tightest match ending there
        k = t.rfind(c, 0, k)
        positions.append(k)
    positions.reverse()
    pieces = 1 + sum(b != a + 1 for a, b in pairwise(positions))
    if pieces > 1 + min(len(w) // 3, 3):
        return None
    return Hit(4 + pieces, tuple(positions))


def searched(view: NodeView) -> list[str]:
    """The values a bare word searches, in SEARCHED order."""
    return [t for field in SEARCHED for t in _texts(view, field)]


def _in_order(folded: str, text: str) -> bool:
    """Are `folded`'s letters in `text`, in order? (What any hit needs; str.find is C.)"""
    at = -1
    for c in folded:
        at = text.find(c, at + 1)
        if at < 0:
            return False
    return True


class _Words:
    """The bare words of one expression and each node's best score for each (None: no hit),
    kept until the node's values move: a dashboard re-filters every node on every update, and
    names, roles, tags, engines and models change far less often than that."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self._folded: list[str] = []
        # name -> (facts, role, tags, scores): facts is a new object per snapshot
        self._memo: dict[str, tuple[object, str, list[str], tuple[int | None, ...]]] = {}

    def add(self, needle: str) -> int:
        self.words.append(needle)
        self._folded.append(_fold(needle))
        return len(self.words) - 1

    def scores(self, view: NodeView) -> tuple[int | None, ...]:
        got = self._memo.get(view.name)
        if got is not None and got[0] is view.facts and got[1] == view.role and got[2] == view.tags:
            return got[3]
        values = searched(view)
        hay = _fold("\n".join(values))  # one cheap test over all of them first
        out = tuple(
            min((h.score for t in values if (h := match_word(w, t))), default=None)
            if _in_order(f, hay)
            else None
            for w, f in zip(self.words, self._folded, strict=True)
        )
        self._memo[view.name] = (view.facts, view.role, list(view.tags), out)
        return out


# --- the tree ----------------------------------------------------------------------------

Pred = Callable[[NodeView], bool]
_CMP: dict[str, Callable[[float, float], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
}


def _text_pred(field: str, op: str, value: str, tok: _Tok, expr: str) -> Pred:
    if op == "~":
        try:
            rx = re.compile(value, re.IGNORECASE)
        except re.error as exc:
            raise SelectError(expr, tok.pos, f"bad regular expression: {exc.msg}") from None
        return lambda v: any(rx.search(t) for t in _texts(v, field))
    want = value.casefold()
    if field == "state":
        states = [s.value for s in NodeState]
        if value.upper() not in states:
            raise SelectError(
                expr, tok.pos, f"unknown state {value!r} (one of {', '.join(states)})"
            )
    if field == "fit" and want not in FILTER_WORDS.values():
        words = ", ".join(FILTER_WORDS.values())
        raise SelectError(expr, tok.pos, f"unknown fit {value!r} (one of {words})")
    if op == "=":
        return lambda v: any(t.casefold() == want for t in _texts(v, field))
    return lambda v: not any(t.casefold() == want for t in _texts(v, field))


def _number_pred(field: str, op: str, tok: _Tok, expr: str) -> Pred:
    qty, target = _number(field, tok, expr)
    cmp = _CMP[op]

    def pred(v: NodeView) -> bool:
        got = _numeric(v, field, qty)
        return got is not None and cmp(got, target)

    return pred


class _Parser:
    def __init__(self, expr: str) -> None:
        if len(expr) > MAX_EXPR:
            raise SelectError(expr[:MAX_EXPR], MAX_EXPR, f"longer than {MAX_EXPR} characters")
        self.expr = expr
        self.toks = _tokenize(expr)
        self.i = 0
        self.depth = 0  # parentheses and `not`s open around the token
        self.negated = 0  # `not`s around it: a word under one is not highlighted
        self.words: dict[str, int] = {}  # the bare words a match highlights: their index
        self.judge = _Words()  # every bare word, judged together per node
        self.unitless: set[int] = set()  # tokens that are a number with no unit

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def _kw(self, word: str) -> bool:
        return self.tok.kind == "word" and self.tok.text.lower() == word

    def parse(self) -> Pred:
        if self.tok.kind == "end":
            raise SelectError(self.expr, 0, "empty expression (e.g. state=OFFLINE)")
        pred = self._or()
        if self.tok.kind != "end":
            if self.tok.kind == ")":
                raise SelectError(self.expr, self.tok.pos, "')' without a matching '('")
            raise SelectError(
                self.expr, self.tok.pos, f"expected 'and', 'or' or the end, got {self.tok.text!r}"
            )
        return pred

    def _or(self) -> Pred:
        parts = [self._and()]
        while self._kw("or"):
            self.i += 1
            parts.append(self._and())
        if len(parts) == 1:
            return parts[0]
        return lambda v: any(p(v) for p in parts)

    def _and(self) -> Pred:
        parts = [self._not()]
        while self._kw("and") or self._starts_term():
            if self._kw("and"):
                self.i += 1
            parts.append(self._not())
        if len(parts) == 1:
            return parts[0]
        return lambda v: all(p(v) for p in parts)

    def _starts_term(self) -> bool:
        """Side by side with the term before it (an implied `and`): a word, a quoted word,
        `(` or `not`. After a number without a unit a plain word is refused, not searched:
        `gpu_mem>12 GB` is a unit typed apart far more often than a search."""
        tok = self.tok
        if tok.kind == "word" and tok.text.lower() in ("and", "or"):
            return False
        if tok.kind == "word" and self.i - 1 in self.unitless and self._is_search(tok):
            raise SelectError(
                self.expr,
                tok.pos,
                f"expected 'and', 'or' or the end, got {tok.text!r} "
                f"(a unit goes right after the number; 'and' before a search word)",
            )
        return tok.kind in ("word", "string", "(")

    def _nest(self, tok: _Tok) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise SelectError(self.expr, tok.pos, f"nested deeper than {MAX_DEPTH} levels")

    def _not(self) -> Pred:
        if self._kw("not"):
            self._nest(self.tok)
            self.i += 1
            self.negated += 1
            inner = self._not()
            self.negated -= 1
            self.depth -= 1
            return lambda v: not inner(v)
        return self._primary()

    def _primary(self) -> Pred:
        tok = self.tok
        if tok.kind == "(":
            self._nest(tok)
            self.i += 1
            inner = self._or()
            if self.tok.kind != ")":
                raise SelectError(self.expr, tok.pos, "'(' is never closed")
            self.i += 1
            self.depth -= 1
            return inner
        if tok.kind == "end":
            raise SelectError(
                self.expr, tok.pos, "expression ends too early: expected a field or a search word"
            )
        if tok.kind == "string" or (tok.kind == "word" and self._is_search(tok)):
            return self._search(tok)
        if tok.kind != "word":
            raise SelectError(
                self.expr, tok.pos, f"expected a field ({', '.join(FIELDS)}), got {tok.text!r}"
            )
        return self._comparison()

    def _is_search(self, tok: _Tok) -> bool:
        """A word that is neither a field, a keyword, nor followed by an operator."""
        text = tok.text.lower()
        if text in FIELDS or text in ("and", "or", "not"):
            return False
        return self.toks[self.i + 1].kind != "op"

    def _search(self, tok: _Tok) -> Pred:
        self.i += 1
        needle = tok.text
        if not needle.strip():
            raise SelectError(self.expr, tok.pos, "an empty quoted word searches nothing")
        if len(needle) > MAX_WORD:
            raise SelectError(self.expr, tok.pos, f"a search word is at most {MAX_WORD} characters")
        i, scores = self.judge.add(needle), self.judge.scores
        if not self.negated:
            self.words.setdefault(needle, i)
        return lambda v: scores(v)[i] is not None

    def _comparison(self) -> Pred:
        ftok = self.tok
        field = ftok.text.lower()
        if field not in FIELDS:
            close = difflib.get_close_matches(field, FIELDS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise SelectError(
                self.expr,
                ftok.pos,
                f"unknown field {ftok.text!r} ({hint}fields: {', '.join(FIELDS)})",
            )
        self.i += 1
        otok = self.tok
        if otok.kind != "op":
            raise SelectError(
                self.expr, otok.pos, f"expected an operator ({' '.join(OPERATORS)}) after {field}"
            )
        op = otok.text
        self.i += 1
        vtok = self.tok
        if vtok.kind not in ("word", "string"):
            raise SelectError(self.expr, vtok.pos, f"expected a value after {field}{op}")
        self.i += 1
        if field in NUMBER_FIELDS:
            if op == "~":
                raise SelectError(
                    self.expr, otok.pos, f"'~' matches text; {field} is a number (use = != < >)"
                )
            if vtok.kind == "word" and (m := _NUM_RE.match(vtok.text)) and not m.group(2):
                self.unitless.add(self.i - 1)
            return _number_pred(field, op, vtok, self.expr)
        if op not in ("=", "!=", "~"):
            raise SelectError(
                self.expr, otok.pos, f"{op!r} compares numbers; {field} is text (use = != ~)"
            )
        return _text_pred(field, op, vtok.text, vtok, self.expr)


@dataclass(frozen=True, eq=False)
class Selector:
    """A compiled expression: `matches(view)` is all a caller needs; `words` are its bare
    words outside any `not` (what a view highlights, `match_word` says where)."""

    text: str
    _pred: Pred
    _judge: _Words
    _ranked: dict[str, int]  # the words outside any `not`: their index in _judge

    def matches(self, view: NodeView) -> bool:
        return self._pred(view)

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(self._ranked)

    @property
    def fuzzy(self) -> bool:
        """Whether any bare word is in it, `not` included: what it selects can grow with a
        new node's name or model, which an unattended bulk action must not act on."""
        return bool(self._judge.words)

    def rank(self, view: NodeView) -> int:
        """How well the node answers the bare words outside any `not` (lower is better: 0
        is each the whole of a value), for a list that puts `demo-003` before `demo-0031`."""
        if not self._ranked:
            return 0
        miss = 9  # a word a node does not hit (it matched through an `or`)
        scores = self._judge.scores(view)
        return sum(miss if (x := scores[i]) is None else x for i in self._ranked.values())


def parse(expr: str) -> Selector:
    """Compile a filter expression; raises SelectError pointing at the problem."""
    parser = _Parser(expr)
    pred = parser.parse()
    return Selector(expr, pred, parser.judge, parser.words)


def select_views(
    views: Iterable[NodeView], names: Iterable[str] = (), expr: str | Selector | None = None
) -> list[NodeView]:
    """Nodes named in `names` (when any) that also match `expr` (when given), in input order."""
    wanted = set(names)
    sel = parse(expr) if isinstance(expr, str) else expr
    return [
        v for v in views if (not wanted or v.name in wanted) and (sel is None or sel.matches(v))
    ]
