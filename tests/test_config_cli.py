"""Settings precedence and validation; the CLI's credential commands."""

import re
from pathlib import Path

import pytest

from tradewire.cli import main
from tradewire.config import ConfigError, LimitSettings, RealtimeSettings, load_settings
from tradewire.redact import redact_url

from conftest import make_settings


def test_defaults():
    s = load_settings(env={})
    assert s.server.host == "127.0.0.1" and s.server.port == 8080
    assert s.store.url == "sqlite:///./tradewire.db" and s.system.magic_numbers == []


def test_file_then_env_then_flags(tmp_path):
    cfg = tmp_path / "tw.toml"
    cfg.write_text('[server]\nport = 9000\nhost = "0.0.0.0"\n[system]\nmagic_numbers = [1, 2]\n')
    s = load_settings(str(cfg), env={})
    assert s.server.port == 9000 and s.system.magic_numbers == [1, 2]
    env = {
        "TRADEWIRE_SERVER_PORT": "9100",
        "TRADEWIRE_SYSTEM_MAGIC_NUMBERS": "7, 8",
        "TRADEWIRE_STORE": "sqlite:///e.db",
    }
    s = load_settings(str(cfg), env=env)
    assert s.server.port == 9100 and s.system.magic_numbers == [7, 8] and s.store.url == "sqlite:///e.db"
    assert s.server.host == "0.0.0.0"
    s = load_settings(str(cfg), env=env, overrides={"server": {"port": 9200, "host": None}})
    assert s.server.port == 9200 and s.server.host == "0.0.0.0"


def test_unrelated_tradewire_variables_are_not_settings():
    assert load_settings(env={"TRADEWIRE_REQUIRE_SERVICES": "1"}).server.port == 8080


@pytest.mark.parametrize(
    ("toml", "env", "needle"),
    [
        ("[server]\nport = 70000\n", {}, "server.port"),
        ("[server]\nprot = 1\n", {}, "prot"),
        ("[sever]\n", {}, "unknown section [sever]"),
        ("[server\n", {}, "not valid TOML"),
        ("", {"TRADEWIRE_SERVER_PORT": "eighty"}, "server.port"),
        ("", {"TRADEWIRE_SERVER_PROT": "1"}, "TRADEWIRE_SERVER_PROT"),
        ("", {"TRADEWIRE_SYSTEM_MAGIC_NUMBERS": "1,x"}, "magic_numbers"),
        ("[server]\ntls_cert = 'a.pem'\n", {}, "together"),
        ("[realtime]\nconnection_timeout_ms = 30000\n", {}, "ka_interval_s"),
        ("[alerts.accounts.a]\nstop_out_levl = 1\n", {}, "stop_out_levl"),
        ("[[notify.webhook]]\nurl = 'ftp://x'\n", {}, "notify.webhook[0].url"),
        # accepted before, and every alert then failed "invalid URL; not retried"; the URL is never echoed
        ("[[notify.webhook]]\nurl = 'https://'\n", {}, "url: has no host - at `$.notify.webhook[0]`"),
        ("[[notify.webhook]]\nurl = 'https://[::1'\n", {}, "url: not a valid URL"),
        ("[[notify.webhook]]\nurl = 'http://h:99999/tok3n'\n", {}, "url: not a valid URL (Port out of range"),
        ("[[notify.webhook]]\nurl = 'http://h/a tok3n'\n", {}, "url: holds spaces"),
        ("[[notify.webhook]]\nurl = 'http://h/x'\nsecret = ''\n", {}, "secret: empty"),
        ("[[notify.webhook]]\nurl = 'http://h/x'\ntimeout_s = 1e9\n", {}, "notify.webhook[0].timeout_s"),
        # checked at load, not at each symbol's first check (a bad one raised there every second)
        ("[alerts.symbol_classes]\ncrypto = '^(BTC'\n", {}, "symbol_classes.crypto"),
        ("[alerts.market_hours.fx]\nopen = '99:99'\n", {}, "open: '99:99' is not a time of day"),
        ("[alerts.market_hours.fx]\ndaily_break = ['21:00']\n", {}, "daily_break"),
        ("[realtime]\npublish_namespaces = ['custom\\n']\n", {}, "publish_namespaces"),
        # names that could never apply, taken in silence
        ("[alerts.market_hours.forex]\nopen = '17:00'\n", {}, "market_hours.forex: no symbol class"),
        ("[alerts.symbol_classes]\nbonds = '^(US10Y)'\n", {}, "symbol_classes.bonds: no [alerts.market_hours.bonds]"),
        ("[alerts.accounts.'icm live01']\nstale_after_s = 60\n", {}, "not an account id"),
        ("[alerts.accounts.a-1]\nstop_out_level = 120\n", {}, "stop_out_level 120 is not below margin_call_level 100"),
        ("[alerts]\nstop_out_level = 100\n", {}, "stop_out_level 100 is not below"),
        # a compose file's unset ${HOST}: it listened on every interface while the log said 127.0.0.1
        ("", {"TRADEWIRE_SERVER_HOST": ""}, "server.host"),
        ("[server]\nhost = ''\n", {}, "server.host"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, toml, env, needle):
    cfg = tmp_path / "tw.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError, match=None) as info:
        load_settings(str(cfg), env=env)
    assert needle in str(info.value)
    assert "tok3n" not in str(info.value)  # a webhook URL's path may be its token


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings("/nonexistent/tw.toml", env={})


def test_token_issue_prints_only_the_token_then_list_and_revoke(tmp_path, capsys):
    store = f"sqlite:///{tmp_path}/cli.db"
    assert main(["token", "issue", "--account", "icm-live01-5123456", "--store", store]) == 0
    token = capsys.readouterr().out
    assert token.count("\n") == 1 and token.startswith("twe_")
    assert main(["token", "list", "--store", store]) == 0
    listing = capsys.readouterr().out
    token_id = listing.split("\t")[0]
    assert "icm-live01-5123456" in listing and "active" in listing and token.strip() not in listing
    assert main(["token", "revoke", token_id, "--store", store]) == 0
    capsys.readouterr()
    assert main(["token", "list", "--store", store]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["token", "revoke", token_id, "--store", store]) == 2
    assert "no active token" in capsys.readouterr().err


def test_issuing_another_token_for_an_account_says_the_first_still_works(tmp_path, capsys):
    """Issuing is not rotating: an operator replacing a leaked token by issuing a new one is told the old
    one goes on writing the account until revoked (and which store the token went to)."""
    store = f"sqlite:///{tmp_path}/cli.db"
    assert main(["token", "issue", "--account", "acc-1", "--store", store]) == 0
    first = capsys.readouterr()
    assert "issued in" in first.err and "other active" not in first.err
    assert main(["token", "list", "--store", store]) == 0
    first_id = capsys.readouterr().out.split("\t")[0]
    assert main(["token", "issue", "--account", "acc-1", "--store", store]) == 0
    second = capsys.readouterr()
    assert second.out.startswith("twe_") and second.out.count("\n") == 1  # stdout: the token alone
    assert f"1 other active token(s) ({first_id})" in second.err and "token revoke" in second.err


def test_listing_or_revoking_in_a_store_that_is_not_there_does_not_create_one(tmp_path, capsys, monkeypatch):
    """Run from another directory than the hub's, `./tradewire.db` is not the hub's store: an empty one was
    created and listed as nothing, or a revoke said "no active token" while the token went on working."""
    monkeypatch.chdir(tmp_path)
    for argv in (["token", "list"], ["key", "list"], ["token", "revoke", "0a1b2c3d"]):
        assert main(argv) == 2
        assert f"no store at {tmp_path / 'tradewire.db'}" in capsys.readouterr().err
    assert not (tmp_path / "tradewire.db").exists()
    assert main(["key", "issue", "--role", "read"]) == 0  # issuing is how a store starts: said on stderr
    assert f"issued in {tmp_path / 'tradewire.db'} (a new store)" in capsys.readouterr().err


def test_key_issue_list_revoke(tmp_path, capsys):
    store = f"sqlite:///{tmp_path}/cli.db"
    assert main(["key", "issue", "--role", "admin", "--store", store]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("twk_")
    assert main(["key", "list", "--store", store]) == 0
    listing = capsys.readouterr().out
    assert "admin" in listing and key not in listing
    assert main(["key", "revoke", listing.split("\t")[0], "--store", store]) == 0


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["token", "issue", "--account", "bad id"], "account id"),
        (["key", "issue", "--role", "root"], "invalid choice"),
        (["serve", "--port", "99999"], "outside"),
        (["simulate", "--url", "http://x", "--accounts", "0"], "above 0"),
        (["cost", "--accounts", "10", "--updates-per-sec", "1", "--dashboards", "-5"], "0 or more"),
        # a newline or tab in a label forged rows of `list`; a secret pasted as the id was echoed
        (["token", "issue", "--account", "a-1", "--label", "x\nfake1234\ta-2\tactive"], "printable"),
        (["key", "issue", "--role", "read", "--label", "\udcff"], "printable"),
        (["token", "revoke", "twe_0a1b2c3d_" + "S" * 43], "8 hex digits"),
        (["key", "revoke", ""], "8 hex digits"),
        # nan slipped past every comparison (a demo that ended at once, a fleet raising in a loop, invalid JSON)
        (["demo", "--rate", "nan"], "finite"),
        (["demo", "--duration", "nan"], "finite"),
        (["cost", "--accounts", "10", "--updates-per-sec", "inf"], "finite"),
        (["agent", "--url", "http://x", "--interval", "inf"], "finite"),
    ],
)
def test_bad_flags_are_named(argv, needle, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and needle in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://tw:s3cret@db:5432/tw", "postgresql://***@db:5432/tw"),
        (
            "postgresql://tw@db/tw?sslmode=require&password=s3cret",
            "postgresql://***@db/tw?sslmode=require&password=***",
        ),
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://***@127.0.0.1:6379/0"),
        ("sqlite:///./tradewire.db?synchronous=NORMAL", "sqlite:///./tradewire.db?synchronous=NORMAL"),
        ("dynamodb://tw?region=eu-west-1&endpoint=http://127.0.0.1:8000", None),
    ],
)
def test_urls_in_logs_and_errors_carry_no_password(url, shown):
    assert redact_url(url) == (shown or url)


def test_a_broker_that_cannot_be_reached_is_named_without_its_password(capsys, tmp_path):
    store = f"sqlite:///{tmp_path / 'x.db'}"
    assert main(["serve", "--port", "0", "--store", store, "--broker", "redis://:s3cret@127.0.0.1:1/0"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach Redis at redis://***@127.0.0.1:1/0" in err and "s3cret" not in err, err
    assert main(["token", "list", "--store", "postgresql://tw:s3cret@/tw"]) == 2  # no host: the URL is quoted
    err = capsys.readouterr().err
    assert "postgresql://***@/tw" in err and "s3cret" not in err, err


def test_bad_store_url_is_a_clear_error(capsys, tmp_path):
    assert main(["token", "list", "--store", "mysql://x"]) == 2
    assert "unknown scheme" in capsys.readouterr().err
    # a store that cannot be opened: the CLI's error line, not a traceback
    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("these are not the pages of a database\n" * 100)
    assert main(["token", "list", "--store", f"sqlite:///{not_a_db}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tradewire: error:") and "Traceback" not in err, err


def readme_toml_blocks() -> list[str]:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    return re.findall(r"```toml\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("index", range(2))
def test_the_readmes_configuration_examples_load(tmp_path, index):
    """What the README shows as configuration is configuration this hub takes: a misspelt or stale key
    would be refused by name (unknown fields are errors)."""
    blocks = readme_toml_blocks()
    assert len(blocks) == 2
    cfg = tmp_path / "tw.toml"
    cfg.write_text(blocks[index])
    load_settings(str(cfg), env={})


def test_the_readme_names_every_limit_and_realtime_setting():
    shown = "\n".join(readme_toml_blocks())
    for section in (LimitSettings, RealtimeSettings):
        missing = [f for f in section.__struct_fields__ if not re.search(rf"^{f} = ", shown, flags=re.M)]
        assert not missing, f"{section.__name__}: not in the README's configuration: {missing}"


def test_demo_takes_its_port_from_the_config_unless_a_flag_gives_one(tmp_path):
    """--port defaulted to 8080 and was passed as a flag: the config file's port and TRADEWIRE_SERVER_PORT
    were overridden by a flag nobody gave."""
    from tradewire.cli import build_parser, demo_settings

    cfg = tmp_path / "tw.toml"
    cfg.write_text("[server]\nport = 18555\n")
    assert demo_settings(build_parser().parse_args(["demo", "--config", str(cfg)])).server.port == 18555
    given = build_parser().parse_args(["demo", "--config", str(cfg), "--port", "9000"])
    assert demo_settings(given).server.port == 9000


def test_a_url_for_every_interface_and_for_ipv6_is_one_a_browser_can_open(tmp_path):
    from tradewire.app import Server

    for host, url in (("0.0.0.0", "http://127.0.0.1:8123"), ("::", "http://[::1]:8123"), ("::1", "http://[::1]:8123")):
        settings = make_settings(tmp_path)
        settings.server.host = host
        server = Server(settings)
        server.port = 8123
        assert server.url == url


def test_an_encrypted_tls_key_is_refused_by_name_without_asking_for_a_passphrase(tmp_path):
    """OpenSSL asked on the terminal (a service has none: it blocked, or failed with 'Invalid argument')."""
    trustme = pytest.importorskip("trustme")
    from cryptography.hazmat.primitives import serialization

    from tradewire.app import tls_context

    cert = trustme.CA().issue_cert("hub.example.com")
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pass"),
    )
    (tmp_path / "cert.pem").write_bytes(cert.cert_chain_pems[0].bytes())
    (tmp_path / "key.pem").write_bytes(encrypted)
    settings = make_settings(tmp_path)
    settings.server.tls_cert, settings.server.tls_key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    with pytest.raises(ValueError, match="encrypted"):
        tls_context(settings)


def test_a_postgresql_url_with_an_infinite_timeout_is_a_named_error(capsys):
    assert main(["token", "list", "--store", "postgresql://tw:pw@127.0.0.1:1/db?timeout_s=inf"]) == 2
    assert "timeout_s" in capsys.readouterr().err


def test_the_aws_functions_do_not_print_the_store_password():
    from tradewire.aws.handlers import Runtime

    with pytest.raises(ValueError) as info:
        Runtime(env={"TRADEWIRE_STORE": "postgresql://u:s3cret@h/db"})
    assert "s3cret" not in str(info.value) and "dynamodb://" in str(info.value)


async def test_a_postgresql_connect_that_times_out_says_so(monkeypatch):
    """asyncpg's connect timeout is a bare TimeoutError: the error read "cannot connect to PostgreSQL: " and
    nothing after it."""
    import asyncpg

    from tradewire.store.base import StoreError
    from tradewire.store.postgres import PostgresStore

    async def silent(*args, **kwargs):
        raise TimeoutError

    monkeypatch.setattr(asyncpg, "create_pool", silent)
    with pytest.raises(StoreError, match=r"cannot connect to PostgreSQL at db\.internal: timed out"):
        await PostgresStore("postgresql://tw:pw@db.internal:5432/tw").open()


def test_a_bad_value_names_where_it_came_from(tmp_path):
    """Said as "(config file X and TRADEWIRE_* environment)": the operator was left to guess which held it."""
    cfg = tmp_path / "tw.toml"
    cfg.write_text("[server]\nheartbeat_sec = 10\n[realtime]\nmax_subscriptions = 0\n")
    with pytest.raises(ConfigError, match="environment variable TRADEWIRE_SERVER_PORT"):
        load_settings(str(cfg), env={"TRADEWIRE_SERVER_PORT": "abc"})
    with pytest.raises(ConfigError, match=f"config file {re.escape(str(cfg))}"):
        load_settings(str(cfg), env={})
    with pytest.raises(ConfigError, match="command line"):
        load_settings(None, env={}, overrides={"server": {"port": 70000}})
