"""A host's control sent again with its key after the daemon died is applied once: ``livecart run`` as a
process, killed with SIGKILL between the two sends, over the console's API, ``/control`` and ``livecart ctl``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.e2e.console_sale import TOKEN, Sale, request, running_sale
from tests.e2e.test_console_security import login

pytestmark = pytest.mark.slow

RESTOCK = {"action": "restock", "sku": "egg-10", "qty": 7}


@pytest.fixture
def sale(tmp_path: Path) -> Iterator[Sale]:
    yield from running_sale(tmp_path, language="en")


def console_post(sale: Sale, body: dict[str, object], key: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    cookie, csrf = login(sale)
    status, headers, raw = request(sale.url + "/console/api/control", method="POST", body=body,
                                   headers={"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": sale.url,
                                            "Sec-Fetch-Site": "same-origin", "Idempotency-Key": key})
    return status, headers, orjson.loads(raw)


def control_post(sale: Sale, body: dict[str, object], key: str) -> tuple[int, dict[str, Any]]:
    st = sale.daemon.state
    status, _, raw = request(f"http://{st['host']}:{st['port']}/control", method="POST", body=body,
                             headers={"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": key})
    return status, orjson.loads(raw)


def stock(sale: Sale) -> int:
    return int(sale.state()["products"]["egg-10"]["stock"])


def test_a_tap_sent_again_after_a_crash_restocks_once(sale: Sale) -> None:
    status, headers, answer = console_post(sale, RESTOCK, "tap-restock-0001")
    assert status == 200, answer
    assert "Idempotent-Replayed" not in headers
    assert stock(sale) == 47
    # The daemon dies before the phone hears the answer; the host taps again once it is back.
    sale.daemon.kill()
    sale.daemon.start()
    status, headers, answer = console_post(sale, RESTOCK, "tap-restock-0001")
    assert status == 200, answer
    assert headers.get("Idempotent-Replayed") == "true"
    assert answer["result"]["replayed"] is True
    assert answer["result"]["product"]["stock"] == 47
    assert stock(sale) == 47
    # The same key with another control is refused (by this process's page answers: 422); a new key is a new
    # control.
    status, _, answer = console_post(sale, {**RESTOCK, "qty": 8}, "tap-restock-0001")
    assert status == 422, answer
    status, _, answer = console_post(sale, RESTOCK, "tap-restock-0002")
    assert status == 200, answer
    assert stock(sale) == 54, answer
    metrics = sale.daemon.api("/metrics")
    assert 'livecart_controls_total{action="restock",result="replayed",transport="console"} 1' in metrics


def test_control_and_ctl_with_a_key_apply_once_across_a_crash(sale: Sale) -> None:
    status, answer = control_post(sale, RESTOCK, "script-0001")
    assert status == 200, answer
    assert not answer["result"].get("replayed"), answer
    sale.daemon.kill()
    sale.daemon.start()
    status, answer = control_post(sale, RESTOCK, "script-0001")
    assert status == 200, answer
    assert answer["result"]["replayed"] is True, answer
    rc, answer, err = sale.daemon.ctl("--key", "script-0001", "restock", "egg-10", "7")
    assert rc == 0, err
    assert answer["result"]["replayed"] is True, err
    assert stock(sale) == 47
    # The same key with another control is refused, by what the journal says.
    status, answer = control_post(sale, {**RESTOCK, "qty": 8}, "script-0001")
    assert status == 409, answer
    assert answer["code"] == "key_reused", answer
    # A ctl without --key makes its own: each run is a new control.
    rc, answer, err = sale.daemon.ctl("restock", "egg-10", "7")
    assert rc == 0, err
    assert "replayed" not in answer["result"], err
    assert stock(sale) == 54
    rc, _, err = sale.daemon.ctl("--key", "bad key", "restock", "egg-10", "7")
    assert rc == 2
    assert "--key" in err
    # The journal has every control once: a restart after a clean stop comes back to the same stock.
    assert sale.daemon.stop() == 0
    sale.daemon.start()
    assert stock(sale) == 54
