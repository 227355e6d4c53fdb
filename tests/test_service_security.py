"""Bearer token, TLS and mTLS, with certificates generated here by `cryptography`."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_service_helpers import DATA, expect_error, expect_stream_error, running_server

from vadnet.service.client import AsyncVadClient, TlsOptions
from vadnet.v1 import vad_pb2 as pb
from vadnet.v1 import vad_pb2_grpc as pb_grpc

TOKEN = "s3cret-token-0123456789"


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(subject: str, key, issuer_name, issuer_key, *, ca=False, server=False):
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        b = b.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        b = b.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return b.sign(issuer_key, hashes.SHA256())


def _ca(name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return key, _cert(name, key, subject, key, ca=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A CA, a server pair for localhost/127.0.0.1, a client pair, and a rogue client."""
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca = _ca("vadnet test CA")
    rogue_key, rogue_ca = _ca("rogue CA")
    files = {}

    def write(name: str, data: bytes) -> None:
        files[name] = d / name
        files[name].write_bytes(data)

    pem = serialization.Encoding.PEM
    write("ca.pem", ca.public_bytes(pem))
    for name, issuer, issuer_key, server in (
        ("server", ca, ca_key, True),
        ("client", ca, ca_key, False),
        ("rogue", rogue_ca, rogue_key, False),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(name, key, issuer.subject, issuer_key, server=server)
        write(f"{name}.pem", cert.public_bytes(pem))
        write(f"{name}.key", _pem_key(key))
    write("token", (TOKEN + "\n").encode())
    return files


async def test_token_required(model, pki):
    async with running_server(model, auth_token_file=str(pki["token"])) as (_, port):
        target = f"127.0.0.1:{port}"
        async with grpc.aio.insecure_channel(target) as ch:
            stub = pb_grpc.VoiceActivityStub(ch)
            unauth = grpc.StatusCode.UNAUTHENTICATED
            await expect_error(stub.GetModelInfo(pb.GetModelInfoRequest()), unauth, "bearer")
            bad = (("authorization", "Bearer wrong"),)
            await expect_error(stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=bad), unauth)
            no_scheme = (("authorization", TOKEN),)
            await expect_error(
                stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=no_scheme), unauth
            )

            config = pb.StreamingConfig(sample_rate_hz=16000, encoding=pb.LINEAR16)
            reqs = [pb.StreamingDetectRequest(config=config)]
            await expect_stream_error(target, reqs, unauth)
            # health stays open for probes
            health = health_pb2_grpc.HealthStub(ch)
            resp = await health.Check(health_pb2.HealthCheckRequest())
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        async with AsyncVadClient(target, token=TOKEN) as client:
            info = await client.model_info()
            assert info.hop_samples == 256
            finals = [
                r async for r in client.stream(DATA / "noise.wav", chunk_ms=100) if r.is_final
            ]
            assert finals[0].summary.input_samples == 32000


async def test_tls(model, pki):
    async with running_server(
        model, tls_cert=str(pki["server.pem"]), tls_key=str(pki["server.key"])
    ) as (_, port):
        target = f"localhost:{port}"
        async with AsyncVadClient(target, tls=TlsOptions(root_certs=pki["ca.pem"])) as client:
            assert (await client.model_info()).parameters > 0
        # plaintext against a TLS port fails
        async with grpc.aio.insecure_channel(target) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await pb_grpc.VoiceActivityStub(ch).GetModelInfo(
                    pb.GetModelInfoRequest(), timeout=3
                )
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        # a client that does not trust the server's CA fails
        wrong = TlsOptions(root_certs=pki["rogue.pem"])
        async with AsyncVadClient(target, tls=wrong) as client:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await client.model_info(timeout=3)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mtls_and_token_together(model, pki):
    async with running_server(
        model,
        tls_cert=str(pki["server.pem"]),
        tls_key=str(pki["server.key"]),
        tls_client_ca=str(pki["ca.pem"]),
        auth_token_file=str(pki["token"]),
    ) as (_, port):
        target = f"localhost:{port}"
        good = TlsOptions(pki["ca.pem"], pki["client.pem"], pki["client.key"])
        async with AsyncVadClient(target, tls=good, token=TOKEN) as client:
            assert (await client.model_info()).hop_samples == 256
        async with AsyncVadClient(target, tls=good) as client:  # cert but no token
            await expect_error(client.model_info(timeout=3), grpc.StatusCode.UNAUTHENTICATED)
        for tls in (
            TlsOptions(pki["ca.pem"]),  # no client certificate
            TlsOptions(pki["ca.pem"], pki["rogue.pem"], pki["rogue.key"]),  # untrusted one
        ):
            async with AsyncVadClient(target, tls=tls, token=TOKEN) as client:
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await client.model_info(timeout=3)
                assert e.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_bad_security_config_is_a_clear_error(model, pki, tmp_path):
    from vadnet.model.errors import InvalidInputError

    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(InvalidInputError, match="empty"):
        async with running_server(model, auth_token_file=str(empty)):
            pass
    with pytest.raises(InvalidInputError, match="go together"):
        async with running_server(model, tls_cert=str(pki["server.pem"])):
            pass
    with pytest.raises(InvalidInputError, match="do not make a pair"):
        async with running_server(
            model, tls_cert=str(pki["server.pem"]), tls_key=str(pki["rogue.key"])
        ):
            pass
    with pytest.raises(InvalidInputError, match="cannot read"):
        async with running_server(
            model, tls_cert=str(tmp_path / "no"), tls_key=str(tmp_path / "no")
        ):
            pass


async def test_token_file_rotates_without_restart_and_reflection_is_open(model, pki, tmp_path):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    path = tmp_path / "tokens"
    path.write_text("old-token\n")
    async with running_server(model, auth_token_file=str(path)) as (_, port):
        target = f"127.0.0.1:{port}"

        async def works(token: str) -> bool:
            async with AsyncVadClient(target, token=token) as client:
                try:
                    await client.model_info()
                except grpc.aio.AioRpcError as e:
                    assert e.code() == grpc.StatusCode.UNAUTHENTICATED
                    return False
                return True

        async def settled(expect: dict[str, bool]) -> None:
            for _ in range(50):  # the file is looked at once a second
                if {t: await works(t) for t in expect} == expect:
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(f"tokens never became {expect}")

        assert await works("old-token") and not await works("new-token")
        path.write_text("new-token\nold-token\n")  # rotation: both for a while
        await settled({"new-token": True, "old-token": True})
        path.write_text("new-token\n")
        await settled({"new-token": True, "old-token": False})
        path.write_text("")  # a broken file keeps the last good tokens
        await asyncio.sleep(1.2)
        assert await works("new-token")

        # reflection answers without a token (grpcurl reaches health through it)
        async with grpc.aio.insecure_channel(target) as ch:
            stub = reflection_pb2_grpc.ServerReflectionStub(ch)

            async def ask():
                yield reflection_pb2.ServerReflectionRequest(list_services="")

            got = [r async for r in stub.ServerReflectionInfo(ask())]
            names = {s.name for s in got[0].list_services_response.service}
            assert "grpc.health.v1.Health" in names
