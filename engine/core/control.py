"""Host controls as values: what the host asked for, how it is checked, and the one function that applies it.

A :class:`Control` is parsed from the command line (:func:`parse_params`) or from a JSON object
(:meth:`Control.from_json`: the MQTT payload, the HTTP body, the console's form). The ledger controls among
them become a journal record (:func:`record`: a :class:`Kind` and its arguments) and :func:`apply` applies
such a record to a ledger. The pipeline calls :func:`apply` when the host acts and the journal's replay calls
it for the same record on restart, so a control is decided the same way live and on replay.

Actions (Chinese aliases in brackets)::

    feature SKU                      [上链接 上架 讲解]  the product a bare "+1" buys
    restock SKU[/VARIANT] QTY        [补货 加库存]       add QTY units of stock
    presale SKU[/VARIANT] on|off|N   [预售]             open, close, or open with a cap of N units
    limit SKU N                      [限购]             most units per buyer (0 = no limit)
    pay ORDER                        [付款 已付款]       mark an order paid
    cancel ORDER                     [取消]             cancel an order
    pause | resume                   [暂停 | 继续 恢复]  stop / restart taking orders
    status                           [状态]             the daemon's state

A control may carry a key (``Idempotency-Key``: the console's taps, ``livecart ctl``, a script's ``"key"``).
:func:`record` journals it after the record's arguments and :func:`apply` applies a keyed record once: the
ledger remembers the keys it applied (:meth:`Ledger.control_key`, in its snapshots too), and a record whose
key it has already applied with the same arguments changes nothing, live, on replay and after a restart.

Rules that belong to the sale, not to a transport: a limit applies to a whole product (a variant is
refused when the control is parsed); ``presale SKU on`` without a cap opens the presale with the quantity
the config gives that product or variant, and is refused when the config gives none (:func:`record`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from livecart.core.catalogue import Catalogue
from livecart.core.errors import BadControl, ControlError
from livecart.core.ledger import Ledger
from livecart.core.records import Outcome


class Kind(StrEnum):
    """The kinds of journal record: a processed comment, an expiry sweep, or a host control."""

    COMMENT = "c"
    EXPIRE = "x"
    PAY = "p"
    CANCEL = "k"
    RESTOCK = "r"
    PRESALE = "q"
    LIMIT = "l"
    FEATURE = "f"
    PAUSE = "i"  # intake: the host paused (args [true]) or resumed (args [false]) intake


class ControlAction(StrEnum):
    FEATURE = "feature"
    RESTOCK = "restock"
    PRESALE = "presale"
    LIMIT = "limit"
    PAY = "pay"
    CANCEL = "cancel"
    PAUSE = "pause"
    RESUME = "resume"
    STATUS = "status"


ALIASES: Mapping[str, ControlAction] = {
    **{a.value: a for a in ControlAction},
    "上链接": ControlAction.FEATURE, "上架": ControlAction.FEATURE, "讲解": ControlAction.FEATURE,
    "补货": ControlAction.RESTOCK, "加库存": ControlAction.RESTOCK,
    "预售": ControlAction.PRESALE,
    "限购": ControlAction.LIMIT,
    "付款": ControlAction.PAY, "已付款": ControlAction.PAY, "已付": ControlAction.PAY,
    "取消": ControlAction.CANCEL,
    "暂停": ControlAction.PAUSE,
    "继续": ControlAction.RESUME, "恢复": ControlAction.RESUME,
    "状态": ControlAction.STATUS,
}
_ON = frozenset({"on", "open", "开", "开启", "打开"})
_OFF = frozenset({"off", "close", "closed", "关", "关闭"})
#: Largest quantity a control accepts; guards against a typo adding a billion units.
MAX_QTY = 10_000_000

USAGE = {
    ControlAction.FEATURE: "feature SKU",
    ControlAction.RESTOCK: "restock SKU[/VARIANT] QTY",
    ControlAction.PRESALE: "presale SKU[/VARIANT] on [CAP]|off|CAP",
    ControlAction.LIMIT: "limit SKU N (0 = no limit)",
    ControlAction.PAY: "pay ORDER",
    ControlAction.CANCEL: "cancel ORDER",
    ControlAction.PAUSE: "pause",
    ControlAction.RESUME: "resume",
    ControlAction.STATUS: "status",
}


#: What a control's key may be: 8 to 64 letters, digits, '-' or '_' (a random id made by the sender).
KEY = re.compile(r"[A-Za-z0-9_-]{8,64}")


@dataclass(frozen=True, slots=True)
class Control:
    """One host control. Which fields are set depends on ``action`` (module docstring):

    ``sku``/``variant`` for feature, restock, presale and limit; ``qty`` for restock (units to add), limit
    (the new limit) and presale (the cap, when given); ``enabled`` for presale (open or close); ``order``
    for pay and cancel. ``key``, when given, makes the control applied once however often it is sent
    (:func:`apply`).
    """

    action: ControlAction
    sku: str | None = None
    variant: str | None = None
    qty: int | None = None
    order: str | None = None
    enabled: bool | None = None
    key: str | None = field(default=None, compare=False)  # equal controls ask for the same thing

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, the shape :meth:`from_json` reads (``key`` only when there is one)."""
        d = {"action": self.action.value, "sku": self.sku, "variant": self.variant, "qty": self.qty,
             "order": self.order, "enabled": self.enabled}
        if self.key is not None:
            d["key"] = self.key
        return d

    def keyed(self, key: str | None) -> Control:
        """This control with ``key`` (checked: :data:`KEY`); itself when ``key`` is None. Raises
        :class:`BadControl`."""
        if key is None:
            return self
        return replace(self, key=checked_key(key))

    @classmethod
    def from_json(cls, obj: object) -> Control:
        """A control from a decoded JSON object: either fields (``{"action": "restock", "sku": "egg-10",
        "qty": 500}``) or the command-line form (``{"action": "restock", "params": ["egg-10", "500"]}``).
        Raises :class:`BadControl`."""
        if not isinstance(obj, Mapping):
            raise BadControl(f"a control must be a JSON object, got {type(obj).__name__}")
        action = obj.get("action")
        if not isinstance(action, str):
            raise BadControl("'action' must be a string, one of: " + ", ".join(a.value for a in ControlAction))
        params = obj.get("params")
        key = obj.get("key")
        if key is not None and not isinstance(key, str):
            raise BadControl(f"'key' must be a string of 8 to 64 letters, digits, '-' or '_', got {key!r}")
        if params is not None:
            if not isinstance(params, list) or not all(isinstance(p, str | int) for p in params):
                raise BadControl("'params' must be a list of strings")
            return parse_params(action, [str(p) for p in params]).keyed(key)
        act = _action(action)
        sku = _opt_str(obj, "sku")
        variant = _opt_str(obj, "variant")
        if sku is not None and variant is None and "/" in sku:
            sku, variant = _split(sku)
        order = _opt_str(obj, "order")
        qty = obj.get("qty")
        if qty is not None and (isinstance(qty, bool) or not isinstance(qty, int)):
            raise BadControl(f"'qty' must be an integer, got {qty!r}")
        enabled = obj.get("enabled")
        if enabled is not None and not isinstance(enabled, bool):
            raise BadControl(f"'enabled' must be true or false, got {enabled!r}")
        return _checked(Control(act, sku, variant, qty, order, enabled)).keyed(key)


def checked_key(key: str) -> str:
    """``key`` when it is a control's key (:data:`KEY`); raises :class:`BadControl`."""
    if not KEY.fullmatch(key):
        raise BadControl(f"a control's key must be 8 to 64 letters, digits, '-' or '_', got {key[:80]!r}")
    return key


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or not v.strip() or len(v) > 256:
        raise BadControl(f"{key!r} must be a non-empty string, got {v!r}")
    return v.strip()


def _action(name: str) -> ControlAction:
    act = ALIASES.get(name.strip().lower()) or ALIASES.get(name.strip())
    if act is None:
        raise BadControl(f"unknown action {name!r}; expected one of: "
                         + ", ".join(a.value for a in ControlAction) + " (or 上链接, 补货, 预售, 限购 ...)")
    return act


def _split(token: str) -> tuple[str, str | None]:
    sku, sep, variant = token.partition("/")
    if not sku or (sep and not variant):
        raise BadControl(f"{token!r} is not SKU or SKU/VARIANT")
    return sku, (variant if sep else None)


def _int(text: str, what: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise BadControl(f"{what} must be a whole number, got {text!r}") from None
    return n


def _checked(c: Control) -> Control:
    """Check that the fields the action needs are there and in range."""
    a = c.action
    usage = f"usage: {USAGE[a]}"
    if a in (ControlAction.FEATURE, ControlAction.RESTOCK, ControlAction.PRESALE, ControlAction.LIMIT) \
            and c.sku is None:
        raise BadControl(f"{a.value} needs a sku; {usage}")
    if a is ControlAction.FEATURE and c.variant is not None:
        raise BadControl(f"feature takes a product, not a variant; {usage}")
    if a is ControlAction.RESTOCK and (c.qty is None or not 1 <= c.qty <= MAX_QTY):
        raise BadControl(f"restock needs a quantity from 1 to {MAX_QTY:,}; {usage}")
    if a is ControlAction.LIMIT and c.variant is not None:
        raise BadControl(f"a limit applies to the whole product, not to one variant; {usage}")
    if a is ControlAction.LIMIT and (c.qty is None or not 0 <= c.qty <= MAX_QTY):
        raise BadControl(f"limit needs a number from 0 (no limit) to {MAX_QTY:,}; {usage}")
    if a is ControlAction.PRESALE:
        if c.enabled is None and c.qty is None:
            raise BadControl(f"presale needs on, off or a cap; {usage}")
        if c.qty is not None and not 0 <= c.qty <= MAX_QTY:
            raise BadControl(f"presale cap must be from 0 to {MAX_QTY:,}; {usage}")
    if a in (ControlAction.PAY, ControlAction.CANCEL) and c.order is None:
        raise BadControl(f"{a.value} needs an order id such as o-000012; {usage}")
    return c


def parse_params(action: str, params: Sequence[str]) -> Control:
    """A control from the command line: ``parse_params("restock", ["egg-10", "500"])``.

    Raises :class:`BadControl` with the action's usage when the arguments do not fit.
    """
    act = _action(action)
    p = [x.strip() for x in params if x.strip()]
    usage = f"usage: {USAGE[act]}"

    def need(n: int) -> None:
        if len(p) != n:
            raise BadControl(f"{act.value} takes {n} argument(s), got {len(p)}; {usage}")

    if act in (ControlAction.PAUSE, ControlAction.RESUME, ControlAction.STATUS):
        need(0)
        return Control(act)
    if act in (ControlAction.PAY, ControlAction.CANCEL):
        need(1)
        return _checked(Control(act, order=p[0]))
    if act is ControlAction.FEATURE:
        need(1)
        sku, variant = _split(p[0])
        return _checked(Control(act, sku, variant))
    # restock / presale / limit: SKU[/VARIANT] VALUE, or SKU VARIANT VALUE
    if act is ControlAction.PRESALE and len(p) == 3 and p[1].lower() in _ON | _OFF:
        # "presale egg-10 on 50": open with that cap (it read "on" as a variant: "egg-10 has no variants")
        if p[1].lower() in _OFF:
            raise BadControl(f"off takes no number; {usage}")
        sku, variant = _split(p[0])
        cap = _int(p[2], "presale cap")
        return _checked(Control(act, sku, variant, qty=cap, enabled=cap > 0))
    if len(p) == 3:
        if "/" in p[0]:
            raise BadControl(f"give the variant once; {usage}")
        sku, variant, value = p[0], p[1], p[2]
    else:
        need(2)
        (sku, variant), value = _split(p[0]), p[1]
    if act is ControlAction.PRESALE:
        v = value.lower()
        if v in _ON:
            return _checked(Control(act, sku, variant, enabled=True))
        if v in _OFF:
            return _checked(Control(act, sku, variant, enabled=False))
        cap = _int(value, "presale cap (or on/off)")
        return _checked(Control(act, sku, variant, qty=cap, enabled=cap > 0))
    return _checked(Control(act, sku, variant, qty=_int(value, "the quantity")))


def presale_cap(c: Control, catalogue: Catalogue) -> int:
    """The cap a presale control sets: 0 for ``off``, the given cap, or for ``on`` the presale quantity the
    config gives the product (or variant). Raises :class:`ControlError` for ``on`` where it gives none."""
    if c.enabled is False:
        return 0
    if c.qty is not None:
        return c.qty
    # What names no unit is said as the ledger says it (not "no presale quantity": there is no such unit).
    product = catalogue.by_sku.get(str(c.sku))
    if product is None:
        raise ControlError(f"no product {c.sku!r}; known: {', '.join(sorted(catalogue.by_sku))}", "no_product",
                           sku=str(c.sku))
    names = ", ".join(v.name for v in product.variants)
    if c.variant is None and product.variants:
        raise ControlError(f"{c.sku} has variants ({names}); name one", "has_variants", sku=str(c.sku),
                           variants=names)
    if c.variant is not None:
        if not product.variants:
            raise ControlError(f"{c.sku} has no variants", "no_variants", sku=str(c.sku))
        v = product.variant(c.variant)
        if v is None:
            raise ControlError(f"{c.sku} has no variant {c.variant!r}; known: {names}", "no_variant",
                               sku=str(c.sku), variant=c.variant)
        cap = v.presale
    else:
        cap = product.presale
    if cap <= 0:
        key = f"{c.sku}/{c.variant}" if c.variant else str(c.sku)
        raise ControlError(f"{key} has no presale quantity in the config; give one: presale {key} N",
                           "no_presale_cap", key=key)
    return cap


#: How many arguments a control record of each kind has before its optional key.
ARITY: Mapping[Kind, int] = {Kind.PAY: 1, Kind.CANCEL: 1, Kind.RESTOCK: 3, Kind.PRESALE: 3, Kind.LIMIT: 2,
                             Kind.FEATURE: 1, Kind.PAUSE: 1}


def record(c: Control, catalogue: Catalogue) -> tuple[Kind, list[Any]]:
    """The journal record of a control that changes the ledger: its kind and arguments, as :func:`apply`
    takes them, the control's key (if any) last. Raises :class:`ControlError` for ``status`` (it changes
    nothing) or a presale ``on`` that has no quantity to open with."""
    kind, args = _record(c, catalogue)
    if c.key is not None:
        args.append(c.key)
    return kind, args


#: A record's kind as the host says it (for messages).
_NAMES = {Kind.PAY.value: "pay", Kind.CANCEL.value: "cancel", Kind.RESTOCK.value: "restock",
          Kind.PRESALE.value: "presale", Kind.LIMIT.value: "limit", Kind.FEATURE.value: "feature",
          Kind.PAUSE.value: "pause"}


def applied_before(ledger: Ledger, c: Control, catalogue: Catalogue) -> bool:
    """Whether ``c`` is a keyed control that ``ledger`` has applied already (the same control sent again):
    False for no key or a key it does not know (or no longer: :data:`~livecart.core.ledger.CONTROL_KEYS`).
    Raises :class:`ControlError` (``key_reused``) when the key came with another control."""
    if c.key is None:
        return False
    seen = ledger.control_key(c.key)
    if seen is None:
        return False
    kind, args = _record(c, catalogue)
    if seen != (kind.value, args):
        first = " ".join(str(a) for a in (_NAMES.get(seen[0], seen[0]), *seen[1]) if a is not None)
        raise ControlError(f"the key {c.key} came with another control ({first}); a new control "
                           "needs a new key", "key_reused", key=c.key)
    return True


def _record(c: Control, catalogue: Catalogue) -> tuple[Kind, list[Any]]:
    a = c.action
    if a is ControlAction.PAY:
        return Kind.PAY, [c.order]
    if a is ControlAction.CANCEL:
        return Kind.CANCEL, [c.order]
    if a is ControlAction.RESTOCK:
        return Kind.RESTOCK, [c.sku, c.variant, c.qty]
    if a is ControlAction.PRESALE:
        return Kind.PRESALE, [c.sku, c.variant, presale_cap(c, catalogue)]
    if a is ControlAction.LIMIT:
        return Kind.LIMIT, [c.sku, c.qty]
    if a is ControlAction.FEATURE:
        return Kind.FEATURE, [c.sku]
    if a is ControlAction.PAUSE or a is ControlAction.RESUME:
        return Kind.PAUSE, [a is ControlAction.PAUSE]
    raise ControlError(f"{a.value} does not change the sale and is not journalled")


def apply(ledger: Ledger, kind: Kind, args: Sequence[Any]) -> list[Outcome]:
    """Apply one control record (not a comment) to ``ledger``, whose clock reads the record's time.

    The one place a control changes the ledger, live and on replay. A record with a key that the ledger has
    applied with the same arguments (:meth:`Ledger.control_key`) is the same control sent again: it changes
    nothing (but the sequence number) and has no outcomes. Raises :class:`ControlError` where the ledger
    refuses it (unknown sku or order), ``IndexError`` / ``TypeError`` / ``ValueError`` for arguments that do
    not fit the kind (a damaged record).
    """
    n = ARITY.get(kind)
    if n is None or len(args) <= n:
        return _apply(ledger, kind, args)
    key = args[n]
    if not isinstance(key, str):
        raise TypeError(f"a control record's key must be a string, got {key!r}")
    if ledger.control_key(key) == (kind.value, list(args[:n])):
        ledger.seq += 1
        return []
    out = _apply(ledger, kind, args)
    ledger.note_control(key, kind.value, args[:n])
    return out


def _apply(ledger: Ledger, kind: Kind, args: Sequence[Any]) -> list[Outcome]:
    if kind is Kind.EXPIRE:
        return ledger.expire_due()
    if kind is Kind.PAY:
        return ledger.pay(args[0])
    if kind is Kind.CANCEL:
        return ledger.cancel_order(args[0])
    if kind is Kind.RESTOCK:
        return ledger.restock(args[0], args[1], args[2])
    if kind is Kind.PRESALE:
        return ledger.set_presale(args[0], args[1], args[2])
    if kind is Kind.LIMIT:
        return ledger.set_limit(args[0], args[1])
    if kind is Kind.FEATURE:
        return ledger.feature(args[0])
    if kind is Kind.PAUSE:
        return ledger.pause_intake(bool(args[0]))
    raise ValueError(f"{kind!r} is not a control record")
