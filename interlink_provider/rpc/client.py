"""Opening a TLS channel to a site's gRPC API, and presenting a token on a call."""

from __future__ import annotations

from pathlib import Path

import grpc

from .offloader.v1 import offloader_pb2_grpc


def open_channel(
    target: str,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    max_message_bytes: int = 16 * 1024 * 1024,
) -> grpc.aio.Channel:
    """A TLS channel (system CAs unless `ca_file`; a client certificate for mTLS sites)."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(ca_file).read_bytes() if ca_file else None,
        private_key=Path(key_file).read_bytes() if key_file else None,
        certificate_chain=Path(cert_file).read_bytes() if cert_file else None,
    )
    return grpc.aio.secure_channel(
        target,
        credentials,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
    )


def offloader(channel: grpc.aio.Channel) -> offloader_pb2_grpc.OffloaderStub:
    # protoc's gRPC plugin writes no annotations (and no .pyi) for the service module
    return offloader_pb2_grpc.OffloaderStub(channel)  # type: ignore[no-untyped-call]


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata presenting a token (pass as `metadata=`)."""
    return (("authorization", f"Bearer {token}"),)
