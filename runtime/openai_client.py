"""The openai client `OpenAIModel` sends through, with the per-request work done once.

openai's request loop (`AsyncOpenAI.request`, where `post` ends) is kept whole: the
retries (connection errors, 429 with `Retry-After`, 5xx), errors, timeouts and auth
headers are the client's own. What changes is work it repeats on every request although
the answer never changes:

- The request URL. openai merges `/chat/completions` into the base URL, turns it into a
  string, and httpx2 parses that string again to merge it into its own base URL: two to
  three full URL parses a request (an IP address host is parsed octet by octet each time).
  `ReusingClient._prepare_url` and `ReusingHttpClient._merge_url` keep the merged URL of
  each path (httpx2 URLs are immutable; the cache is dropped when the base URL changes).
- The headers. openai builds them as a list, and httpx2 merges that list into its own
  defaults header by header, rescanning the list for each one. The list is the same on
  every first try (the retry count and the body's length are the only parts that vary, and
  the length is added later), so `ReusingHttpClient._merge_headers` keeps the merged
  headers of each list it has seen (httpx2's `Request` copies them: never shared).
- openai's headers. `_build_headers` builds an `httpx2.Headers` from the client's default
  and auth headers, the retry count and the read timeout on every try, normalising each
  header; `ReusingClient._build_headers` keeps what it built for each such set of inputs
  and hands out a copy (`Headers` are mutable: never shared).
- The `Request`'s headers. httpx2's `Request` copies the merged headers, scans them for
  `Host`, `Content-Length` and `Transfer-Encoding` (each a scan raising `KeyError` when
  absent) and rebuilds them with `Host` first and the body's length last.
  `ReusingHttpClient.build_request` keeps that result per header list and host and adds
  the length, for openai's shape of request only (a body of bytes, a header list, no
  query, no cookies); any other request, or one whose headers httpx2 treats specially,
  is built by httpx2 itself.
- The request options. `post` builds openai's `FinalRequestOptions` field by field, with
  every default; `ReusingClient.post_chat_completion` copies a template built once with
  the same fields and hands it to the client's own `request` (the retry loop `post` ends in).
- The body. openai encodes the request's JSON on every try (`openapi_dumps`), the tool's
  schema and the settings with it, although only the messages change between one step's
  calls. `BodyParts` keeps the bytes before and after the messages, encoded by that same
  function once, and each first try encodes only its messages between them (openai sends
  a `json_data` of bytes as it is: the same bytes on the wire).
- Reading the reply. httpx2's `aread` reads through `aiter_bytes` over `aiter_raw`,
  each a generator over the one below; `CappedResponse.aread` reads the stream once into
  the decoder, with httpx2's checks, byte counts and closing.
- The reply. openai builds its `ChatCompletion` with `construct_type`, a walk in Python of
  every field against its annotation (about 0.1 ms a reply). `ChatCompletionReply.build`
  has pydantic validate the same data in strict mode (a few microseconds), which gives the
  same object when the data has the declared types, and falls back to openai's own walk
  when it does not, so a provider's loosely typed reply is taken exactly as openai takes it.

What it adds is a bound on the reply: `ReusingHttpClient` reads at most `MAX_REPLY_BYTES`
of a reply, as sent and as decoded (`CappedResponse`), and a reply that declares or sends
more fails the call with `ReplyTooLarge` at once (an `OpenAIError`: the client does not
retry it) instead of filling the process's memory.

The requests on the wire are those of instructor's `create` on a stock openai client: the
same path, the same headers in the same order, the same JSON (tests/test_model_openai.py
compares them, first tries, re-asks and retries). The body's keys keep the order
`OpenAIModel.request_body` gives them, as before this module (`create` writes them in
the order of its parameters). This module imports openai, so runtime/model.py imports
it only when a real model is first called.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import httpx2
import pydantic
from httpx2._client import USE_CLIENT_DEFAULT, UseClientDefault
from httpx2._exceptions import request_context
from openai import AsyncOpenAI, DefaultAioHttpClient, OpenAIError
from openai._models import FinalRequestOptions, construct_type
from openai._types import NotGiven
from openai._utils._json import openapi_dumps
from openai.types.chat import ChatCompletion

CACHED = 32
"""How many merged URLs (one a request path) and merged header lists (one a retry count)
a client keeps; past that, it merges as httpx2 does."""

CHAT_COMPLETIONS = "/chat/completions"

MAX_REPLY_BYTES = 16 * 1024 * 1024
"""The largest reply read, in bytes, both as sent and as decoded (gzip): 16 MiB. A chat
completion is some kilobytes (128,000 output tokens are about half a megabyte); a reply
above this is an endpoint gone wrong, or a decompression bomb."""


class ReplyTooLarge(OpenAIError):
    """A reply longer than `MAX_REPLY_BYTES` (declared or sent): the call fails."""


class CappedResponse(httpx2.Response):
    """An httpx2 `Response` whose body is read only up to `MAX_REPLY_BYTES`, raw and
    decoded (`aread` reads through both iterators). Raises `ReplyTooLarge`."""

    def aiter_raw(self, chunk_size: int | None = None) -> AsyncGenerator[bytes, None]:
        self._refuse_declared()
        return _capped(super().aiter_raw(chunk_size), "is")

    def _refuse_declared(self) -> None:
        declared = self.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > MAX_REPLY_BYTES:
            raise _too_large("declares")  # before a byte of it is read

    async def aread(self) -> bytes:
        """httpx2's `aread` (the body read once, decoded, and the response closed) in one
        loop over the stream instead of `aiter_bytes` over `aiter_raw`, two generators
        that each wrap the one below (five in all, with the cap's), with the same checks,
        counts and closing, and the cap on the bytes read and on the bytes decoded."""
        if hasattr(self, "_content"):
            content: bytes = self._content
            return content
        if self.is_stream_consumed:
            raise httpx2.StreamConsumed()
        if self.is_closed:
            raise httpx2.StreamClosed()
        stream = self.stream
        if not isinstance(stream, httpx2.AsyncByteStream):
            raise RuntimeError("Attempted to call an async iterator on a sync stream.")
        self._refuse_declared()
        self.is_stream_consumed = True
        self._num_bytes_downloaded = 0
        decoder = self._get_content_decoder()
        parts: list[bytes] = []
        decoded = 0
        with request_context(request=self._request):
            chunks = stream.__aiter__()
            try:
                async for raw in chunks:
                    self._num_bytes_downloaded += len(raw)
                    if self._num_bytes_downloaded > MAX_REPLY_BYTES:
                        raise _too_large("is")
                    for part in decoder.decode(raw):
                        decoded += len(part)
                        if decoded > MAX_REPLY_BYTES:
                            raise _too_large("decodes to")
                        parts.append(part)
                for part in decoder.flush():
                    decoded += len(part)
                    if decoded > MAX_REPLY_BYTES:
                        raise _too_large("decodes to")
                    parts.append(part)
            finally:
                if isinstance(chunks, AsyncGenerator):
                    await chunks.aclose()
                await self.aclose()
        self._content = b"".join(parts)
        return self._content

    def aiter_bytes(self, chunk_size: int | None = None) -> AsyncGenerator[bytes, None]:
        return _capped(super().aiter_bytes(chunk_size), "decodes to")


async def _capped(parts: AsyncIterator[bytes], how: str) -> AsyncGenerator[bytes, None]:
    """`parts` passed on until they add up to more than `MAX_REPLY_BYTES`."""
    read = 0
    async for part in parts:
        read += len(part)
        if read > MAX_REPLY_BYTES:
            raise _too_large(how)
        yield part


def _too_large(how: str) -> ReplyTooLarge:
    return ReplyTooLarge(
        f"the endpoint's reply {how} more than {MAX_REPLY_BYTES:,} bytes (docs/runtime.md, "
        "Rate limits: Reply size)"
    )


class ChatCompletionReply(ChatCompletion):
    """The `cast_to` of a chat-completions `post`: openai hands the reply's JSON to `build`
    (its `ModelBuilderProtocol`) instead of walking it with `construct_type`."""

    @classmethod
    def build(cls, *, response: httpx2.Response, data: object) -> ChatCompletion:
        """A `ChatCompletion` of `data` (the reply's JSON), as openai would construct it.

        Strict validation accepts only data already of the declared types, for which
        openai's non-validating construction gives an equal model; anything else (a field
        of another type, a missing one) is constructed by openai itself, unvalidated."""
        try:
            return ChatCompletion.model_validate(data, strict=True)
        except pydantic.ValidationError:
            return cast(ChatCompletion, construct_type(type_=ChatCompletion, value=data))


class _UrlCache:
    """Merged URLs by path, valid for one base URL."""

    __slots__ = ("base", "urls")

    def __init__(self) -> None:
        self.base: object = None
        self.urls: dict[str, httpx2.URL] = {}

    def get(self, base: object, path: str) -> httpx2.URL | None:
        if base is not self.base:  # the base URL was replaced: start over
            self.base = base
            self.urls = {}
            return None
        return self.urls.get(path)

    def keep(self, path: str, url: httpx2.URL) -> httpx2.URL:
        if len(self.urls) < CACHED:
            self.urls[path] = url
        return url


class BodyParts:
    """A chat-completions body's JSON, as openai encodes it (`openapi_dumps`), split around
    its `messages`: `encode(messages)` is the whole body's bytes, with only the messages
    encoded per call. Raises ValueError when `body` does not start with its `model`
    and `messages` keys, in that order (the order `OpenAIModel.request_body` gives)."""

    __slots__ = ("head", "tail")

    def __init__(self, body: dict[str, Any]) -> None:
        if list(body)[:2] != ["model", "messages"]:
            raise ValueError("a chat-completions body starts with `model` and `messages`")
        # `{"model":...,"messages":` then `[]` then the rest, as one encoding gives them.
        self.head = openapi_dumps({"model": body["model"]})[:-1] + b',"messages":'
        whole = openapi_dumps({**body, "messages": []})
        if not whole.startswith(self.head + b"[]"):  # pragma: no cover - json changed
            raise ValueError("the body's JSON does not start with its model and messages")
        self.tail = whole[len(self.head) + 2 :]

    def encode(self, messages: list[dict[str, Any]]) -> bytes:
        """The body's bytes with `messages`: `openapi_dumps` of the whole body (its errors:
        a value JSON cannot hold, text that UTF-8 cannot encode)."""
        return self.head + openapi_dumps(messages) + self.tail


class ReusingHttpClient(DefaultAioHttpClient):
    """openai's aiohttp transport (`DefaultAioHttpClient`), merging each request path and
    each header list with its own once, and reading replies with a cap (`CappedResponse`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._merged = _UrlCache()
        self._merged_headers: dict[tuple[Any, ...], Any] = {}
        self._request_headers: dict[tuple[Any, ...], httpx2.Headers] = {}

    def build_request(
        self,
        method: str,
        url: httpx2.URL | str,
        *,
        content: Any = None,
        data: Any = None,
        files: Any = None,
        json: Any = None,
        params: Any = None,
        headers: Any = None,
        cookies: Any = None,
        timeout: Any = USE_CLIENT_DEFAULT,
        extensions: Any = None,
    ) -> httpx2.Request:
        """httpx2's `build_request`; for openai's requests (a body of bytes, its list of
        headers, no cookies, no query, on either side) the `Request`'s headers are kept
        per header list and host, as httpx2 prepares them (`Host` first, the merged
        headers, `Content-Length` last), instead of being merged and scanned again."""
        prepared = None
        if (
            isinstance(content, bytes)
            and content
            and isinstance(headers, list)
            and data is None
            and files is None
            and json is None
            and params is None
            and cookies is None
            and extensions is None
            and not self.params
            and not self.cookies
        ):
            merged_url = self._merge_url(url)
            key = (merged_url.netloc, tuple(self.headers.raw), *headers)
            prepared = self._request_headers.get(key)
            if prepared is None:
                prepared = self._request_headers_for(merged_url, headers)
                if prepared is not None and len(self._request_headers) < CACHED:
                    self._request_headers[key] = prepared
        if prepared is None:  # not openai's shape, or a header httpx2 treats otherwise
            return super().build_request(
                method, url, content=content, data=data, files=files, json=json,
                params=params, headers=headers, cookies=cookies, timeout=timeout,
                extensions=extensions,
            )  # fmt: skip
        request_headers = httpx2.Headers(prepared)  # a copy (httpx2 copies them too)
        request_headers["Content-Length"] = str(len(content))  # `encode_content`'s
        limits = self.timeout if isinstance(timeout, UseClientDefault) else httpx2.Timeout(timeout)
        request = httpx2.Request(
            method,
            merged_url,
            headers=request_headers,
            stream=httpx2.ByteStream(content),
            extensions={"timeout": limits.as_dict()},
        )
        request.read()  # as httpx2 reads a body of bytes: `request.content` is set
        # Found once for the kept headers (an ASCII `Content-Length` cannot change it).
        request.headers.encoding = prepared.encoding
        return request

    def _request_headers_for(self, url: httpx2.URL, headers: list[Any]) -> httpx2.Headers | None:
        """The headers httpx2's `Request` ends with for `headers` on `url`, but the body's
        `Content-Length`; None when one of them would change what it adds (a `Host`, a
        `Content-Length` or `Transfer-Encoding` of the caller's own)."""
        merged = httpx2.Headers(self._merge_headers(headers))
        if any(name in merged for name in ("Host", "Content-Length", "Transfer-Encoding")):
            return None
        if not url.host:
            return None
        return httpx2.Headers([(b"Host", url.netloc), *merged.raw])

    async def _send_single_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await super()._send_single_request(request)
        # The same object, read with a cap: `CappedResponse` adds methods, no state.
        response.__class__ = CappedResponse
        return response

    def _merge_url(self, url: httpx2.URL | str) -> httpx2.URL:
        if not isinstance(url, str):
            merged: httpx2.URL = super()._merge_url(url)
            return merged
        return self._merged.get(self.base_url, url) or self._merged.keep(
            url, super()._merge_url(url)
        )

    def _merge_headers(self, headers: Any = None) -> Any:
        if not isinstance(headers, list):  # not openai's list of pairs
            return super()._merge_headers(headers)
        key = (tuple(self.headers.raw), *headers)  # the client's own may change too
        merged = self._merged_headers.get(key)
        if merged is None:
            merged = super()._merge_headers(headers)
            if len(self._merged_headers) < CACHED:
                self._merged_headers[key] = merged
        return merged


class ReusingClient(AsyncOpenAI):
    """`AsyncOpenAI`, merging each request path into its base URL once, with a chat
    completion's request options built once (`post_chat_completion`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._prepared = _UrlCache()
        self._built_headers: dict[tuple[Any, ...], tuple[Any, httpx2.Headers]] = {}
        self._chat_options = FinalRequestOptions.construct(
            method="post",
            url=CHAT_COMPLETIONS,
            json_data=None,
            content=None,
            files=None,
            security={"bearer_auth": True},  # the options `chat.completions.create` gives
        )

    async def post_chat_completion(self, body: dict[str, Any] | bytes) -> ChatCompletion:
        """`post("/chat/completions", cast_to=ChatCompletionReply, body=body, options=...)`
        as `chat.completions.create` calls it, with the options copied from a template.
        `body` is the request's JSON, or its bytes already encoded (`BodyParts`): openai
        sends those as they are."""
        options = self._chat_options.model_copy(update={"json_data": body})
        reply: ChatCompletion = await self.request(ChatCompletionReply, options)
        return reply

    def _build_headers(
        self, options: FinalRequestOptions, *, retries_taken: int = 0
    ) -> httpx2.Headers:
        if options.headers or not isinstance(options.timeout, NotGiven) or self._idempotency_header:
            return super()._build_headers(options, retries_taken=retries_taken)  # not ours
        # Everything the stock method reads, but the timeout (compared, as it is not
        # hashable). An omitted header (`Omit()`, a new one each time) is keyed as None.
        key = (
            retries_taken,
            tuple(self._auth_headers(options.security).items()),
            tuple((k, v if isinstance(v, str) else None) for k, v in self.default_headers.items()),
        )
        kept = self._built_headers.get(key)
        if kept is None or kept[0] != self.timeout:
            built = super()._build_headers(options, retries_taken=retries_taken)
            if len(self._built_headers) >= CACHED:
                self._built_headers.clear()
            kept = self._built_headers[key] = (self.timeout, built)
        headers = httpx2.Headers(kept[1])  # a copy: openai may edit what it is given
        headers.encoding = kept[1].encoding  # the same bytes: not scanned again
        return headers

    @property
    def user_agent(self) -> str:
        # openai names the client's class here; the header stays the stock client's.
        return f"{AsyncOpenAI.__name__}/Python {self._version}"

    def _prepare_url(self, url: str) -> httpx2.URL:
        return self._prepared.get(self._base_url, url) or self._prepared.keep(
            url, super()._prepare_url(url)
        )
