"""Sharing the DVC cache through a remote: push from one clone, `dvc pull` in a fresh one, nothing to recompute.

Two remotes: an S3-compatible server (moto's, on 127.0.0.1 with a free port: no network beyond loopback) and a
local directory. Credentials are dummy values in the environment of the `dvc` processes, never in a config file.
"""

from __future__ import annotations

import pytest

from tiny_repo import dvc, git, repo_env, tiny_repo

pytestmark = pytest.mark.smoke

BUCKET = "genediag-cache"
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3-compatible HTTP server (moto) on loopback, with one empty bucket."""
    boto3 = pytest.importorskip("boto3")
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is in the dev extras")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def repo(tmp_path_factory, s3_endpoint):
    """The reproduced tiny repo with two remotes configured and committed (URLs only, no secrets)."""
    dest, env = tiny_repo(tmp_path_factory, "remote")
    store = dest.parent / "dvc-store"
    for args in (("remote", "add", "s3remote", f"s3://{BUCKET}/dvc"),
                 ("remote", "modify", "s3remote", "endpointurl", s3_endpoint),
                 ("remote", "add", "localremote", str(store))):
        out = dvc(*args, cwd=dest, env=env)
        assert out.returncode == 0, out.stderr
    git("add", ".dvc/config", cwd=dest)
    git("commit", "-qm", "remotes", cwd=dest)
    config = (dest / ".dvc" / "config").read_text()
    assert "testing" not in config and "secret" not in config.lower()
    return dest, {**env, **DUMMY_CREDENTIALS}


def _round_trip(repo, remote: str, tmp_path):
    dest, env = repo
    pushed = dvc("push", "-r", remote, cwd=dest, env=env)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    in_sync = dvc("status", "-c", "-r", remote, cwd=dest, env=env)
    assert in_sync.returncode == 0 and "in sync" in in_sync.stdout, in_sync.stdout + in_sync.stderr

    clone = tmp_path / "clone"
    git("clone", "-q", str(dest), str(clone), cwd=tmp_path)
    clone_env = {**repo_env(clone), **DUMMY_CREDENTIALS}
    assert not (clone / "models" / "chromosomes24-dcnn" / "model.pt").exists()  # only git files so far
    pulled = dvc("pull", "-r", remote, cwd=clone, env=clone_env)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert (clone / "models" / "chromosomes24-dcnn" / "model.pt").read_bytes() == \
        (dest / "models" / "chromosomes24-dcnn" / "model.pt").read_bytes()
    assert (clone / "data" / "ingested" / "chromosomes" / "images.npy").is_file()

    status = dvc("status", cwd=clone, env=clone_env)
    assert status.returncode == 0 and "Data and pipelines are up to date" in status.stdout, status.stdout
    repro = dvc("repro", cwd=clone, env=clone_env)
    assert repro.returncode == 0, repro.stderr
    assert "Running stage" not in repro.stdout, repro.stdout
    assert "Data and pipelines are up to date" in repro.stdout
    assert git("status", "--porcelain", cwd=clone).strip() == ""


def test_s3_compatible_remote_round_trip(repo, tmp_path):
    _round_trip(repo, "s3remote", tmp_path)


def test_local_directory_remote_round_trip(repo, tmp_path):
    _round_trip(repo, "localremote", tmp_path)
    assert any((repo[0].parent / "dvc-store").rglob("*")), "nothing was written to the local remote"
