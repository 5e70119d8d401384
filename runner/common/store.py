"""Bytes at a location: a local path, ``file://`` URL or ``s3://bucket/key`` (boto3).

S3 credentials come only from the standard AWS chain (environment, profile, web identity),
never from a plan or a manifest; ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` (or
``--endpoint-url``, see :func:`use_endpoint`) select an S3-compatible endpoint. Objects larger than
:data:`MULTIPART_THRESHOLD` are uploaded in parts (boto3's managed transfer), each with its
``ContentType`` and, when set (:func:`use_acl`), a canned ``ACL``. boto3 retries throttling, 5xx
and connection errors (``AWS_MAX_ATTEMPTS``, default 8; ``AWS_RETRY_MODE``, default adaptive);
a write that still fails is a one-line :class:`StorageError`.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import re
from functools import cache
from pathlib import Path
from typing import IO, Any, get_args
from urllib.parse import urlparse

from runner.common.config import CannedAcl
from runner.common.errors import GmrunError, UserInputError, redact_credentials

#: Objects at least this big go up as S3 multipart uploads, in parts of this size.
MULTIPART_THRESHOLD = int(os.environ.get("GMRUN_S3_MULTIPART_THRESHOLD", 16 * 2**20))


#: Canned ACLs accepted for outputs (``output.acl``), as S3 names them.
CANNED_ACLS: tuple[str, ...] = get_args(CannedAcl)

_ACL: str | None = os.environ.get("GMRUN_S3_ACL") or None


class StorageError(GmrunError):
    """Writing an output failed after the client's retries (exit code 1: rerun the tile)."""

    exit_code = 1


def use_acl(acl: str | None) -> None:
    """Give every S3 object this process writes the canned ``acl`` (``None``: the bucket's default)."""
    global _ACL
    if acl is not None and acl not in CANNED_ACLS:
        raise UserInputError(f"invalid S3 ACL {acl!r}: use one of {', '.join(CANNED_ACLS)}")
    _ACL = acl


def validate_endpoint(url: str) -> str:
    """An S3-compatible endpoint: ``http(s)://host[:port]`` with no credentials, path or query."""
    u = urlparse(url)
    try:
        port = u.port
    except ValueError:
        port = -1
    if u.username or u.password:  # never echo them
        raise UserInputError(
            "invalid endpoint URL: credentials in it are refused; they come from the AWS chain "
            "(environment, profile, web identity)"
        )
    if (
        u.scheme not in ("http", "https")
        or not u.hostname
        or port == -1
        or u.path not in ("", "/")
        or u.query
        or u.fragment
        or any(c.isspace() for c in url)
    ):
        raise UserInputError(
            f"invalid endpoint URL {url[:100]!r}: expected http(s)://host[:port] "
            "(no credentials, path or query)"
        )
    return url.rstrip("/")


def gdal_s3_settings(endpoint: str) -> dict[str, str]:
    """GDAL's ``/vsis3/`` settings for an endpoint: ``AWS_S3_ENDPOINT`` (host:port),
    ``AWS_HTTPS`` (``NO`` for http) and path-style addressing (``AWS_VIRTUAL_HOSTING=FALSE``)."""
    u = urlparse(validate_endpoint(endpoint))
    return {
        "AWS_S3_ENDPOINT": u.netloc,
        "AWS_HTTPS": "YES" if u.scheme == "https" else "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
    }


def endpoint() -> str | None:
    """The S3 endpoint of this process (``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def use_endpoint(url: str | None) -> None:
    """``--endpoint-url``: point boto3 (``AWS_ENDPOINT_URL``, inherited by child processes) at
    an S3-compatible store; GDAL's settings follow in :func:`runner.worker.tile.gdal_environment`."""
    if not url:
        return
    os.environ["AWS_ENDPOINT_URL"] = validate_endpoint(url)
    os.environ.pop("AWS_ENDPOINT_URL_S3", None)  # the flag wins over the S3-specific variable
    s3_client.cache_clear()


def is_s3(url: str) -> bool:
    return url.startswith("s3://")


def local_path(url: str) -> Path:
    """The filesystem path of a local location (``file://`` stripped)."""
    return Path(url[len("file://") :]) if url.startswith("file://") else Path(url)


def absolute(url: str) -> str:
    """A location as an absolute URL or path: a relative local path made absolute (for what
    must not depend on the current folder: Jobs' arguments, STAC ``self`` links)."""
    return url if "://" in url else os.path.abspath(url)


def join(base: str, *parts: str) -> str:
    """Join path parts onto a location, keeping its scheme."""
    if is_s3(base):
        return posixpath.join(base.rstrip("/"), *parts)
    return str(local_path(base).joinpath(*parts))


def dirname(url: str) -> str:
    if is_s3(url):
        return url.rsplit("/", 1)[0]
    return str(local_path(url).parent)


#: a bucket name as botocore accepts it (AWS's rules for new buckets are stricter)
_BUCKET = re.compile(r"^[A-Za-z0-9.\-_]{1,255}$")


def split_s3(url: str) -> tuple[str, str]:
    """``(bucket, key)`` of an ``s3://bucket/key`` URL. Credentials written into the URL
    (``s3://KEY:SECRET@bucket``) are refused without echoing them: S3 credentials come from the
    AWS chain (environment, profile, instance or pod role)."""
    u = urlparse(url)
    if "@" in u.netloc:
        raise UserInputError(
            f"invalid S3 URL {redact_credentials(url)!r}: credentials do not belong in a URL; "
            "give them through the AWS credential chain (AWS_ACCESS_KEY_ID, a profile, a role)"
        )
    if not u.netloc or not _BUCKET.match(u.netloc):
        raise UserInputError(f"invalid S3 URL {url!r}: expected s3://bucket/key")
    return u.netloc, u.path.lstrip("/")


@cache
def s3_client() -> Any:
    """One boto3 S3 client per process (thread-safe), honouring :func:`endpoint`."""
    import boto3
    from botocore.config import Config

    try:
        attempts = int(os.environ.get("AWS_MAX_ATTEMPTS", "8"))
    except ValueError:
        raise UserInputError("AWS_MAX_ATTEMPTS must be an integer") from None
    mode = os.environ.get("AWS_RETRY_MODE", "adaptive")
    return boto3.client(
        "s3",
        endpoint_url=endpoint(),
        config=Config(retries={"max_attempts": max(1, attempts), "mode": mode}),
    )


def _one_line(e: BaseException) -> str:
    """An S3 client error's message on one line (botocore's span several)."""
    return " ".join(str(e).split())


def read_bytes(url: str) -> bytes:
    """Read a whole object; a missing one raises :class:`FileNotFoundError`."""
    if is_s3(url):
        bucket, key = split_s3(url)
        from botocore.exceptions import BotoCoreError, ClientError

        client = s3_client()
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            raise FileNotFoundError(url) from None
        except (BotoCoreError, ClientError) as e:  # endpoint down, access denied, ...
            raise StorageError(f"cannot read {url}: {_one_line(e)}") from None
    return local_path(url).read_bytes()


def _user_file_error(e: OSError, url: str | Path, what: str) -> UserInputError:
    if isinstance(e, IsADirectoryError):
        return UserInputError(f"{what} not found: {url} is a folder")
    return UserInputError(f"{what} not found: {url}")


def read_user_file(url: str, what: str) -> bytes:
    """Read a file the user named (a plan, a catalog, a GeoJSON); a missing one or a folder is a
    one-line :class:`UserInputError` that says which ``what`` it was."""
    try:
        return read_bytes(url)
    except (FileNotFoundError, IsADirectoryError) as e:
        raise _user_file_error(e, url, what) from None


def open_user_file(path: Path, what: str, mode: str = "r") -> IO[Any]:
    """Open a local file the user named, for streaming; errors as :func:`read_user_file`'s."""
    try:
        return path.open(mode, encoding=None if "b" in mode else "utf-8")
    except (FileNotFoundError, IsADirectoryError) as e:
        raise _user_file_error(e, path, what) from None


def write_bytes(url: str, data: bytes, content_type: str = "application/octet-stream") -> None:
    """Write a whole object; local files appear atomically (write to a temporary, then rename)."""
    if is_s3(url):
        bucket, key = split_s3(url)
        from boto3.exceptions import S3UploadFailedError
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        part = max(MULTIPART_THRESHOLD, 5 * 2**20)  # S3's smallest part (but the last) is 5 MiB
        cfg = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=part,
            max_concurrency=4,
            use_threads=True,
        )
        extra = {"ContentType": content_type, **({"ACL": _ACL} if _ACL else {})}
        try:
            s3_client().upload_fileobj(io.BytesIO(data), bucket, key, ExtraArgs=extra, Config=cfg)
        except (S3UploadFailedError, BotoCoreError, ClientError) as e:
            reason = _one_line(e)
            raise StorageError(f"cannot write {url}: {reason}") from None
        return
    p = local_path(url)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, p)
    except OSError as e:  # a full disk (ENOSPC), a quota, a read-only mount: no partial file left
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {url}: {e.strerror or e}") from None
    except BaseException:  # interrupted mid-write in this process: the same, then go on failing
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    _remove_stale_temporaries(p)


def delete(url: str) -> None:
    """Remove an object or file (absent already: nothing to do); a refusal is a StorageError."""
    if is_s3(url):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3(url)
        try:
            s3_client().delete_object(Bucket=bucket, Key=key)
        except (BotoCoreError, ClientError) as e:
            raise StorageError(f"cannot delete {url}: {_one_line(e)}") from None
        return
    try:
        local_path(url).unlink(missing_ok=True)
    except OSError as e:
        raise StorageError(f"cannot delete {url}: {e.strerror or e}") from None


def _remove_stale_temporaries(p: Path) -> None:
    """Remove ``.{name}.tmp{PID}`` files of ``p`` left by writers that were killed mid-write
    (their PID is no longer a process here); a live writer's temporary is left alone."""
    for stale in p.parent.glob(f".{p.name}.tmp*"):
        pid = stale.name[len(f".{p.name}.tmp") :]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            stale.unlink(missing_ok=True)


def list_sizes(folder: str) -> dict[str, int]:
    """The files directly in a folder (an S3 prefix ending at ``folder/``) and their sizes, bytes;
    empty when it does not exist. One LIST request per 1000 objects on S3."""
    if is_s3(folder):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3(folder)
        prefix = key.rstrip("/") + "/"
        out: dict[str, int] = {}
        try:
            pages = s3_client().get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
                for obj in page.get("Contents", []):
                    out[obj["Key"][len(prefix) :]] = int(obj["Size"])
        except (BotoCoreError, ClientError) as e:
            raise StorageError(f"cannot list {folder}: {_one_line(e)}") from None
        return out
    try:
        with os.scandir(local_path(folder)) as it:
            return {e.name: e.stat().st_size for e in it if e.is_file()}
    except (FileNotFoundError, NotADirectoryError):
        return {}


def exists(url: str) -> bool:
    if is_s3(url):
        bucket, key = split_s3(url)
        from botocore.exceptions import BotoCoreError

        client = s3_client()
        try:
            client.head_object(Bucket=bucket, Key=key)
            return True
        except client.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StorageError(f"cannot read {url}: {_one_line(e)}") from None
        except BotoCoreError as e:
            raise StorageError(f"cannot read {url}: {_one_line(e)}") from None
    return local_path(url).exists()
