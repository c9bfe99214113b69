"""The nginx gateway: rendering from pipeline.routes, and real nginx on loopback in front of the local
replicas (routing, 404 for everything else, 413, 429, failover when a replica dies, TLS)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from pipeline.config import ConfigError
from pipeline.routes import path_regex
from serving.gateway import TLS, local_upstreams, render_gateway, templated_upstreams
from serving.launch import _wait_tcp, free_port, nginx_binary
from tests.serving_fixtures import CONTRACT_MODEL, requires_nginx, window_body

TINY = ("hupa0002p", "hupa0003p")


def test_render_routes_exactly_the_public_paths(config):
    text = render_gateway(config, local_upstreams(config, [9001, 9002]), 8080)
    for pid in config.patient_ids:
        assert f'location ~ "{path_regex(pid)}"' in text
        assert f"proxy_pass http://gf_{pid}$1;" in text
        block = text[text.index(f"upstream gf_{pid} {{"):]
        block = block[: block.index("}")]
        assert "server 127.0.0.1:9001" in block and "server 127.0.0.1:9002" in block
        assert "keepalive" in block
    assert text.count("location ~") == len(config.patient_ids)
    assert "proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;" in text
    assert "client_max_body_size 16m;" in text
    assert "limit_req_zone" in text and "limit_req_status 429;" in text
    assert "listen 127.0.0.1:8080" in text


def test_render_options_and_errors(config):
    ups = templated_upstreams(config, "{patient}-serving-{replica}:8501")
    assert ups["hupa0002p"] == ["hupa0002p-serving-0:8501", "hupa0002p-serving-1:8501"]
    text = render_gateway(config, ups, 443, tls=TLS("/etc/tls/tls.crt", "/etc/tls/tls.key"), rate=None,
                          body_limit="4m", listen_host=None, log_to_stdout=True)
    assert "listen 443 ssl" in text and "ssl_certificate /etc/tls/tls.crt;" in text
    assert "limit_req " not in text and "client_max_body_size 4m;" in text
    assert "access_log /dev/stdout" in text
    with pytest.raises(ConfigError, match="unknown patient"):
        render_gateway(config, {**ups, "nobody": ["x:1"]}, 80)
    with pytest.raises(ConfigError, match="no upstream"):
        render_gateway(config, {"hupa0002p": ["x:1"]}, 80)
    with pytest.raises(ConfigError, match="rate"):
        render_gateway(config, ups, 80, rate="lots")
    with pytest.raises(ConfigError, match="host"):
        render_gateway(config, {**ups, "hupa0002p": ["bad host;"]}, 80)


@requires_nginx
@pytest.mark.parametrize("tls", [False, True])
def test_rendered_config_passes_nginx_t(config, tmp_path, tls):
    opts = {}
    if tls:
        opts["tls"] = _self_signed(tmp_path)
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_gateway(config, local_upstreams(config), 8080, **opts))
    for d in ("logs", "temp"):
        (tmp_path / d).mkdir()
    r = subprocess.run([nginx_binary(), "-t", "-p", str(tmp_path), "-c", str(conf), "-e", "logs/error.log"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _self_signed(tmp_path) -> TLS:
    """A throw-away certificate for localhost: openssl if present, else the cryptography package."""
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    if shutil.which("openssl"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                        "/CN=localhost", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
        return TLS(str(cert), str(key))
    crypto = pytest.importorskip("cryptography")
    del crypto
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    k = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(k.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now)
         .not_valid_after(now + datetime.timedelta(days=1)).sign(k, hashes.SHA256()))
    cert.write_bytes(c.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return TLS(str(cert), str(key))


# ------------------------------------------------------------------------------------ live nginx
@requires_nginx
def test_gateway_answers_like_the_server(stack, gw, window_batch):
    X = window_batch(20, seed=11)
    body = json.dumps({"instances": X.tolist()})
    for pid in TINY:
        via = gw.post(f"/{pid}/v1/models/{pid}:predict", content=body)
        direct = httpx.post(f"{stack.server_urls[0]}/v1/models/{pid}:predict", content=body)
        assert via.status_code == 200, via.text
        assert via.json() == direct.json()
        assert gw.get(f"/{pid}/v1/models/{pid}").json()["model_version_status"][0]["state"] == "AVAILABLE"
        meta = gw.get(f"/{pid}/v1/models/{pid}/metadata").json()
        assert meta["model_spec"]["name"] == pid
    # the server's own errors pass through unchanged
    r = gw.post(f"/{CONTRACT_MODEL}/v1/models/{CONTRACT_MODEL}:predict", content=b"{")
    assert r.status_code == 400 and "JSON" in r.json()["error"]


@requires_nginx
@pytest.mark.parametrize("path", [
    "/hupa0002p/v1/models/hupa0003p:predict",  # another patient's model
    "/hupa0003p/v1/models/hupa0002p:predict",
    "/hupa0002px/v1/models/hupa0002p:predict",  # a longer id with the same prefix
    "/hupa000/v1/models/hupa0002p:predict",
    "/hupa0002p/monitoring/prometheus/metrics",
    "/monitoring/prometheus/metrics",
    "/v1/models/hupa0002p:predict",  # the server's own path
    "/v1/models/hupa0002p",
    "/hupa0002p/v1/models/hupa0002p:predict/x",
    "/hupa0002p/v1/models/hupa0002p/versions/1:predict",
    "/hupa0002p/v1/models/hupa0002p:classify",
    "/HUPA0002P/v1/models/HUPA0002P:predict",
    "/hupa0002p/",
    "/",
    "/nobody/v1/models/nobody:predict",
])
def test_everything_else_is_404(gw, path):
    for method in ("GET", "POST"):
        r = gw.request(method, path, content=window_body())
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert "error" in r.json()


@requires_nginx
def test_oversized_body_is_413(extra_gateway):
    g = extra_gateway(body_limit="64k", rate=None)
    r = httpx.post(f"{g.url}/{CONTRACT_MODEL}/v1/models/{CONTRACT_MODEL}:predict", content=window_body(300))
    assert r.status_code == 413 and "too large" in r.json()["error"]
    r = httpx.post(f"{g.url}/{CONTRACT_MODEL}/v1/models/{CONTRACT_MODEL}:predict", content=window_body(2))
    assert r.status_code == 200


@requires_nginx
def test_rate_limit_is_429(extra_gateway):
    g = extra_gateway(rate="5r/s", burst=2)
    url = f"{g.url}/{CONTRACT_MODEL}/v1/models/{CONTRACT_MODEL}"
    with httpx.Client() as c:
        codes = [c.get(url) for _ in range(15)]
    limited = [r for r in codes if r.status_code == 429]
    assert limited and any(r.status_code == 200 for r in codes)
    assert "rate limit" in limited[0].json()["error"] and limited[0].headers.get("retry-after") == "1"
    assert all(r.status_code in (200, 429) for r in codes)


@requires_nginx
def test_tls(extra_gateway, tmp_path):
    g = extra_gateway(tls=_self_signed(tmp_path), rate=None)
    assert g.url.startswith("https://")
    r = httpx.post(f"{g.url}/{CONTRACT_MODEL}/v1/models/{CONTRACT_MODEL}:predict", content=window_body(), verify=False)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1


@requires_nginx
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run nginx as an unprivileged user")
def test_gateway_config_runs_as_an_unprivileged_user(config, stack):
    """The rendered config (no `user` directive, every path relative to -p) works for a non-root nginx."""
    work = Path(tempfile.mkdtemp(prefix="gf-nginx-nobody-", dir="/tmp"))
    try:
        for d in ("logs", "temp"):
            (work / d).mkdir()
        port = free_port()
        ups = local_upstreams(config, [s.port for s in stack.servers])
        (work / "nginx.conf").write_text(render_gateway(config, ups, port, rate=None))
        for p in (work, *work.rglob("*")):
            os.chown(p, 65534, 65534)
        proc = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", nginx_binary(),
                                 "-p", str(work), "-c", str(work / "nginx.conf"), "-e", "logs/error.log",
                                 "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_tcp("127.0.0.1", port, proc, 10, "nginx as nobody", work / "logs" / "error.log")
            big = window_body(20000)  # ~5 MB > client_body_buffer_size: nginx buffers it in temp/
            r = httpx.post(f"http://127.0.0.1:{port}/{CONTRACT_MODEL}/v1/models/{CONTRACT_MODEL}:predict",
                           content=big, timeout=60)
            assert r.status_code == 200 and len(r.json()["predictions"]) == 20000
            assert httpx.get(f"http://127.0.0.1:{port}/nope").status_code == 404
            owner = {p.stat().st_uid for p in (work / "logs").iterdir()}
            assert owner == {65534}
        finally:
            proc.terminate()
            proc.wait(10)
    finally:
        shutil.rmtree(work, ignore_errors=True)
