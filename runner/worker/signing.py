"""Signing input hrefs at read time: Microsoft Planetary Computer's SAS tokens.

Planetary Computer's Sentinel-2 COGs live in Azure Blob Storage
(``https://{account}.blob.core.windows.net/{container}/...``) and are readable only with a
short-lived Shared Access Signature appended to the URL. A plan keeps the hrefs **unsigned** (a
token written into a plan would expire long before a continental run reaches most tiles); the
worker signs them just before it reads, as ``planetary_computer.sign`` does:

* one token per (storage account, container), from PC's SAS API
  ``GET {token_url}/{account}/{container}`` → ``{"msft:expiry": ISO time, "token": "st=…&sig=…"}``
  (``PC_SDK_SUBSCRIPTION_KEY``, if set, goes in the ``Ocp-Apim-Subscription-Key`` header and
  raises the rate limits);
* tokens are cached until ``refresh_margin`` seconds (10 min) before their expiry (half way
  through the life of a shorter-lived one), so a tile's hundreds of assets cost one request per
  container, and a long tile in row bands signs again before a band when a token is due
  (:meth:`SasSigner.expiring`);
* a token the storage refuses anyway (revoked, clock skew) is fetched anew by
  :meth:`SasSigner.sign` with ``fresh=True`` when the worker probes the failed asset.

Hrefs on other hosts pass through unchanged; so does an href that already carries a query (it
was signed by someone else). Tokens never reach a log line or an error message:
:meth:`SasSigner.redact` turns signed hrefs back into plain ones.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from runner.common.config import PC_TOKEN_URL, SigningMethod
from runner.common.errors import InputAssetError

#: The environment variable of an optional Planetary Computer API key.
PC_KEY_ENV = "PC_SDK_SUBSCRIPTION_KEY"
_BLOB_SUFFIX = ".blob.core.windows.net"
_SIG = re.compile(r"(?i)\b(sig(?:=|%3D))[^&\s'\":]+")

Item = dict[str, Any]


def _utc(text: str) -> float:
    """POSIX seconds of an ISO 8601 time (``Z`` or an offset; naive means UTC)."""
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def blob_container(href: str) -> tuple[str, str] | None:
    """``(account, container)`` of an unsigned Azure Blob Storage href, else None.

    >>> blob_container("https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/a/b.tif")
    ('sentinel2l2a01', 'sentinel2-l2')
    >>> blob_container("https://e84.s3.amazonaws.com/a.tif") is None
    True
    """
    u = urlsplit(href)
    host = (u.hostname or "").lower()
    if u.scheme not in ("http", "https") or not host.endswith(_BLOB_SUFFIX) or u.query:
        return None
    container = u.path.lstrip("/").split("/", 1)[0]
    return (host[: -len(_BLOB_SUFFIX)], container) if container else None


@dataclass(frozen=True, slots=True)
class SasToken:
    token: str  #: the query string to append (without ``?``)
    expiry: float  #: POSIX seconds on the signer's clock (the server's expiry, skew removed)
    issued: float  #: POSIX seconds on the signer's clock

    def renew_at(self, margin: float) -> float:
        """When to replace it: ``margin`` s before expiry, or half way for a short-lived one."""
        return self.expiry - min(margin, (self.expiry - self.issued) / 2)


class HrefSigner:
    """How the worker turns a plan's hrefs into the ones it reads: as they are
    (``input.signing: none``). :meth:`redact` still scrubs signatures from text, e.g. of hrefs
    that a catalog carried signed."""

    def sign(self, href: str, fresh: bool = False) -> str:
        """The href to read (``fresh``: with a newly fetched token, where tokens are used)."""
        return href

    def sign_items(self, items: list[Item]) -> list[Item]:
        """The items with the hrefs to read."""
        return items

    def expiring(self) -> bool:
        """Whether hrefs signed earlier should be signed again before reading on."""
        return False

    def plain(self, href: str) -> str:
        """The plan's href of an href to read."""
        return href

    def redact(self, text: str) -> str:
        """``text`` fit for a log line or an error message."""
        return redact_tokens(text)


class SasSigner(HrefSigner):
    """Signs Azure Blob hrefs with Planetary Computer SAS tokens (thread-safe, cached)."""

    def __init__(
        self,
        token_url: str = PC_TOKEN_URL,
        *,
        retries: int = 3,
        timeout: float = 30.0,
        refresh_margin: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token_url = token_url.rstrip("/")
        self.retries, self.timeout, self.refresh_margin = retries, timeout, refresh_margin
        self.clock = clock
        self._tokens: dict[tuple[str, str], SasToken] = {}
        self._lock = threading.Lock()
        self._signed: dict[str, str] = {}  #: signed href → plain href (for redaction)

    # --- tokens -------------------------------------------------------------------------------
    def _fetch(self, account: str, container: str) -> SasToken:
        import urllib3
        from urllib3.util.retry import Retry

        url = f"{self.token_url}/{account}/{container}"
        headers = {"Accept": "application/json"}
        if key := os.environ.get(PC_KEY_ENV):
            headers["Ocp-Apim-Subscription-Key"] = key
        retry = Retry(
            total=self.retries,
            backoff_factor=0.5,
            status_forcelist=(429, 500, 502, 503, 504),
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        try:
            resp = urllib3.request("GET", url, headers=headers, retries=retry, timeout=self.timeout)
        except urllib3.exceptions.HTTPError as e:
            raise InputAssetError(f"cannot get a SAS token from {url}: {e}") from None
        if resp.status != 200:
            raise InputAssetError(f"cannot get a SAS token from {url}: HTTP {resp.status}")
        try:
            doc = json.loads(resp.data)
            token = str(doc["token"]).lstrip("?")
            expiry = _utc(str(doc["msft:expiry"]))
        except (ValueError, KeyError, TypeError):
            raise InputAssetError(
                f"cannot get a SAS token from {url}: not a token document"
            ) from None
        # the token's life by the server's clock (its Date header), on this machine's clock: a
        # skewed clock neither renews a token too late nor takes every token for expired
        try:
            served = parsedate_to_datetime(resp.headers["Date"]).timestamp()
        except (KeyError, TypeError, ValueError):
            served = time.time()
        life = expiry - served
        if life <= 0:
            raise InputAssetError(f"cannot get a SAS token from {url}: it expired on arrival")
        issued = self.clock()
        return SasToken(token, issued + life, issued)

    def token(self, account: str, container: str, fresh: bool = False) -> SasToken:
        """The cached token of a container, fetched when missing, near expiry or ``fresh``."""
        key = (account, container)
        with self._lock:
            tok = self._tokens.get(key)
            if fresh or tok is None or self.clock() >= tok.renew_at(self.refresh_margin):
                tok = self._tokens[key] = self._fetch(account, container)
            return tok

    def expiring(self) -> bool:
        """Whether a cached token is due for renewal (:meth:`SasToken.renew_at`): sign again
        before reading on."""
        now = self.clock()
        with self._lock:
            return any(now >= t.renew_at(self.refresh_margin) for t in self._tokens.values())

    # --- hrefs and items ----------------------------------------------------------------------
    def sign(self, href: str, fresh: bool = False) -> str:
        """The href with its container's token appended (unchanged if not an Azure blob)."""
        where = blob_container(href)
        if where is None:
            return href
        signed = f"{href}?{self.token(*where, fresh=fresh).token}"
        with self._lock:
            self._signed[signed] = href
        return signed

    def sign_items(self, items: list[Item]) -> list[Item]:
        """Copies of the items with every asset href signed (the items are not changed)."""
        out = []
        for it in items:
            assets = {
                k: (
                    {**a, "href": self.sign(a["href"])}
                    if isinstance(a, dict) and "href" in a
                    else a
                )
                for k, a in (it.get("assets") or {}).items()
            }
            out.append({**it, "assets": assets})
        return out

    def plain(self, href: str) -> str:
        """The unsigned href of a signed one (itself if it was not signed here)."""
        with self._lock:
            return self._signed.get(href, href)

    def redact(self, text: str) -> str:
        """``text`` with every signed href replaced by its plain href (no token in logs)."""
        with self._lock:
            pairs = sorted(self._signed.items(), key=lambda kv: -len(kv[0]))
        for signed, plain in pairs:
            text = text.replace(signed, plain)
        return redact_tokens(text)  # a token quoted some other way (URL-encoded…)


def redact_tokens(text: str) -> str:
    """``text`` with the signature of any SAS token in it replaced by ``<redacted>``.

    >>> redact_tokens("GET https://a.blob.core.windows.net/c/x.tif?st=1&sig=AbC%2B: 403")
    'GET https://a.blob.core.windows.net/c/x.tif?st=1&sig=<redacted>: 403'
    """
    return _SIG.sub(r"\1<redacted>", text)


def signer_for(method: SigningMethod, token_url: str) -> HrefSigner:
    """The signer of ``input.signing`` (``none``: the plain :class:`HrefSigner`)."""
    if method == "none":
        return HrefSigner()
    if method == "planetary-computer":
        return SasSigner(token_url)
    raise ValueError(f"unknown signing method {method!r}")  # the config validates it first
