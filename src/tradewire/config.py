"""Settings: defaults < TOML file (--config) < TRADEWIRE_<SECTION>_<KEY> environment < command-line flags.

Every value is validated; an error names the key and where it came from.
"""

from __future__ import annotations

import os
import re
import tomllib
import zoneinfo
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from tradewire.model import ACCOUNT_ID_RULE, END, is_account_id
from tradewire.state import MAX_POSITIONS_PER_ACCOUNT, MAX_SYMBOLS_PER_ACCOUNT

DEFAULT_STORE = "sqlite:///./tradewire.db"
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
Namespace = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,48}[A-Za-z0-9])?" + END)]
CLOCK_TIME = re.compile(r"(?:[01]\d|2[0-3]):[0-5]\d")  # HH:MM, 00:00-23:59


class ServerSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # Not empty: "" listens on every interface (a compose file's unset ${HOST}), while the log said 127.0.0.1.
    host: Annotated[str, msgspec.Meta(min_length=1)] = "127.0.0.1"
    port: Port = 8080
    tls_cert: str | None = None
    tls_key: str | None = None
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_frame_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 1_048_576
    heartbeat_sec: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 10
    drain_timeout_s: Positive = 10.0
    auth_cache_s: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    # A connection with no request in progress (before its first one too) is closed after this long.
    idle_timeout_s: Positive = 30.0


class LimitSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 50_000  # WebSocket connections, EAs and subscribers
    max_connections_per_ip: Annotated[int, msgspec.Meta(ge=1)] = 1_000
    ea_messages_per_s: Annotated[float, msgspec.Meta(gt=0)] = 2_000.0  # per account: reading slows down past it
    ea_burst: Annotated[int, msgspec.Meta(ge=1)] = 5_000
    # WebSocket connects per EA account or API key: past the burst, a client reconnecting faster than
    # `connects_per_s` is refused with 429 and Retry-After before the upgrade.
    connects_per_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    connect_burst: Annotated[int, msgspec.Meta(ge=1)] = 100
    # REST requests per API key (healthz and the OpenAPI document excepted): past it, 429 + Retry-After.
    requests_per_s: Positive = 50.0
    request_burst: Annotated[int, msgspec.Meta(ge=1)] = 200
    # Distinct symbols one account's ticks may bring; a tick for one more is refused with too_many_symbols.
    max_symbols_per_account: Annotated[int, msgspec.Meta(ge=1)] = MAX_SYMBOLS_PER_ACCOUNT
    # Open positions in one account's live view; past it a snapshot is refused with too_many_positions and an
    # OPEN event is stored and acked but left out of the live list.
    max_positions_per_account: Annotated[int, msgspec.Meta(ge=1)] = MAX_POSITIONS_PER_ACCOUNT


class StoreSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str = DEFAULT_STORE


class BrokerSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: Annotated[str, msgspec.Meta(pattern=r"^(memory|rediss?)://")] = "memory://"


class SystemSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    magic_numbers: list[int] = []


class RealtimeSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    publish_namespaces: list[Namespace] = msgspec.field(default_factory=lambda: ["custom"])
    ka_interval_s: Positive = 60.0
    connection_timeout_ms: Annotated[int, msgspec.Meta(ge=1000)] = 300_000
    flush_interval_ms: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 0.0
    max_backlog_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 4 * 1024 * 1024
    # A connection that has taken no writes for this long is closed 4008: else one that stopped reading (a
    # frozen client, a peer that went away without a FIN) held its socket, its kernel buffers and its place
    # under the connection caps for good, since a latest-wins subscription never overflows a backlog. 0: never.
    stall_close_s: Annotated[float, msgspec.Meta(ge=0)] = 300.0
    max_subscriptions: Annotated[int, msgspec.Meta(ge=1)] = 200
    history_limit: Annotated[int, msgspec.Meta(ge=1)] = 1000
    # What one subscriber connection may send (subscribe, unsubscribe, publish, ...): past the rate, after a
    # burst, the hub reads its next message only when the rate allows (AppSync's quota is 25 publishes/s).
    messages_per_s: Positive = 25.0
    messages_burst: Annotated[int, msgspec.Meta(ge=1)] = 100


AlertType = Literal["MARGIN_CALL", "STOP_OUT", "CONNECTION_LOST", "SYSTEM_ERROR", "STALE_DATA"]
Severity = Literal["HIGH", "CRITICAL"]


class AlertLevels(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Thresholds that may be set per account under [alerts.accounts.ID]; unset means the global value."""

    margin_call_level: Annotated[float, msgspec.Meta(gt=0)] | None = None
    stop_out_level: Annotated[float, msgspec.Meta(gt=0)] | None = None
    hysteresis_pct: Annotated[float, msgspec.Meta(ge=0)] | None = None
    connection_lost_after_s: Positive | None = None
    stale_after_s: Positive | None = None


NEW_YORK = "America/New_York"


class MarketHours(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """When a symbol class trades, in the time zone `tz`: open from `open` on `open_day` to `close` on
    `close_day` (days 0=Monday..6=Sunday), with an optional daily break. The same open and close: all week.
    Markets keep New York's clock (FX closes at 17:00 there), which moves against UTC twice a year."""

    open_day: Annotated[int, msgspec.Meta(ge=0, le=6)] = 6
    open: str = "22:00"
    close_day: Annotated[int, msgspec.Meta(ge=0, le=6)] = 4
    close: str = "22:00"
    daily_break: list[str] = []  # ["21:00", "22:00"]; it may run over midnight: ["23:55", "00:05"]
    tz: str = "UTC"  # an IANA time zone, e.g. "America/New_York"

    def __post_init__(self) -> None:
        try:
            zoneinfo.ZoneInfo(self.tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"tz: {self.tz!r} is not a time zone (IANA name, e.g. America/New_York)") from None
        for name, value in (
            ("open", self.open),
            ("close", self.close),
            *(("daily_break", t) for t in self.daily_break),
        ):
            if not CLOCK_TIME.fullmatch(value):
                raise ValueError(f"{name}: {value!r} is not a time of day (HH:MM, 00:00 to 23:59)")
        if len(self.daily_break) not in (0, 2) or (self.daily_break and self.daily_break[0] == self.daily_break[1]):
            raise ValueError(f"daily_break: {self.daily_break} is neither [] nor [start, end] (two different times)")


def _default_market_hours() -> dict[str, MarketHours]:
    return {
        # New York time: FX from Sunday 17:00 to Friday 17:00; CME metals, indices and energy from Sunday
        # 18:00 to Friday 17:00, with a break from 17:00 to 18:00 every day.
        "fx": MarketHours(open="17:00", close="17:00", tz=NEW_YORK),
        "metal": MarketHours(open="18:00", close="17:00", daily_break=["17:00", "18:00"], tz=NEW_YORK),
        "index": MarketHours(open="18:00", close="17:00", daily_break=["17:00", "18:00"], tz=NEW_YORK),
        "energy": MarketHours(open="18:00", close="17:00", daily_break=["17:00", "18:00"], tz=NEW_YORK),
        "crypto": MarketHours(open_day=0, open="00:00", close_day=0, close="00:00"),  # around the clock
    }


class AlertSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    margin_call_level: Annotated[float, msgspec.Meta(gt=0)] = 100.0
    stop_out_level: Annotated[float, msgspec.Meta(gt=0)] = 50.0
    hysteresis_pct: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    connection_lost_after_s: Positive = 15.0
    stale_after_s: Positive = 120.0
    check_interval_s: Positive = 1.0
    # symbol classes by regular expression on the symbol, first match wins; "fx" is the fallback
    symbol_classes: dict[str, str] = msgspec.field(
        default_factory=lambda: {
            # Matched from the start, case aside, after an optional '#' or '.': what brokers put in front.
            "index": r"^[#.]?(US30|US500|US100|USTEC|NAS100|NDX|SPX|SP500|GER30|GER40|DE30|DE40|DAX|UK100|FTSE|"
            r"JP225|NIKKEI|HK50|AUS200|FRA40|EU50|STOXX50)",
            "metal": r"^[#.]?(XAU|XAG|XPT|XPD|GOLD|SILVER)",
            "energy": r"^[#.]?(USOIL|UKOIL|WTI|BRENT|XTI|XBR|NGAS|XNG)",
            "crypto": r"^[#.]?(BTC|ETH|LTC|XRP|SOL|ADA|DOGE|BCH|DOT)",
        }
    )
    market_hours: dict[str, MarketHours] = msgspec.field(default_factory=lambda: _default_market_hours())
    accounts: dict[str, AlertLevels] = {}

    def __post_init__(self) -> None:
        # A config that sets the hours of some classes keeps the defaults of the others: a class left without
        # hours would be judged around the clock (stale every weekend).
        classes = {"fx", *self.symbol_classes}
        defaults = _default_market_hours()
        for name, hours in defaults.items():
            if name in classes:
                self.market_hours.setdefault(name, hours)
            elif self.market_hours.get(name) == hours:
                del self.market_hours[name]  # a default class the configuration's own classes left out
        for name, pattern in self.symbol_classes.items():  # checked here, not at every symbol's first check
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"symbol_classes.{name}: {pattern!r} is not a regular expression ({exc})") from None
        # Names that can never apply were taken in silence: hours for a class no symbol gets (FX kept its
        # defaults), a class without hours (judged around the clock, stale every weekend), levels for an
        # account id that cannot exist.
        for name in self.market_hours:
            if name not in classes:
                raise ValueError(
                    f"market_hours.{name}: no symbol class {name!r}; classes: {', '.join(sorted(classes))}"
                )
        for name in self.symbol_classes:
            if name not in self.market_hours:
                raise ValueError(
                    f"symbol_classes.{name}: no [alerts.market_hours.{name}]: say when it trades "
                    "(open_day = 0, open = '00:00', close_day = 0, close = '00:00' for all week)"
                )
        for account, levels in self.accounts.items():
            if not is_account_id(account):
                raise ValueError(f"accounts.{account!r}: not an account id ({ACCOUNT_ID_RULE})")
            margin_call = levels.margin_call_level or self.margin_call_level
            stop_out = levels.stop_out_level or self.stop_out_level
            if stop_out >= margin_call:
                raise ValueError(
                    f"accounts.{account}: stop_out_level {stop_out:g} is not below margin_call_level {margin_call:g}"
                )
        if self.stop_out_level >= self.margin_call_level:
            raise ValueError(
                f"stop_out_level {self.stop_out_level:g} is not below margin_call_level {self.margin_call_level:g}"
            )


class WebhookSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: Annotated[str, msgspec.Meta(pattern=r"^https?://")]
    secret: str | None = None  # signs the body: X-Tradewire-Signature: sha256=HMAC(secret, timestamp.body)
    types: list[AlertType] = []  # empty: every type
    severities: list[Severity] = []  # empty: every severity
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 5.0
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 6

    def __post_init__(self) -> None:
        # Checked here, not at the first alert (each failed "invalid URL; not retried" while the hub said it
        # had started N webhooks). Errors name what is wrong, never the URL: it may hold the hook's token.
        problem = _url_problem(self.url)
        if problem:
            raise ValueError(f"url: {problem}")
        if self.secret is not None and not self.secret:
            raise ValueError("secret: empty (it would sign nothing); leave it out for unsigned deliveries")


def _url_problem(url: str) -> str | None:
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "holds spaces or control characters"
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port  # .port raises on a port out of range or not a number
    except ValueError as exc:
        return f"not a valid URL ({str(exc).split(':')[0]})"
    if not host:
        return "has no host"
    if port == 0:
        return "port 0"
    return None


class NotifySettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    webhook: list[WebhookSettings] = []
    queue_size: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    # At start, open alerts raised this recently and not acknowledged are sent again: what a stop or a crash
    # left queued is not lost (receivers dedupe on X-Tradewire-Delivery). 0: off.
    resend_open_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 300.0
    # An EA's error of one code, repeated, is sent to webhooks at most once per this many seconds (the next one
    # says how many were not): an EA reporting in a loop flooded the receiver. 0: every one.
    repeat_errors_after_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 60.0


class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    store: StoreSettings = msgspec.field(default_factory=StoreSettings)
    limits: LimitSettings = msgspec.field(default_factory=LimitSettings)
    broker: BrokerSettings = msgspec.field(default_factory=BrokerSettings)
    system: SystemSettings = msgspec.field(default_factory=SystemSettings)
    realtime: RealtimeSettings = msgspec.field(default_factory=RealtimeSettings)
    alerts: AlertSettings = msgspec.field(default_factory=AlertSettings)
    notify: NotifySettings = msgspec.field(default_factory=NotifySettings)


SECTIONS: dict[str, type[msgspec.Struct]] = {
    "server": ServerSettings,
    "store": StoreSettings,
    "limits": LimitSettings,
    "broker": BrokerSettings,
    "system": SystemSettings,
    "realtime": RealtimeSettings,
    "alerts": AlertSettings,
    "notify": NotifySettings,
}
LIST_KEYS = {("system", "magic_numbers"), ("realtime", "publish_namespaces")}


class ConfigError(ValueError):
    pass


def load_settings(
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Build validated settings. `overrides` holds command-line values: {section: {key: value}}."""
    env = os.environ if env is None else env
    data: dict[str, dict[str, Any]] = {}
    origins: dict[tuple[str, str], str] = {}  # (section, key) -> where its value came from, for errors
    if config_file:
        data = _read_toml(config_file)
        origins.update(((s, k), f"config file {config_file}") for s, kv in data.items() for k in kv)
    _merge(data, _from_env(env, origins))
    if overrides:
        given = {s: {k: v for k, v in kv.items() if v is not None} for s, kv in overrides.items()}
        origins.update(((s, k), "command line") for s, kv in given.items() for k in kv)
        _merge(data, given)
    try:
        settings = msgspec.convert(data, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid setting{_origin_of(str(exc), origins, config_file)}: {exc}") from None
    if bool(settings.server.tls_cert) != bool(settings.server.tls_key):
        raise ConfigError("server.tls_cert and server.tls_key must be given together")
    if settings.realtime.connection_timeout_ms <= settings.realtime.ka_interval_s * 1000:
        raise ConfigError(
            "realtime.connection_timeout_ms must be longer than realtime.ka_interval_s, "
            "or clients give up on connections between two keep-alives"
        )
    return settings


def _read_toml(path: str) -> dict[str, dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for section, value in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"config file {path}: unknown section [{section}]; known: {', '.join(SECTIONS)}")
        if not isinstance(value, dict):
            raise ConfigError(f"config file {path}: {section} must be a [{section}] table")
    return data


def _origin_of(error: str, origins: Mapping[tuple[str, str], str], config_file: str | None) -> str:
    """Where the value a validation error at `$.section.key` names came from: the file, the variable, the flag
    (said as "config file X and TRADEWIRE_* environment", it left the operator guessing)."""
    found = re.search(r"\$\.(\w+)\.(\w+)", error)
    origin = origins.get((found.group(1), found.group(2))) if found else None
    if origin is not None:
        return f" ({origin})"
    return f" (config file {config_file} and TRADEWIRE_* environment)" if config_file else ""


def _from_env(env: Mapping[str, str], origins: dict[tuple[str, str], str] | None = None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    origins = {} if origins is None else origins
    if env.get("TRADEWIRE_STORE"):
        out.setdefault("store", {})["url"] = env["TRADEWIRE_STORE"]
        origins["store", "url"] = "environment variable TRADEWIRE_STORE"
    if env.get("TRADEWIRE_BROKER"):
        out.setdefault("broker", {})["url"] = env["TRADEWIRE_BROKER"]
        origins["broker", "url"] = "environment variable TRADEWIRE_BROKER"
    for name, value in env.items():
        if not name.startswith("TRADEWIRE_"):
            continue
        section, _, key = name[len("TRADEWIRE_") :].lower().partition("_")
        struct = SECTIONS.get(section)
        if struct is None or not key:
            continue  # not a setting (e.g. TRADEWIRE_STORE, TRADEWIRE_REQUIRE_SERVICES)
        if section in ("store", "broker") and key == "":
            continue
        if key not in struct.__struct_fields__:
            raise ConfigError(
                f"environment variable {name}: {section} has no setting {key!r}; "
                f"known: {', '.join(struct.__struct_fields__)}"
            )
        if (section, key) in LIST_KEYS:
            value = [v.strip() for v in value.split(",") if v.strip()]  # type: ignore[assignment]
        out.setdefault(section, {})[key] = value
        origins[section, key] = f"environment variable {name}"
    return out


def _merge(base: dict[str, dict[str, Any]], extra: Mapping[str, Mapping[str, Any]]) -> None:
    for section, values in extra.items():
        base.setdefault(section, {}).update(values)
