"""`RedisStore`: sessions as Redis hashes, one key per session.

Key ``<key_prefix>:<namespace>:<session_id>`` is a hash with the fields ``version``,
``manifest`` and ``payload`` (current version) and ``previous_version``,
``previous_manifest`` and ``previous_payload`` (the backup). A Lua script does the
compare-and-set, so the version check, the shift of the current version into the
backup fields and the write happen atomically on the server. Deleting the key removes
the session and its backup.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

try:
    import redis
    import redis.asyncio as redis_asyncio
except ImportError as error:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        'RedisStore needs the redis package; install it with: pip install "sidecar-memory[redis]"'
    ) from error

from .base import (
    LoopLocal,
    StateBlob,
    StateStore,
    StoreConnectionError,
    StoredState,
    VersionConflictError,
    build_manifest,
    encode_manifest,
    pack_payload,
    redact_url,
    unpack_payload,
    validate_namespace,
    validate_session_id,
)

logger = logging.getLogger(__name__)

# KEYS[1]: session key. ARGV: expected version, manifest, payload.
# Returns {1, new_version} on success and {0, actual_version} on a conflict.
_SAVE_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'version')
local current_version = 0
if current then current_version = tonumber(current) end
if current_version ~= tonumber(ARGV[1]) then
  return {0, current_version}
end
if current then
  local old = redis.call('HMGET', KEYS[1], 'manifest', 'payload')
  redis.call('HSET', KEYS[1], 'previous_version', current,
             'previous_manifest', old[1], 'previous_payload', old[2])
end
redis.call('HSET', KEYS[1], 'version', current_version + 1, 'manifest', ARGV[2], 'payload', ARGV[3])
return {1, current_version + 1}
"""

_CURRENT_FIELDS = ("version", "manifest", "payload")
_PREVIOUS_FIELDS = ("previous_version", "previous_manifest", "previous_payload")
_SCAN_BATCH = 500


class RedisStore(StateStore):
    """Sessions in Redis; safe for any number of processes and hosts.

    Pass ``client`` to reuse a configured ``redis.Redis`` (it must have
    ``decode_responses=False``); async methods then run its calls in a worker thread.
    Without ``client``, the store connects to ``url`` and uses a native ``redis.asyncio``
    client for the async methods.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        namespace: str = "default",
        client: redis.Redis | None = None,
        key_prefix: str = "sidecar",
        socket_timeout: float = 30.0,
    ):
        super().__init__(namespace=namespace)
        self.key_prefix = validate_namespace(key_prefix)
        self.url = url
        self._client_options = {"socket_timeout": socket_timeout, "socket_connect_timeout": min(socket_timeout, 10.0)}
        self._owns_client = client is None
        if client is None:
            client = redis.Redis.from_url(url, decode_responses=False, **self._client_options)
        elif client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError(
                "RedisStore needs a client with decode_responses=False, because state payloads are binary; "
                "create it with redis.Redis(..., decode_responses=False)."
            )
        self._client = client
        self._save_script = client.register_script(_SAVE_SCRIPT)
        self._async_clients = LoopLocal()

    def key(self, session_id: str) -> str:
        """Return the Redis key of ``session_id``."""
        return f"{self.key_prefix}:{self.namespace}:{validate_session_id(session_id)}"

    # -- sync hooks ---------------------------------------------------------

    def _load(self, session_id: str) -> StoredState | None:
        with self._errors():
            values = self._client.hmget(self.key(session_id), _CURRENT_FIELDS)
        return self._to_state(session_id, values)

    def _load_previous(self, session_id: str) -> StoredState | None:
        with self._errors():
            values = self._client.hmget(self.key(session_id), _PREVIOUS_FIELDS)
        return self._to_state(session_id, values, previous=True)

    def _save(self, session_id: str, blob: StateBlob, expected_version: int) -> int:
        arguments = [expected_version, encode_manifest(build_manifest(blob)), pack_payload(blob)]
        with self._errors():
            result = self._save_script(keys=[self.key(session_id)], args=arguments, client=self._client)
        return self._save_result(session_id, expected_version, result)

    def _delete(self, session_id: str) -> bool:
        with self._errors():
            return self._client.delete(self.key(session_id)) > 0

    def _list(self) -> list[str]:
        with self._errors():
            keys = list(self._client.scan_iter(match=self._match_pattern(), count=_SCAN_BATCH))
        return self._session_ids(keys)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    # -- async hooks --------------------------------------------------------

    async def _aload(self, session_id: str) -> StoredState | None:
        if not self._owns_client:
            return await super()._aload(session_id)
        async with self._aerrors():
            values = await self._async_client()[0].hmget(self.key(session_id), _CURRENT_FIELDS)
        return self._to_state(session_id, values)

    async def _aload_previous(self, session_id: str) -> StoredState | None:
        if not self._owns_client:
            return await super()._aload_previous(session_id)
        async with self._aerrors():
            values = await self._async_client()[0].hmget(self.key(session_id), _PREVIOUS_FIELDS)
        return self._to_state(session_id, values, previous=True)

    async def _asave(self, session_id: str, blob: StateBlob, expected_version: int) -> int:
        if not self._owns_client:
            return await super()._asave(session_id, blob, expected_version)
        arguments = [expected_version, encode_manifest(build_manifest(blob)), pack_payload(blob)]
        _, save_script = self._async_client()
        async with self._aerrors():
            result = await save_script(keys=[self.key(session_id)], args=arguments)
        return self._save_result(session_id, expected_version, result)

    async def _adelete(self, session_id: str) -> bool:
        if not self._owns_client:
            return await super()._adelete(session_id)
        async with self._aerrors():
            return await self._async_client()[0].delete(self.key(session_id)) > 0

    async def _alist(self) -> list[str]:
        if not self._owns_client:
            return await super()._alist()
        async with self._aerrors():
            keys = [key async for key in self._async_client()[0].scan_iter(match=self._match_pattern(), count=_SCAN_BATCH)]
        return self._session_ids(keys)

    async def aclose(self) -> None:
        """Close the async client of the running event loop, then the sync client."""
        entry = self._async_clients.pop()
        if entry is not None:
            await entry[0].aclose()
        self.close()

    # -- helpers ------------------------------------------------------------

    def _async_client(self) -> tuple[redis_asyncio.Redis, Any]:
        """Return this event loop's async client and the save script registered on it."""
        entry = self._async_clients.get()
        if entry is None:
            client = redis_asyncio.Redis.from_url(self.url, decode_responses=False, **self._client_options)
            entry = (client, client.register_script(_SAVE_SCRIPT))
            self._async_clients.set(entry)
        return entry

    def _match_pattern(self) -> str:
        # Prefix and namespace contain no glob characters and no ':', so this matches exactly one namespace.
        return f"{self.key_prefix}:{self.namespace}:*"

    def _session_ids(self, keys: list[bytes]) -> list[str]:
        prefix = f"{self.key_prefix}:{self.namespace}:"
        return [key.decode("utf-8")[len(prefix) :] for key in keys]

    def _to_state(self, session_id: str, values: list[Any], *, previous: bool = False) -> StoredState | None:
        version_raw, manifest, payload = values
        if version_raw is None:
            return None
        location = f"redis key {self.key(session_id)!r}" + (" (previous version)" if previous else "")
        version = int(version_raw)
        return StoredState(unpack_payload(manifest or b"", payload or b"", location, version), version)

    def _save_result(self, session_id: str, expected_version: int, result: list[Any]) -> int:
        succeeded, version = int(result[0]), int(result[1])
        if not succeeded:
            raise VersionConflictError(session_id, expected_version, version, where=f"redis key {self.key(session_id)!r}")
        return version

    def _connection_error(self, error: Exception) -> StoreConnectionError:
        return StoreConnectionError(
            f"Redis at {redact_url(self.url)} failed: {error}. Check that the server is running and "
            f"reachable, or pass another url= to RedisStore."
        )

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise self._connection_error(error) from error

    @asynccontextmanager
    async def _aerrors(self):
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise self._connection_error(error) from error

    def __repr__(self) -> str:
        return f"RedisStore({redact_url(self.url)!r}, namespace={self.namespace!r})"

