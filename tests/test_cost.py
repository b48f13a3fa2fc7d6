"""The cost model against hand-computed cases."""

import json

import pytest

from tradewire import cost
from tradewire.cli import main


def test_appsync_events_by_hand():
    # 10 accounts x 1 update/s for 30 days = 25,920,000 published; 2 dashboards open 12 h a day deliver
    # 25,920,000 x 2 x 0.5 = 25,920,000; ops 51,840,000 x $1/M = $51.84;
    # connection-minutes 2 x 60 x 12 x 30 = 43,200 x $0.08/M = $0.003456
    load = cost.Load(accounts=10, updates_per_sec=1, dashboards=2, hours_per_day=12)
    a = cost.appsync_events(load)
    assert a["operations"] == 51_840_000
    assert a["connection_minutes"] == 43_200
    assert a["usd"] == pytest.approx(51.84 + 0.003456)


def test_api_gateway_lambda_dynamodb_by_hand():
    load = cost.Load(accounts=10, updates_per_sec=1, dashboards=0, durable_per_account_per_day=0)
    s = cost.apigw_lambda_dynamodb(load)
    msgs = 25_920_000
    apigw = msgs / 1e6 * 1.00 + (10 * 60 * 24 * 30) / 1e6 * 0.25  # 25.92 + 0.108
    lam = msgs / 1e6 * 0.20 + msgs * 0.020 * 0.125 * 0.0000166667  # 5.184 + 1.0800
    ddb = msgs / 1e6 * 0.625 + msgs / 1e6 * 0.125  # 16.2 + 3.24
    assert s["parts"]["api_gateway"] == pytest.approx(apigw)
    assert s["parts"]["lambda"] == pytest.approx(lam)
    assert s["parts"]["dynamodb"] == pytest.approx(ddb)


def test_self_hosted_sizing():
    small = cost.self_hosted(cost.Load(accounts=50, updates_per_sec=2, dashboards=3))
    assert small == {"nodes": 1, "instances": 1, "usd": pytest.approx(730 * 0.085)}
    # 2000 x 10 x (1 + 5) x 2 = 240,000/s; 80,000 per node -> 3 nodes + PostgreSQL + Redis
    big = cost.self_hosted(cost.Load(accounts=2000, updates_per_sec=10, dashboards=5))
    assert (big["nodes"], big["instances"]) == (3, 5)


def test_the_briefs_estimate_is_off_by_a_thousand():
    b = cost.brief_check()
    assert b["at_the_briefs_own_rate_usd"] == pytest.approx(0.25) and b["brief_says_usd"] == 250
    assert b["at_the_listed_rate_usd"] == pytest.approx(1.0)


def test_cli_json_with_a_price_override(capsys):
    assert (
        main(
            [
                "cost",
                "--accounts",
                "10",
                "--updates-per-sec",
                "1",
                "--dashboards",
                "2",
                "--hours-per-day",
                "12",
                "--appsync-per-million-operations",
                "2",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["appsync_events"]["usd"] == pytest.approx(51.84 * 2 + 0.003456)
    assert out["prices"]["appsync_per_million_operations"] == {
        "usd": 2.0,
        "source": out["prices"]["appsync_per_million_operations"]["source"],
    }
    assert out["prices_as_of"] == "2026-11"


def test_cli_table_and_bad_flags(capsys):
    assert main(["cost", "--accounts", "20", "--updates-per-sec", "2"]) == 0
    assert "Self-hosted tradewire" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["cost", "--accounts", "0", "--updates-per-sec", "1"])
