"""Stream config loading (docs/contract.md §1): TOML in, a validated :class:`Config` out.

Every problem found is collected and reported together, one message each, naming the file, the line where it
can be found, the key path and what is expected; :func:`load` raises :class:`~livecart.core.errors.ConfigError`
carrying them all, never a traceback of a ``KeyError``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from livecart.core.catalogue import (
    DEFAULT_MAX_QTY,
    Catalogue,
    OptionValue,
    Product,
    ProductOption,
    Variant,
    alias_key,
)
from livecart.core.errors import ConfigError, PluginError, Problem
from livecart.core.settings import (
    SNAPSHOT_EVENTS,
    Config,
    ControlSettings,
    DaemonSettings,
    PluginSettings,
    RepliesSettings,
    StatusSettings,
    StorageSettings,
    StreamSettings,
)
from livecart.core.templates import TEMPLATES, check_templates
from livecart.plugin import Option, check_more_than_zero, check_nonneg, check_port, check_positive


def check_timezone(value: Any) -> str | None:
    """``Option.check`` for ``[replies].timezone``: an IANA name such as ``Asia/Shanghai``, or ``""``."""
    if value == "":
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return "must be an IANA time zone name such as 'Asia/Shanghai' (or \"\" for the machine's own)"
    return None


STREAM_KEYS: dict[str, Option] = {
    "name": Option(str, required=True, doc="the sale's name"),
    "featured": Option(str, doc="sku that a bare '+1' buys"),
    "hold_minutes": Option(float, 30.0, check=check_nonneg, doc="unpaid hold; 0 = never expires"),
    "bare_plus_one": Option(bool, True),
    "max_qty": Option(int, DEFAULT_MAX_QTY, check=check_positive, doc="largest quantity one comment may ask for"),
}
STORAGE_KEYS: dict[str, Option] = {
    "path": Option(str, "livecart.db", path=True),
    "durability": Option(str, "fsync", choices=("fsync", "os")),
    "batch_max": Option(int, 2048, check=check_positive, doc="most decisions per journal transaction"),
    "batch_delay_ms": Option(float, 2.0, check=check_nonneg, doc="longest wait to fill a journal batch"),
    "snapshot_events": Option(int, check=check_positive,
                              doc="journal events between two snapshots of the engine's state (default: "
                                  f"{SNAPSHOT_EVENTS['sqlite']:,} with the SQLite journal, "
                                  f"{SNAPSHOT_EVENTS['jetstream']:,} in the JetStream mode)"),
    "snapshot_seconds": Option(float, 60.0, check=check_positive,
                               doc="longest time between two snapshots while events come in"),
    "dedupe_window": Option(int, 100_000, check=check_nonneg,
                            doc="comment ids kept exactly in memory; older ones in a filter and the journal's index "
                                "(0: every id in memory). Fixed when the journal is created"),
    "backend": Option(str, "sqlite", choices=("sqlite", "jetstream"),
                      doc="where the sale's log lives: the SQLite journal or a NATS JetStream cluster"),
    "servers": Option(list, [], doc="JetStream: client URLs of the cluster's servers"),
    "replicas": Option(int, 1, check=lambda v: None if 1 <= v <= 5 else "must be from 1 to 5 (JetStream's limit)",
                       doc="JetStream: copies of the sale's log"),
    "sale": Option(str, doc="JetStream: the sale's id in the cluster; default derived from [stream].name"),
    "lease_seconds": Option(float, 10.0, check=lambda v: None if 5.0 <= v <= 300.0 else
                            "must be from 5 to 300 seconds (longer than a leader election, which takes 5-8 s)",
                            doc="JetStream: how long the decider's lease runs unrenewed before a standby takes "
                                "over"),
}
#: A sale id names a stream, a subject token and a KV bucket: letters, digits, '-' and '_' only.
SALE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_SERVER_URL = re.compile(r"^(nats|tls|ws|wss)://[^\s/]+$|^[^\s/:]+:\d+$")


def sale_id(stream_name: str) -> str:
    """The default ``[storage] sale``: the stream's name in lower-case ASCII letters and digits joined by '-'
    (``"Tonggu spring sale"`` -> ``"tonggu-spring-sale"``); a name with none of those (all Chinese, say)
    gets ``"sale-"`` and a stable hash of the name instead."""
    slug = re.sub(r"[^a-z0-9]+", "-", stream_name.lower()).strip("-")[:48].strip("-")
    if slug:
        return slug
    return "sale-" + hashlib.sha256(stream_name.encode()).hexdigest()[:12]


def _storage_backend(c: _Checker, st: dict[str, Any], raw: Any, stream_name: str) -> tuple[tuple[str, ...], str]:
    """Check the JetStream keys of ``[storage]`` against the backend; return ``(servers, sale)``."""
    line = c.lines.table("storage")
    given = raw if isinstance(raw, dict) else {}
    servers: list[str] = []
    for i, url in enumerate(st["servers"] or []):
        if not isinstance(url, str) or not _SERVER_URL.match(url):
            c.add(f"storage.servers[{i}]", f"must be a server URL such as 'nats://10.0.0.1:4222', got {url!r}",
                  c.lines.key(line, "servers"))
        else:
            servers.append(url)
    sale = st["sale"]
    if sale is not None and not SALE_ID.match(sale):
        c.add("storage.sale", "must be 1-64 letters, digits, '-' or '_' starting with a letter or digit, "
              f"got {sale!r}", c.lines.key(line, "sale"))
    if st["backend"] == "jetstream":
        derived = sale_id(stream_name)
        lost = "".join(ch for ch in stream_name if ch.isalnum() and not ch.isascii())
        if sale is None and lost and not derived.startswith("sale-"):
            # '蜂蜜专场 3月15日' and '鸡蛋专场 3月15日' both gave '3-15': the second sale joined the first one's log.
            c.add("storage.sale", f"must be set with backend = 'jetstream' for this [stream] name: the id made "
                  f"from {stream_name!r} keeps only {derived!r} (not {lost!r}), which other sales' names give "
                  f"too, and sales with one id share one log; set sale = \"...\" to an id of this sale's own "
                  f"(sale = \"{derived}\" keeps the log this name has used)", line)
        if "servers" in given and not given["servers"] and isinstance(given["servers"], list):
            c.add("storage.servers", "must list at least one server with backend = 'jetstream', got []",
                  c.lines.key(line, "servers"))
        elif "servers" not in given:
            c.add("storage.servers", "is required with backend = 'jetstream' (a list of URLs such as "
                  "['nats://10.0.0.1:4222'])", line)
    else:
        for key in ("servers", "replicas", "sale", "lease_seconds"):
            if key in given:
                c.add(f"storage.{key}", f"only applies with backend = 'jetstream' (backend is "
                      f"{st['backend']!r}), got {given[key]!r}", c.lines.key(line, key))
    return tuple(servers), (sale if isinstance(sale, str) and SALE_ID.match(sale) else sale_id(stream_name))


#: The most units a product's stock, presale or limit may be: far above any sale, well within the 64-bit
#: integers the journal and its snapshots store (99999999999999999999 stopped `run` with a traceback).
MAX_UNITS = 10**12
#: The highest price: a guard against a typo or ``inf`` (which stopped `run` and `parse` with a traceback).
MAX_PRICE = 10.0**9


def check_units(v: Any) -> str | None:
    """0 to :data:`MAX_UNITS`."""
    return check_nonneg(v) or (None if v <= MAX_UNITS else f"must be at most {MAX_UNITS:,}")


def check_price(v: Any) -> str | None:
    """0 to :data:`MAX_PRICE`, a finite number."""
    return check_nonneg(v) or (None if v <= MAX_PRICE else f"must be at most {MAX_PRICE:,.0f}")


VARIANT_KEYS: dict[str, Option] = {
    "name": Option(str, required=True),
    "aliases": Option(list, []),
    "stock": Option(int, 0, check=check_units),
    "presale": Option(int, 0, check=check_units),
    "price": Option(float, check=check_price),
    "code": Option(str),
    "options": Option(dict, doc="with product options: one value of each, as in { colour = 'black', size = 'M' }"),
}
OPTION_KEYS: dict[str, Option] = {
    "name": Option(str, required=True),
    "values": Option(list, required=True, doc="the option's values, each { name = ..., aliases = [...] }"),
}
OPTION_VALUE_KEYS: dict[str, Option] = {
    "name": Option(str, required=True),
    "aliases": Option(list, []),
}
PRODUCT_KEYS: dict[str, Option] = {
    "sku": Option(str, required=True),
    "name": Option(str, required=True),
    "aliases": Option(list, []),
    "link": Option(int, check=check_positive),
    "price": Option(float, 0.0, check=check_price),
    "stock": Option(int, 0, check=check_units),
    "limit": Option(int, 0, check=check_units),
    "presale": Option(int, 0, check=check_units),
    "presale_note": Option(str, "", doc="said to presale buyers, e.g. 'ships from Tuesday'"),
    "code": Option(str, doc="a short code buyers may type, as in 'SOLD A12 2'"),
    "variants": Option(list, []),
    "options": Option(list, [], doc="axes of the variants (colour x size), each { name = ..., values = [...] }"),
}
#: Sections the daemon reads. Each maps key -> Option; tables inside (``replies.templates``) are checked there.
def _section(settings: type[Any], **options: Option) -> dict[str, Option]:
    """The keys of one daemon section, their defaults taken from its settings class (one place for each)."""
    defaults = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
                for f in dataclasses.fields(settings)}
    if set(options) != set(defaults):
        raise TypeError(f"{settings.__name__}: the options {sorted(options)} differ from its fields {sorted(defaults)}")
    return {k: dataclasses.replace(o, default=defaults[k]) for k, o in options.items()}


#: Sections the daemon reads, each checked against its settings class in livecart.core.settings.
DAEMON_SECTIONS: dict[str, dict[str, Option]] = {
    "control": _section(
        ControlSettings,
        host=Option(str),
        port=Option(int, check=check_port, doc="0 = pick a free port (written to the state file)"),
        token=Option(str, doc='"" = generate one at start (written to the state file)'),
        mqtt_host=Option(str),
        mqtt_port=Option(int, check=check_port),
        mqtt_topic=Option(str),
    ),
    "status": _section(
        StatusSettings,
        host=Option(str),
        port=Option(int, check=check_port),
        enabled=Option(bool),
        low_stock=Option(int, check=check_nonneg, doc="units below which a product is 'low stock'; 0 = 10% of its stock"),
    ),
    "daemon": _section(
        DaemonSettings,
        queue=Option(int, check=check_positive,
                     doc="comment batches waiting for the engine before adapters are made to wait"),
        hook_timeout=Option(float, check=check_more_than_zero, doc="longest one hook call may take (s)"),
        hook_queue=Option(int, check=check_positive, doc="items waiting per hook; beyond it the oldest is shed"),
        drain_seconds=Option(float, check=check_nonneg, doc="at shutdown, how long replies and hooks may take to drain (s)"),
        parse_process=Option(str, choices=("auto", "on", "off"),
                             doc="parse comments in a second process while they wait: auto = with 2+ CPUs"),
    ),
    "replies": _section(
        RepliesSettings,
        enabled=Option(bool),
        language=Option(str, choices=("zh", "en")),
        templates=Option(dict, check=check_templates,
                         doc="overrides of the reply templates, by key (livecart.core.templates.TEMPLATE_KEYS)"),
        timezone=Option(str, check=check_timezone, doc="IANA zone for the pay-by time; \"\" = the machine's own"),
        queue=Option(int, check=check_positive, doc="most reply messages pending per adapter"),
        max_len=Option(int, check=check_positive, doc="longest merged reply message (characters)"),
    ),
}


_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\-\"]+)\s*\]\]?")


class _Lines:
    """Finds the line of a table or key in the TOML source, so messages can say where to look."""

    def __init__(self, source: str) -> None:
        self.lines = source.splitlines()
        self.headers: list[tuple[int, str]] = []
        for n, line in enumerate(self.lines, 1):
            m = _HEADER.match(line)
            if m:
                self.headers.append((n, m.group(1).replace('"', "")))

    def table(self, name: str, index: int | None = None) -> int | None:
        found = [n for n, h in self.headers if h == name]
        if not found:
            return None
        if index is None:
            return found[0]
        return found[index] if index < len(found) else None

    def key(self, table_line: int | None, key: str) -> int | None:
        if table_line is None:
            return None
        pattern = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
        for n in range(table_line, len(self.lines)):
            if n > table_line and _HEADER.match(self.lines[n]):
                break
            if pattern.match(self.lines[n]):
                return n + 1
        return table_line


class _Checker:
    def __init__(self, file: str, source: str) -> None:
        self.file = file
        self.lines = _Lines(source)
        self.problems: list[Problem] = []

    def add(self, key: str, message: str, line: int | None) -> None:
        self.problems.append(Problem(self.file, key, message, line))

    def table(
        self, data: Any, schema: Mapping[str, Option], path: str, line: int | None, *, extra_ok: bool = False
    ) -> dict[str, Any]:
        """Check one table against ``schema``; return the values with defaults filled in."""
        if not isinstance(data, dict):
            self.add(path, "must be a table", line)
            return {k: o.default for k, o in schema.items()}
        out: dict[str, Any] = {}
        for key, value in data.items():
            opt = schema.get(key)
            if opt is None:
                if not extra_ok:
                    known = ", ".join(schema)
                    self.add(f"{path}.{key}", f"unknown key; expected one of: {known}", self.lines.key(line, key))
                continue
            where = self.lines.key(line, key)
            if not opt.accepts(value):
                self.add(f"{path}.{key}", f"must be {opt.type_name()}, got {value!r}", where)
                continue
            if opt.choices and value not in opt.choices:
                self.add(f"{path}.{key}", f"must be one of {', '.join(map(repr, opt.choices))}, got {value!r}",
                         where)
                continue
            if opt.check is not None:
                msg = opt.check(value)
                if msg:
                    self.add(f"{path}.{key}", f"{msg}, got {value!r}", where)
                    continue
            out[key] = float(value) if opt.type is float and isinstance(value, int) else value
        for key, opt in schema.items():
            if key not in out:
                if opt.required and key not in data:
                    self.add(f"{path}.{key}", f"is required ({opt.type_name()})", line)
                out.setdefault(key, opt.default)
        return out

    def aliases(self, value: list[Any], path: str, line: int | None) -> tuple[str, ...]:
        good: list[str] = []
        for i, a in enumerate(value):
            if not isinstance(a, str) or not a.strip():
                self.add(f"{path}.aliases[{i}]", f"must be a non-empty string, got {a!r}", line)
            else:
                good.append(a.strip())
        return tuple(good)


#: A plugin type's option schema; None: the type is not installed here and its table is taken unchecked.
PluginLookup = Callable[[str], Mapping[str, Option] | None]


def _default_lookup(kind: str) -> PluginLookup:
    from livecart import registry

    def lookup(type_name: str) -> Mapping[str, Option]:
        if kind != "adapters":
            return registry.hook_class(type_name).OPTIONS
        cls = registry.adapter_class(type_name)
        if not cls.can_reply:
            return cls.OPTIONS
        # Every adapter that replies takes its platform's rate limit from the config too (a companion's
        # platform has one as well); an adapter declaring these keys itself keeps its own.
        opts = dict(cls.OPTIONS)
        opts.setdefault("reply_limit", Option(int, cls.reply_limit, check=check_more_than_zero,
                                              doc="most replies per reply_window (default: the adapter's own)"))
        opts.setdefault("reply_window", Option(float, float(cls.reply_window), check=check_more_than_zero,
                                               doc="seconds of the reply rate window"))
        return opts

    return lookup


def reading_lookup(kind: str) -> PluginLookup:
    """For commands that only read the journal (report, export, journal): an adapter or hook type that is
    not installed on this machine (a plugin the daemon's machine has) is no reason to refuse; its table is
    taken as it is, unchecked, since nothing here runs it."""
    strict = _default_lookup(kind)

    def lookup(type_name: str) -> Mapping[str, Option] | None:
        try:
            return strict(type_name)
        except PluginError:
            return None

    return lookup


def load_for_reading(path: str | Path) -> Config:
    """:func:`load` for a command that reads the journal and runs no adapter (see :func:`reading_lookup`)."""
    return load(path, adapter_options=reading_lookup("adapters"), hook_options=reading_lookup("hooks"))


def load(path: str | Path, *, adapter_options: PluginLookup | None = None,
         hook_options: PluginLookup | None = None) -> Config:
    """Read and validate the stream config at ``path``. Raises :class:`ConfigError` with every problem.

    ``adapter_options`` / ``hook_options`` map a plugin type to its option schema; by default they come from
    the entry-point registry, so an unknown type is reported with the list of known ones.
    """
    p = Path(path)
    try:
        source = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(str(p), "", f"cannot read the config: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(str(p), "", "is not UTF-8 text")]) from exc
    return loads(source, file=str(p), base_dir=p.parent, adapter_options=adapter_options,
                 hook_options=hook_options)


def loads(source: str, *, file: str = "<config>", base_dir: Path | None = None,
          adapter_options: PluginLookup | None = None, hook_options: PluginLookup | None = None) -> Config:
    """Validate a config given as TOML text (see :func:`load`). Relative paths resolve against ``base_dir``."""
    try:
        raw = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise ConfigError([Problem(file, "", f"not valid TOML: {exc}", int(m.group(1)) if m else None)]) from exc
    c = _Checker(file, source)
    base = base_dir if base_dir is not None else Path.cwd()

    known_top = {"stream", "storage", "adapters", "products", "hooks", *DAEMON_SECTIONS}
    for key in raw:
        if key not in known_top:
            c.add(key, f"unknown section; expected one of: {', '.join(sorted(known_top))}", c.lines.table(key))

    if "stream" not in raw:
        c.add("stream", "the [stream] table is required (at least: name)", None)
    s = c.table(raw.get("stream", {}), STREAM_KEYS, "stream", c.lines.table("stream"))
    st = c.table(raw.get("storage", {}), STORAGE_KEYS, "storage", c.lines.table("storage"))
    servers, sale = _storage_backend(c, st, raw.get("storage", {}), str(s.get("name") or ""))
    storage_path = Path(st["path"]) if isinstance(st["path"], str) else Path("livecart.db")
    if not storage_path.is_absolute():
        storage_path = base / storage_path

    products = _products(c, raw.get("products", []))
    skus = {p.sku for p in products}
    featured = s.get("featured")
    if featured is not None and featured not in skus:
        c.add("stream.featured", f"{featured!r} names no product; expected one of: "
              f"{', '.join(sorted(skus)) or '(none)'}",
              c.lines.key(c.lines.table("stream"), "featured"))

    adapters = _plugins(c, raw.get("adapters", []), "adapters", adapter_options or _default_lookup("adapters"),
                        base)
    hooks = _plugins(c, raw.get("hooks", []), "hooks", hook_options or _default_lookup("hooks"), base)
    sections = {name: c.table(raw.get(name, {}), schema, name, c.lines.table(name))
                for name, schema in DAEMON_SECTIONS.items()}

    if c.problems:
        # In file order, so a host can fix them top to bottom; problems with no line come last.
        raise ConfigError(sorted(c.problems, key=lambda p: p.line if p.line is not None else 1 << 30))
    return Config(
        path=Path(file) if base_dir is None else base / Path(file).name,
        stream=StreamSettings(s["name"], featured, float(s["hold_minutes"]), bool(s["bare_plus_one"]),
                              int(s["max_qty"])),
        storage=StorageSettings(path=storage_path, durability=st["durability"], batch_max=int(st["batch_max"]),
                                batch_delay_ms=float(st["batch_delay_ms"]),
                                snapshot_events=int(st["snapshot_events"] or SNAPSHOT_EVENTS[st["backend"]]),
                                snapshot_seconds=float(st["snapshot_seconds"]),
                                dedupe_window=int(st["dedupe_window"]),
                                backend=st["backend"], servers=servers, replicas=int(st["replicas"]), sale=sale,
                                lease_seconds=float(st["lease_seconds"])),
        catalogue=Catalogue(tuple(products)),
        adapters=tuple(adapters),
        hooks=tuple(hooks),
        control=ControlSettings(**sections["control"]),
        status=StatusSettings(**sections["status"]),
        daemon=DaemonSettings(**sections["daemon"]),
        replies=RepliesSettings(**sections["replies"]),
        sections=sections,
    )


def _products(c: _Checker, raw: Any) -> list[Product]:
    if not isinstance(raw, list):
        c.add("products", "must be an array of tables ([[products]])", c.lines.table("products"))
        return []
    products: list[Product] = []
    seen_sku: dict[str, int] = {}
    seen_alias: dict[str, tuple[int, str]] = {}
    seen_link: dict[int, str] = {}
    seen_code: dict[str, str] = {}

    def claim_alias(alias: str, owner: tuple[int, str], path: str, line: int | None) -> None:
        k = alias_key(alias)
        other = seen_alias.get(k)
        if other is not None and other[0] != owner[0]:
            c.add(path, f"alias {alias!r} is also an alias of {other[1]} (products[{other[0]}]); each alias "
                  "must name one product", line)
        seen_alias[k] = owner

    def claim_code(code: str | None, owner: str, path: str, line: int | None) -> None:
        if code is None:
            return
        k = alias_key(code)
        if k in seen_code:
            c.add(path, f"code {code!r} is also the code of {seen_code[k]}", line)
        seen_code[k] = owner

    for i, entry in enumerate(raw):
        line = c.lines.table("products", i)
        path = f"products[{i}]"
        d = c.table(entry, PRODUCT_KEYS, path, line)
        sku = d["sku"] if isinstance(d["sku"], str) else f"#{i}"
        if isinstance(d["sku"], str):
            if sku in seen_sku:
                c.add(f"{path}.sku", f"duplicate sku {sku!r} (also products[{seen_sku[sku]}])",
                      c.lines.key(line, "sku"))
            seen_sku[sku] = i
        aliases = c.aliases(d["aliases"], path, c.lines.key(line, "aliases"))
        for a in (*aliases, d["name"] if isinstance(d["name"], str) else ""):
            if a:
                claim_alias(a, (i, sku), f"{path}.aliases", c.lines.key(line, "aliases"))
        link = d["link"]
        if link is not None:
            if link in seen_link:
                c.add(f"{path}.link", f"duplicate link {link} (also {seen_link[link]})", c.lines.key(line, "link"))
            seen_link[link] = sku
        claim_code(d["code"], sku, f"{path}.code", c.lines.key(line, "code"))
        variants: list[Variant] = []
        options = _options(c, d["options"], sku, path, c.lines.key(line, "options"))
        combos: dict[tuple[tuple[str, str], ...], str] = {}
        if isinstance(entry, dict) and d["variants"]:
            for key in ("stock", "presale"):
                if key in entry:
                    c.add(f"{path}.{key}", f"a product with variants keeps {key} on each variant, not on the "
                          "product", c.lines.key(line, key))
            names: set[str] = set()
            for j, ventry in enumerate(d["variants"]):
                vpath = f"{path}.variants[{j}]"
                vd = c.table(ventry, VARIANT_KEYS, vpath, c.lines.key(line, "name"))
                vname = vd["name"] if isinstance(vd["name"], str) else f"#{j}"
                if vname in names:
                    c.add(f"{vpath}.name", f"duplicate variant {vname!r} of {sku}", line)
                names.add(vname)
                valiases = c.aliases(vd["aliases"], vpath, line)
                # Variant aliases may repeat across products ("large" jar of honey and of tea): they are
                # only looked up after the product is known. Within one product they must be distinct.
                own: set[str] = set()
                for a in (*valiases, vname):
                    k = alias_key(a)
                    if k in own and a != vname:
                        c.add(f"{vpath}.aliases", f"alias {a!r} names two variants of {sku}", line)
                    own.add(k)
                claim_code(vd["code"], f"{sku}/{vname}", f"{vpath}.code", line)
                vopts = _variant_options(c, options, vd["options"], sku, vpath, c.lines.key(line, "name"))
                if vopts:
                    other = combos.get(vopts)
                    if other is not None:
                        c.add(f"{vpath}.options", f"variants {other!r} and {vname!r} of {sku} have the same "
                              f"options {dict(vopts)}; each combination must be one variant", line)
                    combos[vopts] = vname
                variants.append(Variant(vname, valiases, int(vd["stock"]), int(vd["presale"]),
                                        vd["price"], vd["code"], vopts))
        elif options:
            c.add(f"{path}.options", "a product with options needs [[products.variants]], one per combination "
                  "of values", c.lines.key(line, "options"))
        products.append(Product(
            sku=sku, name=d["name"] if isinstance(d["name"], str) else sku, aliases=aliases, link=link,
            price=float(d["price"]), stock=int(d["stock"]), limit=int(d["limit"]), presale=int(d["presale"]),
            presale_note=d["presale_note"], code=d["code"], variants=tuple(variants), options=options,
        ))
    return products


def _options(c: _Checker, raw: list[Any], sku: str, path: str, line: int | None) -> tuple[ProductOption, ...]:
    """A product's ``options``: names unique, each with values whose names and aliases are unique within it."""
    out: list[ProductOption] = []
    names: set[str] = set()
    for i, entry in enumerate(raw):
        opath = f"{path}.options[{i}]"
        od = c.table(entry, OPTION_KEYS, opath, line)
        oname = od["name"]
        if not isinstance(oname, str) or not oname.strip():
            continue
        if oname in names:
            c.add(f"{opath}.name", f"duplicate option {oname!r} of {sku}", line)
        names.add(oname)
        values: list[OptionValue] = []
        seen: dict[str, str] = {}
        for j, ventry in enumerate(od["values"] or []):
            vpath = f"{opath}.values[{j}]"
            vd = c.table(ventry, OPTION_VALUE_KEYS, vpath, line)
            vname = vd["name"]
            if not isinstance(vname, str) or not vname.strip():
                continue
            aliases = c.aliases(vd["aliases"], vpath, line)
            for a in dict.fromkeys((vname, *aliases)):
                k = alias_key(a)
                other = seen.get(k)
                if other is not None and other != vname:
                    c.add(f"{vpath}.aliases", f"{a!r} names two values of option {oname!r} of {sku} "
                          f"({other!r} and {vname!r}); each word must name one value", line)
                seen.setdefault(k, vname)
            values.append(OptionValue(vname, aliases))
        if not values and isinstance(od["values"], list):
            c.add(f"{opath}.values", f"option {oname!r} of {sku} needs at least one value", line)
        out.append(ProductOption(oname, tuple(values)))
    return tuple(out)


def _variant_options(c: _Checker, options: tuple[ProductOption, ...], raw: Any, sku: str, path: str,
                     line: int | None) -> tuple[tuple[str, str], ...]:
    """A variant's ``options`` table, checked against the product's: one known value of every option."""
    if not options:
        if raw is not None:
            c.add(f"{path}.options", f"{sku} has no [products].options; declare them before naming values", line)
        return ()
    if raw is None:
        c.add(f"{path}.options", "is required: the product has options "
              + ", ".join(repr(o.name) for o in options) + "; name one value of each", line)
        return ()
    out: list[tuple[str, str]] = []
    for key in raw:
        if all(o.name != key for o in options):
            c.add(f"{path}.options.{key}", "unknown option; expected one of: "
                  + ", ".join(o.name for o in options), line)
    for o in options:
        value = raw.get(o.name)
        if value is None:
            c.add(f"{path}.options.{o.name}", f"is required: one of {', '.join(repr(v.name) for v in o.values)}",
                  line)
            continue
        if not isinstance(value, str) or o.value(value) is None:
            c.add(f"{path}.options.{o.name}", f"must be one of {', '.join(repr(v.name) for v in o.values)}, "
                  f"got {value!r}", line)
            continue
        out.append((o.name, value))
    return tuple(out) if len(out) == len(options) else ()


def _reply_language(value: Any) -> str | None:
    if value in ("", *TEMPLATES):
        return None
    return f"must be one of {', '.join(TEMPLATES)}"  # the checker adds what it got


def _plugins(c: _Checker, raw: Any, kind: str, lookup: PluginLookup, base: Path) -> list[PluginSettings]:
    if not isinstance(raw, list):
        c.add(kind, f"must be an array of tables ([[{kind}]])", c.lines.table(kind))
        return []
    out: list[PluginSettings] = []
    names: set[str] = set()
    for i, entry in enumerate(raw):
        line = c.lines.table(kind, i)
        path = f"{kind}[{i}]"
        if not isinstance(entry, dict):
            c.add(path, "must be a table", line)
            continue
        type_name = entry.get("type")
        if not isinstance(type_name, str):
            c.add(f"{path}.type", "is required: the adapter type (a string)" if kind == "adapters"
                  else "is required: the hook type (a string)", line)
            continue
        try:
            found = lookup(type_name)
        except PluginError as exc:
            c.add(f"{path}.type", str(exc), c.lines.key(line, "type"))
            continue
        own = ("type", "name", "reply_language") if kind == "adapters" else ("type", "name")
        reserved = sorted(k for k in own if found is not None and k in found)
        if reserved:
            # A plugin declaring one of them never received its value (the daemon takes 'name' as the table's
            # name) and its own check replaced livecart's, after open() had connected.
            c.add(f"{path}.type", f"{kind[:-1]} type {type_name!r} declares {', '.join(map(repr, reserved))} in its "
                  f"OPTIONS, which livecart keeps for itself in every [[{kind}]] table: the plugin must call "
                  "its option(s) something else", c.lines.key(line, "type"))
            continue
        # Not installed here, for a command that runs no plugin: the table as it is.
        schema = dict(found) if found is not None else {
            k: Option(object, None) for k in entry if k not in ("type", "name", "reply_language")}
        schema.setdefault("type", Option(str, required=True))
        schema.setdefault("name", Option(str, f"{type_name}-{i}", doc="a name for logs and metrics"))
        if kind == "adapters":
            schema.setdefault("reply_language", Option(
                str, "", check=_reply_language,
                doc="language of the replies to this adapter's buyers; default [replies].language"))
        opts = c.table(entry, schema, path, line)
        name = opts.pop("name")
        opts.pop("type", None)
        if name in names:
            c.add(f"{path}.name", f"duplicate {kind[:-1]} name {name!r}", c.lines.key(line, "name"))
        names.add(name)
        for key, opt in schema.items():
            value = opts.get(key)
            if opt.path and isinstance(value, str) and value not in ("", "-") and not Path(value).is_absolute():
                opts[key] = str(base / value)
        out.append(PluginSettings(type_name, name, opts, i))
    return out
