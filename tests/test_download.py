"""Fetching the canonical dataset files, without a network: a local HTTP server on 127.0.0.1
serves small gzipped IDX files, and the download table is pointed at it. A good download loads
and is not fetched again; a corrupt, truncated or unreachable one is one line naming the file or
the address, and leaves nothing behind."""

import gzip
import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import elsmachine as em
from elsmachine.cli import app
from elsmachine.datasets import formats

run = CliRunner()

rng = np.random.default_rng(0)
TRAIN_IMAGES = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
TRAIN_LABELS = np.array([0, 1, 2, 0, 1, 2], dtype=np.uint8)
TEST_IMAGES = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
TEST_LABELS = np.array([2, 1, 0, 1], dtype=np.uint8)


def idx_gz(arr: np.ndarray) -> bytes:
    """A gzipped IDX file of unsigned bytes: magic 0x0000 08 D, D big-endian sizes, the data."""
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return gzip.compress(head + arr.astype(np.uint8).tobytes())


FILES = {
    "train-images-idx3-ubyte.gz": idx_gz(TRAIN_IMAGES),
    "train-labels-idx1-ubyte.gz": idx_gz(TRAIN_LABELS),
    "t10k-images-idx3-ubyte.gz": idx_gz(TEST_IMAGES),
    "t10k-labels-idx1-ubyte.gz": idx_gz(TEST_LABELS),
}
MD5 = {name: hashlib.md5(data).hexdigest() for name, data in FILES.items()}


class Server:
    """Serves ``files`` (name -> bytes) under /mnist/ and records every path asked for.
    ``short``: names whose body is cut off after a few bytes, the promised length unchanged."""

    def __init__(self):
        self.files = dict(FILES)
        self.short: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                name = self.path.rsplit("/", 1)[-1]
                if not self.path.startswith("/mnist/") or name not in server.files:
                    self.send_error(404)
                    return
                body = server.files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:10] if name in server.short else body)
                if name in server.short:
                    self.close_connection = True

            def log_message(self, *args):  # keep the test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/mnist/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def fetched(self) -> list[str]:
        return [p.rsplit("/", 1)[-1] for p in self.requests]


@pytest.fixture
def server(monkeypatch):
    """A running :class:`Server`, with mnist's download table pointed at it."""
    # A proxy set in the environment would otherwise be asked for 127.0.0.1.
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    s = Server()
    s.thread.start()
    monkeypatch.setitem(formats._DOWNLOADS, "mnist", (s.base, dict(MD5)))
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def refused_port():
    """A port bound on 127.0.0.1 but not listening, so a connection to it is refused; held for
    the test so that nothing else takes it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def cli(*args):
    return run.invoke(app, [str(a) for a in args])


def error_line(res) -> str:
    """The one line a failed command prints, checked to be the only error line and no traceback."""
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    return lines[0]


def test_download_loads_both_splits_and_is_not_fetched_again(server, tmp_path):
    root = tmp_path / "mnist"  # not there yet: the download makes it
    ds = em.load_dataset("mnist", root=root, download=True)
    assert sorted(server.fetched()) == sorted(FILES)
    assert sorted(p.name for p in root.iterdir()) == sorted(FILES)  # no temporary files left
    assert ds.images.shape == (6, 1, 32, 32) and ds.labels.tolist() == TRAIN_LABELS.tolist()
    torch.testing.assert_close(ds.images[:, 0, 2:30, 2:30], torch.from_numpy(TRAIN_IMAGES).float() / 127.5 - 1)
    assert (ds.images[:, :, :2] == -1).all()
    test = em.load_dataset("mnist", root=root, train=False, download=True)
    assert test.labels.tolist() == TEST_LABELS.tolist()
    torch.testing.assert_close(test.images[:, 0, 2:30, 2:30], torch.from_numpy(TEST_IMAGES).float() / 127.5 - 1)
    assert len(server.requests) == 4  # the files on disk match their MD5: nothing fetched again


def test_download_replaces_a_damaged_file_on_disk(server, tmp_path):
    em.load_dataset("mnist", root=tmp_path, download=True)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"damaged")
    ds = em.load_dataset("mnist", root=tmp_path, download=True)
    assert server.fetched()[4:] == ["train-labels-idx1-ubyte.gz"]
    assert ds.labels.tolist() == TRAIN_LABELS.tolist()


def test_corrupt_download_is_one_line_naming_the_file_and_is_not_kept(server, tmp_path):
    server.files["train-labels-idx1-ubyte.gz"] = idx_gz(TRAIN_LABELS[::-1].copy())
    with pytest.raises(em.InputError) as e:
        em.load_dataset("mnist", root=tmp_path, download=True)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("download of train-labels-idx1-ubyte.gz is corrupt: MD5 ")
    assert msg.endswith(f"expected {MD5['train-labels-idx1-ubyte.gz']}")
    assert not (tmp_path / "train-labels-idx1-ubyte.gz").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["train-images-idx3-ubyte.gz"]  # the good one before it


def test_truncated_download_is_one_line_naming_the_address(server, tmp_path):
    server.short.add("train-images-idx3-ubyte.gz")
    url = server.base + "train-images-idx3-ubyte.gz"
    with pytest.raises(em.InputError) as e:
        em.load_dataset("mnist", root=tmp_path, download=True)
    msg = str(e.value)
    size = len(FILES["train-images-idx3-ubyte.gz"])
    assert msg == f"could not download {url}: the connection closed after 10 of {size} bytes"
    assert not any(tmp_path.iterdir())


def test_missing_file_on_the_server_is_one_line_naming_the_address(server, tmp_path):
    del server.files["t10k-labels-idx1-ubyte.gz"]
    with pytest.raises(em.InputError, match=r"could not download http://127\.0\.0\.1:\d+/mnist/"
                                            r"t10k-labels-idx1-ubyte\.gz: HTTP error 404 \(Not Found\)$"):
        em.load_dataset("mnist", root=tmp_path, download=True)


def test_refused_connection_is_one_line_naming_the_address(refused_port, monkeypatch, tmp_path):
    base = f"http://127.0.0.1:{refused_port}/mnist/"
    monkeypatch.setitem(formats._DOWNLOADS, "mnist", (base, dict(MD5)))
    with pytest.raises(em.InputError) as e:
        em.load_dataset("mnist", root=tmp_path / "mnist", download=True)
    msg = str(e.value)
    assert msg == f"could not download {base}train-images-idx3-ubyte.gz: Connection refused"
    assert not (tmp_path / "mnist").exists()


def test_cli_downloads_then_trains(server, tmp_path):
    out = tmp_path / "net"
    res = cli("train", "--dataset", "mnist", "--root", tmp_path / "mnist", "--download", "--width", "8", "--depth", "2",
              "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--out", out)
    assert res.exit_code == 0, res.output
    assert sorted(server.fetched()) == sorted(FILES)
    trained_on = json.loads((out / "config.json").read_text())["dataset"]
    assert trained_on["name"] == "mnist" and trained_on["n"] == len(TRAIN_LABELS)


def test_cli_corrupt_download_is_one_line_and_exit_2(server, tmp_path):
    server.files["train-images-idx3-ubyte.gz"] = b"not the file"
    res = cli("sample", "--dataset", "mnist", "--root", tmp_path, "--download", "--out", tmp_path / "s.png")
    assert res.exit_code == 2
    got = hashlib.md5(b"not the file").hexdigest()
    assert error_line(res) == (f"error: download of train-images-idx3-ubyte.gz is corrupt: MD5 {got}, "
                               f"expected {MD5['train-images-idx3-ubyte.gz']}")
    assert not (tmp_path / "s.png").exists()


def test_cli_refused_connection_is_one_line_and_exit_2(refused_port, monkeypatch, tmp_path):
    base = f"http://127.0.0.1:{refused_port}/mnist/"
    monkeypatch.setitem(formats._DOWNLOADS, "mnist", (base, dict(MD5)))
    res = cli("sample", "--dataset", "mnist", "--root", tmp_path, "--download", "--out", tmp_path / "s.png")
    assert res.exit_code == 2
    assert error_line(res) == f"error: could not download {base}train-images-idx3-ubyte.gz: Connection refused"
