"""moto's S3 server with conditional writes made atomic, as real S3 makes them.

S3 checks a PutObject's ``If-None-Match: *`` / ``If-Match: <ETag>`` (and a DeleteObject's
``If-Match``) and writes in one atomic step: of two racing conditional requests on one key,
exactly one succeeds and the other gets 412. moto's threaded server checks the precondition and
then stores (or deletes) the object in separate Python steps with nothing held in between
(``S3Response.put_object`` / ``delete_object`` in moto/s3/responses.py), so two racing
conditional PUTs could both succeed there. The bronze lease (acode_dagster/bronze/lease.py) is
exactly such a race, so the tests' S3 server is moto run through this module, which holds one
process-wide lock around those two handlers (check and write become one step) and then starts
moto's own server main, arguments unchanged::

    python -m acode_dagster_tests.support.moto_atomic -H 127.0.0.1 -p PORT
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from moto.s3.responses import S3Response
from moto.server import main

_WRITES = threading.Lock()


def _atomic(handler: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(handler)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _WRITES:
            return handler(self, *args, **kwargs)

    return locked


for _handler in ("put_object", "delete_object"):
    setattr(S3Response, _handler, _atomic(getattr(S3Response, _handler)))

if __name__ == "__main__":
    main()
