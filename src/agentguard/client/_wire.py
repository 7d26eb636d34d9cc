"""The parts of a request and a response the auth flow touches, as structural types.

``httpx`` and ``httpx2`` (the fork the ``mcp`` SDK's client is built on) have the same request,
response, URL and headers APIs under different classes. The flow is written against these
protocols, so one flow signs and renews for both without importing ``httpx2``.
"""

from __future__ import annotations

from typing import Any, Protocol, overload

__all__ = ["WireHeaders", "WireRequest", "WireResponse", "WireURL"]


class WireURL(Protocol):
    """``httpx.URL`` or ``httpx2.URL``."""

    @property
    def scheme(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def raw_host(self) -> bytes: ...

    @property
    def port(self) -> int | None: ...

    @property
    def path(self) -> str: ...

    @property
    def raw_path(self) -> bytes: ...

    @property
    def userinfo(self) -> bytes: ...


class WireHeaders(Protocol):
    """``httpx.Headers`` or ``httpx2.Headers``."""

    @overload
    def get(self, key: str, /) -> str | None: ...

    @overload
    def get(self, key: str, default: str, /) -> str: ...

    def get_list(self, key: str, split_commas: bool = False) -> list[str]: ...

    def __contains__(self, key: Any) -> bool: ...

    def __setitem__(self, key: str, value: str) -> None: ...


class WireRequest(Protocol):
    """``httpx.Request`` or ``httpx2.Request``: what the client is about to send."""

    method: str

    @property
    def url(self) -> WireURL: ...

    @property
    def headers(self) -> WireHeaders: ...

    def read(self) -> bytes: ...

    async def aread(self) -> bytes: ...


class WireResponse(Protocol):
    """``httpx.Response`` or ``httpx2.Response``."""

    status_code: int

    @property
    def headers(self) -> WireHeaders: ...

    @property
    def content(self) -> bytes: ...

    @property
    def request(self) -> WireRequest: ...

    def read(self) -> bytes: ...

    async def aread(self) -> bytes: ...
