"""Reply templates: the texts that announce an outcome to a buyer, in each reply language.

Pure values and checks; :mod:`livecart.runtime.replies` fills them in and :mod:`livecart.config` validates a
config's ``[replies].templates`` overrides with :func:`check_templates`.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

#: Placeholders a template may use, with a sample value of the type each one has (used to validate).
PLACEHOLDERS: Mapping[str, Any] = {
    "name": "张三",          # the buyer's display name
    "user": "u-42",          # the buyer's platform id
    "product": "土鸡蛋",      # product name, with the variant when there is one
    "sku": "egg-10",
    "variant": "50g",
    "qty": 2,
    "order": "o-000123",
    "pay_by": "21:30",       # reservation time + [stream].hold_minutes, as HH:MM
    "hold_minutes": 30,
    "position": 3,           # place in the product's presale queue
    "note": "ships tomorrow",  # the product's presale_note
    "variants": "50g、100g",  # the variant names, for "which size?"
    "limit": 5,              # the product's per-buyer limit
    "max_qty": 99,           # [stream].max_qty
    "price": 29.9,
    "stream": "Tonggu spring sale",
}

TEMPLATES: Mapping[str, Mapping[str, str]] = {
    "zh": {
        "mention": "@{name} ",
        "separator": "；",
        "reserved": "已为您保留 {product} ×{qty}，订单 {order}，请在 {pay_by} 前付款",
        "reserved:no_hold": "已为您保留 {product} ×{qty}，订单 {order}",
        "presale": "{product} 现货已抢完，已为您预订 ×{qty}，排第 {position} 位，订单 {order}。{note}",
        "promoted": "好消息！{product} ×{qty} 有货了，订单 {order} 转为现货，请在 {pay_by} 前付款",
        "promoted:no_hold": "好消息！{product} ×{qty} 有货了，订单 {order} 转为现货",
        "cancelled": "已取消 {product} ×{qty}，订单 {order}",
        "expired": "订单 {order}（{product} ×{qty}）超时未付款，已释放",
        "paid": "订单 {order} 已付款，谢谢支持！",
        "rejected:sold_out": "抱歉，{product} 已售罄",
        "rejected:limit": "抱歉，{product} 每人限购 {limit} 件",
        "rejected:needs_variant": "{product} 有 {variants}，请问要哪一种？",
        "rejected:unknown_product": "抱歉，没找到这个商品，请报链接号",
        "rejected:not_available": "抱歉，{product} 暂时不能下单",
        "rejected:nothing_to_cancel": "没有找到可以取消的订单",
        "rejected:bad_quantity": "抱歉，数量不对，每单 1 到 {max_qty} 件",
    },
    "en": {
        "mention": "@{name} ",
        "separator": "; ",
        "reserved": "reserved {product} x{qty}, order {order}; please pay by {pay_by}",
        "reserved:no_hold": "reserved {product} x{qty}, order {order}",
        "presale": "{product} is sold out; you are #{position} in the presale queue for x{qty}, "
                   "order {order}. {note}",
        "promoted": "good news: {product} x{qty} is in stock, order {order} is reserved; please pay by {pay_by}",
        "promoted:no_hold": "good news: {product} x{qty} is in stock, order {order} is reserved",
        "cancelled": "cancelled {product} x{qty}, order {order}",
        "expired": "order {order} ({product} x{qty}) was not paid in time and is released",
        "paid": "order {order} is paid, thank you!",
        "rejected:sold_out": "sorry, {product} is sold out",
        "rejected:limit": "sorry, {product} is limited to {limit} per buyer",
        "rejected:needs_variant": "{product} comes in {variants}: which one?",
        "rejected:unknown_product": "sorry, which product? please say its link number",
        "rejected:not_available": "sorry, {product} cannot be ordered right now",
        "rejected:nothing_to_cancel": "there is no order of yours to cancel",
        "rejected:bad_quantity": "sorry, that quantity won't work: 1 to {max_qty} per order",
    },
}
TEMPLATE_KEYS: tuple[str, ...] = tuple(TEMPLATES["zh"])

_FORMATTER = string.Formatter()


def template_problems(templates: Mapping[str, Any]) -> list[str]:
    """Everything wrong with a ``[replies].templates`` table, one message each (empty when it is fine).

    Keys must be known template keys; values strings whose ``{placeholders}`` are known names (no
    attribute or index access) and whose format specs work on the placeholder's type. ``""`` turns a reply
    off.
    """
    problems: list[str] = []
    for key, value in templates.items():
        if key not in TEMPLATE_KEYS:
            problems.append(f"unknown template {key!r}; expected one of: {', '.join(TEMPLATE_KEYS)}")
            continue
        if not isinstance(value, str):
            problems.append(f"template {key!r} must be a string, got {value!r}")
            continue
        try:
            fields = [f for _, f, _, _ in _FORMATTER.parse(value) if f is not None]
        except ValueError as exc:
            problems.append(f"template {key!r} is not a valid format string ({exc}); write {{{{ for a brace")
            continue
        bad = [f for f in fields if f not in PLACEHOLDERS]
        if bad:
            problems.append(f"template {key!r} uses unknown placeholder(s) {', '.join('{' + f + '}' for f in bad)};"
                            f" expected: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
            continue
        try:
            value.format_map(PLACEHOLDERS)
        except (ValueError, TypeError) as exc:
            problems.append(f"template {key!r} cannot be filled in: {exc}")
    return problems


def check_templates(value: Any) -> str | None:
    """``Option.check`` for ``[replies].templates``: all problems in one message, or None."""
    problems = template_problems(value) if isinstance(value, Mapping) else ["must be a table"]
    return "; ".join(problems) if problems else None
