"""TLS and mutual TLS on the gRPC port (issue 13), with certificates this test makes with the
`openssl` command: a CA, a server certificate for localhost / 127.0.0.1, a client certificate from
the same CA, and a stranger's from another CA. Shown from grpcio (a client nobody here wrote):
TLS works, plain text is refused, under mutual TLS a client without a certificate or with one
from the wrong CA is refused, a client trusting the wrong CA refuses the server. The CLI clients
(`models`, `load`) take the matching flags, and bad certificate files are named at start-up."""

import json
import pathlib
import subprocess

import grpc
import pytest

from conftest import Server, run_cli
from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")

    def ca(name):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
                "-days", "2", "-subj", f"/CN={name}", cwd=d)

    def cert(name, issuer, san, days=2):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.pem", "-CAkey", f"{issuer}.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", str(days), "-extfile", f"{name}.ext", cwd=d)

    ca("ca")
    ca("other")
    cert("server", "ca", "DNS:localhost,IP:127.0.0.1")
    cert("client", "ca", "DNS:client")
    cert("stranger", "other", "DNS:stranger")
    cert("expired", "ca", "DNS:localhost", days=-1)  # valid until yesterday
    return d


def read(d, name):
    return (d / name).read_bytes()


def rank(channel, user):
    request = pb.RankRequest(model=pb.ModelSpec(name="movies"), user_id=user, k=3)
    return rpc.RecommenderStub(channel).Rank(request, timeout=5)


def refused(channel, user):
    with pytest.raises(grpc.RpcError) as error:
        rank(channel, user)
    return error.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.fixture(scope="module")
def user(dataset):
    return (dataset["models"] / "movies" / "1" / "users.txt").read_text().splitlines()[0]


def test_tls_serves_grpcio_and_refuses_plain_text(dataset, pki, user):
    server = Server(dataset["models"], "--tls-cert", pki / "server.pem", "--tls-key", pki / "server.key")
    try:
        good = grpc.ssl_channel_credentials(root_certificates=read(pki, "ca.pem"))
        with grpc.secure_channel(server.target, good) as channel:
            assert len(rank(channel, user).items) == 3
        with grpc.insecure_channel(server.target) as channel:
            assert refused(channel, user)
        # A client that trusts another CA does not accept the server.
        wrong = grpc.ssl_channel_credentials(root_certificates=read(pki, "other.pem"))
        with grpc.secure_channel(server.target, wrong) as channel:
            assert refused(channel, user)
        # Without mutual TLS, a client certificate is not needed (and not asked for).
        result = run_cli("models", "list", "--target", server.target, "--tls-ca", pki / "ca.pem", "--json")
        assert "movies" in result.stdout
        plain = run_cli("models", "list", "--target", server.target, "--timeout", 3, check=False)
        assert plain.returncode != 0 and "UNAVAILABLE" in plain.stderr and "--tls" in plain.stderr
    finally:
        assert server.stop() == 0


def test_mutual_tls_requires_a_certificate_from_the_client_ca(dataset, pki, user):
    server = Server(dataset["models"], "--tls-cert", pki / "server.pem", "--tls-key", pki / "server.key",
                    "--tls-client-ca", pki / "ca.pem")
    try:
        def credentials(name=None):
            if name is None:
                return grpc.ssl_channel_credentials(root_certificates=read(pki, "ca.pem"))
            return grpc.ssl_channel_credentials(root_certificates=read(pki, "ca.pem"),
                                                private_key=read(pki, f"{name}.key"),
                                                certificate_chain=read(pki, f"{name}.pem"))

        with grpc.secure_channel(server.target, credentials("client")) as channel:
            assert len(rank(channel, user).items) == 3
            # Server reflection (what grpcurl uses) works over mutual TLS too.
            from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (  # noqa: PLC0415
                ProtoReflectionDescriptorDatabase,
            )
            database = ProtoReflectionDescriptorDatabase(channel)
            assert "recserve.v1.Recommender" in set(database.get_services())
            assert database.FindFileContainingSymbol("recserve.v1.RankRequest").name == "recserve/v1/recserve.proto"
        with grpc.secure_channel(server.target, credentials()) as channel:
            assert refused(channel, user)
        with grpc.secure_channel(server.target, credentials("stranger")) as channel:
            assert refused(channel, user)
        with grpc.insecure_channel(server.target) as channel:
            assert refused(channel, user)

        tls = ["--tls-ca", pki / "ca.pem", "--tls-cert", pki / "client.pem", "--tls-key", pki / "client.key"]
        assert "movies" in run_cli("models", "list", "--target", server.target, *tls).stdout
        summary = json.loads(run_cli(
            "load", "--target", server.target, "--model", "movies", "--rpc", "rank", "--ids-from",
            dataset["models"] / "movies" / "1", "--count", 200, "--warmup", 0, "--concurrency", 4, "--json",
            "--quiet", *tls).stdout)
        assert summary["ok"] == 200
        stranger = run_cli("models", "list", "--target", server.target, "--timeout", 3, "--tls-ca", pki / "ca.pem",
                           "--tls-cert", pki / "stranger.pem", "--tls-key", pki / "stranger.key", check=False)
        assert stranger.returncode != 0 and "UNAVAILABLE" in stranger.stderr
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("args, message", [
    (["--tls-cert", "{d}/server.pem"], "--tls-cert and --tls-key go together"),
    (["--tls-cert", "{d}/missing.pem", "--tls-key", "{d}/server.key"], "--tls-cert {d}/missing.pem: no such file"),
    (["--tls-cert", "{d}/server.ext", "--tls-key", "{d}/server.key"], "not a PEM file"),
    (["--tls-cert", "{d}/server.pem", "--tls-key", "{d}/client.key"],
     "--tls-key {d}/client.key is not the private key of --tls-cert {d}/server.pem"),
    (["--tls-cert", "{d}/server.key", "--tls-key", "{d}/server.key"], "holds no PEM certificate"),
    (["--tls-cert", "{d}/server.pem", "--tls-key", "{d}/server.pem"], "holds no PEM private key"),
    (["--tls-cert", "{d}/server.pem", "--tls-key", "{d}/server.key", "--tls-client-ca", "{d}"], "is a directory"),
    (["--tls-client-ca", "{d}/ca.pem"], "--tls-client-ca needs --tls-cert"),
    (["--tls-cert", "{d}/expired.pem", "--tls-key", "{d}/expired.key"], "the certificate has expired"),
])
def test_bad_certificate_files_are_named_at_start(dataset, pki, args, message):
    args = [a.format(d=pki) for a in args]
    result = run_cli("serve", "--models", dataset["models"], "--port", 0, *args, check=False, timeout=60)
    assert result.returncode != 0 and message.format(d=pki) in result.stderr, result.stderr
    assert "listening on" not in result.stdout


def test_a_client_with_a_bad_certificate_file_says_which(dataset, pki):
    result = run_cli("models", "list", "--target", "127.0.0.1:1", "--tls-ca", pki / "ca.key", check=False)
    assert result.returncode != 0 and f"--tls-ca {pki / 'ca.key'}: holds no PEM certificate" in result.stderr
    result = run_cli("load", "--target", "127.0.0.1:1", "--tls-cert", pki / "client.pem", "--tls-key",
                     pki / "stranger.key", "--count", 1, check=False)
    assert result.returncode != 0 and "is not the private key of --tls-cert" in result.stderr
