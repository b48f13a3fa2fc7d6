"""The EA session state machine, sans-I/O: frames in, steps out.

Shared by the WebSocket and HTTP transports. It enforces what the protocol says about a session
(hello first, one account per token) and turns a durable message's commit result into the replies
the EA must get. It never touches a socket, the store or the clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from tradewire.ingest import protocol as p
from tradewire.model import AccountInfo, AccountState
from tradewire.store.base import WriteResult


# --- protocol -> domain: one translation for every runtime (the hub, the AWS handlers) --------------
def account_info(hello: p.Hello) -> AccountInfo:
    return AccountInfo(
        platform=hello.platform,
        login=hello.login,
        server=hello.server,
        currency=hello.currency,
        leverage=hello.leverage,
        broker=hello.broker,
        ea=f"{hello.ea.name} {hello.ea.version}".strip() if hello.ea else "",
        tzOffsetSec=hello.tzOffsetSec,
    )


def login_changed(account: str, known: AccountInfo | None, hello: p.Hello | AccountInfo) -> str | None:
    """Why a hello is refused when it comes from another trading account (login) than the one `account` was
    greeted as, else None. Read as this account's, that terminal's positions would close every one of this
    account's for good (its snapshot) and open its own under this token (File > Login with the EA attached)."""
    if known is None or known.login == hello.login:
        return None
    return (
        f"account {account} is login {known.login} on {known.server}, and this terminal is logged in to "
        f"{hello.login} on {hello.server}: a token writes one trading account. Log the terminal back in, or "
        "issue a token for the other one"
    )


def account_state(msg: p.AccountMsg) -> AccountState:
    """The hub trusts equity/margin over the terminal's margin level: terminals report 0 with no margin. Not
    rounded: 100.004 % rounded to 100 % raised a margin call at 100 that the broker does not make."""
    return AccountState(
        ts=msg.ts,
        balance=msg.balance,
        equity=msg.equity,
        margin=msg.margin,
        freeMargin=msg.freeMargin,
        marginLevel=msg.equity / msg.margin * 100 if msg.margin > 0 else None,
        marginCallLevel=msg.marginCallLevel,
        stopOutLevel=msg.stopOutLevel,
        marginMode=msg.marginMode,
    )


def symbols_refused(account: str, refused: list[str], limit: int) -> p.ErrorReply:
    """The error for ticks of symbols past the account's limit (the rest of the message was applied)."""
    shown = ", ".join(repr(s) for s in refused[:5]) + (f" and {len(refused) - 5} more" if len(refused) > 5 else "")
    return p.ErrorReply(
        code=p.TOO_MANY_SYMBOLS,
        message=f"account {account!r} already streams {limit} symbols ([limits] max_symbols_per_account): "
        f"ticks for {shown} refused",
        ref="ticks",
    )


def positions_refused(account: str, count: int, limit: int) -> p.ErrorReply:
    """The error for a positions snapshot over the account's limit (nothing of it was applied)."""
    return p.ErrorReply(
        code=p.TOO_MANY_POSITIONS,
        message=f"a snapshot of {count} open positions for account {account!r} is over "
        f"[limits] max_positions_per_account ({limit}): not applied",
        ref="positions",
    )


@dataclass(slots=True)
class Greet:
    hello: p.Hello


@dataclass(slots=True)
class Volatile:
    msg: p.AccountMsg | p.PositionsMsg | p.TicksMsg | p.HeartbeatMsg


@dataclass(slots=True)
class Durable:
    msg: p.DurableMsg


@dataclass(slots=True)
class Reply:
    msg: p.ErrorReply


Step = Greet | Volatile | Durable | Reply


_VOLATILE = frozenset({p.AccountMsg, p.PositionsMsg, p.TicksMsg, p.HeartbeatMsg})


class SessionCore:
    def __init__(self, account: str, greeted: bool = False) -> None:
        self.account = account
        self.greeted = greeted

    def receive(self, frame: bytes | str) -> list[Step]:
        return self.steps(p.decode_frame(frame))

    def steps(self, items: list[p.ClientMsg | p.ErrorReply]) -> list[Step]:
        out: list[Step] = []
        many = len(items) > 1
        account = self.account
        for index, item in enumerate(items):
            # The common case first, in a few operations: a live update from a greeted session.
            if self.greeted and type(item) in _VOLATILE and item.account in (None, account):  # type: ignore[union-attr]
                out.append(Volatile(item))  # type: ignore[arg-type]
            else:
                out.append(self._step(item, index if many else None))
        return out

    def _step(self, item: p.ClientMsg | p.ErrorReply, index: int | None) -> Step:
        if isinstance(item, p.ErrorReply):
            return Reply(item)
        if item.account is not None and item.account != self.account:
            return Reply(
                p.ErrorReply(
                    code=p.WRONG_ACCOUNT,
                    message=f"this token writes account {self.account!r} only, not {item.account!r}",
                    ref=p.message_ref(item),
                    index=index,
                )
            )
        if isinstance(item, p.Hello):
            self.greeted = True
            return Greet(item)
        if not self.greeted:
            return Reply(
                p.ErrorReply(
                    code=p.HELLO_REQUIRED,
                    message=f"send hello first: {p.message_ref(item)!r} refused",
                    ref=p.message_ref(item),
                    index=index,
                )
            )
        if isinstance(item, p.PositionMsg | p.ErrorMsg):
            return Durable(item)
        return Volatile(item)

    @staticmethod
    def outcome(msg: p.DurableMsg, result: WriteResult) -> p.ErrorReply | None:
        """The error an EA gets for a durable message the store refused; None when it was taken.

        Either way the message is done with: it is covered by the next cumulative ack and must not
        be resent.
        """
        if result.status == "conflict":
            return p.ErrorReply(code=p.DUPLICATE_ID, message=result.detail, ref=msg.id)
        if result.status == "seq_not_increasing":
            return p.ErrorReply(code=p.SEQ_NOT_INCREASING, message=result.detail, ref=msg.id)
        return None
