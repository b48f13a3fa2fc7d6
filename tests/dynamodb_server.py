"""A DynamoDB-compatible server for the tests: moto's server mode in a process of its own.

    python tests/dynamodb_server.py [PORT]

Listens on 127.0.0.1 (PORT, or a free one when omitted or 0), prints `PORT <n>` once it accepts
connections, and stops when its standard input closes, so it never outlives the test run that
started it, even one that was killed.
"""

from __future__ import annotations

import copy
import logging
import sys
import threading
import types
from typing import Any


def copy_tables_once_per_transaction(models: types.ModuleType) -> None:
    """moto's TransactWriteItems deep-copies an item's whole table, for rolling back, once for every item
    of the transaction, keeping only the last copy, which is the same state as the first: the cost grows
    with items x table size (seconds per transaction for a few thousand items). Copy each table once per
    transaction instead; what the transaction does and rolls back is unchanged."""
    local = threading.local()

    class CopyOnce(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            return getattr(copy, name)

        @staticmethod
        def deepcopy(obj: Any, memo: Any = None) -> Any:
            cache = getattr(local, "tables", None)
            if cache is None or not isinstance(obj, models.Table):
                return copy.deepcopy(obj, memo)
            if id(obj) not in cache:
                cache[id(obj)] = copy.deepcopy(obj)
            return cache[id(obj)]

    original = models.DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        local.tables = {}
        try:
            return original(self, transact_items)
        finally:
            local.tables = None

    models.copy = CopyOnce("copy")
    models.DynamoDBBackend.transact_write_items = transact_write_items


def serialized(app: Any) -> Any:
    """moto handles requests in threads with no isolation between them, and rolls a cancelled
    transaction back by restoring whole tables as they were when it began, wiping what other requests
    wrote meanwhile. DynamoDB isolates every request (transactions are serializable): so does this."""
    lock = threading.Lock()

    def handle(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with lock:
            result = app(environ, start_response)
            try:
                return list(result)
            finally:
                if hasattr(result, "close"):
                    result.close()

    return handle


def main() -> int:
    try:
        import moto.dynamodb.models
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server
    except ImportError as exc:  # moto[server] is a test extra
        print(f"moto[server] is not installed: {exc}", file=sys.stderr, flush=True)
        return 3
    if hasattr(moto.dynamodb.models, "copy") and hasattr(moto.dynamodb.models.DynamoDBBackend, "transact_write_items"):
        copy_tables_once_per_transaction(moto.dynamodb.models)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    app = serialized(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        while sys.stdin.buffer.read(65536):
            pass
    except KeyboardInterrupt:
        pass
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
