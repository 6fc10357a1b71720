"""The S3 backup storage: any S3-compatible endpoint, with boto3 (see :mod:`.storage`).

An object is written as a multipart upload of ``part_size`` parts (one part in
memory at a time) completed at the end, or as one PUT when it is smaller than a
part; on any failure the upload is aborted, so no partial object is left (if the
abort itself cannot reach the endpoint, the message gives the upload id: an
``AbortIncompleteMultipartUpload`` lifecycle rule on the bucket removes such
leftovers). Reads are ranged GETs behind a seekable file object, one streaming GET
per contiguous run, so a sequential read is one request.

TLS is verified (``ca_bundle`` for a private CA; ``verify_tls=False`` only for a
test endpoint on plain HTTP); path-style addressing is used with an
``endpoint_url`` (what MinIO, Ceph and most S3-compatible servers expect).
"""

import contextlib
import io
import logging

import boto3
import botocore.config
import botocore.exceptions

from .exceptions import (
    InvalidInput,
    StorageAuthError,
    StorageError,
    StorageFullError,
    StorageObjectExists,
    StorageObjectMissing,
    StorageUnavailable,
)
from .storage import READ_CHUNK, ObjectInfo, Storage, _Hasher, _put_result, check_key

_logger = logging.getLogger(__name__)

__all__ = ["S3Storage"]

MIN_PART_SIZE = 5 * 1024 * 1024
DEFAULT_PART_SIZE = 16 * 1024 * 1024
_AUTH_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AllAccessDisabled",
    "AccountProblem",
    "403",
}
_FULL_CODES = {
    "QuotaExceeded",
    "XMinioStorageFull",
    "InsufficientStorage",
    "EntityTooLarge",
    "507",
}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


class _S3Reader(io.RawIOBase):
    """A seekable raw reader: a streaming GET from the position, reopened after a seek."""

    def __init__(self, storage, key, size):
        super().__init__()
        self._storage = storage
        self._key = key
        self._size = size
        self._pos = 0
        self._body = None
        self._body_pos = None

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._pos

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(base + offset, 0)
        return self._pos

    def _drop_body(self):
        body, self._body = self._body, None
        if body is not None:
            with contextlib.suppress(Exception):
                body.close()

    def readinto(self, buffer):
        if self._pos >= self._size:
            return 0
        if self._body is None or self._body_pos != self._pos:
            self._drop_body()
            answer = self._storage._call(
                "read",
                self._key,
                "get_object",
                Bucket=self._storage.bucket,
                Key=self._storage._name(self._key),
                Range=f"bytes={self._pos}-",
            )
            self._body = answer["Body"]
            self._body_pos = self._pos
        try:
            data = self._body.read(len(buffer))
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            self._drop_body()
            raise StorageUnavailable(
                f"{self._storage.where}: reading {self._key} failed: {exc}"
            ) from None
        if not data:
            self._drop_body()
            raise StorageError(f"{self._storage.where}: {self._key} ended early")
        buffer[: len(data)] = data
        self._pos += len(data)
        self._body_pos = self._pos
        return len(data)

    def close(self):
        self._drop_body()
        return super().close()


class S3Storage(Storage):
    """A bucket (and key prefix) on an S3-compatible endpoint.

    :param endpoint_url: ``https://…``; None for AWS itself (with ``region``).
    :param prefix: prepended to every key (``saas/`` → ``saas/acme/x.zip``).
    :param ca_bundle: a CA file to verify the endpoint's certificate with.
    """

    kind = "s3"

    def __init__(
        self,
        *,
        bucket,
        access_key,
        secret_key,
        endpoint_url=None,
        prefix="",
        region=None,
        ca_bundle=None,
        verify_tls=True,
        part_size=DEFAULT_PART_SIZE,
        connect_timeout=10,
        read_timeout=60,
    ):
        if not bucket or not isinstance(bucket, str):
            raise InvalidInput("an S3 storage needs a bucket")
        if not access_key or not secret_key:
            raise InvalidInput("an S3 storage needs an access key and a secret key")
        if endpoint_url and not endpoint_url.startswith(("https://", "http://")):
            raise InvalidInput("the S3 endpoint URL must start with https:// or http://")
        if part_size < MIN_PART_SIZE:
            raise InvalidInput(f"S3 parts are at least {MIN_PART_SIZE} bytes")
        prefix = prefix or ""
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if prefix:
            check_key(prefix.rstrip("/"))
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url or None
        self.part_size = part_size
        self._secret = secret_key
        config = botocore.config.Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            signature_version="s3v4",
            # Only the checksums S3 requires: many S3-compatible servers refuse the
            # newer default trailing checksums.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session()
        self._s3 = session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=region or "us-east-1",
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            verify=(ca_bundle or True) if verify_tls else False,
            config=config,
        )

    def __repr__(self):
        return f"<S3Storage {self.where}>"

    @property
    def where(self):
        endpoint = self.endpoint_url or "AWS"
        return f"S3 storage {endpoint} bucket {self.bucket}" + (
            f" prefix {self.prefix}" if self.prefix else ""
        )

    def close(self):
        with contextlib.suppress(Exception):
            self._s3.close()

    def _name(self, key):
        return self.prefix + key

    def _scrub(self, text):
        return str(text).replace(self._secret, "********")

    def _error(self, what, key, exc):  # noqa: PLR0911 (one mapping, one return each)
        where = self.where
        subject = f"{what} {key}" if key else what
        if isinstance(exc, botocore.exceptions.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            message = self._scrub(error.get("Message") or code or status)
            if code in _AUTH_CODES or (not code and status == "403"):
                return StorageAuthError(f"{where}: {subject}: access refused ({code}: {message})")
            if code in _FULL_CODES or status == "507":
                return StorageFullError(f"{where}: {subject}: no room ({code}: {message})")
            if code == "NoSuchBucket":
                return StorageError(f"{where}: the bucket does not exist")
            if code in _MISSING_CODES or status == "404":
                return StorageObjectMissing(f"{where}: {key} does not exist")
            return StorageError(f"{where}: {subject} failed ({code or status}: {message})")
        if isinstance(exc, botocore.exceptions.SSLError):
            return StorageUnavailable(f"{where}: TLS verification failed: {self._scrub(exc)}")
        if isinstance(
            exc,
            botocore.exceptions.EndpointConnectionError
            | botocore.exceptions.ConnectTimeoutError
            | botocore.exceptions.ReadTimeoutError
            | botocore.exceptions.ConnectionClosedError,
        ):
            return StorageUnavailable(f"{where}: no answer: {self._scrub(exc)}")
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return StorageAuthError(f"{where}: no credentials")
        return StorageError(f"{where}: {subject} failed: {self._scrub(exc)}")

    def _call(self, what, key, method, **kwargs):
        try:
            return getattr(self._s3, method)(**kwargs)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._error(what, key, exc) from None

    def _head(self, key):
        try:
            return self._s3.head_object(Bucket=self.bucket, Key=self._name(key))
        except botocore.exceptions.ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404 or exc.response.get("Error", {}).get("Code") in _MISSING_CODES:
                return None
            raise self._error("check", key, exc) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise self._error("check", key, exc) from None

    def put_stream(self, key, chunks):
        return self._put(check_key(key), chunks)

    def _put(self, key, chunks):
        if self._head(key) is not None:
            raise StorageObjectExists(f"{self.where}: {key} exists already")
        hasher = _Hasher(chunks)
        name = self._name(key)
        buffer = bytearray()
        upload_id = None
        parts = []
        try:
            for chunk in hasher:
                buffer += chunk
                while len(buffer) >= self.part_size:
                    if upload_id is None:
                        upload_id = self._call(
                            "write",
                            key,
                            "create_multipart_upload",
                            Bucket=self.bucket,
                            Key=name,
                            ContentType="application/zip",
                        )["UploadId"]
                    part, buffer = bytes(buffer[: self.part_size]), buffer[self.part_size :]
                    number = len(parts) + 1
                    answer = self._call(
                        "write",
                        key,
                        "upload_part",
                        Bucket=self.bucket,
                        Key=name,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=part,
                    )
                    parts.append({"ETag": answer["ETag"], "PartNumber": number})
            if upload_id is None:
                self._call(
                    "write",
                    key,
                    "put_object",
                    Bucket=self.bucket,
                    Key=name,
                    Body=bytes(buffer),
                    ContentType="application/zip",
                )
            else:
                if buffer:
                    number = len(parts) + 1
                    answer = self._call(
                        "write",
                        key,
                        "upload_part",
                        Bucket=self.bucket,
                        Key=name,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=bytes(buffer),
                    )
                    parts.append({"ETag": answer["ETag"], "PartNumber": number})
                self._call(
                    "write",
                    key,
                    "complete_multipart_upload",
                    Bucket=self.bucket,
                    Key=name,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
                upload_id = None
        except BaseException as exc:
            if upload_id is not None:
                leftover = self._abort(key, upload_id)
                if leftover and isinstance(exc, StorageError):
                    raise type(exc)(f"{exc}; {leftover}") from None
            raise
        _logger.info("%s: stored %s (%s bytes, %s parts)", self.where, key, hasher.size, len(parts))
        return _put_result(hasher)

    def _abort(self, key, upload_id):
        """Abort a multipart upload; return what is left to say when it could not."""
        try:
            self._s3.abort_multipart_upload(
                Bucket=self.bucket, Key=self._name(key), UploadId=upload_id
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            reason = self._error("abort", key, exc)
            _logger.error(
                "%s: could not abort upload %s of %s: %s", self.where, upload_id, key, reason
            )
            return (
                f"the incomplete upload {upload_id} could not be aborted ({reason}); "
                "an AbortIncompleteMultipartUpload lifecycle rule removes it"
            )
        _logger.info("%s: aborted the upload of %s", self.where, key)
        return None

    def open_read(self, key):
        return self._open(check_key(key))

    def _open(self, key):
        head = self._head(key)
        if head is None:
            raise StorageObjectMissing(f"{self.where}: {key} does not exist")
        reader = _S3Reader(self, key, head["ContentLength"])
        return io.BufferedReader(reader, buffer_size=READ_CHUNK)

    def delete(self, key):
        return self._delete(check_key(key))

    def _delete(self, key):
        if self._head(key) is None:
            return False
        self._call("delete", key, "delete_object", Bucket=self.bucket, Key=self._name(key))
        _logger.info("%s: deleted %s", self.where, key)
        return True

    def exists(self, key):
        return self._head(check_key(key)) is not None

    def list(self, prefix=""):
        found = []
        paginator = self._s3.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._name(prefix)):
                for item in page.get("Contents", ()):
                    key = item["Key"][len(self.prefix) :]
                    if not any(part.startswith(".") for part in key.split("/")):
                        found.append(ObjectInfo(key, item["Size"]))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._error("list", "", exc) from None
        return sorted(found, key=lambda info: info.key)

    def incomplete_uploads(self):
        """Keys of the multipart uploads begun and neither completed nor aborted."""
        answer = self._call(
            "list uploads", "", "list_multipart_uploads", Bucket=self.bucket, Prefix=self.prefix
        )
        return [upload["Key"] for upload in answer.get("Uploads", ())]
