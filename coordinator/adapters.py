"""LoRA adapters the coordinator serves: uploaded by `POST /v1/adapters`, named in the OpenAI `model` field.

`POST /v1/adapters` (the API key as for the OpenAI routes; body: the adapter's safetensors file as saved by
`shardnet finetune`) -> `{"id": "0x<keccak of the file>", "object": "adapter", "bytes", "tensors"}`; bounded
by size and count (413 / 507). A request's `model` of `"<base>+<id>"` runs the base model with that adapter:
the adapter is checked against the base model before anything is paid (400 for other shapes), bound to
the job (`bind`), and every session of the job (routed hops and verification sessions alike) is handed
its span's part right after the open (`coordinator.hop_sessions`). Adapters live in memory: a coordinator
restart forgets them (upload again), and a job re-run after a restart would run without its adapter.
"""

from __future__ import annotations

from collections import OrderedDict

from aiohttp import web

from shardnet.finetune.adapter_file import AdapterError, AdapterFile

__all__ = ["AdapterError", "AdapterFile", "AdapterStore", "split_model_name", "upload"]

MAX_ADAPTER_BYTES = 64 * 1024 * 1024
MAX_ADAPTERS = 16
MAX_BOUND_JOBS = 4096  # jobs whose adapter is remembered (the oldest forgotten first: long finished)


class AdapterStore:
    """Uploaded adapters by CID (at most `max_count`, each at most `max_bytes`) and the adapter of each job."""

    def __init__(
        self,
        max_bytes: int = MAX_ADAPTER_BYTES,
        max_count: int = MAX_ADAPTERS,
        max_jobs: int = MAX_BOUND_JOBS,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_count = max_count
        self.max_jobs = max_jobs
        self._files: OrderedDict[str, AdapterFile] = OrderedDict()
        self._jobs: OrderedDict[int, AdapterFile] = OrderedDict()

    def put(self, data: bytes) -> AdapterFile:
        """Keep an adapter file (AdapterError if it is not a LoRA adapter; OverflowError when full)."""
        if len(data) > self.max_bytes:
            raise AdapterError(f"the adapter has {len(data)} bytes, more than the {self.max_bytes} allowed")
        adapter = AdapterFile(data)
        if adapter.cid not in self._files and len(self._files) >= self.max_count:
            raise OverflowError(
                f"this coordinator holds {self.max_count} adapters already: none can be added"
            )
        self._files[adapter.cid] = adapter
        return adapter

    def get(self, cid: str) -> AdapterFile:
        adapter = self._files.get(cid.lower())
        if adapter is None:
            raise AdapterError(f"no adapter {cid} on this coordinator: upload it with POST /v1/adapters")
        return adapter

    def bind(self, job_id: int, adapter: AdapterFile) -> None:
        """Remember the job's adapter (bounded: every paying client adds one; the oldest job is forgotten)."""
        self._jobs[job_id] = adapter
        self._jobs.move_to_end(job_id)
        while len(self._jobs) > self.max_jobs:
            self._jobs.popitem(last=False)

    def for_job(self, job_id: int) -> AdapterFile | None:
        return self._jobs.get(job_id)

    def unbind(self, job_id: int) -> None:
        self._jobs.pop(job_id, None)


def split_model_name(name: str | int | None) -> tuple[str | int | None, str | None]:
    """`"base+0xcid"` -> ("base", "0xcid"); anything else -> (name, None)."""
    if isinstance(name, str) and "+" in name:
        base, _, cid = name.rpartition("+")
        return base, cid
    return name, None


async def upload(store: AdapterStore, request: web.Request) -> web.Response:
    """`POST /v1/adapters` (the caller checks the API key first)."""
    data = await request.content.read(store.max_bytes + 1)
    try:
        adapter = store.put(data)
    except AdapterError as exc:
        return _error(413 if len(data) > store.max_bytes else 400, str(exc))
    except OverflowError as exc:
        return _error(507, str(exc))
    body = {"id": adapter.cid, "object": "adapter", "bytes": adapter.size, "tensors": len(adapter.tensors)}
    return web.json_response(body)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error"}}, status=status)
