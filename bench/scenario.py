"""Seeded live-sale scenarios for the peak-traffic benchmarks.

A scenario is a catalogue plus every comment of one sale, in arrival order, with a ground-truth
:class:`Label` for each (what the generator meant it to be). The shape follows the Tonggu county sale of
15 March 2020 (``../shared/seeds``): 10,000 boxes of free-range eggs, 3,000 kg of rice noodles, honey,
smoked bamboo shoots and chrysanthemum tea in two sizes, watched by tens of thousands of viewers whose
comments are mostly greetings, questions and emoji.

Scenarios (``generate(name, seed=..., scale=...)``):

``flash``
    five minutes of warm-up chatter, the host's "3, 2, 1, link is up", then 50,000 buy comments for the
    10,000 boxes of eggs inside five seconds, among a storm of "抢到了吗" chatter, then a tail.
``steady``
    ten minutes of an ordinary sale: ~200 comments/s, one in eight a buy spread across the catalogue,
    a few cancels and many questions.
``simulcast``
    the flash moment on three platforms at once (douyin, bilibili, twitch), one inventory; twitch chat is
    in English.

``scale`` multiplies every count (comments, viewers, stock), so ``scale=0.01`` is a 1 % model of the same
sale that a test can run in a blink. Generation is pure: the same ``(name, seed, scale)`` gives the same
comments, byte for byte.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from livecart.core.records import Comment, Intent

__all__ = ["SCENARIOS", "Label", "ProductSpec", "Scenario", "VariantSpec", "flash_buys", "generate"]

#: The evening of the Tonggu sale (2020-03-15, 20:00 China time) as a Unix timestamp.
T0 = 1584273600.0

#: Qty distribution of buy comments: most buyers want one box, a few want many (10 > limit 5).
_QTY = (1, 1, 1, 1, 1, 1, 2, 2, 2, 3, 3, 5, 10)
_CN_NUM = {1: "一", 2: "两", 3: "三", 4: "四", 5: "五", 6: "六", 7: "七", 8: "八", 9: "九", 10: "十"}


@dataclass(frozen=True, slots=True)
class VariantSpec:
    name: str
    aliases: tuple[str, ...]
    stock: int
    presale: int = 0


@dataclass(frozen=True, slots=True)
class ProductSpec:
    sku: str
    name: str
    aliases: tuple[str, ...]
    link: int
    code: str
    price: float
    stock: int = 0
    limit: int = 0
    presale: int = 0
    variants: tuple[VariantSpec, ...] = ()

    @property
    def units(self) -> dict[str, tuple[int, int]]:
        """Stock and presale per ledger key: ``sku`` or ``sku/variant`` (the report's keys, docs/contract.md §5)."""
        if self.variants:
            return {f"{self.sku}/{v.name}": (v.stock, v.presale) for v in self.variants}
        return {self.sku: (self.stock, self.presale)}


@dataclass(frozen=True, slots=True)
class Label:
    """What the generator meant a comment to be: the intent and, for a buy or cancel, the one item."""

    intent: Intent
    sku: str | None = None
    variant: str | None = None
    qty: int = 0


NONE = Label(Intent.NONE)


def _catalogue(scale: float) -> tuple[ProductSpec, ...]:
    def s(n: int) -> int:
        return max(1, round(n * scale))

    return (
        ProductSpec("egg-10", "Free-range eggs, box of 10", ("鸡蛋", "土鸡蛋", "雞蛋", "蛋", "egg", "eggs"),
                    1, "A1", 29.9, stock=s(10_000), limit=5, presale=s(2_000)),
        ProductSpec("noodle-1kg", "Rice noodles, 1 kg", ("米粉", "粉", "米粉条", "rice noodles", "noodles"),
                    2, "A2", 19.8, stock=s(3_000), limit=10),
        ProductSpec("tea-chry", "Chrysanthemum tea", ("菊花茶", "菊花", "茶", "chrysanthemum tea", "tea"),
                    3, "A3", 38.0, variants=(
                        VariantSpec("50g", ("50克", "小罐", "小", "small"), s(300)),
                        VariantSpec("100g", ("100克", "大罐", "大", "large"), s(200), s(100)))),
        ProductSpec("honey-500", "Wild honey, 500 g jar", ("蜂蜜", "土蜂蜜", "蜜", "honey"),
                    4, "A4", 68.0, stock=s(1_000), limit=3, presale=s(200)),
        ProductSpec("bamboo", "Smoked bamboo shoots, 250 g", ("笋干", "竹笋", "烟笋", "bamboo shoots", "bamboo"),
                    5, "A5", 25.0, stock=s(1_000)),
    )


@dataclass(frozen=True, slots=True)
class Scenario:
    """One generated sale. ``comments`` and ``labels`` are parallel, in arrival order (``ts`` ascending)."""

    name: str
    seed: int
    scale: float
    featured: str
    products: tuple[ProductSpec, ...]
    comments: tuple[Comment, ...]
    labels: tuple[Label, ...]
    #: ``(start, end)`` ts of the flash window, or None for a scenario without one.
    flash: tuple[float, float] | None = None

    def __repr__(self) -> str:
        return (f"<Scenario {self.name} seed={self.seed} scale={self.scale}: {len(self.comments):,} comments, "
                f"{self.buy_count:,} buys>")

    @property
    def buy_count(self) -> int:
        return sum(1 for lab in self.labels if lab.intent is Intent.BUY)

    @property
    def units(self) -> dict[str, tuple[int, int]]:
        """``{ledger key: (stock, presale)}`` over the whole catalogue."""
        out: dict[str, tuple[int, int]] = {}
        for p in self.products:
            out.update(p.units)
        return out

    @property
    def duration(self) -> float:
        return self.comments[-1].ts - self.comments[0].ts if self.comments else 0.0

    def product(self, sku: str) -> ProductSpec:
        for p in self.products:
            if p.sku == sku:
                return p
        raise KeyError(sku)

    def config_text(self, *, journal: str | Path = "livecart.db", durability: str = "fsync",
                    adapters: Sequence[Mapping[str, Any]] = (), hold_minutes: float = 30,
                    storage: Mapping[str, Any] | None = None) -> str:
        """The stream config (docs/contract.md §1) of this scenario as TOML text; ``storage`` adds keys to
        ``[storage]`` (``snapshot_events``, say)."""
        lines = [
            f"# Generated by bench.scenario: {self.name}, seed {self.seed}, scale {self.scale}",
            "[stream]",
            f"name = {_q(f'bench {self.name}')}",
            f"featured = {_q(self.featured)}",
            f"hold_minutes = {hold_minutes}",
            "bare_plus_one = true",
            "",
            "[storage]",
            f"path = {_q(str(journal))}",
            f"durability = {_q(durability)}",
        ]
        lines += [f"{k} = {_value(v)}" for k, v in (storage or {}).items()]
        for a in adapters:
            lines += ["", "[[adapters]]"] + [f"{k} = {_value(v)}" for k, v in a.items()]
        for p in self.products:
            lines += ["", "[[products]]", f"sku = {_q(p.sku)}", f"name = {_q(p.name)}",
                      f"aliases = {_value(list(p.aliases))}", f"link = {p.link}", f"code = {_q(p.code)}",
                      f"price = {p.price}"]
            if not p.variants:
                lines.append(f"stock = {p.stock}")
            if p.limit:
                lines.append(f"limit = {p.limit}")
            if p.presale:
                lines.append(f"presale = {p.presale}")
            for v in p.variants:
                lines += ["  [[products.variants]]", f"  name = {_q(v.name)}",
                          f"  aliases = {_value(list(v.aliases))}", f"  stock = {v.stock}"]
                if v.presale:
                    lines.append(f"  presale = {v.presale}")
        return "\n".join(lines) + "\n"

    def write_config(self, directory: str | Path, *, journal: str | Path | None = None,
                     durability: str = "fsync", adapters: Sequence[Mapping[str, Any]] = (),
                     filename: str = "stream.toml", storage: Mapping[str, Any] | None = None) -> Path:
        """Write the stream config into ``directory`` (journal ``livecart.db`` there unless given)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        path = d / filename
        j = Path(journal) if journal is not None else d / "livecart.db"
        path.write_text(self.config_text(journal=j, durability=durability, adapters=adapters, storage=storage),
                        encoding="utf-8")
        return path

    def write_jsonl(self, path: str | Path) -> Path:
        """Write the comments as JSON Lines (docs/contract.md §2), one per line, in arrival order."""
        p = Path(path)
        with p.open("wb") as f:
            for c in self.comments:
                f.write(orjson.dumps(c.to_dict()))
                f.write(b"\n")
        return p


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return _q(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


# --- what viewers type -------------------------------------------------------------------------------------

#: Chatter with no digits and no product alias, so it can never be read as a buy.
_CHATTER_ZH = (
    "主播好！", "来了来了", "哈哈哈哈", "好看", "支持家乡", "老铁们好", "从广东来的", "关注了", "主播辛苦了",
    "画面卡了", "声音好听", "这个县我去过", "加油！", "家乡的味道", "想家了", "好热闹", "刚进来", "点赞点赞",
    "谢谢主播", "晚上好", "这是哪里", "主播是县长吗", "厉害了", "太香了吧", "看起来不错", "已经下单了",
    "抢到了吗", "手慢了", "网卡了", "怎么付款", "我妈让我买的", "冲冲冲", "好实在", "必须支持",
)
_CHATTER_EN = (
    "hello from Texas", "first time here", "love this stream", "lol", "so cute", "the host is funny",
    "what is this place", "greetings from Berlin", "nice", "hype", "can't wait", "so many people",
    "my internet is lagging", "this looks great", "GG", "wow", "following now", "good evening everyone",
)
_EMOJI = ("😂😂😂", "👍", "❤️❤️", "🔥🔥🔥", "👏👏", "🎉", "😍", "🙏", "💪💪", "🌸", "[赞][赞]", "[玫瑰]")
_PARTICLE = ("啊", "呀", "哦", "吧", "～", "！！", "!!!", "。", "哈哈", "嘿嘿")
_SURNAMES = ("张", "李", "王", "刘", "陈", "杨", "黄", "赵", "周", "吴", "徐", "孙", "胡", "朱", "高", "林", "何", "郭")
_GIVEN = ("伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超", "秀",
          "霞", "平", "刚", "桂", "英", "华", "玉", "兰", "梅", "红", "春", "燕")
_BUY_PRE_ZH = ("主播", "主播我", "我", "快", "抢")
_BUY_POST_ZH = ("", "谢谢", "谢谢主播", "！", "！！", "～", "快快快", "冲", "给我留着")
_BUY_PRE_EN = ("hey ", "ok ", "yes ")
_BUY_POST_EN = ("", " please", " thanks", "!", "!!", " pls")
_COUNTDOWN = ("三！", "二！", "一！", "准备好了", "来了来了来了", "冲！", "手速准备", "ready")
_ASK_ZH = ("{a}多少钱", "{a}还有吗", "{a}怎么卖", "{a}包邮吗", "{a}什么时候发货", "{a}保质期多久")
_ASK_EN = ("how much is the {a}?", "is the {a} still available?", "does the {a} ship abroad?")

#: Buy phrasings per language: (template, needs) where needs says what the template names.
#: ``{a}`` a product alias, ``{n}`` an Arabic quantity, ``{c}`` a Chinese quantity, ``{l}`` a link number,
#: ``{k}`` a product code, ``{v}`` a variant alias. Templates without a product buy the featured product.
_BUY_ZH = (
    "{a}来{c}盒", "{l}号链接拍{n}", "我要{c}盒{a}", "{a}要{n}份", "{l}号链接要{n}", "拍{n}单{a}",
    "{a}{n}", "来{n}份{a}", "{a}+{n}", "{l}号拍{n}",
)
_BUY_ZH_BARE = ("+1", "扣1", "要", "1", "扣1扣1")
_BUY_EN = (
    "SOLD {k} {n}", "{n} {a} please", "link {l} x{n}", "#{l} {n}", "I'll take {n} {a}", "{a} x{n}",
    "sold {a} {n}", "{k} {n}",
)
_BUY_EN_BARE = ("+1", "mine", "1", "MINE")
_CANCEL_ZH = ("{a}不要了", "取消{a}", "退掉{a}")
_CANCEL_EN = ("cancel {a}", "cancel my {a}")
_ZH_NAMES = ("张三", "李四", "王五", "小红", "老刘", "阿梅", "大军", "秋菊", "小芳", "老陈", "阿强", "燕子")
_EN_NAMES = ("sam", "kate", "leo", "mia", "jay", "zoe", "max", "ivy", "ben", "ada")


class _Gen:
    """Draws comments for one scenario from one seeded generator."""

    def __init__(self, rng: random.Random, products: tuple[ProductSpec, ...], featured: str, viewers: int) -> None:
        self.rng = rng
        self.products = products
        self.by_sku = {p.sku: p for p in products}
        self.featured = featured
        self.viewers = max(20, viewers)
        self.serial = 0
        self.comments: list[Comment] = []
        self.labels: list[Label] = []
        self.rooms = {"douyin": "7312", "bilibili": "21452505", "twitch": "tonggu_live"}

    def _emit(self, platform: str, ts: float, text: str, label: Label, user: int | None = None) -> None:
        self.serial += 1
        u = self.rng.randrange(self.viewers) if user is None else user
        prefix = platform[:2]
        names = _EN_NAMES if platform == "twitch" else _ZH_NAMES
        name = f"{names[u % len(names)]}{u}"
        self.comments.append(Comment(platform, self.rooms[platform], f"{prefix}-{self.serial}",
                                     f"{prefix}-u{u}", name, text, round(ts, 6)))
        self.labels.append(label)

    def chatter(self, platform: str, ts: float, pool: Sequence[str] = ()) -> None:
        rng = self.rng
        r = rng.random()
        en = platform == "twitch"
        if pool and r < 0.3:
            text = rng.choice([t for t in pool if t.isascii()] if en else pool)
        elif r < 0.45:
            text = self._emoji(en) * rng.randint(1, 3)
        elif en or r > 0.97:
            text = rng.choice(_CHATTER_EN)
            if rng.random() < 0.3:
                text = f"@{rng.choice(_EN_NAMES)}_{rng.choice(_EN_NAMES)} {text}"
        else:
            text = rng.choice(_CHATTER_ZH)
            if rng.random() < 0.25:
                text = f"@{self._zh_name()} {text}"
            if rng.random() < 0.3:
                text += rng.choice(_PARTICLE)
        if rng.random() < 0.3:
            text += self._emoji(en)
        self._emit(platform, ts, text, NONE)

    def _emoji(self, english: bool) -> str:
        # Bracketed stickers ("[赞]") are how douyin/bilibili render theirs; twitch has only Unicode emoji.
        return self.rng.choice(_EMOJI[:10] if english else _EMOJI)

    def _zh_name(self) -> str:
        return self.rng.choice(_SURNAMES) + self.rng.choice(_GIVEN) + (self.rng.choice(_GIVEN) if self.rng.random() < 0.5 else "")

    def _decorate(self, text: str, *, english: bool) -> str:
        """What real buyers add around the order: thanks, urgency, emoji (never a digit)."""
        rng = self.rng
        r = rng.random()
        if r < 0.5:
            return text
        pre, post = (_BUY_PRE_EN, _BUY_POST_EN) if english else (_BUY_PRE_ZH, _BUY_POST_ZH)
        if r < 0.6:
            text = rng.choice(pre) + text
        return text + rng.choice(post) + (self._emoji(english) if rng.random() < 0.3 else "")

    def ask(self, platform: str, ts: float) -> None:
        p = self.rng.choice(self.products)
        if platform == "twitch":
            a = self._alias(p, english=True)
            text = self.rng.choice(_ASK_EN).format(a=a)
        else:
            text = self.rng.choice(_ASK_ZH).format(a=self._alias(p, english=False))
        self._emit(platform, ts, text, Label(Intent.ASK, p.sku))

    def _alias(self, p: ProductSpec, *, english: bool) -> str:
        # Long aliases only: one-character aliases ("蛋", "粉") read as buys only with a verb around them.
        pool = [a for a in p.aliases if a.isascii() == english and len(a) > 1]
        return self.rng.choice(pool)

    def buy(self, platform: str, ts: float, sku: str, user: int | None = None) -> None:
        p = self.by_sku[sku]
        rng = self.rng
        en = platform == "twitch"
        variant: str | None = None
        if p.sku == self.featured and rng.random() < 0.35:
            # Bare forms buy only when alone (docs/contract.md §1 bare_plus_one): no decoration.
            text = rng.choice(_BUY_EN_BARE if en else _BUY_ZH_BARE)
            self._emit(platform, ts, text, Label(Intent.BUY, p.sku, None, 1), user)
            return
        qty = rng.choice(_QTY)
        template = rng.choice(_BUY_EN if en else _BUY_ZH)
        text = template.format(a=self._alias(p, english=en), n=qty, c=_CN_NUM[qty], l=p.link, k=p.code)
        if p.variants:
            v = rng.choice(p.variants)
            variant = v.name
            va = [a for a in v.aliases if a.isascii() == en and len(a) > 1]
            if text[-1].isdigit():
                # "要2" + "100克" would read as 2100 grams: after a number, name the size in words.
                va = [a for a in va if not a[0].isdigit()] or va
            text = f"{text} {rng.choice(va)}" if en else f"{text}{rng.choice(va)}"
        self._emit(platform, ts, self._decorate(text, english=en), Label(Intent.BUY, p.sku, variant, qty), user)

    def cancel(self, platform: str, ts: float, sku: str) -> None:
        p = self.by_sku[sku]
        en = platform == "twitch"
        text = self.rng.choice(_CANCEL_EN if en else _CANCEL_ZH).format(a=self._alias(p, english=en))
        self._emit(platform, ts, text, Label(Intent.CANCEL, p.sku, None, 0))

    def other_sku(self) -> str:
        return self.rng.choice([p.sku for p in self.products if p.sku != self.featured])

    def finish(self) -> tuple[tuple[Comment, ...], tuple[Label, ...]]:
        order = sorted(range(len(self.comments)), key=lambda i: (self.comments[i].ts, i))
        return tuple(self.comments[i] for i in order), tuple(self.labels[i] for i in order)


def _n(count: float, scale: float) -> int:
    return max(1, round(count * scale))


def _flash(g: _Gen, scale: float, platforms: Sequence[tuple[str, float]]) -> tuple[float, float]:
    """Warm-up, countdown, the five-second flash, tail. ``platforms`` are (name, share of traffic)."""
    rng = g.rng
    names = [p for p, _ in platforms]
    weights = [w for _, w in platforms]

    def plat() -> str:
        return rng.choices(names, weights)[0]

    warm = 300.0
    for _ in range(_n(60_000, scale)):  # five minutes at ~200/s: greetings, questions, emoji
        ts = T0 + rng.uniform(0, warm)
        if rng.random() < 0.12:
            g.ask(plat(), ts)
        else:
            g.chatter(plat(), ts)
    start = T0 + warm + 5.0
    for _ in range(_n(3_000, scale)):  # "3, 2, 1" typed back at the host
        g.chatter(plat(), start - rng.uniform(0, 5.0), _COUNTDOWN)
    for _ in range(_n(50_000, scale)):
        # Front-loaded: half of the buys land in the first ~0.8 s after "link is up".
        ts = start + 5.0 * rng.betavariate(1.0, 3.0)
        sku = g.featured if rng.random() < 0.9 else g.other_sku()
        g.buy(plat(), ts, sku)
    for _ in range(_n(20_000, scale)):
        ts = start + 5.0 * rng.random()
        if rng.random() < 0.1:
            g.ask(plat(), ts)
        else:
            g.chatter(plat(), ts)
    for _ in range(_n(10_000, scale)):  # the tail: "抢到了吗", "手慢了", a few late buys
        ts = start + 5.0 + rng.uniform(0, 25.0)
        r = rng.random()
        if r < 0.1:
            g.buy(plat(), ts, g.featured if rng.random() < 0.5 else g.other_sku())
        elif r < 0.2:
            g.ask(plat(), ts)
        else:
            g.chatter(plat(), ts)
    return (start, start + 5.0)


def _gen_flash(rng: random.Random, scale: float) -> tuple[_Gen, tuple[float, float] | None]:
    g = _Gen(rng, _catalogue(scale), "egg-10", _n(40_000, scale))
    return g, _flash(g, scale, [("douyin", 1.0)])


def _gen_simulcast(rng: random.Random, scale: float) -> tuple[_Gen, tuple[float, float] | None]:
    g = _Gen(rng, _catalogue(scale), "egg-10", _n(60_000, scale))
    return g, _flash(g, scale, [("douyin", 0.5), ("bilibili", 0.25), ("twitch", 0.25)])


def _gen_steady(rng: random.Random, scale: float) -> tuple[_Gen, tuple[float, float] | None]:
    g = _Gen(rng, _catalogue(scale), "egg-10", _n(30_000, scale))
    span = 600.0
    skus = [p.sku for p in g.products]
    weights = [5.0, 2.0, 1.0, 1.5, 1.0]
    for _ in range(_n(120_000, scale)):
        ts = T0 + rng.uniform(0, span)
        r = rng.random()
        if r < 0.125:
            g.buy("douyin", ts, rng.choices(skus, weights)[0])
        elif r < 0.13:
            g.cancel("douyin", ts, rng.choices(skus, weights)[0])
        elif r < 0.25:
            g.ask("douyin", ts)
        else:
            g.chatter("douyin", ts)
    return g, None


SCENARIOS: dict[str, Callable[[random.Random, float], tuple[_Gen, tuple[float, float] | None]]] = {
    "flash": _gen_flash,
    "steady": _gen_steady,
    "simulcast": _gen_simulcast,
}


def generate(name: str, *, seed: int = 1, scale: float = 1.0) -> Scenario:
    """Generate scenario ``name`` (``flash``, ``steady`` or ``simulcast``). Raises ValueError otherwise."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; expected one of {', '.join(SCENARIOS)}")
    if not scale > 0:
        raise ValueError(f"scale must be above 0, got {scale}")
    rng = random.Random(f"livecart-bench/{name}/{seed}")
    g, flash = SCENARIOS[name](rng, scale)
    comments, labels = g.finish()
    return Scenario(name, seed, scale, g.featured, g.products, comments, labels, flash)


def flash_buys(n: int, *, seed: int = 1) -> Scenario:
    """The flash moment alone: ``n`` buy comments inside five seconds, every one a buy (``flash-buys``).

    The full-size Tonggu catalogue (10,000 boxes of eggs, limit 5, presale 2,000) and the flash scenario's
    mix: 90 % of buys for the featured eggs, the rest spread over the catalogue, in the same phrasings; one
    viewer per 1.25 comments, so repeat buyers hit their limit. Past the first ~15,000 units nearly every
    comment is a rejection (sold out or limit), which is what a flash sale's peak mostly is. Pure: the
    same ``(n, seed)`` gives the same comments.
    """
    if n < 1:
        raise ValueError(f"n must be 1 or more, got {n}")
    rng = random.Random(f"livecart-bench/flash-buys/{seed}")
    g = _Gen(rng, _catalogue(1.0), "egg-10", max(40_000, round(n / 1.25)))
    start = T0 + 305.0
    for _ in range(n):
        ts = start + 5.0 * rng.betavariate(1.0, 3.0)
        g.buy("douyin", ts, g.featured if rng.random() < 0.9 else g.other_sku())
    comments, labels = g.finish()
    return Scenario("flash-buys", seed, 1.0, g.featured, g.products, comments, labels, (start, start + 5.0))


def buys(scenario: Scenario) -> Iterable[tuple[Comment, Label]]:
    """The buy comments of a scenario with their labels, in arrival order."""
    for c, lab in zip(scenario.comments, scenario.labels, strict=True):
        if lab.intent is Intent.BUY:
            yield c, lab
