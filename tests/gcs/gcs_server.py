"""The tests' GCS JSON API server: gcp-storage-emulator, with generation preconditions.

The emulator ignores `ifGenerationMatch`, which real GCS enforces and the version's lease
relies on (create only where no object is, rewrite or delete only the generation one
wrote). This starts the emulator with that rule added as GCS documents it: a write or
delete whose `ifGenerationMatch` is not the object's current generation (0: there must be
no object) answers 412 Precondition Failed and changes nothing. The emulator serves one
request at a time, so the check and the write it guards are one step.

    python -m tests.gcs.gcs_server --host=127.0.0.1 --port=PORT
"""

from __future__ import annotations

import argparse
import logging
from http import HTTPStatus

from gcp_storage_emulator import server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects
from gcp_storage_emulator.storage import Storage


class _PreconditionFailed(Exception):
    pass


_condition: dict[str, int | None] = {"generation": None}  # the request being served


def _current_generation(storage: Storage, bucket: str, name: str) -> int:
    try:
        return int(storage.get_file_obj(bucket, name)["generation"])
    except NotFound:
        return 0


def _check(storage: Storage, bucket: str, name: str) -> None:
    wanted = _condition["generation"]
    if wanted is not None and _current_generation(storage, bucket, name) != wanted:
        raise _PreconditionFailed


def _guarded(handler):
    def serve(request, response, storage, *args, **kwargs):
        match = request.query.get("ifGenerationMatch")
        _condition["generation"] = int(match[0]) if match else None
        try:
            if handler is objects.delete and match:
                _check(storage, request.params["bucket_name"], request.params["object_id"])
            return handler(request, response, storage, *args, **kwargs)
        except _PreconditionFailed:
            response.status = HTTPStatus.PRECONDITION_FAILED
            response.json({"error": {"code": 412, "message": "conditionNotMet",
                                     "errors": [{"reason": "conditionNotMet"}]}})
        finally:
            _condition["generation"] = None

    return serve


def _install() -> None:
    create_file = Storage.create_file

    def create_file_if(self, bucket_name, file_name, content, file_obj, *args, **kwargs):
        _check(self, bucket_name, file_name)
        return create_file(self, bucket_name, file_name, content, file_obj, *args, **kwargs)

    Storage.create_file = create_file_if
    guarded = {objects.insert, objects.upload_partial, objects.delete, objects.xml_upload}
    server.HANDLERS = tuple(
        (regex, {method: _guarded(h) if h in guarded else h for method, h in handlers.items()})
        for regex, handlers in server.HANDLERS
    )
    objects.insert = _guarded(objects.insert)  # the router's own fallback for uploads


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    _install()
    server.create_server(args.host, args.port, in_memory=True).run()


if __name__ == "__main__":
    main()
