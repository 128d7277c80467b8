"""The comment parser (docs/contract.md §3): comment text + catalogue + featured product -> intent and items.

A pure, synchronous core (STYLE 1): no I/O, no clock, no event loop. Everything that depends on the
catalogue is compiled once in :class:`Parser`'s constructor; :meth:`Parser.parse` then costs one
normalisation, one character-class search that rejects most chatter, and for the rest one left-to-right
scan driven by dictionary lookups.

How a comment is read
---------------------
1. *Normalise*: NFKC (full-width digits, letters and punctuation become ASCII), case folding, and the
   traditional characters that matter are folded to simplified (雞蛋 -> 鸡蛋, 兩 -> 两, 號 -> 号).
2. *Pre-filter*: a comment containing none of the characters that can start a meaningful word (digits,
   letters, ``+ # ? x *``, the first characters of aliases, verbs and question words) is chatter.
3. *Scan* into tokens: product aliases, codes and link numbers; variant aliases; quantities; buy verbs;
   question, cancel, negation and past-order words; everyday words that merely contain an alias
   (粉丝 is fans, not rice noodles) and filler. Characters nothing explains are counted as *residue*.
4. *Group* the tokens into items: a product (or link, or code) with its variant and quantity.
5. *Decide* the intent, most cautious first: a question is ``ask`` (when it concerns a product or is a
   commerce question such as 多少钱 / 包邮 / how much), else cancel words make ``cancel``, else a past
   order (已拍, 上次买的) or a negation (我不要鸡蛋) is ``none``, else it is ``buy`` only with real evidence:
   a named product with a quantity, a verb or ``+N``; or, for the featured product, a comment that says
   nothing but a buy (``要``, ``+1``, ``扣1``, ``来两盒``, ``mine``, ``I'll take 2``) with zero residue.

Choices the contract leaves open
--------------------------------
* A bare ``+1`` / ``要`` when there is no featured product (or the featured sku is not in the catalogue)
  is ``buy`` with ``Item(None, qty=N, reason=NOT_AVAILABLE)``, so the buyer can be told nothing is on sale.
* With ``bare_plus_one = false``, the bare numeric forms (``1``, ``+N``, ``扣N``) are ``none``; the verbal
  forms (``要``, ``来两盒``, ``mine``) still buy the featured product.
* A product named with nothing else (``鸡蛋``, ``1号链接``, ``#1``) is ``none``: it asks to see the product as
  often as it buys it.
* Items of ``cancel`` carry the quantity stated (取消两盒鸡蛋 -> 2), or ``qty=0`` when none is stated: the
  whole order of that product. Items of ``ask`` always have ``qty=0``: a question orders nothing.
* A link or code the catalogue lacks gives ``Item(None, reason=UNKNOWN_PRODUCT)``
  in every intent, so "9号不要了" never cancels the buyer's latest order by accident.
* Several ``+1`` for the featured product in one comment (``+1+1+1``) are one item of 1.
* A quantity it cannot take (一万盒, 100000000盒, egg 1000000, 1e9盒, x-1, 2.5盒, 两个半) is an item with
  ``Reason.BAD_QUANTITY`` (negative as given, a fraction as 0, capped at :data:`QTY_CAP`), never a quantity
  of 1 left by the verb, nor ``none`` (docs/parser.md, "Missing quantity").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from livecart.core import parser_tables as tb
from livecart.core.catalogue import DEFAULT_MAX_QTY, Catalogue, Product
from livecart.core.parser_pinyin import READINGS
from livecart.core.records import NOTHING, Intent, Item, ParseResult, Reason
from livecart.core.settings import Config

__all__ = ["Parser", "normalise"]

# Token kinds. Small ints: the scan loop compares them a lot.
NOISE, PAST, CANCEL, ASKC, ASKG, NEG, SOLO, VERB, FILL, ALIAS, LINK, QTY, WEAKQTY, PLUS, EACH, TALK, MQTY, RELEASE, \
    LOOK, HOMOPHONE = range(20)

_TRAD = re.compile("[" + "".join(chr(c) for c in tb.T2S) + "]")
_CN_DIGIT_CHARS = "零〇一二两俩三仨四五六七八九十百壹贰叁肆柒捌玖拾"
#: 千 万 亿 inside a numeral (一千, 三万, 两千五, 一亿): a quantity far above any limit, read so it is refused. Never
#: first: 千万 ("by all means"), 万一 ("in case"), 万岁 are everyday words.
_CN_BIG = "千万亿"
_CN_NUM = f"[{_CN_DIGIT_CHARS}][{_CN_DIGIT_CHARS}{_CN_BIG}]*"
# Not the 个 of 十个装 (a pack of ten) or the 盒 of 2盒起 (two boxes at least): the product's pack and terms.
_MEASURE = "|".join(m + "(?![装起])" for m in tb.MEASURE_CN)
_UNIT_NOISE = "|".join(
    sorted((re.escape(u) + ("(?![a-z])" if u.isascii() and u.isalpha() else "") for u in tb.UNIT_NOISE_CN),
           key=len, reverse=True))
# A run of digits and what follows it: a decimal or a time (noise), 号 (a link), a measure word (a quantity)
# or a unit of date, money or weight (noise).
# 3号楼, 5号院: an address, not a link (号 then a building word is noise, below).
_ADDRESS = "楼|院|栋|幢|门|房|室|单元|线|街|路|床|机"
_NUM = re.compile(rf"([0-9]+)((?:[.:/-][0-9]+)+)?\s*(?:(号)(?!{_ADDRESS})(?:\s*链接)?|({_MEASURE})|"
                  rf"({_UNIT_NOISE}|号(?:{_ADDRESS})))?")
_CNQ = re.compile(rf"({_CN_NUM})\s*(?:(号)(?!{_ADDRESS})(?:\s*链接)?|({_MEASURE})|({_UNIT_NOISE}|号(?:{_ADDRESS})))?")
_LINK_AFTER = re.compile(rf"(?:链接|link|lnk)\s*#?\s*(?:no\.?\s*)?([0-9]{{1,3}}(?![0-9])|{_CN_NUM})")
_HASH = re.compile(r"#\s*([0-9]{1,3})(?![0-9])")
# Not 加两勺 (two spoons of it: a recipe) or +5元: a unit after the number makes it no quantity.
_PLUS = re.compile(rf"(?:\+|加|扣)\s*个?\s*([0-9]+(?:e\+?[0-9]{{1,4}}(?![0-9a-z]))?|{_CN_NUM})\s*(?:{_MEASURE})?(?!\s*(?:{_UNIT_NOISE}))")
# Taking a quantity back: 退两盒, 减一盒, -1 (not the - of a range or a code: 3-5, a-1).
_MINUS = re.compile(rf"(?:退|减|-)\s*([0-9]{{1,4}}(?![0-9])|{_CN_NUM})\s*(?:{_MEASURE})?(?!\s*(?:{_UNIT_NOISE}))")
# x3, x1000; and x-1, x2.5, x1e9, x100000: quantities that are refused (bad_quantity), never read as x1 or x2.
_XQ = re.compile(rf"[x*]\s*(-?[0-9]+(?:\.[0-9]+|e\+?[0-9]{{1,4}})?(?![0-9.])|{_CN_NUM})")
#: A measure word right after a number (1e9盒, 1万盒).
_MEASURE_AT = re.compile(rf"\s*({_MEASURE})")
#: An exponent after a run of digits (1e9): a quantity no one can mean, refused.
_EXP = re.compile(r"e\+?([0-9]{1,4})(?![0-9a-z])")
#: 半 after a numeral and its measure word (两个半, 1盒半): half a unit; not 半价 (half price) or 两个半小时.
_HALF = re.compile(r"半(?!价|小时|天|年|个?月|夜|路|斤|两)")
#: A mobile number (13812345678, +8613812345678): not a quantity however it is written.
_PHONE = re.compile(r"(?:86)?1[3-9][0-9]{9}")
#: Multipliers after digits (1万盒, 3千盒, 2k盒): with a measure word after them, a quantity (refused).
_MULT = {"百": 100, "千": 1000, "万": 10_000, "亿": 100_000_000, "k": 1000, "w": 10_000}
#: Where a quantity read from a long digit run or a huge numeral is capped: far above any max_qty, within
#: a 64-bit integer.
QTY_CAP = 10**18 - 1
#: The quantity of a fraction (2.5盒, x2.5, 两个半): not a whole number of units, so refused as 0 is.
_FRACTION = 0
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_CJK_SPACE = re.compile(r"(?<=[\u3400-\u9fff])\s+(?=[\u3400-\u9fff])")
_CJK_SPACE_OR_MENTION = re.compile(r"(@[^\s@+]*\s+)|(?<=[\u3400-\u9fff])\s+(?=[\u3400-\u9fff])")
_CODE_SHAPE = re.compile(r"[a-z]{1,3}[0-9]{1,4}(?![a-z0-9])")
_DIGIT_Q = re.compile(r"[0-9?]")
#: An @mention: the name up to a space, another @ or a +N (@主播+1).
_MENTION = re.compile(r"@[^\s@+]+")
_SKIP = re.compile(r"[^\w+#?*-]+")  # not -: a - before a number is read (鸡蛋 -1), a lone one skipped
_MONEY = frozenset({"块", "元", "毛", "角"})
#: Packaging words that make a bare quantity an order of the featured product (两盒, 3瓶). Not 个 / 只 / 斤:
#: "一个" and "160斤" (a body weight, in clothing rooms) say other things as often.
_ORDER_MEASURE = frozenset({"件", "份", "盒", "箱", "瓶", "罐", "袋", "包", "单", "套", "桶", "提"})
#: Items one comment may hold: a longer list (a line pasted over and over) is read as no order at all.
MAX_ITEMS = 20
_END_LE = re.compile(r"了[\s!~.,…]*$")
#: A cancel said the other way round: 别把鸡蛋取消了 ("don't cancel my eggs"), 谁要取消了 ("who's cancelling?").
_NOT_CANCEL = re.compile(r"别(?:给我)?把.{0,12}?(?:取消|退掉)|谁要取消|谁说.{0,6}?(?:取消|不要)")
#: A pack's contents said of a product (鸡蛋一盒十个, 鸡蛋一箱六盒): no order. Counts only, not weights: a
#: weight after a quantity names a variant (菊花要1份50克, 菊花来一盒100克).
_PACK_FACT = re.compile(
    rf"[一1]\s*(?:盒|箱|瓶|包|袋|罐|份|件|提)\s*(?:有|是|装|才|共)?\s*(?:[0-9]+|{_CN_NUM})\s*(?:个|枚|盒|瓶|包|袋|只|片|粒)")
#: A clause that keeps or swaps an order inside a cancel: 蜂蜜不要了 鸡蛋还要 cancels the honey, not the eggs.
_KEEP = re.compile(r"还要|还是要|要的|留着|照旧|照常|继续要|保留|不变|换|keep|still want")
#: Where such a comment is cut into clauses: punctuation; in English also at 'but' and before 'keep' /
#: 'still' (spaces separate words there); in Chinese also at spaces and after 了 / 啦 and the cancel words
#: 取消 / 退掉 / 不要 / 不买 (鸡蛋取消 蜂蜜照旧 reaches the parser without its space).
_CLAUSE = re.compile(r"[,;!~.…]+|\bbut\b|(?=\b(?:keep|still)\b)")
_CLAUSE_CN = re.compile(r"[\s,;!~.…]+|(?<=[了啦])|(?<=取消)|(?<=退掉)|(?<=不要)|(?<=不买)")
_DOUBLED = re.compile(r"([a-z])\1+")
# "pass" gives up a claim only as the whole comment (pass, pass po, pass muna na!), not in "pass me the link".
_RELEASE_ALONE = re.compile(r"\s*pass(?:\s+(?:po|muna|na|ate|kuya|sis|pls|please))*[\s!.~…]*")
#: Toneless pinyin of each CJK character (first reading), for typos of a Chinese alias by a homophone.
_PINYIN: dict[str, str] = {ch: py for py, chars in READINGS.items() for ch in chars}
#: Signals that let a homophone typo count: an order, a commerce question, a cancel or a negation. A
#: generic question (牛肉甘吗) is not enough: the pre-filter does not look for those.
_HOMOPHONE_SIGNALS = 1 << QTY | 1 << PLUS | 1 << VERB | 1 << SOLO | 1 << ASKC | 1 << CANCEL | 1 << NEG


def normalise(text: str) -> str:
    """The text the parser reads: NFKC, case-folded, traditional folded to simplified where it matters."""
    if text.isascii():
        return text.lower()  # for ASCII, casefold() and lower() agree
    t = unicodedata.normalize("NFKC", text).casefold()
    if _TRAD.search(t):
        t = t.translate(tb.T2S)
    if " " in t:
        # 鸡 蛋 -> 鸡蛋: spaces between two CJK characters separate nothing, except the one that ends an
        # @mention (@蜂蜜妹妹 鸡蛋来两盒: the name ends there).
        t = _CJK_SPACE_OR_MENTION.sub(_keep_mentions, t) if "@" in t else _CJK_SPACE.sub("", t)
    return t


def _keep_mentions(m: re.Match[str]) -> str:
    return m.group() if m.group(1) is not None else ""


def cn_number(s: str) -> int | None:
    """Value of a Chinese numeral (一 ... 九十九, 两, 俩, 一百, 一千零一, 三万, 一亿 ...), or None when it is not
    one. 千, 万 and 亿 alone are not numbers (千万, 万一 and 万岁 are everyday words)."""
    if len(s) == 1:
        v = tb.CN_DIGITS.get(s)
        if v is not None:
            return v
        return 10 if s == "十" or s == "拾" else (100 if s == "百" else None)
    total = 0  # whole 亿 and 万 sections so far
    section = 0  # below 万
    cur = -1
    for ch in s:
        d = tb.CN_DIGITS.get(ch)
        if d is not None:
            if cur >= 0:
                return None  # two digits in a row (一二) is not a number
            if d == 0 and (section or total):
                continue  # the 零 of 一千零一, 一万零五百: a gap, not a digit
            cur = d
        elif ch == "十" or ch == "拾":  # 拾: the financial 十 (贰拾 = 20)
            section += (cur if cur >= 0 else 1) * 10
            cur = -1
        elif ch == "百":
            section += (cur if cur >= 0 else 1) * 100
            cur = -1
        elif ch == "千":
            section += (cur if cur >= 0 else 1) * 1000
            cur = -1
        elif ch == "万" or ch == "亿":
            unit = 10_000 if ch == "万" else 100_000_000
            section += cur if cur >= 0 else 0
            if not section and not total:
                return None  # 万 with nothing to count
            if not section:
                total *= unit  # 一亿亿, 一万万: more of the same
            else:
                total = (total + section) * unit if ch == "亿" else total + section * unit
            if total > QTY_CAP:
                return QTY_CAP
            section = 0
            cur = -1
        else:
            return None
    return total + section + (cur if cur >= 0 else 0)


def _int(s: str) -> int | None:
    if s[0] <= "9" or s[0] == "-":
        return _digits_value(s) if len(s) > 1 and not s.isdigit() else _whole(s)
    return cn_number(s)


def _whole(digits: str) -> int:
    """A run of digits as a quantity: capped (a 2,000-digit run is no reason for a huge int, or an error)."""
    return int(digits) if len(digits) <= 18 else QTY_CAP


def _digits_value(s: str) -> int:
    """The quantity of ``-1``, ``2.5``, ``1e9`` (the forms ``x`` may take): a negative or capped number, or
    :data:`_FRACTION` for a fraction other than a whole one (2.0 is 2)."""
    neg = s.startswith("-")
    body = s[1:] if neg else s
    whole, dot, frac = body.partition(".")
    if dot:
        if frac.strip("0"):
            return _FRACTION
        v = _whole(whole)
    else:
        mant, e, exp = whole.partition("e")
        v = _whole(mant)
        if e:
            n = int(exp.lstrip("+") or 0)
            v = QTY_CAP if n > 17 else min(v * 10**n, QTY_CAP)
    return -v if neg else v


def _spammy(digits: str) -> bool:
    """666, 888, 1111111, phone numbers: digits that are not a quantity."""
    return len(digits) >= 5 or (len(digits) >= 3 and digits.count(digits[0]) == len(digits))


def _cheer(digits: str) -> bool:
    """After a ``+``: 666, 8888, 999 (one digit repeated) cheer, or mash a key (+1111111); a mobile number
    or 5201314 is no quantity either. Other digit runs, however long (+12345), and 9s past six
    (+99999999999, "as many as you have") are a quantity, refused above max_qty."""
    if len(digits) >= 3 and digits.count(digits[0]) == len(digits):
        return digits[0] != "9" or len(digits) <= 6
    return digits in _LOVE or _PHONE.fullmatch(digits) is not None


#: 5201314 ("I love you for ever") and its kin: greetings, not quantities.
_LOVE = frozenset({"5201314", "1314520", "521314"})


def _one_edit(a: str, b: str) -> bool:
    """Levenshtein distance of a and b is exactly one."""
    la, lb = len(a), len(b)
    if abs(la - lb) > 1 or a == b:
        return False
    if la > lb:
        a, b, la, lb = b, a, lb, la
    i = 0
    while i < la and a[i] == b[i]:
        i += 1
    if la == lb:
        return a[i + 1:] == b[i + 1:]
    return a[i:] == b[i + 1:]


@dataclass(frozen=True, slots=True)
class _Target:
    """What an alias names: a product (``sku``) and/or variants of some products (sku -> variant name)."""

    sku: str | None
    variants: tuple[tuple[str, str], ...] = ()
    #: A one-character alias (大, 小, 白): too common to pick a product by itself.
    short: bool = False
    #: Option values it names: (sku, option, value), e.g. ("hoodie", "colour", "black") for 黑.
    values: tuple[tuple[str, str, str], ...] = ()
    #: The seller code of ``sku`` (A12, B7): with option values and nothing else it claims one ("AA navy L").
    coded: bool = False

    def variant_of(self, sku: str) -> str | None:
        for s, v in self.variants:
            if s == sku:
                return v
        return None

    def value_of(self, sku: str) -> tuple[str, str] | None:
        for s, o, v in self.values:
            if s == sku:
                return o, v
        return None


class _Group:
    """One item being assembled during the scan. Defaults live on the class: creating one is cheap."""

    sku: str | None = None
    link: int | None = None
    variant: str | None = None
    var_target: _Target | None = None  # a variant alias seen before its product
    vals: tuple[_Target, ...] = ()  # option values named (before or after the product), in order
    qty: int | None = None
    verb = False
    plus = False
    measured = False  # the quantity came with a packaging word (两盒, 3瓶): an order on its own
    coded = False  # the product was named by its seller code or link number
    priced = False  # a bare number right after the product was its price (蜂蜜68), not a quantity

    @property
    def named(self) -> bool:
        return self.sku is not None or self.link is not None

    @property
    def empty(self) -> bool:
        return not self.named and self.var_target is None and self.qty is None and not self.vals

    @property
    def firm(self) -> bool:
        """Names something by more than a one-character value or variant word (黑 of 黑屏, 白 of 明白)."""
        return (self.sku is not None or self.link is not None or any(not t.short for t in self.vals)
                or self.var_target is not None and not self.var_target.short)

    @property
    def picks(self) -> bool:
        """Names something an item can be made of: a product, a link, a variant or an option value."""
        return self.sku is not None or self.link is not None or self.var_target is not None or bool(self.vals)


class _Scan:
    """The state of one left-to-right scan: the groups so far and what the next token needs to know."""

    __slots__ = ("cur", "each_pending", "first_word", "flags", "fuzz_seen", "groups", "prev", "prev_end",
                 "residue", "verb_seen", "homophone_seen")

    def __init__(self) -> None:
        self.residue = 0  # characters nothing explains
        self.flags = 0  # bit per kind seen
        self.groups: list[_Group] = []
        self.cur = _Group()
        self.prev = -1  # kind of the previous meaningful token
        self.prev_end = -1
        self.each_pending = False
        self.verb_seen = False
        self.first_word = True
        self.fuzz_seen = False
        self.homophone_seen = False  # an unexplained character that may be a homophone typo of an alias

    def new_group(self) -> _Group:
        """Close the current group and start the next; a verb seen so far carries over."""
        self.groups.append(self.cur)
        g = _Group()
        g.verb = self.verb_seen
        self.cur = g
        return g


#: Kinds right after which a bare 一 / 两 is a quantity.
_ADJACENT_TO_WEAK = (ALIAS, LINK, VERB, SOLO, EACH)


def _read_plus(t: str, i: int) -> tuple[int, object, int]:
    """``+2``, ``加1``, ``扣1``: a bare quantity; ``+666`` is cheering, a lone ``+`` filler."""
    m = _PLUS.match(t, i)
    if m is None:
        return FILL, None, i + 1
    g = m.group(1)
    if g[0] <= "9" and _cheer(g):
        return NOISE, None, m.end()
    v = _int(g)
    return (PLUS, v, m.end()) if v is not None else (NOISE, None, m.end())


def _read_link(t: str, i: int) -> tuple[int, object, int]:
    """``链接3``: a link number; ``链接`` alone is filler."""
    m = _LINK_AFTER.match(t, i)
    if m is None:
        return FILL, None, i + 2 if t.startswith("链接", i) else i + 1
    v = _int(m.group(1))
    return (LINK, v, m.end()) if v is not None else (NOISE, None, m.end())


def _option_table(p: Product) -> dict[tuple[tuple[str, str], ...], tuple[str | None, Reason | None]]:
    fits: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for v in p.variants:
        pairs = sorted(v.options)
        for mask in range(1 << len(pairs)):
            sub = tuple(pr for b, pr in enumerate(pairs) if mask >> b & 1)
            fits.setdefault(sub, []).append(v.name)
    return {k: (names[0] if len(names) == 1 else None, None) for k, names in fits.items()}


def _clashes(vals: tuple[_Target, ...], tgt: _Target) -> bool:
    """Whether ``tgt`` names another value of an option already named in ``vals`` (黑M+1 粉M+2: two items)."""
    for sku, option, value in tgt.values:
        for x in vals:
            ov = x.value_of(sku)
            if ov is not None and ov[0] == option and ov[1] != value:
                return True
    return False


def _bind(g: _Group, sku: str) -> None:
    """The group's product is now known: a variant alias named before it becomes its variant; option values
    named before it stay, to be composed into a variant (those of other products are dropped then)."""
    g.sku = sku
    if g.var_target is not None:
        g.variant = g.var_target.variant_of(sku)
        g.var_target = None


def _fold_qty(s: _Scan, kind: int, qty: int) -> None:
    if s.each_pending:  # 鸡蛋蜂蜜各两份
        for g in s.groups:
            if g.qty is None and g.named:
                g.qty = qty
        s.each_pending = False
    cur = s.cur
    if cur.qty is not None:
        cur = s.new_group()
    cur.qty = qty if qty <= QTY_CAP else QTY_CAP  # 一亿亿亿: refused all the same, within 64 bits
    if kind == PLUS:
        cur.plus = True
        s.flags |= 1 << PLUS
    else:
        cur.measured = kind == MQTY
        s.flags |= 1 << QTY
_Lit = tuple[str, int, object]  # (literal, kind, payload)
_FUZZ = 99  # an unknown English word that might be a misspelt alias
_SIGNALS = 1 << QTY | 1 << PLUS | 1 << VERB | 1 << SOLO | 1 << ASKG | 1 << ASKC | 1 << CANCEL
_RETRY_FUZZY = ParseResult(Intent.NONE, (Item(None),))  # a sentinel, never returned to callers
#: Entries per cache generation (see _remember). 32,768: on a 1M-comment flash stream (55,000 distinct texts,
#: 30,000 of them once only) 4,096 re-analysed 156,000 texts (1.85 s of parsing), 32,768 re-analyses 58,000
#: (0.94 s); the two generations hold at most ~65,000 short texts and their results, a few MB.
_CACHE_SIZE = 32768
_FUZZY_STOP = tb.FUZZY_STOP
_CACHE_TEXT = 64
_INTERN_SIZE = 4096  # longer comments are rarely repeated word for word


def _longest_first(lit: _Lit) -> int:
    # A module-level function, not a lambda inside a comprehension: mypyc (LIVECART_COMPILE=1) fails on the
    # lambda's closure at run time.
    return -len(lit[0])


class Parser:
    """Reads one comment at a time against a catalogue; build one per catalogue (all compiling happens here).

    ``bare_plus_one``: whether ``1`` / ``+N`` / ``扣N`` / ``xN`` alone buy the featured product.
    ``max_qty``: quantities of 0 or above it give ``Reason.BAD_QUANTITY`` items (the intent stays ``buy``).

    The only state kept between calls is a bounded cache of recent results and interned result values; a
    result depends on nothing but ``(text, featured)`` and the constructor's arguments, so sharing a parser
    between threads is safe under the GIL (a race can at worst drop a cache entry).
    """

    def __init__(self, catalogue: Catalogue, *, bare_plus_one: bool = True,
                 max_qty: int = DEFAULT_MAX_QTY) -> None:
        self.catalogue = catalogue
        self.bare_plus_one = bare_plus_one
        self.max_qty = max_qty
        self._by_sku = dict(catalogue.by_sku)
        self._by_link = {n: p.sku for n, p in catalogue.by_link.items()}
        self._has_codes = any(p.code or any(v.code for v in p.variants) for p in catalogue.products)
        # Whole prices of 10 or more, by product: 蜂蜜68 / honey 68 with honey at 68 names the 68 honey, it
        # does not ask for 68 jars (a quantity that size is written with a measure word or a verb).
        self._prices: dict[str, frozenset[int]] = {}
        for p in catalogue.products:
            whole = {int(x) for x in (p.price, *(v.price for v in p.variants))
                     if x is not None and x >= 10 and x == int(x)}
            if whole:
                self._prices[p.sku] = frozenset(whole)
        self._all_prices = frozenset(x for v in self._prices.values() for x in v)
        targets = self._targets(catalogue.products)
        # Per options product: (option, value) pairs named, sorted -> (variant, None) when exactly one
        # variant has them all, (None, None) when several do. Every subset of every variant's values is a
        # key, so composing a variant at parse time is one dict lookup.
        self._options: dict[str, dict[tuple[tuple[str, str], ...], tuple[str | None, Reason | None]]] = {}
        for p in catalogue.products:
            if p.options:
                self._options[p.sku] = _option_table(p)
        self._compile_vocabulary(targets)
        self._compile_fuzzy(targets)
        self._compile_homophones(targets)
        self._compile_prefilter()
        self._cache: dict[tuple[str, str | None], ParseResult] = {}
        self._cache_old: dict[tuple[str, str | None], ParseResult] = {}
        self._items: dict[tuple[str | None, str | None, int, Reason | None], Item] = {}
        self._results: dict[tuple[Intent, tuple[Item, ...]], ParseResult] = {}

    def _compile_vocabulary(self, targets: dict[str, _Target]) -> None:
        """Every word the scan knows (aliases first, then the tables), as three lookups: ``_lits`` (a regex
        per first character for CJK and symbols), ``_phrases`` (multi-word English, by first word) and
        ``_words`` (single English words)."""
        # CJK (and other non-a-z-initial) literals, indexed by first character, longest first.
        lits: dict[str, list[_Lit]] = {}
        # a-z-initial phrases (multi-word aliases, codes like a1, multi-word keywords), by leading letters.
        phrases: dict[str, list[_Lit]] = {}
        # Single English words.
        words: dict[str, tuple[int, object]] = {}

        def add(lit: str, kind: int, payload: object = None) -> None:
            lit = lit.strip()
            if not lit:
                return
            first = lit[0]
            if "a" <= first <= "z":
                m = _WORD.match(lit)
                lead = m.group() if m else lit
                if lead == lit:
                    words.setdefault(lit, (kind, payload))
                else:
                    phrases.setdefault(re.match(r"[a-z]+", lit).group(), []).append(  # type: ignore[union-attr]
                        (lit, kind, payload))
            else:
                lits.setdefault(first, []).append((lit, kind, payload))

        alias_keys = set(targets)
        for alias, target in targets.items():
            add(alias, ALIAS, target)  # keys of ``targets`` are normalised already
        for w in (*tb.NOISE_CN, *tb.NOISE_EN):
            w = normalise(w)
            if w not in alias_keys:
                add(w, NOISE)
        for group, kind in ((tb.PAST_CN, PAST), (tb.CANCEL_CN, CANCEL), (tb.ASK_COMMERCE_CN, ASKC),
                            (tb.ASK_GENERIC_CN, ASKG), (tb.NEG_CN, NEG), (tb.VERB_SOLO_CN, SOLO),
                            (tb.VERB_CN, VERB), (tb.FILLER_CN, FILL), (tb.TALK_CN, TALK),
                            (tb.PAST_EN, PAST),
                            (tb.CANCEL_EN, CANCEL), (tb.ASK_COMMERCE_EN, ASKC), (tb.NEG_EN, NEG),
                            (tb.VERB_SOLO_EN, SOLO), (tb.VERB_EN, VERB), (tb.FILLER_EN, FILL),
                            (tb.TALK_EN, LOOK), (tb.RELEASE_EN, RELEASE)):
            for w in group:
                w = normalise(w)
                if w not in alias_keys:
                    add(w, kind)
        add("各", EACH)
        add("each", EACH)
        for w, n in tb.ENGLISH_NUMBERS.items():
            words[w] = (QTY, n)
        for w in (*tb.MEASURE_EN, *tb.ASK_GENERIC_EN):
            words.setdefault(w, (FILL, None))
        self._ask_first = frozenset(w for w in tb.ASK_GENERIC_EN if w not in alias_keys)

        def ordered(d: dict[str, list[_Lit]]) -> dict[str, tuple[_Lit, ...]]:
            # Longest first; among equal lengths the first added (aliases before everyday words) wins.
            return {k: tuple(sorted(v, key=_longest_first)) for k, v in d.items()}

        # One regex per first character, alternatives longest first, so a position costs one C-level match.
        # An alias ending in a letter or digit must not run into the next word (100g vs 100gx).
        self._lits: dict[str, tuple[re.Pattern[str], dict[str, tuple[int, object]]]] = {}
        for first, cands in ordered(lits).items():
            table: dict[str, tuple[int, object]] = {}
            alts = []
            for lit, k, p in cands:
                if lit in table:
                    continue
                table[lit] = (k, p)
                guard = "(?![a-z0-9])" if k == ALIAS and lit[-1].isascii() and lit[-1].isalnum() else ""
                alts.append(re.escape(lit) + guard)
            self._lits[first] = (re.compile("|".join(alts)), table)
        self._lit_kinds = {first: {k for k, _p in table.values()} for first, (_rx, table) in self._lits.items()}
        self._phrases = ordered(phrases)
        self._words = words
        # Doubled letters ("minee", "soldd", "mineee"): a word not found as typed is looked up with its runs
        # of one letter collapsed, among the words whose collapsed form is theirs alone.
        collapsed: dict[str, list[tuple[int, object]]] = {}
        for w, hit in words.items():
            collapsed.setdefault(_DOUBLED.sub(r"\1", w), []).append(hit)
        self._collapsed = {c: hits[0] for c, hits in collapsed.items() if len(hits) == 1}

    def _compile_fuzzy(self, targets: dict[str, _Target]) -> None:
        """Misspellings: one-deletion index of single-word ASCII aliases of five or more letters."""
        self._fuzzy_exact: dict[str, set[_Target]] = {}
        self._fuzzy_del: dict[str, set[str]] = {}
        for alias, target in targets.items():
            if len(alias) >= 5 and alias.isascii() and alias.isalpha():
                self._fuzzy_exact.setdefault(alias, set()).add(target)
                for i in range(len(alias)):
                    self._fuzzy_del.setdefault(alias[:i] + alias[i + 1:], set()).add(alias)
        # Four-letter aliases: only two neighbouring letters swapped ("nust" for nuts), and only when the
        # swap is no other word the parser knows. One edit of any kind is too close to everyday words
        # (guts, cuts, huts).
        swaps: dict[str, set[_Target]] = {}
        for alias, target in targets.items():
            if len(alias) == 4 and alias.isascii() and alias.isalpha():
                for i in range(3):
                    w = alias[:i] + alias[i + 1] + alias[i] + alias[i + 2:]
                    if w != alias and w not in targets and w not in self._words and w not in _FUZZY_STOP:
                        swaps.setdefault(w, set()).add(target)
        self._fuzzy_swap = {w: next(iter(ts)) for w, ts in swaps.items() if len(ts) == 1}

    def _compile_homophones(self, targets: dict[str, _Target]) -> None:
        """Chinese typos: an alias of two or more CJK characters typed with one character replaced by another
        of the same toneless pinyin (牛肉甘 for 牛肉干), indexed by the alias's pinyin."""
        self._py_index: dict[tuple[str, ...], list[tuple[str, _Target]]] = {}
        for alias, target in targets.items():
            if len(alias) >= 2 and all(c in _PINYIN for c in alias):
                self._py_index.setdefault(tuple(_PINYIN[c] for c in alias), []).append((alias, target))
        self._py_lengths = tuple(sorted({len(k) for k in self._py_index}, reverse=True))
        syllables = {syl for key in self._py_index for syl in key}
        #: Characters that may start or be part of such a typo: worth a second, fuzzy pass.
        self._py_chars = frozenset(ch for ch, py in _PINYIN.items() if py in syllables)

    def _homophone(self, t: str, i: int) -> tuple[int, _Target] | None:
        """The alias that ``t[i:]`` begins with but for one homophone character, when exactly one does."""
        for n in self._py_lengths:
            seg = t[i:i + n]
            if len(seg) < n:
                continue
            cands = self._py_index.get(tuple(_PINYIN.get(c, "") for c in seg))
            if not cands:
                continue
            found = {tgt for alias, tgt in cands if sum(a != b for a, b in zip(alias, seg, strict=True)) == 1}
            if len(found) == 1:
                return n, next(iter(found))
        return None

    def _compile_prefilter(self) -> None:
        """The three pre-filter stages :meth:`parse` runs before a full scan (step 2 above)."""
        # A result other than ``none`` needs one of: a product or variant alias, a commerce
        # question, a cancel word, a negation ending in 了 (cancel), a buy verb, a link (号, 链接, #), a plus
        # (+, 加, 扣, *), an English word, the bare "1", or a packaging word (两盒). Numerals, other digits,
        # generic question marks, past and filler words only matter next to one of those, so a comment with
        # none of their first characters is chatter (tests/core/test_parser_props.py checks this against
        # the full analysis).
        meaningful = (ALIAS, ASKC, CANCEL, NEG, SOLO, VERB, RELEASE)
        starters = {k for k, kinds in self._lit_kinds.items() if kinds & set(meaningful)}
        starters |= set("abcdefghijklmnopqrstuvwxyz1+*#号链加扣") | _ORDER_MEASURE
        self._interesting = re.compile("[" + "".join(re.escape(c) for c in sorted(starters)) + "]")
        # Second stage, for comments that have such a character: the words themselves, as a regex factored
        # by first character (有 alone is chatter; 有没有 is a question).
        by_first: dict[str, list[str]] = {}
        for first, (_rx, table) in self._lits.items():
            for lit, (k, _p) in table.items():
                if k in meaningful:
                    by_first.setdefault(first, []).append(lit)
        parts = [re.escape(f) if any(len(x) == 1 for x in ls)
                 else re.escape(f) + "(?:" + "|".join(re.escape(x[1:]) for x in sorted(ls, key=len, reverse=True)) + ")"
                 for f, ls in sorted(by_first.items())]
        # Letters are left to the English check below, except an "x" or "*" before a Chinese numeral (x两).
        self._signal = re.compile("|".join([*parts, "[1+*#号链加扣" + "".join(sorted(_ORDER_MEASURE)) + "]",
                                            "x\\s*[零〇一二两俩三四五六七八九十百]"]))
        # English, word by word: a comment with letters can only mean something through a digit or "?" (a
        # quantity, a link, a code, or the signal that lets a misspelt alias count), a question word first,
        # or one of these words (for a phrase, its longest word: the phrase needs all of them).
        en: set[str] = {"link", "lnk"}
        for w, (k, _p) in self._words.items():
            if k in meaningful or k == QTY:
                en.add(w)
        for cands in self._phrases.values():
            for lit, k, _p in cands:
                if k in meaningful:
                    en.add(max(_WORD.findall(lit) or [lit], key=len))
        self._en_signal = frozenset(en)
        self._en_signal_collapsed = frozenset(_DOUBLED.sub(r"\1", w) for w in en)
        # A misspelt alias counts next to any signal, and two kinds of signal can come from Chinese text
        # that the stages above let through: a question word (吗nodles) and a numeral (nodles两).
        q_first = {k for k, kinds in self._lit_kinds.items() if ASKG in kinds}
        self._cjk_signal = re.compile("[" + "".join(re.escape(c) for c in sorted(q_first | set(_CN_DIGIT_CHARS)))
                                      + "]")

    @classmethod
    def from_config(cls, cfg: Config) -> Parser:
        return cls(cfg.catalogue, bare_plus_one=cfg.stream.bare_plus_one, max_qty=cfg.stream.max_qty)

    def __repr__(self) -> str:
        return (f"<Parser {len(self._by_sku)} products, {sum(len(e[1]) for e in self._lits.values()) + len(self._words)}"
                f" words, bare_plus_one={self.bare_plus_one}, max_qty={self.max_qty}>")

    @staticmethod
    def _targets(products: Iterable[Product]) -> dict[str, _Target]:
        prod: dict[str, str] = {}
        var: dict[str, dict[str, str]] = {}
        vals: dict[str, dict[tuple[str, str], str]] = {}
        codes = {normalise(p.code).strip() for p in products if p.code}
        for p in products:
            for o in p.options:
                for val in o.values:
                    for a in (val.name, *val.aliases):
                        vals.setdefault(normalise(a).strip(), {}).setdefault((p.sku, o.name), val.name)
            for a in (*p.aliases, p.name, p.sku, *((p.code,) if p.code else ())):
                prod.setdefault(normalise(a).strip(), p.sku)
            for v in p.variants:
                for a in (*v.aliases, v.name):
                    var.setdefault(normalise(a).strip(), {}).setdefault(p.sku, v.name)
                if v.code:
                    # A variant code names the product and the variant at once.
                    var.setdefault(normalise(v.code).strip(), {}).setdefault(p.sku, v.name)
        out: dict[str, _Target] = {}
        for key in {*prod, *var, *vals}:
            if not key:
                continue
            out[key] = _Target(prod.get(key), tuple(sorted(var.get(key, {}).items())), len(key) == 1,
                               tuple(sorted((s, o, v) for (s, o), v in vals.get(key, {}).items())),
                               key in codes and key in prod)
        return out

    # ------------------------------------------------------------------------------------------------

    def parse(self, text: str, featured: str | None = None) -> ParseResult:
        """What ``text`` means, with ``featured`` the sku a bare ``+1`` buys. Never raises for any string."""
        key = (text, featured)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        hit = self._cache_old.get(key)
        if hit is not None:
            self._remember(key, hit)
            return hit
        t = normalise(text)
        if not self._interesting.search(t) or not (self._signal.search(t) or self._english_signal(t)):
            result = NOTHING
        else:
            result = self._analyse(t, featured, False)
            if result is _RETRY_FUZZY:
                result = self._analyse(t, featured, True)
        if len(text) <= _CACHE_TEXT:
            self._remember(key, result)
        return result

    def _english_signal(self, t: str) -> bool:
        """Whether the English in ``t`` could mean anything (the last pre-filter stage; see __init__)."""
        if _DIGIT_Q.search(t):
            return True
        ws = _WORD.findall(t)
        if not ws:
            return False
        if not t.isascii() and self._cjk_signal.search(t):
            return True
        if ws[0] in self._ask_first:
            return True
        sig = self._en_signal
        if any(w in sig for w in ws):
            return True
        folded = self._en_signal_collapsed  # "minee", "soldd"
        return any(_DOUBLED.sub(r"\1", w) in folded for w in ws if _DOUBLED.search(w) is not None)

    def _remember(self, key: tuple[str, str | None], result: ParseResult) -> None:
        # Live chat repeats itself ("+1", "666", "要要要"). Two generations: when the young one is full it
        # becomes the old one and the previous old one is dropped; a line found in the old generation moves
        # back to the young one. Lines repeated within a generation survive; one-off lines age out. Cheaper
        # per call than keeping an LRU order.
        if len(self._cache) >= _CACHE_SIZE:
            self._cache_old = self._cache
            self._cache = {}
        self._cache[key] = result

    def _analyse(self, t: str, featured: str | None, fuzzy: bool) -> ParseResult:
        """Scan ``t`` into tokens, fold them into item groups, then decide the intent (steps 3-5 above)."""
        s = _Scan()
        n = len(t)
        i = 0
        while i < n:
            i = self._step(s, t, i, fuzzy)
        if not s.cur.empty:
            s.groups.append(s.cur)
        result = self._decide(t, s.groups, s.flags, s.residue, featured)
        if result.intent is Intent.CANCEL and len(result.items) > 1 and _KEEP.search(t):
            result = self._kept_out(result, t, featured, fuzzy)
        if not fuzzy and (s.fuzz_seen and s.flags & _SIGNALS or s.homophone_seen and s.flags & _HOMOPHONE_SIGNALS):
            # An unknown English word and a buy, question or cancel signal: maybe a misspelt alias
            # ("hony 2", "eggs 2 hony 1"). Only now pay for the edit-distance lookup.
            return _RETRY_FUZZY
        return result

    def _kept_out(self, result: ParseResult, t: str, featured: str | None, fuzzy: bool) -> ParseResult:
        """``result`` (a cancel of several items) without the items that a clause saying keep or swap names
        (蜂蜜不要了 鸡蛋还要, 米粉不要了，鸡蛋留着, 鸡蛋不要了 换蜂蜜两瓶): the buyer cancels the rest only."""
        kept: set[tuple[str | None, str | None]] = set()
        for clause in (_CLAUSE if t.isascii() else _CLAUSE_CN).split(t):
            if clause and _KEEP.search(clause):
                s = _Scan()
                i = 0
                while i < len(clause):
                    i = self._step(s, clause, i, fuzzy)
                if not s.cur.empty:
                    s.groups.append(s.cur)
                if not s.flags & (1 << CANCEL | 1 << NEG):  # the clause keeps: it cancels nothing itself
                    kept.update((it.sku, it.variant) for it in self._listed([g for g in s.groups if g.picks],
                                                                             featured))
        items = tuple(i for i in result.items if (i.sku, i.variant) not in kept and (i.sku, None) not in kept)
        if items == result.items:
            return result
        return self._result(Intent.CANCEL, items) if items else NOTHING

    def _step(self, s: _Scan, t: str, i: int, fuzzy: bool) -> int:
        """Read the token at ``i`` and fold it into the scan; return where the next token starts."""
        ch = t[i]
        kind = -1
        payload: object = None
        end = i
        entry = self._lits.get(ch)
        if entry is not None:
            m = entry[0].match(t, i)
            if m is not None:
                end = m.end()
                kind, payload = entry[1][m.group()]
        if kind < 0:
            if "0" <= ch <= "9":
                kind, payload, end = self._read_digits(s, t, i)
            elif ch in _CN_DIGIT_CHARS:
                kind, payload, end = self._read_cn_number(s, t, i)
            elif ch == "+" or ch == "加" or ch == "扣":
                kind, payload, end = _read_plus(t, i)
            elif ch == "#":
                m = _HASH.match(t, i)
                if m is not None:
                    kind, payload, end = LINK, int(m.group(1)), m.end()
                else:
                    kind, end = FILL, i + 1
            elif ch == "?":
                kind, end = ASKG, i + 1
            elif "a" <= ch <= "z" or ch == "*":
                kind, payload, end = self._ascii(t, i, s.first_word, fuzzy)
                if kind == _FUZZ:
                    s.fuzz_seen = True
                    kind = NOISE
                s.first_word = False
            elif ch == "链":
                kind, payload, end = _read_link(t, i)
            elif ch.isalnum():
                if (ch == "退" or ch == "减") and (back := self._taken_back(t, i)):
                    return self._fold(s, t, PAST, None, i, back)
                if ch in self._py_chars:
                    if fuzzy:
                        hit = self._homophone(t, i)
                        if hit is not None:
                            s.flags |= 1 << HOMOPHONE
                            return self._fold(s, t, ALIAS, hit[1], i, i + hit[0])
                    s.homophone_seen = True
                s.residue += 1
                return i + 1
            elif ch == "@" and (m := _MENTION.match(t, i)) is not None:
                return m.end()  # @someone: a name, whatever it holds (@蜂蜜妹妹 is no honey), not residue
            else:  # space, punctuation, emoji: skip the whole run
                if ch == "-" and not self._dash_before_qty(s, t, i) and (back := self._taken_back(t, i,
                                                                                               s.prev == PLUS)):
                    return self._fold(s, t, PAST, None, i, back)
                m = _SKIP.match(t, i)
                return m.end() if m is not None else i + 1
        elif kind == FILL and ch == "链":
            m = _LINK_AFTER.match(t, i)
            if m is not None:
                v = _int(m.group(1))
                kind, payload, end = (LINK, v, m.end()) if v is not None else (NOISE, None, m.end())
        if end <= i:
            end = i + 1
        return self._fold(s, t, kind, payload, i, end)

    @staticmethod
    def _dash_before_qty(s: _Scan, t: str, i: int) -> bool:
        """Whether the ``-`` at ``t[i]`` only parts a claim's product from its quantity, as comment-selling
        buyers type it (SOLD A1 - 2, sold eggs -2): in English, after a buy word and a product in the same
        item, with no quantity yet, not right after a ``+N``, with a space before it. Not 鸡蛋 -1 or 要鸡蛋 -1
        (in Chinese chat, one taken back), nor a1-2 (a code, read as such)."""
        g = s.cur
        return (i > 0 and t[i - 1].isspace() and s.prev != PLUS and g.qty is None and (g.verb or s.verb_seen)
                and g.named and t.isascii())

    @staticmethod
    def _taken_back(t: str, i: int, after_plus: bool = False) -> int:
        """Where the quantity taken back that ``t[i]`` (退, 减 or -) starts ends, or 0 when it starts none: 鸡蛋-1, 鸡蛋退两盒, 减一盒 (folded as "not an
        order now": never a buy, nor a cancel, since the ledger cancels a whole order and the buyer asked to
        take back part of one). Not the - of a range or a code (3-5, a1-2), nor a discount (满200减30, 减30元),
        nor a temperature or a score (-5度, -1分). Right after a ``+N`` (``after_plus``) it is taken back
        even with no space: ``+1-1`` is a +1 withdrawn, not a range."""
        m = _MINUS.match(t, i)
        if m is None or _int(m.group(1)) is None or t[m.end():m.end() + 1] in _MONEY:
            return 0
        if after_plus or not i:
            return m.end()
        return 0 if t[i - 1].isascii() and t[i - 1].isalnum() or t[i - 1] == "+" else m.end()

    @staticmethod
    def _read_digits(s: _Scan, t: str, i: int) -> tuple[int, object, int]:
        """A run of digits: a quantity, a link (3号), or noise (a time, a price, a date, 666, a phone)."""
        m = _NUM.match(t, i)
        assert m is not None
        digits = m.group(1)
        frac, unit, measure = m.group(2), m.group(5), m.group(4)
        if frac and measure and frac[0] == "." and frac.count(".") == 1 and frac[1:].isdigit():
            # 2.5盒: a fraction of a unit, refused (not read as one box by the verb alone); 2.0盒 is two.
            end = m.end()
            if _HALF.match(t, end):
                end += 1
            v = _digits_value(digits + frac)
            return MQTY if measure in _ORDER_MEASURE else QTY, v, end
        if unit in _MULT and (not frac or frac[0] == "." and frac[1:].isdigit()):
            mm = _MEASURE_AT.match(t, m.end())
            if mm is not None:
                # 1万盒, 3千盒, 2.5万盒: a quantity far above any limit, refused (not 3万 alone: money).
                v = QTY_CAP if len(digits) > 12 else int(float(digits + (frac or "")) * _MULT[unit])
                return MQTY if mm.group(1) in _ORDER_MEASURE else QTY, v, mm.end()
        if frac or unit:
            if frac and "." in frac or unit in _MONEY:
                s.flags |= 1 << TALK  # a price: 29.9, 68块
            return NOISE, None, m.end()
        if m.group(3):
            if (i and t[i - 1] == "月") or len(digits) > 3:
                return NOISE, None, m.end()
            return LINK, int(digits), m.end()
        if measure:
            # 两盒半 / 1盒半: half a unit too many to be a whole number, refused.
            if _HALF.match(t, m.end()):
                return MQTY if measure in _ORDER_MEASURE else QTY, _FRACTION, m.end() + 1
            # 10000盒, 100000000盒: a digit run of any length with a measure word is a quantity (refused
            # above max_qty), not noise that leaves a verb to buy one.
            return MQTY if measure in _ORDER_MEASURE else QTY, _whole(digits), m.end()
        e = _EXP.match(t, m.end())
        if e is not None:
            # 1e9: an exponent; with a measure word a quantity, else one right after a product or verb.
            v = _digits_value(digits + "e" + e.group(1))
            mm = _MEASURE_AT.match(t, e.end())
            if mm is not None:
                return MQTY if mm.group(1) in _ORDER_MEASURE else QTY, v, mm.end()
            return WEAKQTY, v, e.end()
        if len(digits) >= 5 and not _cheer(digits):
            # egg 1000000: a long digit run right after a product or a verb is a quantity (refused); alone or
            # elsewhere it stays noise (a phone number, an order number, 1111111).
            return WEAKQTY, _whole(digits), m.end()
        if _spammy(digits) or len(digits) > 4:
            return NOISE, None, m.end()
        return QTY, int(digits), m.end()

    @staticmethod
    def _read_cn_number(s: _Scan, t: str, i: int) -> tuple[int, object, int]:
        """A Chinese numeral: a link (三号), a quantity (两盒, or a weak 两 alone), or noise (三点, 五块)."""
        m = _CNQ.match(t, i)
        assert m is not None
        v = cn_number(m.group(1))
        if v is None or m.group(4):
            if m.group(4) in _MONEY:
                s.flags |= 1 << TALK
            return NOISE, None, m.end()
        if m.group(2):
            return (LINK, v, m.end()) if v < 1000 else (NOISE, None, m.end())
        if m.group(3):
            kind = MQTY if m.group(3) in _ORDER_MEASURE else QTY
            if _HALF.match(t, m.end()):
                return kind, _FRACTION, m.end() + 1  # 两个半, 一盒半: half a unit, refused
            return kind, v, m.end()
        return WEAKQTY, v, m.end()

    def _fold(self, s: _Scan, t: str, kind: int, payload: object, i: int, end: int) -> int:
        """Fold one token into the current group (or start a new one); return ``end``."""
        if kind == ALIAS:
            assert isinstance(payload, _Target)
            self._fold_alias(s, payload)
        elif kind == LINK:
            assert isinstance(payload, int)
            self._fold_link(s, payload)
        elif kind in (QTY, PLUS, WEAKQTY, MQTY):
            # 一 / 两 with no measure word count only right after a product, a variant or a verb.
            if kind == WEAKQTY and not (s.prev in _ADJACENT_TO_WEAK and t[s.prev_end:i].strip() == ""):
                s.residue += end - i
                return end
            assert isinstance(payload, int)
            if kind == QTY and payload in self._all_prices:  # one set lookup: most quantities are no price
                cur = s.cur
                if cur.qty is None and cur.sku is not None and payload in self._prices.get(cur.sku, ()):
                    cur.priced = True  # 蜂蜜68 with honey at 68: its price, not 68 jars (a quantity may follow)
                    return end
                if t.startswith("的", end) or i and t[i - 1] in "$¥￥":
                    return end  # 68的蜂蜜, $68 honey: a price naming the product, not a quantity
            _fold_qty(s, kind, payload)
        elif kind in (VERB, SOLO):
            s.cur.verb = True
            s.verb_seen = True
            s.flags |= 1 << kind
        elif kind == EACH:
            s.each_pending = True
        elif kind == NOISE:
            s.residue += end - i
        elif kind in (TALK, LOOK):
            s.residue += end - i
            s.flags |= 1 << TALK | 1 << kind
        else:
            s.flags |= 1 << kind
        if kind != FILL and kind != NOISE:
            s.prev, s.prev_end = kind, end
        return end

    @staticmethod
    def _fold_alias(s: _Scan, tgt: _Target) -> None:
        cur = s.cur
        vname = tgt.variant_of(cur.sku) if cur.sku is not None else None
        value = tgt.value_of(cur.sku) if cur.sku is not None and vname is None else None
        if value is not None:
            # An option value of the product being read (A12 黑 L): a second value of the same option
            # (黑M 粉L) starts another item of the same product.
            if _clashes(cur.vals, tgt):
                sku = cur.sku
                cur = s.new_group()
                cur.sku = sku
            cur.vals = (*cur.vals, tgt)
        elif vname is not None:
            if cur.variant is not None and cur.variant != vname:
                sku = cur.sku
                cur = s.new_group()
                cur.sku = sku
            cur.variant = vname
        elif tgt.sku is not None:
            # A variant alias and a quantity before the product belong to it ("要2小罐菊花茶") when the
            # variant is one of its own; otherwise they were an item of their own ("白+1 鸡蛋").
            if cur.named or (cur.var_target is not None and cur.qty is not None
                             and cur.var_target.variant_of(tgt.sku) is None):
                cur = s.new_group()
            _bind(cur, tgt.sku)
            cur.coded = tgt.coded
            if tgt.variants and cur.variant is None:
                cur.variant = tgt.variant_of(tgt.sku)  # a variant code: product and variant
        elif tgt.values:
            if cur.sku is not None and cur.qty is None and not tgt.variants:
                # A value of another product right after this one's code or name (B7 黑 M) does not switch
                # the product: the code or name the buyer typed wins over a colour word.
                s.flags |= 1 << ALIAS
                return
            # Option values before the product, or with none (黑色L码, "pink one in medium"): they add up.
            if cur.named or (cur.vals and _clashes(cur.vals, tgt)) or (
                    not cur.vals and (cur.qty is not None or cur.var_target is not None)):
                cur = s.new_group()
            cur.vals = (*cur.vals, tgt)
            if tgt.variants and cur.var_target is None:
                cur.var_target = tgt
        else:
            if cur.named or cur.var_target is not None or cur.vals:
                cur = s.new_group()
            cur.var_target = tgt
        s.flags |= 1 << ALIAS

    def _fold_link(self, s: _Scan, number: int) -> None:
        cur = s.cur
        if cur.named or cur.var_target is not None and cur.qty is not None:
            cur = s.new_group()
        sku = self._by_link.get(number)
        if sku is None:
            cur.link = number
        else:
            _bind(cur, sku)
            cur.coded = True
        s.flags |= 1 << ALIAS

    def _ascii(self, t: str, i: int, first: bool, fuzzy: bool) -> tuple[int, object, int]:
        """One token starting with a letter (or ``*``): a phrase, an ``x3``, a word, or a misspelt alias."""
        ch = t[i]
        if ch == "x" or ch == "*":
            m = _XQ.match(t, i)
            if m is not None:
                v = _int(m.group(1))
                if v is not None:
                    return PLUS, v, m.end()  # "x2" alone is a bare quantity, like "+2"
            if ch == "*":
                return FILL, None, i + 1
        elif ch == "l" and (t.startswith("link", i) or t.startswith("lnk", i)):
            m = _LINK_AFTER.match(t, i)
            if m is not None:
                v = _int(m.group(1))
                if v is not None:
                    return LINK, v, m.end()
        m = _WORD.match(t, i)
        assert m is not None
        w = m.group()
        end = m.end()
        cands = self._phrases.get(w.partition("'")[0] if "'" in w else w)
        if cands is not None:
            n = len(t)
            for lit, k, p in cands:
                if t.startswith(lit, i):
                    e = i + len(lit)
                    # A seller code runs into its quantity in quick typing: a1x2 is a1 x2.
                    if e >= n or not (t[e].isascii() and t[e].isalnum()) or (
                            t[e] == "x" and lit[-1].isdigit() and _XQ.match(t, e) is not None):
                        return k, p, e
        if self._has_codes and end < len(t) and "0" <= t[end] <= "9":
            m = _CODE_SHAPE.match(t, i)
            if m is not None:
                return LINK, -1, m.end()  # shaped like a code, but not one of the catalogue's
        if first and w in self._ask_first:
            return ASKG, None, end
        hit = self._words.get(w)
        if hit is not None:
            return hit[0], hit[1], end
        if _DOUBLED.search(w) is not None:
            hit = self._collapsed.get(_DOUBLED.sub(r"\1", w))
            if hit is not None:
                return hit[0], hit[1], end
        if len(w) >= 4 and w not in _FUZZY_STOP:
            if not fuzzy:
                return _FUZZ, None, end
            tgt = self._fuzzy_swap.get(w) if len(w) == 4 else None
            if tgt is None:
                tgt = self._fuzzy(w)
            if tgt is not None:
                return ALIAS, tgt, end
        return NOISE, None, end

    def _fuzzy(self, w: str) -> _Target | None:
        found: set[_Target] = set()
        cands: set[str] = set()
        cands |= self._fuzzy_del.get(w, set())
        for j in range(len(w)):
            d = w[:j] + w[j + 1:]
            if d in self._fuzzy_exact:
                cands.add(d)
            cands |= self._fuzzy_del.get(d, set())
        for alias in cands:
            if _one_edit(w, alias):
                found |= self._fuzzy_exact[alias]
        if len({(x.sku, x.variants) for x in found}) == 1:
            return next(iter(found))
        return None

    # ------------------------------------------------------------------------------------------------

    def _decide(self, t: str, groups: list[_Group], flags: int, residue: int,
                featured: str | None) -> ParseResult:
        if flags & (1 << HOMOPHONE) and not flags & _HOMOPHONE_SIGNALS:
            return NOTHING  # a typo guessed from its sound counts only next to a clear signal
        named = [g for g in groups if g.picks]
        if flags & (1 << ASKG | 1 << ASKC):
            if flags & (1 << ASKC):
                return self._result(Intent.ASK, self._listed(named, featured, ask=True))
            # "can we see the black one" asks to look, not about the product.
            firm = [g for g in named if g.firm]
            listed = self._listed(firm, featured, ask=True) if firm and not flags & (1 << LOOK) else ()
            # A generic question ("?", 吗) is an ask only when it names something the catalogue has: 白毛？
            # (white hair?) names a colour of no product in particular.
            return self._result(Intent.ASK, listed) if listed else NOTHING
        if flags & (1 << CANCEL):
            if _NOT_CANCEL.search(t):
                return NOTHING
            # A cancel that names nothing cancels the buyer's latest order: not when an English comment also
            # says words nothing explains ("cancel culture lol"), which is talk about something else. (Chinese
            # cancels carry such words often: 刚才的不要了.)
            if residue and not named and t.isascii():
                return NOTHING
            return self._result(Intent.CANCEL, self._listed(named, featured))
        if flags & (1 << RELEASE) and _RELEASE_ALONE.fullmatch(t):
            return self._result(Intent.CANCEL, self._listed(named, featured))  # "pass po": gives up a claim
        if flags & (1 << PAST):
            return NOTHING
        if flags & (1 << NEG):
            # 我不要鸡蛋了 ("I don't want the eggs any more") cancels them; a negation ending in 了 that names
            # nothing (不要太好吃了, "so tasty!") is praise, not a cancel of the buyer's latest order.
            if any(g.firm for g in named) and _END_LE.search(t):
                return self._result(Intent.CANCEL, self._listed(named, featured))
            return NOTHING

        if flags & (1 << TALK) and not flags & (1 << VERB | 1 << SOLO | 1 << PLUS):
            return NOTHING
        items: list[Item] = []
        any_named = False
        for g in groups:
            if not g.picks:
                continue
            any_named = True
            if g.link == -1 and residue and not (g.verb or g.plus):
                continue  # shaped like a seller code the catalogue lacks, amid other words: "p3ngw!n5"
            if g.qty is None and not g.verb and not g.plus and not (
                    # A seller code (or link) with option values and nothing else claims one: "AA navy L".
                    g.coded and not residue and (g.vals or g.variant is not None and g.sku in self._options)):
                continue
            item = self._item(g, featured)
            if item is not None:
                items.append(item)
        if items:
            if ("一" in t or "1" in t) and _PACK_FACT.search(t):  # the pack form starts with a 一 or 1
                return NOTHING
            return self._result(Intent.BUY, tuple(items))
        if any_named or residue:
            return NOTHING

        # Nothing named: the featured product, for a comment that says nothing but a buy.
        solo = bool(flags & (1 << SOLO))
        qty_groups = [g for g in groups if g.qty is not None]
        if not qty_groups:
            if solo:
                return self._result(Intent.BUY, (self._featured_item(featured, None, 1),))
            return NOTHING
        g = qty_groups[0]
        if len({x.qty for x in qty_groups}) > 1 and not all(x.plus for x in qty_groups):
            return NOTHING  # "2 3": two different numbers and no product is not an order
        verbal = solo or any(x.verb for x in qty_groups) or (len(qty_groups) == 1 and g.measured)
        if not verbal:
            if not self.bare_plus_one:
                return NOTHING
            if not g.plus and t.strip(" !~.,…") != "1":
                return NOTHING
        return self._result(Intent.BUY, (self._featured_item(featured, None, g.qty if g.qty is not None else 1),))

    def _qty_reason(self, qty: int) -> Reason | None:
        return Reason.BAD_QUANTITY if qty <= 0 or qty > self.max_qty else None

    def _featured_item(self, featured: str | None, variant: str | None, qty: int) -> Item:
        if featured is None or featured not in self._by_sku:
            return self._mk(None, None, qty, Reason.NOT_AVAILABLE)
        if variant is None and featured in self._options:
            variant = self._options[featured].get((), (None, None))[0]  # only one variant: that one
        return self._mk(featured, variant, qty, self._qty_reason(qty))

    def _compose(self, sku: str, vals: tuple[_Target, ...], variant: str | None) -> tuple[str | None, Reason | None]:
        """The variant of an options product that the values named single out (docs/contract.md §1): None
        when several fit (the ledger then answers needs_variant), ``NOT_AVAILABLE`` when none does."""
        table = self._options.get(sku)
        if table is None or variant is not None:
            return variant, None
        named: dict[str, str] = {}
        for tgt in vals:
            ov = tgt.value_of(sku)
            if ov is not None:
                named.setdefault(ov[0], ov[1])
        key = tuple(sorted(named.items()))
        hit = table.get(key)
        if hit is None:
            return None, Reason.NOT_AVAILABLE  # a combination the product does not come in
        return hit

    def _resolve_values(self, vals: tuple[_Target, ...], featured: str | None) -> str | None:
        """The product of option values named without one: the featured product when it has them all, else
        the only product that has them all (not for one-character words alone: 黑, M)."""
        if featured is not None:
            if all(t.value_of(featured) is not None for t in vals):
                return featured
            if any(t.variant_of(featured) is not None for t in vals):
                return None  # "large" is also a variant of the featured product: that reading wins
            if featured in self._options and any(t.value_of(featured) is not None for t in vals):
                return featured  # 黑色 M码 with the tee featured: M is the tee's, 黑色 another product's
        skus = {s for s, _o, _v in vals[0].values if all(t.value_of(s) is not None for t in vals)}
        if len(skus) == 1 and not all(t.short for t in vals):
            return next(iter(skus))
        return None

    def _resolve_variant(self, tgt: _Target, featured: str | None) -> tuple[str, str] | None:
        """The product of a variant named without one: the featured product, else the only one that has it
        (for aliases of two characters or more)."""
        if featured is not None:
            v = tgt.variant_of(featured)
            if v is not None:
                return featured, v
        if len(tgt.variants) == 1 and not tgt.short:
            return tgt.variants[0]
        return None

    def _item(self, g: _Group, featured: str | None) -> Item | None:
        qty = g.qty if g.qty is not None else 1
        sku = g.sku
        if g.priced and g.qty is None and not g.verb:
            return None  # 蜂蜜68: the product and its price, talk rather than an order (要蜂蜜68的 buys one)
        if sku is None and g.vals and g.link is None:
            sku = self._resolve_values(g.vals, featured)
        if sku is not None:
            variant, reason = self._compose(sku, g.vals, g.variant)
            return self._mk(sku, variant, qty, reason or self._qty_reason(qty))
        if g.link is not None:
            return self._mk(None, None, qty, Reason.UNKNOWN_PRODUCT)
        if g.var_target is not None:
            r = self._resolve_variant(g.var_target, featured)
            if r is None:
                return None
            return self._mk(r[0], r[1], qty, self._qty_reason(qty))
        return None

    def _listed(self, named: list[_Group], featured: str | None, *, ask: bool = False) -> tuple[Item, ...]:
        """Items of an ask or cancel: each product (and variant) named, once. A question has no quantity
        (in 多少钱一瓶 the 一瓶 is the unit priced), so ask items have ``qty=0``."""
        out: list[Item] = []
        for g in named:
            qty = g.qty if g.qty is not None and not ask else 0
            sku = g.sku
            if sku is None and g.vals and g.link is None:
                sku = self._resolve_values(g.vals, featured)
            if sku is not None:
                out.append(self._mk(sku, self._compose(sku, g.vals, g.variant)[0], qty))
            elif g.link is not None:
                out.append(self._mk(None, None, qty, Reason.UNKNOWN_PRODUCT))
            elif g.var_target is not None:
                r = self._resolve_variant(g.var_target, featured)
                if r is not None:
                    out.append(self._mk(r[0], r[1], qty))
        if len(out) > 1:
            seen: dict[tuple[str | None, str | None], Item] = {}
            for it in out:
                if it.sku is None or (it.sku, it.variant) not in seen:
                    seen[(it.sku, it.variant) if it.sku is not None else (None, str(len(seen)))] = it
            out = list(seen.values())
        return tuple(out)

    # Results are immutable values and the same few recur (egg-10 x 1, x 2 ...): building a frozen dataclass
    # costs more than a dict lookup, so each distinct item and result is built once (bounded).

    def _mk(self, sku: str | None, variant: str | None = None, qty: int = 1,
            reason: Reason | None = None) -> Item:
        key = (sku, variant, qty, reason)
        it = self._items.get(key)
        if it is None:
            it = Item(sku, variant, qty, reason)
            if len(self._items) < _INTERN_SIZE:
                self._items[key] = it
        return it

    def _result(self, intent: Intent, items: tuple[Item, ...]) -> ParseResult:
        if len(items) > MAX_ITEMS:
            return NOTHING  # 鸡蛋来两盒 pasted 400 times is a flood, not 400 orders
        key = (intent, items)
        r = self._results.get(key)
        if r is None:
            r = ParseResult(intent, items)
            if len(self._results) < _INTERN_SIZE:
                self._results[key] = r
        return r
