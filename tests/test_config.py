from __future__ import annotations

from pathlib import Path

import pytest

from livecart import config
from livecart.core.errors import ConfigError
from livecart.plugin import Option

BASE = """
[stream]
name = "t"
featured = "egg"

[[products]]
sku = "egg"
name = "Eggs"
aliases = ["鸡蛋", "egg"]
link = 1
stock = 10
"""


def test_sample_config_loads(sample_config_path: Path) -> None:
    cfg = config.load(sample_config_path)
    assert cfg.stream.featured == "egg-10"
    assert cfg.catalogue.by_link[3].sku == "tea-chry"
    tea = cfg.catalogue.by_sku["tea-chry"]
    assert [v.name for v in tea.variants] == ["50g", "100g"]
    assert tea.variant("100g") is not None
    assert tea.variant("100g").presale == 100
    assert cfg.storage.path == sample_config_path.parent / "livecart.db"
    assert cfg.adapters[0].type == "replay"
    assert cfg.adapters[0].options["path"] == str(sample_config_path.parent / "sample-comments.jsonl")


def test_defaults_fill_in() -> None:
    cfg = config.loads(BASE)
    assert cfg.stream.hold_minutes == 30.0
    assert cfg.stream.bare_plus_one is True
    assert cfg.storage.durability == "fsync"
    assert cfg.products[0].limit == 0
    assert cfg.products[0].presale == 0


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.loads(text, file="s.toml")
    return [str(p) for p in info.value.problems]


def test_every_problem_is_reported_once_with_file_line_and_key() -> None:
    text = BASE + """
[[products]]
sku = "egg"
name = "More eggs"
aliases = ["EGG"]
link = 1
stock = -3
colour = "brown"
"""
    msgs = problems(text)
    assert len(msgs) == 5, msgs
    joined = "\n".join(msgs)
    assert "s.toml:14 [products[1].sku]: duplicate sku 'egg'" in joined
    assert "alias 'EGG' is also an alias of egg" in joined
    assert "[products[1].link]: duplicate link 1" in joined
    assert "s.toml:18 [products[1].stock]: must be 0 or more, got -3" in joined
    assert "[products[1].colour]: unknown key" in joined


def test_unknown_adapter_type_lists_the_known_ones() -> None:
    msgs = problems(BASE + '\n[[adapters]]\ntype = "carrier-pigeon"\n')
    assert len(msgs) == 1
    assert "unknown adapter type 'carrier-pigeon'; known types:" in msgs[0]
    assert "replay" in msgs[0]
    assert "mqtt" in msgs[0]


def test_unknown_section_and_bad_types() -> None:
    msgs = problems(BASE.replace('featured = "egg"', 'featured = "nope"\nhold_minutes = "ten"') + "[shop]\nx=1\n")
    joined = "\n".join(msgs)
    assert "[stream.featured]: 'nope' names no product" in joined
    assert "[stream.hold_minutes]: must be a number, got 'ten'" in joined
    assert "[shop]: unknown section" in joined


def test_variants_keep_stock_on_the_variant() -> None:
    text = BASE + """
[[products]]
sku = "tea"
name = "Tea"
stock = 5
  [[products.variants]]
  name = "big"
  stock = 2
  [[products.variants]]
  name = "big"
"""
    joined = "\n".join(problems(text))
    assert "keeps stock on each variant" in joined
    assert "duplicate variant 'big' of tea" in joined


def test_invalid_toml_names_the_line() -> None:
    msgs = problems('[stream]\nname = "x"\nfeatured = \n')
    assert msgs[0].startswith("s.toml:3: not valid TOML")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config"):
        config.load(tmp_path / "nope.toml")


def test_problems_are_listed_in_file_order() -> None:
    text = BASE + """
[[products]]
sku = "egg"
name = "More eggs"
stock = -3
"""
    with pytest.raises(ConfigError) as info:
        config.loads(text, file="s.toml")
    lines = [p.line for p in info.value.problems]
    assert lines == sorted(lines)
    assert len(lines) == 2


def test_daemon_sections_are_typed_settings_with_defaults() -> None:
    cfg = config.loads(BASE + '\n[daemon]\nqueue = 5\n[replies]\nlanguage = "en"\n[status]\nenabled = false\n')
    assert cfg.daemon.queue == 5
    assert cfg.daemon.hook_timeout == 10.0
    assert cfg.replies.language == "en"
    assert cfg.replies.templates == {}
    assert cfg.status.enabled is False
    assert cfg.control.host == "127.0.0.1"
    assert cfg.control.port == 0


def test_a_bad_daemon_setting_names_the_value() -> None:
    msgs = problems(BASE + "\n[control]\nport = 70000\n[daemon]\nhook_timeout = 0\n")
    assert any("[control.port]: must be a port number from 0 to 65535, got 70000" in m for m in msgs)
    assert any("[daemon.hook_timeout]: must be more than 0, got 0" in m for m in msgs)


# --------------------------------------------------------------------------- [storage] backend (contract §7)

JS = BASE.replace('name = "t"', 'name = "Tonggu spring sale"')


def test_storage_backend_defaults_to_sqlite() -> None:
    cfg = config.loads(BASE)
    assert cfg.storage.backend == "sqlite"
    assert cfg.storage.servers == ()


def test_jetstream_backend_reads_servers_replicas_and_derives_the_sale() -> None:
    cfg = config.loads(JS + '[storage]\nbackend = "jetstream"\n'
                       'servers = ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]\nreplicas = 3\n')
    assert cfg.storage.backend == "jetstream"
    assert cfg.storage.servers == ("nats://10.0.0.1:4222", "nats://10.0.0.2:4222")
    assert cfg.storage.replicas == 3
    assert cfg.storage.sale == "tonggu-spring-sale"


def test_snapshot_events_defaults_by_backend_and_a_set_value_is_kept() -> None:
    # The SQLite journal snapshots twice as often as the JetStream mode, whose snapshots still carry every id.
    assert config.loads(BASE).storage.snapshot_events == 100_000
    js = JS + '[storage]\nbackend = "jetstream"\nservers = ["nats://10.0.0.1:4222"]\n'
    assert config.loads(js).storage.snapshot_events == 200_000
    assert config.loads(BASE + "[storage]\nsnapshot_events = 250000\n").storage.snapshot_events == 250_000
    assert config.loads(js + "snapshot_events = 30000\n").storage.snapshot_events == 30_000
    with pytest.raises(ConfigError, match="snapshot_events"):
        config.loads(BASE + "[storage]\nsnapshot_events = 0\n")


def test_the_decider_lease_is_a_storage_key_checked_against_elections() -> None:
    js = JS + '[storage]\nbackend = "jetstream"\nservers = ["nats://10.0.0.1:4222"]\n'
    assert config.loads(js).storage.lease_seconds == 10.0
    assert config.loads(js + "lease_seconds = 20\n").storage.lease_seconds == 20.0
    for bad in ("3", "301", "0"):
        with pytest.raises(ConfigError) as e:
            config.loads(js + f"lease_seconds = {bad}\n", file="s.toml")
        assert "[storage.lease_seconds]" in str(e.value)
        assert "from 5 to 300" in str(e.value)
    with pytest.raises(ConfigError) as e:
        config.loads(JS + "[storage]\nlease_seconds = 20\n", file="s.toml")
    assert "[storage.lease_seconds]" in str(e.value)
    assert "only applies with backend = 'jetstream'" in str(e.value)


def test_a_sale_named_only_in_chinese_gets_a_stable_hashed_id() -> None:
    assert config.sale_id("铜鼓春季特卖") == config.sale_id("铜鼓春季特卖")
    assert config.sale_id("铜鼓春季特卖").startswith("sale-")
    assert config.SALE_ID.match(config.sale_id("铜鼓春季特卖"))


def test_a_partly_chinese_name_needs_its_own_sale_id_in_the_jetstream_mode() -> None:
    # '蜂蜜专场 3月15日' and '鸡蛋专场 3月15日' both made '3-15': the second sale joined the first one's log.
    storage = '[storage]\nbackend = "jetstream"\nservers = ["nats://10.0.0.1:4222"]\n'
    honey = JS.replace('name = "Tonggu spring sale"', 'name = "蜂蜜专场 3月15日"')
    assert honey != JS
    with pytest.raises(ConfigError) as e:
        config.loads(honey + storage, file="s.toml")
    assert "[storage.sale]" in str(e.value)
    assert "keeps only '3-15'" in str(e.value)
    assert 'sale = "3-15" keeps the log this name has used' in str(e.value)
    assert config.loads(honey + storage + 'sale = "honey-0315"\n').storage.sale == "honey-0315"
    assert config.loads(honey).storage.backend == "sqlite"  # the SQLite journal has no sale id to share
    only_chinese = JS.replace('name = "Tonggu spring sale"', 'name = "蜂蜜专场"')
    assert config.loads(only_chinese + storage).storage.sale.startswith("sale-")  # a hash of the whole name


def test_jetstream_problems_name_key_value_and_expectation() -> None:
    with pytest.raises(ConfigError) as e:
        config.loads(JS + '[storage]\nbackend = "jetstrem"\n', file="s.toml")
    assert "[storage.backend]" in str(e.value)
    assert "'jetstrem'" in str(e.value)
    assert "'jetstream'" in str(e.value)
    with pytest.raises(ConfigError) as e:
        config.loads(JS + '[storage]\nbackend = "jetstream"\nservers = ["http://x/y", 5]\nreplicas = 7\n'
                     'sale = "a b"\n', file="s.toml")
    msgs = [str(p) for p in e.value.problems]
    assert any("[storage.servers[0]]" in m and "'http://x/y'" in m for m in msgs)
    assert any("[storage.servers[1]]" in m and "5" in m for m in msgs)
    assert any("[storage.replicas]" in m and "from 1 to 5" in m and "7" in m for m in msgs)
    assert any("[storage.sale]" in m and "'a b'" in m for m in msgs)
    assert all(m.startswith("s.toml:") for m in msgs)


def test_jetstream_needs_servers_and_sqlite_refuses_jetstream_keys() -> None:
    with pytest.raises(ConfigError) as e:
        config.loads(JS + '[storage]\nbackend = "jetstream"\n')
    assert "storage.servers" in str(e.value)
    assert "required" in str(e.value)
    with pytest.raises(ConfigError) as e:
        config.loads(JS + '[storage]\nservers = ["nats://127.0.0.1:4222"]\n')
    assert "storage.servers" in str(e.value)
    assert "only applies with backend = 'jetstream'" in str(e.value)


def test_a_plugin_declaring_a_key_livecart_keeps_for_itself_is_refused_at_load() -> None:
    # A plugin author's check: an option called 'name' never reached the plugin (the daemon took it as the
    # table's name) and a 'reply_language' of its own replaced livecart's check, after open() had connected.
    def lookup(type_name: str) -> dict[str, Option]:
        return {"name": Option(str, required=True), "reply_language": Option(int, 0), "url": Option(str, "")}

    with pytest.raises(ConfigError) as e:
        config.loads(BASE + '[[adapters]]\ntype = "chirp"\nname = "main"\n', file="s.toml", adapter_options=lookup)
    assert "s.toml:" in str(e.value)
    assert "adapter type 'chirp' declares 'name', 'reply_language' in its OPTIONS" in str(e.value)


def test_replying_adapters_take_a_rate_limit_and_a_bad_language_is_said_once() -> None:
    ws = BASE + '[[adapters]]\ntype = "websocket"\nmode = "server"\n'
    assert config.loads(ws).adapters[0].options["reply_limit"] is None  # the websocket adapter's own: none
    cfg = config.loads(ws + "reply_limit = 20\nreply_window = 1\n")
    assert (cfg.adapters[0].options["reply_limit"], cfg.adapters[0].options["reply_window"]) == (20, 1.0)
    with pytest.raises(ConfigError) as e:
        config.loads(BASE + '[[adapters]]\ntype = "replay"\npath = "x.jsonl"\nreply_limit = 5\n', file="s.toml")
    assert "[adapters[0].reply_limit]: unknown key" in str(e.value)  # a replay never replies
    with pytest.raises(ConfigError) as e:
        config.loads(ws + 'reply_language = "fr"\n', file="s.toml")
    assert str(e.value).count("got 'fr'") == 1


@pytest.mark.parametrize(("line", "said"), [
    ("stock = 99999999999999999999", "[products[0].stock]: must be at most 1,000,000,000,000"),
    ("presale = 10000000000000", "[products[0].presale]: must be at most 1,000,000,000,000"),
    ("limit = 10000000000000", "[products[0].limit]: must be at most 1,000,000,000,000"),
    ("price = inf", "[products[0].price]: must be at most 1,000,000,000"),
    ("price = nan", "[products[0].price]: must be 0 or more"),
])
def test_numbers_no_sale_has_are_config_problems(line: str, said: str) -> None:
    """Found from outside: ``stock = 99999999999999999999`` and ``price = inf`` stopped ``run`` (and ``parse``)
    with a traceback (an integer past 64 bits in the journal's catalogue, an infinite price in the parser)."""
    text = BASE.replace("stock = 10\n", "") + line + "\n"
    assert any(said in m for m in problems(text)), problems(text)
