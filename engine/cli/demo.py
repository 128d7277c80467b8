"""``livecart demo``: a bundled sale run end to end on the embedded journal, shown live (docs/contract.md §5).

The sale is modelled on the Tonggu county evening sale in Jiangxi (free-range eggs, rice noodles,
chrysanthemum tea in two sizes, honey, smoked bamboo shoots). Three parts:

* :func:`generate` -- pure and seeded: the comment stream (Chinese on Douyin, English on YouTube; mostly
  chatter and questions, buys in the many forms the parser knows, cancels, a few bad asks) and the host's
  scripted controls (each link featured in turn, a restock). Same seed, same stream: nothing big is shipped.
* :class:`DemoRun` -- drives a real :class:`~livecart.runtime.pipeline.Engine` over that stream with a virtual clock that
  follows the stream's timestamps, so unpaid holds really expire through :meth:`Engine.tick`. It plays the
  buyers who pay (a seeded share of reservations, before their hold ends) and the host who reacts: when the
  eggs sell out, a presale is launched a minute later. Everything it shows comes from durable outcomes
  (engine listener), so the view never announces what the journal does not hold.
* The views: a ``rich`` live view (per product stock / left / reserved / presale queue, comments and orders
  per second, a progress bar, the latest buyer replies and stream events), or a few plain progress lines
  (``--plain`` or stdout not a terminal); then a summary read back from the journal, a CSV export (UTF-8
  with BOM) and the commands to look again.

Speed is the replay adapter's: sale seconds per wall second (1 = the real 45 minutes, 0 = as fast as
possible); the default, :data:`DEFAULT_SPEED`, shows the sale in about 20 seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import heapq
import importlib.resources
import math
import random
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import orjson
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from livecart.config import load
from livecart.core.control import Control, ControlAction
from livecart.core.errors import ControlError, JournalError
from livecart.core.events import Event, EventDetector, EventKind
from livecart.core.records import Comment, Outcome, Status
from livecart.core.settings import Config
from livecart.runtime.pipeline import Engine
from livecart.runtime.replies import Replier
from livecart.store.sqlite import SqliteStore

#: The seed of the bundled stream: the day of the Tonggu sale.
SEED = 20200315
#: Stream start: 2020-03-15 19:00 in Beijing (11:00 UTC), an evening sale.
START_TS = 1584270000.0
#: Sale time the stream spans, in seconds.
SALE_SECONDS = 45 * 60.0
#: Default pace, sale seconds per wall second: 45 minutes in about 20 seconds.
DEFAULT_SPEED = 135.0
#: The driver advances the virtual clock in steps of this many sale seconds.
STEP_SECONDS = 5.0
#: Most live-view redraws per wall second.
FRAMES_PER_SECOND = 12.0

CONFIG_NAME = "demo.toml"
COMMENTS_NAME = "demo-comments.jsonl"
EXPORT_NAME = "demo-orders.csv"

#: Share of reservations the demo's buyers pay for (the rest expire after ``hold_minutes``).
PAY_SHARE = 0.75
#: When the eggs sell out, the host launches this presale after this many sale seconds.
EGG_PRESALE_CAP = 300
EGG_PRESALE_DELAY = 60.0


# ---------------------------------------------------------------------------------------------- the stream


@dataclass(frozen=True, slots=True)
class HostAction:
    """A host control at sale time ``ts`` and what the host says on air."""

    ts: float
    control: Control
    say: str


@dataclass(frozen=True, slots=True)
class Scenario:
    """The generated sale: comments in time order and the host's scripted controls."""

    comments: tuple[Comment, ...]
    host: tuple[HostAction, ...]
    start: float
    duration: float

    def jsonl(self) -> bytes:
        """The comments as JSON Lines (docs/contract.md §2), the replay adapter's input."""
        return b"".join(orjson.dumps(c.to_dict()) + b"\n" for c in self.comments)


@dataclass(frozen=True, slots=True)
class _Segment:
    """A stretch of the sale during which one product is featured."""

    at: float
    sku: str
    burst: float  # extra comments per sale second when the link goes up, decaying over minutes
    say: str


# The host's running order (seconds into the sale), after the seed: eggs first, then each link in turn.
_SEGMENTS = (
    _Segment(0.0, "egg-10", 7.0, "1号链接上架！铜鼓散养土鸡蛋，10枚一盒，每人限购5盒，扣1就是一盒"),
    _Segment(780.0, "noodle-5kg", 4.0, "2号链接：江西米粉，5公斤一袋，3000公斤全在这儿了"),
    _Segment(1260.0, "tea-chry", 3.0, "3号链接：菊花茶，小罐50克、大罐100克，下单请说大罐还是小罐"),
    _Segment(1740.0, "honey-1kg", 4.0, "4号链接：土蜂蜜，一公斤一瓶，每人限购3瓶"),
    _Segment(2220.0, "bamboo", 4.0, "5号链接：烟熏笋干，炒腊肉一绝"),
    _Segment(2460.0, "hoodie", 5.0, "6号链接：抓绒卫衣，黑色粉色，M码L码，下单请说颜色和尺码，比如 黑色L码+1"),
)
_RESTOCKS = (
    HostAction(1500.0, Control(ControlAction.RESTOCK, "egg-10", qty=150), "养殖场又送来150盒鸡蛋，按预售顺序先发！"),
)

# Measure words per product, for "来两盒" / "来两袋".
_MEASURE = {"egg-10": "盒", "noodle-5kg": "袋", "tea-chry": "罐", "honey-1kg": "瓶", "bamboo": "包", "hoodie": "件"}
_CN = {1: "一", 2: "两", 3: "三", 4: "四", 5: "五", 6: "六", 10: "十"}
_QTYS = (1, 2, 3, 5, 10)
_QTY_WEIGHTS = (52, 25, 12, 8, 3)

#: Buys of the featured product that name nothing (placeholders: n, cn, m). Tea needs a size.
BARE_ZH = ("+{n}", "扣{n}", "要", "来{cn}{m}", "要{n}", "再来{cn}{m}", "扣{n}", "+{n}")
BARE_EN = ("mine", "I'll take {n}", "+{n}")
BARE_SIZED = ("大罐+{n}", "小罐{n}", "要大罐", "要小罐", "大罐来{cn}罐", "小罐 {n}")
BARE_SIZED_EN = ("large x{n}", "small x{n}")
#: Buys of the featured hoodie naming its colour and size, in any order and spacing (docs/contract.md §1).
BARE_OPTIONS = ("黑色L码+{n}", "粉色 M +{n}", "L 黑 {n}件", "黑M要{n}件", "粉红L码 {n}件")
BARE_OPTIONS_EN = ("black large x{n}", "pink medium +{n}")
#: A bare buy of a product with sizes, naming none: the buyer gets asked which size.
BARE_UNSIZED = ("+{n}", "扣{n}")

#: Buys naming the product, per sku.
NAMED_ZH: Mapping[str, tuple[str, ...]] = {
    "egg-10": ("鸡蛋来{cn}盒", "土鸡蛋要{n}盒", "1号链接拍{n}", "A1 x{n}", "鸡蛋+{n}", "蛋来{cn}盒"),
    "noodle-5kg": ("米粉来{cn}袋", "2号链接要{n}", "买{n}袋米粉", "link 2 x{n}"),
    "tea-chry": ("菊花茶 大罐 {n}", "菊花茶小罐{n}", "3号链接大罐{n}", "小罐菊花茶{cn}罐", "大罐菊花茶来{cn}罐",
                 "菊花茶要{n}"),
    "honey-1kg": ("蜂蜜来{n}瓶", "我要{cn}瓶蜂蜜", "4号链接拍{n}", "A4 x{n}"),
    "bamboo": ("笋干{cn}包", "来{n}包笋干", "5号链接要{n}"),
    "hoodie": ("卫衣 黑色 L码 {n}件", "6号链接 粉 M +{n}", "A6 黑 L x{n}", "衛衣 粉紅 L碼 要{cn}件"),
}
NAMED_EN: Mapping[str, tuple[str, ...]] = {
    "egg-10": ("SOLD eggs {n}", "eggs {n} please"),
    "noodle-5kg": ("SOLD noodles {n}", "link 2 x{n}"),
    "tea-chry": ("SOLD tea large {n}", "chrysanthemum tea small x{n}"),
    "honey-1kg": ("SOLD honey {n}", "honey x{n}"),
    "bamboo": ("bamboo shoots x{n}", "SOLD bamboo {n}"),
    "hoodie": ("SOLD A6 black large {n}", "hoodie pink M x{n}"),
}
#: Comments that buy nothing the catalogue can give: an unknown link, an absurd quantity.
BAD_ZH = ("9号链接要1", "要100盒", "8号链接拍2")
CHATTER_ZH = ("主播好", "666", "哈哈哈", "👍👍👍", "支持家乡！", "铜鼓的鸡蛋最好吃", "来了来了", "主播辛苦了",
              "❤️❤️", "🔥🔥🔥", "刚进来，卖什么呢", "县长好接地气", "好想吃米粉", "关注了", "宜春老乡报到",
              "画面有点卡", "声音小了点", "拍到了吗", "太快了抢不到", "大家好", "小姐姐好看", "已拍")
CHATTER_EN = ("hello from Toronto!", "greetings from London", "this county looks beautiful", "lol", "😂😂",
              "so cool", "what is this stream?", "the host is funny", "❤️", "first time here")
ASK_ZH = ("鸡蛋多少钱", "包邮吗", "什么时候发货", "米粉怎么煮", "笋干怎么做好吃", "菊花茶有大罐吗",
          "鸡蛋是散养的吗", "还有货吗", "蜂蜜多少钱一瓶")
ASK_EN = ("how much is the honey?", "do you ship to Canada?", "are the eggs free-range?")
#: Cancels, from buyers who bought before ({a}: an alias of a product they bought).
CANCEL_ZH = ("不要了", "{a}不要了", "取消订单", "不要{a}了")
CANCEL_EN = ("cancel my order", "cancel")
_CANCEL_ALIAS = {"egg-10": "鸡蛋", "noodle-5kg": "米粉", "tea-chry": "菊花茶", "honey-1kg": "蜂蜜",
                 "bamboo": "笋干", "hoodie": "卫衣"}

_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高钟邓"
_GIVEN = ("小红", "建国", "丽", "芳", "伟", "静", "敏", "强", "磊", "洋", "艳", "勇", "军", "杰", "娟", "涛",
          "明", "超", "秀英", "桂兰", "春生", "冬梅")
_NICKS = ("吃货小美", "江西老表", "宜春人在深圳", "铜鼓妹子", "爱吃米粉", "夜猫子", "快乐星球", "阿婆的菜园",
          "南昌小胖", "赣南脐橙")
_HANDLES = ("mike_t", "sarahcooks", "jiangxi_fan", "Linda W.", "tom.in.toronto", "foodie88", "ana_eats",
            "grace_h", "dave_k", "mei_ling")


_FLOOR = 1.2


def _rate(t: float) -> float:
    """Comments per sale second at ``t``: a floor of chatter and a burst after each link goes up."""
    last = max((s for s in _SEGMENTS if s.at <= t), key=lambda s: s.at)
    return _FLOOR + last.burst * math.exp(-(t - last.at) / 150.0)


def _featured_at(t: float) -> str:
    return max((s for s in _SEGMENTS if s.at <= t), key=lambda s: s.at).sku


def generate(seed: int = SEED, *, start: float = START_TS, duration: float = SALE_SECONDS) -> Scenario:
    """The demo stream for ``seed``: a pure function, the same seed gives the same comments.

    Comments come at a rate that bursts after each link goes up (a few thousand over 45 minutes); their ids
    are unique per platform and their ``ts`` ascend from ``start``.
    """
    rng = random.Random(seed)
    zh_users = [(f"dy-{i:05d}", _zh_name(rng)) for i in range(1200)]
    en_users = [(f"yt-{i:04d}", rng.choice(_HANDLES) + str(rng.randrange(10, 99))) for i in range(150)]
    # A few buyers are far more active than the rest.
    zh_weights = list(_cumulative(1.0 / (1 + i) ** 0.6 for i in range(len(zh_users))))
    en_weights = list(_cumulative(1.0 / (1 + i) ** 0.6 for i in range(len(en_users))))
    bought: dict[str, list[str]] = {}
    comments: list[Comment] = []
    t = 0.0
    n = 0
    peak = _FLOOR + max(s.burst for s in _SEGMENTS)  # the rate never exceeds this: thinning needs a bound
    while True:
        t += rng.expovariate(peak)
        if t >= duration:
            break
        if rng.random() * peak > _rate(t):
            continue
        n += 1
        english = rng.random() < 0.12
        users, weights = (en_users, en_weights) if english else (zh_users, zh_weights)
        uid, name = rng.choices(users, cum_weights=weights)[0]
        text = _text(rng, t, uid, english, bought)
        platform, room = ("youtube", "tonggu-live") if english else ("douyin", "7312-tonggu")
        comments.append(Comment(platform, room, f"{platform[:2]}-{n:06d}", uid, name, text,
                                round(start + t, 3)))
    host = [HostAction(start + s.at, Control(ControlAction.FEATURE, s.sku), s.say) for s in _SEGMENTS]
    host += [HostAction(start + h.ts, h.control, h.say) for h in _RESTOCKS if h.ts < duration]
    host.sort(key=lambda h: h.ts)
    return Scenario(tuple(comments), tuple(host), start, duration)


def _cumulative(values: Iterable[float]) -> Iterable[float]:
    total = 0.0
    for v in values:
        total += v
        yield total


def _zh_name(rng: random.Random) -> str:
    if rng.random() < 0.25:
        return rng.choice(_NICKS) + str(rng.randrange(1, 999))
    return rng.choice(_SURNAMES) + rng.choice(_GIVEN)


def _fill(rng: random.Random, template: str, sku: str, *, english: bool) -> str:
    qty = rng.choices(_QTYS, weights=_QTY_WEIGHTS)[0]
    if "{cn}" in template and qty not in _CN:
        qty = 2
    if english and template == "I'll take {n}" and qty == 1:
        return "mine"
    return template.format(n=qty, cn=_CN.get(qty, ""), m=_MEASURE[sku])


def _text(rng: random.Random, t: float, uid: str, english: bool, bought: dict[str, list[str]]) -> str:
    featured = _featured_at(t)
    r = rng.random()
    mine = bought.get(uid)
    if mine and r < 0.03:
        sku = rng.choice(mine)
        return rng.choice(CANCEL_EN) if english else rng.choice(CANCEL_ZH).format(a=_CANCEL_ALIAS[sku])
    if r < 0.40:
        return rng.choice(CHATTER_EN if english else CHATTER_ZH)
    if r < 0.50:
        return rng.choice(ASK_EN if english else ASK_ZH)
    if r < 0.505:
        return rng.choice(BAD_ZH)
    # A buy: mostly the featured product, sometimes one the host showed earlier.
    shown = [s.sku for s in _SEGMENTS if s.at <= t]
    sku = featured if rng.random() < 0.82 or len(shown) == 1 else rng.choice(shown[:-1])
    pool: tuple[str, ...]
    if sku == featured and rng.random() < 0.6:
        if sku == "tea-chry":
            pool = BARE_SIZED_EN if english else (BARE_UNSIZED if rng.random() < 0.08 else BARE_SIZED)
        elif sku == "hoodie":
            pool = BARE_OPTIONS_EN if english else (BARE_UNSIZED if rng.random() < 0.08 else BARE_OPTIONS)
        else:
            pool = BARE_EN if english else BARE_ZH
    else:
        pool = (NAMED_EN if english else NAMED_ZH)[sku]
    bought.setdefault(uid, []).append(sku)
    return _fill(rng, rng.choice(pool), sku, english=english)


# ---------------------------------------------------------------------------------------------- the run


class View(Protocol):
    """Where the run shows itself: called from the event loop, must not block for long."""

    def start(self, run: DemoRun) -> None: ...
    def update(self, run: DemoRun, *, final: bool = False) -> None: ...
    def event(self, run: DemoRun, text: str) -> None: ...
    def stop(self) -> None: ...


@dataclass
class _Rates:
    """Comments and orders per wall second over the last second or so."""

    samples: deque[tuple[float, int, int]] = field(default_factory=lambda: deque(maxlen=64))
    comments: float = 0.0
    orders: float = 0.0

    def add(self, now: float, comments: int, orders: int) -> None:
        self.samples.append((now, comments, orders))
        while len(self.samples) > 2 and now - self.samples[1][0] >= 1.0:
            self.samples.popleft()
        t0, c0, o0 = self.samples[0]
        if now - t0 > 0.05:
            self.comments = (comments - c0) / (now - t0)
            self.orders = (orders - o0) / (now - t0)


class DemoRun:
    """Drives an engine over a :class:`Scenario` on a virtual clock. See the module docstring.

    ``speed`` is sale seconds per wall second (0 = no pacing); ``wall`` and ``sleep`` are injectable for
    tests. Counters here are fed by the engine's listener, so they count durable outcomes only.
    """

    def __init__(self, cfg: Config, scenario: Scenario, *, speed: float = DEFAULT_SPEED, seed: int = SEED,
                 view: View | None = None, wall: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.cfg = cfg
        self.scenario = scenario
        self.speed = speed
        self.view = view
        self._wall = wall
        self._sleep = sleep
        self.now = scenario.start  # the virtual clock the engine reads
        self.engine: Engine | None = None
        self.replier = Replier(cfg, clock=lambda: self.now)
        self.detector = EventDetector(cfg.catalogue)
        self._rng = random.Random(seed + 1)  # the buyers who pay, and when
        self._pays: list[tuple[float, int, str]] = []
        self._host: list[tuple[float, int, HostAction]] = []
        self._order = 0
        self._by_key: dict[tuple[str, str, str], Comment] = {}
        self._names: dict[str, str] = {}
        self.products: dict[str, dict[str, Any]] = {}
        self.featured: str | None = cfg.stream.featured
        self.comments_done = 0
        self.orders = 0  # reserved + presale outcomes
        self.statuses: dict[str, int] = {}
        self.replies: deque[str] = deque(maxlen=6)
        self.events: deque[str] = deque(maxlen=6)
        self.said: str = ""
        self._shown: set[tuple[EventKind, str]] = set()
        self.pay_refused = 0
        self.egg_presale_at: float | None = None
        self.rates = _Rates()
        self.wall_started = 0.0
        self.wall_seconds = 0.0

    # ---------------------------------------------------------------- listener (durable outcomes only)

    def _on_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        statuses = self.statuses
        for o in outcomes:
            s = o.status.value
            statuses[s] = statuses.get(s, 0) + 1
            if o.status is Status.RESERVED or o.status is Status.PRESALE:
                self.orders += 1
            # A buyer who pays does so before the hold ends; the others let it expire.
            if ((o.status is Status.RESERVED or o.status is Status.PROMOTED) and o.order is not None
                    and self._rng.random() < PAY_SHARE):
                hold = self.cfg.stream.hold_minutes * 60.0 or 600.0
                self._push_pay(self.now + self._rng.uniform(0.1, 0.93) * hold, o.order)
        # Replies to comments go through plan() (one per comment); the others (payments, expiries,
        # promotions) name no comment, so the buyer's name comes from the demo's own record of who is who.
        for _, reply in self.replier.plan([o for o in outcomes if o.comment is not None], self._by_key):
            self.replies.append(reply.text)
        for o in outcomes:
            if o.comment is None:
                text = self.replier.render(o, self._names.get(o.user, o.user))
                if text:
                    self.replies.append(text)
        engine = self.engine
        if engine is None:
            return
        after = engine.snapshot()["products"]
        for e in self.detector.detect(self.products, after, outcomes):
            self._on_event(e)
        self.products = after

    def _push_pay(self, due: float, order: str) -> None:
        self._order += 1
        heapq.heappush(self._pays, (due, self._order, order))

    def _on_event(self, e: Event) -> None:
        # Stock that comes back (expiries, cancels) and goes again makes a product "sell out" many times;
        # the view tells each kind of event once per product.
        if (e.kind, e.key) in self._shown:
            return
        self._shown.add((e.kind, e.key))
        clock = self._clock_text()
        name = self._name(e.sku, e.variant)
        if e.kind is EventKind.SOLD_OUT:
            text = f"{clock} {name}: sold out"
            if e.sku == "egg-10" and self.egg_presale_at is None and not e.data.get("cap"):
                # The host's line from the seed: "the eggs are sold out, but a presale will be launched".
                self.egg_presale_at = self.now + EGG_PRESALE_DELAY
                self._order += 1
                heapq.heappush(self._host, (self.egg_presale_at, self._order, HostAction(
                    self.egg_presale_at, Control(ControlAction.PRESALE, "egg-10", qty=EGG_PRESALE_CAP, enabled=True),
                    f"鸡蛋卖完了，但今天下午开启预售！{EGG_PRESALE_CAP}盒，先拍先发")))
        elif e.kind is EventKind.PRESALE_OPENED:
            text = f"{clock} {name}: presale opened"
        elif e.kind is EventKind.PRESALE_FULL:
            text = f"{clock} {name}: presale full ({e.data.get('presale', 0)} queued)"
        else:
            text = f"{clock} {name}: low stock ({e.data.get('left', 0)} left)"
        self.events.append(text)
        if self.view is not None:
            self.view.event(self, text)

    # ---------------------------------------------------------------- driving

    def _name(self, sku: str | None, variant: str | None = None) -> str:
        p = self.cfg.catalogue.by_sku.get(sku) if sku is not None else None
        name = p.name if p is not None else str(sku)
        return f"{name} {variant}" if variant else name

    def _clock_text(self) -> str:
        s = max(0, int(self.now - self.scenario.start))
        return f"{s // 60:02d}:{s % 60:02d}"

    async def _host_action(self, engine: Engine, h: HostAction) -> None:
        self.now = h.ts
        c = h.control
        await engine.control(c)
        if c.action is ControlAction.FEATURE:
            self.featured = c.sku
        elif c.action is ControlAction.PRESALE:
            key = str(c.sku) if c.variant is None else f"{c.sku}/{c.variant}"
            self.detector.caps[key] = int(c.qty or 0)
        self.said = f"{self._clock_text()} 主播: {h.say}"
        args = " ".join(str(a) for a in (c.sku, c.variant, c.qty) if a)
        self.events.append(f"{self._clock_text()} host: {c.action.value} {args}")
        if self.view is not None:
            self.view.event(self, self.said)

    async def _pay(self, engine: Engine, due: float, order: str) -> None:
        info = engine.ledger.order(order)
        if info is None or info["status"] != Status.RESERVED.value:
            return  # cancelled (or promoted into a new order) before the buyer got round to paying
        self.now = due
        try:
            await engine.control(Control(ControlAction.PAY, order=order))
        except ControlError:
            self.pay_refused += 1

    async def _submit(self, engine: Engine, batch: list[Comment]) -> None:
        self.now = batch[-1].ts
        names = self._names
        for c in batch:
            self._by_key[c.key] = c
            names[c.user] = c.name
        await engine.submit(batch)
        self.comments_done += len(batch)

    async def run(self, engine: Engine) -> None:
        """Play the whole scenario through ``engine``; the caller opens and closes it."""
        self.engine = engine
        engine.add_listener(self._on_outcomes)
        self.products = engine.snapshot()["products"]
        sc = self.scenario
        for h in sc.host:
            self._order += 1
            heapq.heappush(self._host, (h.ts, self._order, h))
        comments = sc.comments
        times = [c.ts for c in comments]
        i = 0
        self.wall_started = w0 = self._wall()
        last_frame = -1.0
        if self.view is not None:
            self.view.start(self)
        steps = max(1, math.ceil(sc.duration / STEP_SECONDS))
        for k in range(1, steps + 1):
            end = sc.start + min(sc.duration, k * STEP_SECONDS)
            j = bisect.bisect_right(times, end, lo=i)
            # In time order within the step: host controls and payments before the comments that follow.
            while True:
                nxt = comments[i].ts if i < j else math.inf
                h_due = self._host[0][0] if self._host and self._host[0][0] <= end else math.inf
                p_due = self._pays[0][0] if self._pays and self._pays[0][0] <= end else math.inf
                first = min(nxt, h_due, p_due)
                if first == math.inf:
                    break
                if h_due == first:
                    await self._host_action(engine, heapq.heappop(self._host)[2])
                elif p_due == first:
                    due, _, order = heapq.heappop(self._pays)
                    await self._pay(engine, due, order)
                else:
                    stop = min(j, bisect.bisect_left(times, min(h_due, p_due), lo=i))
                    stop = max(stop, i + 1)
                    await self._submit(engine, list(comments[i:stop]))
                    i = stop
            self.now = end
            await engine.tick()
            now = self._wall()
            self.rates.add(now, self.comments_done, self.orders)
            if self.view is not None and now - last_frame >= 1.0 / FRAMES_PER_SECOND:
                last_frame = now
                self.view.update(self)
            if self.speed > 0:
                ahead = w0 + (end - sc.start) / self.speed - self._wall()
                if ahead > 0:
                    await self._sleep(ahead)
            elif k % 20 == 0:
                await self._sleep(0)  # let the journal writer and the view breathe
        await engine.flush()
        self.wall_seconds = self._wall() - w0
        if self.view is not None:
            self.view.update(self, final=True)

    @property
    def progress(self) -> float:
        total = len(self.scenario.comments)
        return self.comments_done / total if total else 1.0

    def __repr__(self) -> str:
        return (f"<DemoRun {self._clock_text()}: {self.comments_done:,}/{len(self.scenario.comments):,} "
                f"comments, {self.orders:,} orders, {len(self._pays)} payments pending>")


# ---------------------------------------------------------------------------------------------- views


def _product_rows(run: DemoRun) -> Iterable[tuple[str, Mapping[str, Any]]]:
    for key, p in run.products.items():
        sku, _, variant = key.partition("/")
        yield run._name(sku, variant or None), p


def product_table(run: DemoRun) -> Table:
    t = Table(box=box.SIMPLE_HEAD, expand=False, show_edge=False)
    t.add_column("product")
    for col in ("stock", "left", "reserved", "presale queue"):
        t.add_column(col, justify="right")
    featured = run.featured
    for key, (name, p) in zip(run.products, _product_rows(run), strict=True):
        left = int(p.get("left", 0))
        style = "bold red" if left <= 0 else ("bold" if key.split("/")[0] == featured else "")
        queue = int(p.get("presale", 0))
        t.add_row(("▶ " if key.split("/")[0] == featured else "  ") + name, f"{p.get('stock', 0):,}",
                  "sold out" if left <= 0 else f"{left:,}", f"{p.get('reserved', 0):,}",
                  f"{queue:,} ({p.get('queue', 0)} orders)" if queue else "-", style=style)
    return t


def live_renderable(run: DemoRun, lines: int = 6) -> RenderableType:
    """One frame of the live view, showing the ``lines`` latest replies and events."""
    sc = run.scenario
    head = Text.assemble((run.cfg.stream.name, "bold"), "  ", (run._clock_text(), "bold cyan"),
                         f"/{int(sc.duration // 60)}:00  ",
                         f"{run.rates.comments:,.0f} comments/s  {run.rates.orders:,.0f} orders/s")
    bar = Table.grid(padding=(0, 1))
    bar.add_row(ProgressBar(total=max(1, len(sc.comments)), completed=run.comments_done, width=50),
                f"{run.comments_done:,}/{len(sc.comments):,} comments ({run.progress:.0%})")
    replies = Text("\n".join(list(run.replies)[-lines:]) or "-", overflow="ellipsis", no_wrap=True)
    events = Text("\n".join(list(run.events)[-lines:]) or "-", overflow="ellipsis", no_wrap=True)
    said = Text(run.said or "", style="italic")
    return Group(head, bar, product_table(run), said,
                 Panel(replies, title="latest replies to buyers", title_align="left", box=box.ROUNDED),
                 Panel(events, title="stream events", title_align="left", box=box.ROUNDED))


class LiveView:
    """The ``rich`` live view, redrawn by the run (auto refresh off: the run owns the state)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._live: Live | None = None

    def _frame(self, run: DemoRun) -> RenderableType:
        # Fit the terminal: everything but the two lists takes about 17 lines.
        lines = max(1, min(6, (self.console.size.height - 17) // 2))
        return live_renderable(run, lines)

    def start(self, run: DemoRun) -> None:
        self._live = Live(self._frame(run), console=self.console, auto_refresh=False, transient=False)
        self._live.start(refresh=True)

    def update(self, run: DemoRun, *, final: bool = False) -> None:
        if self._live is not None:
            self._live.update(self._frame(run), refresh=True)

    def event(self, run: DemoRun, text: str) -> None:
        return None  # shown in the next frame's events panel

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


class PlainView:
    """A few progress lines: every tenth of the stream, and each stream event."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._next = 0.1
        self._done = False
        self._gone = False

    def _print(self, line: str) -> None:
        if self._gone:
            return
        try:
            print(line, file=self.out, flush=True)
        except BrokenPipeError:
            self._gone = True  # piped into `head`: the sale goes on, so the journal is whole

    def start(self, run: DemoRun) -> None:
        self._print(f"{run.cfg.stream.name}: {len(run.scenario.comments):,} comments over "
                    f"{int(run.scenario.duration // 60)} minutes of sale time")

    def update(self, run: DemoRun, *, final: bool = False) -> None:
        if final:
            if self._done:
                return
        elif run.progress + 1e-9 < self._next:
            return
        while self._next <= run.progress + 1e-9:
            self._next += 0.1
        self._done = run.progress >= 1.0
        eggs = run.products.get("egg-10", {})
        self._print(f"[{run.progress:4.0%}] sale time {run._clock_text()}  {run.comments_done:,} comments  "
                    f"{run.orders:,} orders  {run.rates.comments:,.0f} comments/s  "
                    f"eggs left {eggs.get('left', 0):,}, presale {eggs.get('presale', 0):,}")

    def event(self, run: DemoRun, text: str) -> None:
        self._print(f"       {text}")

    def stop(self) -> None:
        return None


# ---------------------------------------------------------------------------------------------- results


async def journal_state(cfg: Config) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The stream's state read back from its journal alone: the report object of docs/contract.md §5 and one
    export row per order. Raises :class:`JournalError` when there is no journal."""
    j = await SqliteStore.open(cfg.storage.path, readonly=True)
    try:
        ledger = await j.rebuild()
    finally:
        await j.close()
    snap = ledger.snapshot()
    report = {"comments": snap["comments"], "outcomes": snap["outcomes"],
              "products": {k: {f: p[f] for f in ("stock", "left", "reserved", "presale")}
                           for k, p in snap["products"].items()}}
    return report, list(ledger.orders())


def export_csv(cfg_path: Path, out: Path) -> None:
    """Write the stream's orders to ``out`` with ``livecart export``'s own code: CSV, UTF-8 with BOM."""
    from livecart.cli import (
        journal as cli_journal,  # the command's module; imported when the demo gets this far
    )

    cli_journal.export_main(argparse.Namespace(file=str(cfg_path), format="csv", output=str(out)))


def summary(console: Console, cfg: Config, report: Mapping[str, Any], run: DemoRun) -> None:
    t = Table(title="Result (read back from the journal)", box=box.SIMPLE_HEAD, title_justify="left")
    t.add_column("product")
    for col in ("stock", "sold or held", "left", "presale queued"):
        t.add_column(col, justify="right")
    for key, p in report["products"].items():
        sku, _, variant = key.partition("/")
        t.add_row(run._name(sku, variant or None), f"{p['stock']:,}", f"{p['reserved']:,}",
                  "sold out" if p["left"] <= 0 else f"{p['left']:,}", f"{p['presale']:,}")
    o = Table(title="Outcomes by status", box=box.SIMPLE_HEAD, title_justify="left")
    o.add_column("status")
    o.add_column("count", justify="right")
    for status in Status:
        o.add_row(status.value, f"{report['outcomes'].get(status.value, 0):,}")
    console.print(t)
    console.print(o)
    rate = report["comments"] / run.wall_seconds if run.wall_seconds > 0 else 0.0
    console.print(f"{report['comments']:,} comments processed in {run.wall_seconds:.1f} s wall time "
                  f"({rate:,.0f}/s; {int(run.scenario.duration // 60)} minutes of sale time)")


# ---------------------------------------------------------------------------------------------- command


def demo_config_text() -> str:
    """The bundled demo config (TOML)."""
    return importlib.resources.files("livecart").joinpath("data", CONFIG_NAME).read_text(encoding="utf-8")


def refusal(directory: Path) -> str | None:
    """Why the demo cannot be written into ``directory`` (None when it can): a file by that name, or a demo
    journal there already."""
    if directory.exists() and not directory.is_dir():
        return f"{directory} is a file, not a directory; pass another --dir"
    if (directory / "demo.db").exists():
        return (f"{directory} already holds a demo journal (demo.db); "
                "pass another --dir, or delete it to run the demo again there")
    return None


def prepare(directory: Path, scenario: Scenario) -> Path:
    """Write the demo config and its comment stream into ``directory``; return the config's path.

    Raises :class:`JournalError` when ``directory`` already holds a demo journal: a second run over it would
    be a restart of the first (every comment already processed), not a new sale.
    """
    refused = refusal(directory)
    if refused is not None:
        raise JournalError(refused)
    directory.mkdir(parents=True, exist_ok=True)
    cfg_path = directory / CONFIG_NAME
    cfg_path.write_text(demo_config_text(), encoding="utf-8")
    (directory / COMMENTS_NAME).write_bytes(scenario.jsonl())
    return cfg_path


async def run_demo(directory: Path, *, speed: float, view: View | None,
                   seed: int = SEED) -> tuple[DemoRun, dict[str, Any]]:
    """Generate, prepare and run the demo in ``directory``; return the run and the report read back from
    the journal."""
    scenario = generate(seed)
    cfg = load(prepare(directory, scenario))
    run = DemoRun(cfg, scenario, speed=speed, seed=seed, view=view)
    engine = await Engine.open(cfg, clock=lambda: run.now)
    try:
        await run.run(engine)
    finally:
        if view is not None:
            view.stop()
        await engine.close()
    report, _ = await journal_state(cfg)
    return run, report


def main(args: Any) -> int:
    """``livecart demo [--dir DIR] [--speed N] [--plain]``; returns the exit status."""
    speed = DEFAULT_SPEED if getattr(args, "speed", None) is None else float(args.speed)
    if not math.isfinite(speed) or speed < 0:
        print(f"livecart demo: --speed must be 0 (as fast as possible) or more, got {args.speed}",
              file=sys.stderr)
        return 2
    out = sys.stdout
    plain = bool(getattr(args, "plain", False)) or not out.isatty()
    console = Console(file=out, highlight=False, soft_wrap=False)
    created = getattr(args, "dir", None) is None
    directory = Path(tempfile.mkdtemp(prefix="livecart-demo-")) if created else Path(args.dir)
    refused = None if created else refusal(directory)
    if refused is not None:  # said before "writing ... to", which would not be true
        print(f"livecart demo: {refused}", file=sys.stderr)
        return 1
    console.print(f"livecart demo: writing the journal and export to {directory}", soft_wrap=True)
    view: View = PlainView(out) if plain else LiveView(console)
    try:
        run, report = asyncio.run(run_demo(directory, speed=speed, view=view))
    except BaseException:
        if created and not any(directory.iterdir()):
            shutil.rmtree(directory, ignore_errors=True)
        raise
    cfg_path = run.cfg.path
    csv_path = directory / EXPORT_NAME
    export_csv(cfg_path, csv_path)
    # A reader that went away (`livecart demo | head`) makes rich exit with status 1; by then the journal
    # and the export are complete.
    _print_result(console, run, report, directory, csv_path)
    return 0


def _print_result(console: Console, run: DemoRun, report: Mapping[str, Any], directory: Path,
                  csv_path: Path) -> None:
    summary(console, run.cfg, report, run)
    cfg_path = run.cfg.path
    # Paths and commands are never wrapped: they are there to be copied.
    for line in (f"journal:  {run.cfg.storage.path}",
                 f"export:   {csv_path} (CSV, UTF-8 with BOM, one row per order)",
                 f"comments: {directory / COMMENTS_NAME}",
                 "look again:",
                 f"  livecart report {cfg_path}",
                 f"  livecart export {cfg_path} --format csv -o orders.csv"):
        console.print(line, soft_wrap=True)
