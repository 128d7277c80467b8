"""Parser throughput: ``python -m livecart.bench.parse_bench [--n N] [--seed S] [--config FILE]``.

Prints one JSON object: comments per second on one core for a realistic mix (about 70% chatter, the rest
buys, questions and cancels) and for buy comments only, plus how many comments were parsed and the Python
version. The comments come from a seeded generator, so two runs with one seed parse the same text.
Figures are wall-clock on a shared machine: run it more than once and read the spread.

In ``mix`` and ``buy`` a share ``--one-off`` (default 30%) of the comments are one-off texts and the rest
repeat lines seen earlier, as live chat does; the parser's cache of recent short comments serves those, and
each timed pass starts with it empty. ``unique_mix_comments_per_s`` and ``unique_buy_comments_per_s`` parse
sets where every comment is distinct (trailing emoji vary), so they measure the scan itself.
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from livecart import build
from livecart.config import load
from livecart.core.errors import ConfigError
from livecart.core.parser import Parser

REPO = Path(__file__).resolve().parent.parent

CHATTER = (
    "主播好美", "哈哈哈", "666", "6666666", "好看", "来了来了", "主播晚上好", "大家好", "点赞了", "支持支持",
    "主播辛苦了", "好想吃", "看着就好吃", "老粉来了", "新粉报到", "❤️❤️❤️", "👍👍", "🌹🌹🌹", "太便宜了吧",
    "我家那边也有", "主播哪里人", "今天下雨了", "刚下班", "哈哈哈哈哈哈", "真的假的", "厉害了", "加油加油",
    "好可爱", "已关注", "关注了", "主播声音好好听", "这个颜色好看", "我妈也做过这个", "小时候的味道",
    "铜鼓的吗", "江西老表在这里", "谢谢主播", "晚安", "2024年了", "29.9", "8:30开始的吗", "123", "1111111",
    "13812345678", "上次买的很好吃", "已拍", "已下单", "收到了很新鲜", "笨蛋", "粉丝越来越多了",
    "hi everyone", "love this", "so cute", "lol", "nice!!", "hello from texas", "where are you?",
    "wow", "omg 😍", "amazing", "yummy", "good evening", "I bought this last week", "great show",
)
BUY = (
    "鸡蛋来两盒", "+1", "要", "扣1", "1号链接拍3", "鸡蛋2盒 蜂蜜1瓶", "菊花茶 大罐 2", "我要", "+2", "来一盒",
    "蜂蜜+1", "2号链接拍2", "要两盒鸡蛋", "米粉3袋", "笋干x2", "雞蛋來兩盒", "＋１", "我也要", "mine",
    "I'll take 2", "SOLD honey 2", "sold A1 2", "A4+1", "eggs x3", "hony 2", "link 5 +1", "#1 x2",
    "小罐菊花茶3罐", "鸡蛋一盒蜂蜜两瓶", "要要要", "拍2", "来3盒鸡蛋", "蜂蜜两瓶", "bamboo shoots 2",
)
OTHER = (
    "还有吗", "多少钱", "包邮吗", "几号链接是茶叶", "how much", "is the honey raw?", "不要了", "取消",
    "鸡蛋不要了", "cancel", "changed my mind", "蜂蜜多少钱一瓶", "什么时候发货", "鸡蛋还有吗",
)
#: Share of comments that are one-off texts; the rest repeat a line seen before in the stream, as live chat
#: does (+1, 666, 要, 哈哈哈 arrive in floods).
ONE_OFF = 0.3
EMOJI = ("", "", "", "!", "!!", "~", "😀", "👍", "❤️", "。", "！！", " ")


def mix(n: int, rng: random.Random, *, unique: float = ONE_OFF) -> list[str]:
    """About 70% chatter, 20% buys, 10% questions and cancels; a share ``unique`` of them one-off texts."""
    out: list[str] = []
    for k in range(n):
        r = rng.random()
        pool = CHATTER if r < 0.70 else (BUY if r < 0.90 else OTHER)
        out.append(_vary(rng.choice(pool), rng, k if rng.random() < unique else None))
    return out


def buys(n: int, rng: random.Random, *, unique: float = ONE_OFF) -> list[str]:
    return [_vary(rng.choice(BUY), rng, k if rng.random() < unique else None) for k in range(n)]


def _vary(text: str, rng: random.Random, k: int | None) -> str:
    text = text + rng.choice(EMOJI)
    if k is not None:
        # Distinct text that means the same thing: the index written in base 12 as trailing emoji, as
        # people append them (a few characters; 200,000 needs five).
        code = []
        while True:
            k, d = divmod(k, len(_CODE))
            code.append(_CODE[d])
            if not k:
                break
        text = text + " " + "".join(code)
    return text


_CODE = "🌸🌹👍❤😀🎉🔥💯😂🙏✨💪"


def rate(parser: Parser, texts: Sequence[str], repeat: int = 3) -> float:
    """Best of ``repeat`` passes, in comments per second; each pass starts with an empty result cache."""
    parse: Callable[[str, str | None], object] = parser.parse
    best = float("inf")
    for _ in range(repeat):
        parser._cache.clear()
        parser._cache_old.clear()
        gc.collect()
        t0 = time.perf_counter()
        for t in texts:
            parse(t, "egg-10")
        best = min(best, time.perf_counter() - t0)
    return len(texts) / best


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m livecart.bench.parse_bench", description=__doc__)
    ap.add_argument("--n", type=int, default=200_000, help="comments per pass (default 200000)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--config", default=str(REPO / "config" / "sample.toml"))
    ap.add_argument("--one-off", type=float, default=ONE_OFF,
                    help=f"share of one-off texts in the mix and buy sets (default {ONE_OFF})")
    args = ap.parse_args(argv)
    try:
        cfg = load(args.config)
    except ConfigError as exc:  # e.g. run from an installed build, away from the repository's config/
        print(f"python -m livecart.bench.parse_bench: {exc}; pass --config FILE (config/sample.toml of the repository)",
              file=sys.stderr)
        return 2
    parser = Parser.from_config(cfg)
    rng = random.Random(args.seed)
    m = mix(args.n, rng, unique=args.one_off)
    b = buys(args.n, rng, unique=args.one_off)
    u = mix(args.n, rng, unique=1.0)
    ub = buys(args.n, rng, unique=1.0)
    result = {
        "bench": "parse",
        "n": args.n,
        "seed": args.seed,
        "one_off_share": args.one_off,
        "mix_comments_per_s": round(rate(parser, m)),
        "buy_comments_per_s": round(rate(parser, b)),
        "unique_mix_comments_per_s": round(rate(parser, u)),
        "unique_buy_comments_per_s": round(rate(parser, ub)),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "build": build(),
    }
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
