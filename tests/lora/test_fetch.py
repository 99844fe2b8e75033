"""LoRA weights by reference: parsing, downloading through the guarded client into the on-disk cache,
revalidation, single flight, caps, tars, Hugging Face repos (hub calls replaced) and LRU eviction.

A loopback HTTP server serves LoRAs made here with safetensors; no test reaches the network.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError
from safetensors.torch import save

from fluxserve.lora import HubRef, LoraCache, LoraError, UrlRef, hub, parse_lora_ref
from fluxserve.net.guard import NetPolicy, guarded_client

_BLOCK = "transformer.single_transformer_blocks.0.attn.to_q"


def lora_bytes(seed: int = 0, rank: int = 4) -> bytes:
    """A small FLUX-style PEFT LoRA (one attention projection, 32 features)."""
    generator = torch.Generator().manual_seed(seed)
    return save(
        {
            f"{_BLOCK}.lora_A.weight": torch.randn(rank, 32, generator=generator),
            f"{_BLOCK}.lora_B.weight": torch.randn(32, rank, generator=generator),
        }
    )


def tar_bytes(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buffer.getvalue()


@dataclass
class Route:
    body: bytes
    status: int = 200
    etag: str | None = None
    last_modified: str | None = None
    stall: float = 0.0  # seconds to wait after sending half of the body
    length: bool = True  # send Content-Length
    declared: int | None = None  # a Content-Length to claim instead of the real one


@dataclass
class Host:
    """A loopback HTTP server: ``routes`` by path, and every request it saw (path, lower-cased headers)."""

    base: str
    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base + path

    def requests(self, path: str) -> list[dict[str, str]]:
        return [headers for seen_path, headers in self.seen if seen_path == path]


@pytest.fixture
def host() -> Iterator[Host]:
    state = Host("")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            state.seen.append((self.path, headers))
            route = state.routes.get(self.path)
            if route is None:
                self._answer(404, b"not here", {})
                return
            validators = {"ETag": route.etag, "Last-Modified": route.last_modified}
            sent = {k: v for k, v in validators.items() if v}
            if (route.etag and headers.get("if-none-match") == route.etag) or (
                not route.etag and route.last_modified and headers.get("if-modified-since") == route.last_modified
            ):
                self._answer(304, b"", sent)
                return
            if route.declared is not None:
                sent["Content-Length"] = str(route.declared)
            self._answer(route.status, route.body, sent, stall=route.stall, length=route.length)

        def _answer(
            self, status: int, body: bytes, headers: dict[str, str], *, stall: float = 0, length: bool = True
        ) -> None:
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if length and status != 304 and "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                if not length:
                    self.send_header("Connection", "close")
                self.end_headers()
                half = len(body) // 2
                self.wfile.write(body[:half])
                self.wfile.flush()
                if stall:
                    time.sleep(stall)
                self.wfile.write(body[half:])
            except (BrokenPipeError, ConnectionResetError):
                pass
            if not length:
                self.close_connection = True

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def make_cache(directory: Path, *, loopback: bool = True, **kwargs: Any) -> LoraCache:
    def client() -> httpx.AsyncClient:
        return guarded_client(NetPolicy(allow_loopback=loopback), timeout=httpx.Timeout(5.0), follow_redirects=True)

    options: dict[str, Any] = {"max_bytes": 10_000_000, "budget_bytes": 100_000_000, "time_limit": 10.0}
    options.update(kwargs)
    return LoraCache(directory, client_factory=client, **options)


class Log(list[str]):
    def __call__(self, line: str) -> None:
        self.append(line)


async def refused(cache: LoraCache, url: str, field: str = "lora_weights") -> str:
    with pytest.raises(LoraError) as caught:
        await cache.get(url, field, Log())
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    return str(caught.value)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for sub in ("tmp", "blobs") for p in (directory / sub).iterdir())


# -- parsing -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://example.com/my-lora.safetensors", UrlRef("https://example.com/my-lora.safetensors")),
        (
            "https://replicate.delivery/x/trained_model.tar",
            UrlRef("https://replicate.delivery/x/trained_model.tar", True),
        ),
        (" http://example.com/download?id=3 ", UrlRef("http://example.com/download?id=3")),
        ("fofr/flux-80s-cyberpunk", HubRef("fofr/flux-80s-cyberpunk")),
        ("owner/repo/sub/lora.safetensors", HubRef("owner/repo", filename="sub/lora.safetensors")),
        ("huggingface.co/owner/repo", HubRef("owner/repo")),
        ("https://huggingface.co/owner/repo", HubRef("owner/repo")),
        ("https://huggingface.co/owner/repo/tree/v2", HubRef("owner/repo", revision="v2")),
        (
            "https://huggingface.co/owner/repo/blob/main/lora.safetensors",
            HubRef("owner/repo", revision="main", filename="lora.safetensors"),
        ),
        (
            "https://huggingface.co/owner/repo/resolve/abc123/dir/x.safetensors?download=true",
            HubRef("owner/repo", revision="abc123", filename="dir/x.safetensors"),
        ),
    ],
)
def test_references_are_classified(text: str, expected: object) -> None:
    assert parse_lora_ref(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("data:application/octet-stream;base64,AAAA", "data: URIs are not accepted"),
        ("ftp://example.com/x.safetensors", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("just-a-name", "is not a LoRA reference"),
        ("", "is empty"),
        ("https://huggingface.co/datasets/owner/data", "not a Hugging Face model repo"),
        ("https://huggingface.co/owner/repo/blob/main/model.bin", "not a .safetensors file"),
        ("http://[::1/x.safetensors", "not a valid URL"),
        ("example.com/lora.safetensors", "looks like a URL without its scheme: write https://example.com/"),
    ],
)
def test_other_references_are_refused_naming_the_field(text: str, says: str) -> None:
    with pytest.raises(LoraError) as caught:
        parse_lora_ref(text, "extra_lora")
    assert str(caught.value).startswith("extra_lora: ") and says in str(caught.value)
    if "is not a LoRA reference" in says or "empty" in says:
        assert "Hugging Face repo" in str(caught.value) and ".tar" in str(caught.value)


# -- downloading and the cache -------------------------------------------------------------------------------


async def test_first_get_downloads_and_the_next_revalidates_with_a_304(host: Host, tmp_path: Path) -> None:
    body = lora_bytes()
    host.routes["/a.safetensors"] = Route(body, etag='"v1"')
    cache = make_cache(tmp_path)
    url = host.url("/a.safetensors")

    log = Log()
    with await cache.get(url, "lora_weights", log) as first:
        assert first.path.read_bytes() == body
        assert (first.size, first.sha256, first.rank) == (len(body), hashlib.sha256(body).hexdigest(), 4)
        assert not first.from_cache and first.source == url
    assert log[0] == f"Downloading LoRA {url} …"
    assert re.fullmatch(r"Downloaded LoRA 0\.0 MB in \d+\.\d s", log[1]) and len(log) == 2

    log = Log()
    async with cache.use(url, "lora_weights", log) as second:
        assert second.from_cache and second.path == first.path
    assert log == [f"Downloading LoRA {url} …", "LoRA from cache (0.0 MB)"]
    requests = host.requests("/a.safetensors")
    assert len(requests) == 2
    assert "if-none-match" not in requests[0] and requests[1]["if-none-match"] == '"v1"'


async def test_a_changed_etag_downloads_again(host: Host, tmp_path: Path) -> None:
    host.routes["/a.safetensors"] = Route(lora_bytes(0), etag='"v1"')
    cache = make_cache(tmp_path)
    url = host.url("/a.safetensors")
    first = await cache.get(url)
    first.release()
    new = lora_bytes(1, rank=8)
    host.routes["/a.safetensors"] = Route(new, etag='"v2"')
    second = await cache.get(url)
    assert not second.from_cache and second.path.read_bytes() == new and second.rank == 8
    assert second.sha256 != first.sha256
    second.release()
    with await cache.get(url) as third:
        assert third.from_cache and third.sha256 == second.sha256
    assert host.requests("/a.safetensors")[2]["if-none-match"] == '"v2"'


async def test_last_modified_revalidates_and_no_validators_is_trusted(host: Host, tmp_path: Path) -> None:
    host.routes["/lm.safetensors"] = Route(lora_bytes(0), last_modified="Wed, 01 Jan 2025 00:00:00 GMT")
    host.routes["/plain.safetensors"] = Route(lora_bytes(1))
    cache = make_cache(tmp_path)
    for _ in range(2):
        (await cache.get(host.url("/lm.safetensors"))).release()
        (await cache.get(host.url("/plain.safetensors"))).release()
    lm = host.requests("/lm.safetensors")
    assert len(lm) == 2 and lm[1]["if-modified-since"] == "Wed, 01 Jan 2025 00:00:00 GMT"
    assert len(host.requests("/plain.safetensors")) == 1  # trusted for the entry's lifetime


async def test_an_unreachable_server_leaves_the_cached_copy_in_use(host: Host, tmp_path: Path) -> None:
    port = _free_port()
    host.routes["/a.safetensors"] = Route(lora_bytes(), etag='"v1"')
    cache = make_cache(tmp_path)
    (await cache.get(host.url("/a.safetensors"))).release()
    # The same entry, now at an address nobody listens on: copy the index entry across.
    gone = f"http://127.0.0.1:{port}/a.safetensors"
    index = tmp_path / "index.json"
    data = json.loads(index.read_text())
    data["urls"][gone] = dict(data["urls"][host.url("/a.safetensors")], checked=0)
    index.write_text(json.dumps(data))
    log = Log()
    with await cache.get(gone, "lora_weights", log) as lora:
        assert lora.from_cache and "Could not revalidate the cached LoRA (cannot connect to" in log[1]
    assert log[-1] == "LoRA from cache (0.0 MB)"


async def test_concurrent_gets_download_once(host: Host, tmp_path: Path) -> None:
    host.routes["/a.safetensors"] = Route(lora_bytes(), etag='"v1"', stall=0.2)
    cache = make_cache(tmp_path)
    logs = [Log() for _ in range(5)]
    got = await asyncio.gather(*(cache.get(host.url("/a.safetensors"), "lora_weights", log) for log in logs))
    assert len(host.requests("/a.safetensors")) == 1
    assert sorted(lora.from_cache for lora in got) == [False, True, True, True, True]
    assert len({lora.path for lora in got}) == 1
    for lora in got:
        lora.release()
    assert sum(log[-1] == "LoRA from cache (0.0 MB)" for log in logs) == 4


async def test_two_caches_on_one_directory_download_once(host: Host, tmp_path: Path) -> None:
    # Two LoraCache objects stand in for two worker processes: the lock file makes the second wait for the first.
    host.routes["/a.safetensors"] = Route(lora_bytes(), etag='"v1"', stall=0.3)
    url = host.url("/a.safetensors")
    one, two = make_cache(tmp_path), make_cache(tmp_path)
    got = await asyncio.gather(one.get(url), two.get(url))
    assert len(host.requests("/a.safetensors")) == 1
    assert sorted(lora.from_cache for lora in got) == [False, True]
    for lora in got:
        lora.release()


async def test_the_same_bytes_at_two_urls_share_one_file(host: Host, tmp_path: Path) -> None:
    host.routes["/a.safetensors"] = Route(lora_bytes())
    host.routes["/b.safetensors"] = Route(lora_bytes())
    cache = make_cache(tmp_path)
    a, b = await cache.get(host.url("/a.safetensors")), await cache.get(host.url("/b.safetensors"))
    assert a.path == b.path and leftovers(tmp_path) == [f"{a.sha256}.safetensors"]
    a.release()
    b.release()


# -- failures ------------------------------------------------------------------------------------------------


async def test_over_the_size_cap(host: Host, tmp_path: Path) -> None:
    host.routes["/big.safetensors"] = Route(lora_bytes())
    host.routes["/chunked.safetensors"] = Route(lora_bytes(), length=False)
    cache = make_cache(tmp_path, max_bytes=200)
    for path in ("/big.safetensors", "/chunked.safetensors"):
        message = await refused(cache, host.url(path))
        assert message == f"lora_weights: {host.url(path)} is larger than the 0.0 MB limit (FLUXSERVE_MAX_LORA_BYTES)"
    # A declared length over the cap is refused before the body is read.
    host.routes["/huge.safetensors"] = Route(b"x" * 100, declared=3_000_000_000)
    message = await refused(make_cache(tmp_path, max_bytes=2_000_000_000), host.url("/huge.safetensors"))
    assert message.endswith("is larger than the 2.0 GB limit (FLUXSERVE_MAX_LORA_BYTES)")
    assert leftovers(tmp_path) == []


async def test_over_the_time_cap(host: Host, tmp_path: Path) -> None:
    host.routes["/slow.safetensors"] = Route(lora_bytes(), stall=3)
    cache = make_cache(tmp_path, time_limit=0.5)
    started = time.monotonic()
    message = await refused(cache, host.url("/slow.safetensors"))
    assert time.monotonic() - started < 2
    assert message == f"lora_weights: downloading {host.url('/slow.safetensors')} took longer than 0.5 s"
    assert leftovers(tmp_path) == []


async def test_a_cancelled_get_leaves_nothing_behind(host: Host, tmp_path: Path) -> None:
    host.routes["/slow.safetensors"] = Route(lora_bytes(), stall=1)
    cache = make_cache(tmp_path)
    task = asyncio.create_task(cache.get(host.url("/slow.safetensors")))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    assert leftovers(tmp_path) == [] and not cache._flights
    host.routes["/slow.safetensors"].stall = 0
    async with cache.use(host.url("/slow.safetensors")) as lora:
        assert not lora.from_cache


async def test_http_errors_and_unreachable_hosts(host: Host, tmp_path: Path) -> None:
    host.routes["/secret.safetensors"] = Route(b"no", status=403)
    cache = make_cache(tmp_path)
    missing = host.url("/missing.safetensors")
    assert await refused(cache, missing) == f"lora_weights: downloading {missing} answered HTTP 404 (not found)"
    assert "answered HTTP 403 (forbidden" in await refused(cache, host.url("/secret.safetensors"))
    nobody = f"http://127.0.0.1:{_free_port()}/x.safetensors"
    assert (await refused(cache, nobody, "extra_lora")).startswith(f"extra_lora: cannot connect to {nobody}")
    assert leftovers(tmp_path) == []


async def test_the_ssrf_guard_refuses_loopback_unless_allowed(host: Host, tmp_path: Path) -> None:
    host.routes["/a.safetensors"] = Route(lora_bytes())
    cache = make_cache(tmp_path, loopback=False)
    message = await refused(cache, host.url("/a.safetensors"))
    assert "is not allowed" in message and "127.0.0.1 is not a public address" in message
    assert host.seen == []


async def test_files_that_are_not_loras(host: Host, tmp_path: Path) -> None:
    host.routes["/text.safetensors"] = Route(b"<html>not found</html>" * 10)
    host.routes["/model.safetensors"] = Route(save({"transformer.proj_out.weight": torch.zeros(4, 4)}))
    cache = make_cache(tmp_path)
    text = await refused(cache, host.url("/text.safetensors"))
    assert text.startswith(f"lora_weights: {host.url('/text.safetensors')} is not a safetensors file")
    model = await refused(cache, host.url("/model.safetensors"))
    assert model.startswith(f"lora_weights: {host.url('/model.safetensors')} is not a LoRA: ")
    assert "transformer.proj_out.weight" in model
    assert leftovers(tmp_path) == []


# -- tars from Replicate's trainer ---------------------------------------------------------------------------


async def test_a_training_tar_gives_its_lora(host: Host, tmp_path: Path) -> None:
    body = lora_bytes(rank=16)
    host.routes["/trained_model.tar"] = Route(
        tar_bytes(
            {
                "output/flux_train_replicate/config.yaml": b"rank: 16\n",
                "output/flux_train_replicate/lora.safetensors": body,
                "output/flux_train_replicate/samples/1.jpg": b"\xff\xd8 not really",
            }
        )
    )
    host.routes["/two.tar"] = Route(
        tar_bytes({"a/lora.safetensors": lora_bytes(2), "a/optimizer.safetensors": lora_bytes(3)})
    )
    cache = make_cache(tmp_path)
    async with cache.use(host.url("/trained_model.tar")) as lora:
        assert lora.path.read_bytes() == body and lora.rank == 16
        assert lora.sha256 == hashlib.sha256(body).hexdigest()
    async with cache.use(host.url("/two.tar")) as lora:
        assert lora.path.read_bytes() == lora_bytes(2)
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    ("members", "links", "says"),
    [
        ({"../evil.safetensors": b"x"}, None, "'../evil.safetensors' points outside the archive"),
        ({"/abs/lora.safetensors": b"x"}, None, "points outside the archive"),
        ({"a.safetensors": b"x", "b.safetensors": b"y"}, None, "several .safetensors files (a.safetensors, b"),
        ({"config.yaml": b"x"}, None, "holds no .safetensors file"),
        ({}, {"out/lora.safetensors": "/etc/passwd"}, "'out/lora.safetensors' is a link"),
    ],
)
async def test_bad_tars_are_refused(
    host: Host, tmp_path: Path, members: dict[str, bytes], links: dict[str, str] | None, says: str
) -> None:
    host.routes["/bad.tar"] = Route(tar_bytes(members, links))
    message = await refused(make_cache(tmp_path), host.url("/bad.tar"))
    assert message.startswith(f"lora_weights: the tar at {host.url('/bad.tar')} ") and says in message
    assert leftovers(tmp_path) == []


async def test_a_tar_member_over_the_cap_is_refused(host: Host, tmp_path: Path) -> None:
    # Compressed, the tar is small; its member is not.
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("lora.safetensors")
        info.size = 5000
        tar.addfile(info, io.BytesIO(b"\0" * 5000))
    host.routes["/packed.tar.gz"] = Route(buffer.getvalue())
    message = await refused(make_cache(tmp_path, max_bytes=1000), host.url("/packed.tar.gz"))
    assert "lora.safetensors in the tar at" in message and "FLUXSERVE_MAX_LORA_BYTES" in message


# -- Hugging Face --------------------------------------------------------------------------------------------


def _hub_error(cls: type[Exception], message: str) -> Exception:
    exc = cls.__new__(cls)  # the real ones want an HTTP response
    Exception.__init__(exc, message)
    return exc


async def test_a_hub_repo_through_replaced_hub_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "hf" / "pytorch_lora_weights.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(lora_bytes(rank=8))
    calls: list[tuple[str, str, str | None]] = []
    in_hf_cache = False

    def list_files(repo_id: str, revision: str | None) -> list[hub.HubFile]:
        assert repo_id == "someone/style-lora"
        return [
            hub.HubFile("README.md", 10),
            hub.HubFile("samples/other.safetensors", 100),
            hub.HubFile("pytorch_lora_weights.safetensors", weights.stat().st_size),
            hub.HubFile("old/pytorch_lora_weights.safetensors", 100),
        ]

    def download(repo_id: str, filename: str, revision: str | None) -> tuple[Path, bool]:
        calls.append((repo_id, filename, revision))
        return weights, in_hf_cache

    monkeypatch.setattr(hub, "list_files", list_files)
    monkeypatch.setattr(hub, "download", download)
    cache = make_cache(tmp_path / "cache")
    log = Log()
    lora = await cache.get("someone/style-lora", "lora_weights", log)
    assert calls == [("someone/style-lora", "pytorch_lora_weights.safetensors", None)]
    assert lora.path == weights and lora.rank == 8 and not lora.from_cache
    assert lora.source == "https://huggingface.co/someone/style-lora/resolve/main/pytorch_lora_weights.safetensors"
    assert log[0] == "Downloading LoRA huggingface.co/someone/style-lora …" and log[1].startswith("Downloaded LoRA")
    in_hf_cache = True
    log = Log()
    again = await cache.get("https://huggingface.co/someone/style-lora", "lora_weights", log)
    assert again.from_cache and again.sha256 == lora.sha256 and log[-1] == "LoRA from cache (0.0 MB)"

    monkeypatch.setattr(
        hub, "list_files", lambda repo_id, revision: [hub.HubFile("pytorch_lora_weights.safetensors", 10**9)]
    )
    message = await refused(make_cache(tmp_path / "small", max_bytes=1000), "someone/style-lora")
    assert "is larger than the 0.0 MB limit" in message


async def test_offline_the_hub_functions_read_the_hugging_face_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real hub functions, with HF_HUB_OFFLINE on and a Hugging Face cache laid out by hand.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    commit = "0" * 40
    repo = tmp_path / "hf" / "models--someone--style"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "README.md").write_text("a LoRA")
    (repo / "snapshots" / commit / "style.safetensors").write_bytes(lora_bytes())
    cache = make_cache(tmp_path / "cache")
    log = Log()
    async with cache.use("someone/style", "lora_weights", log) as lora:
        assert lora.path.read_bytes() == lora_bytes() and lora.from_cache and lora.rank == 4
    assert log[-1] == "LoRA from cache (0.0 MB)"
    message = await refused(cache, "someone/elsewhere")
    assert "someone/elsewhere is not in this server's Hugging Face cache" in message
    assert "(HF_HUB_OFFLINE is set); download it there first (hf download someone/elsewhere)" in message


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (_hub_error(GatedRepoError, "403"), "the Hugging Face repo someone/gated is gated: accept its terms"),
        (_hub_error(RepositoryNotFoundError, "404"), "someone/gated does not exist or is private"),
        (
            LocalEntryNotFoundError("offline"),
            "is not in this server's Hugging Face cache and the hub cannot be reached",
        ),
    ],
)
async def test_hub_failures_say_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception, says: str
) -> None:
    def fail(*_args: object) -> Any:
        raise error

    monkeypatch.setattr(hub, "list_files", fail)
    message = await refused(make_cache(tmp_path), "someone/gated", "extra_lora")
    assert message.startswith("extra_lora: ") and says in message


async def test_a_hub_repo_with_several_candidates_asks_for_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "list_files", lambda *_: [hub.HubFile("a.safetensors"), hub.HubFile("b.safetensors")])
    message = await refused(make_cache(tmp_path), "someone/two")
    assert "holds several .safetensors files (a.safetensors, b.safetensors)" in message
    assert "https://huggingface.co/someone/two/blob/main/<file>.safetensors" in message


# -- eviction ------------------------------------------------------------------------------------------------


async def test_eviction_beyond_the_budget_skips_files_in_use(host: Host, tmp_path: Path) -> None:
    for name, seed in (("a", 0), ("b", 1), ("c", 2), ("d", 3)):
        host.routes[f"/{name}.safetensors"] = Route(lora_bytes(seed), etag=f'"{name}"')
    size = len(lora_bytes(0))
    cache = make_cache(tmp_path, budget_bytes=int(size * 2.5))
    held = await cache.get(host.url("/a.safetensors"))  # the oldest, but a prediction holds it
    (await cache.get(host.url("/b.safetensors"))).release()
    c = await cache.get(host.url("/c.safetensors"))
    c.release()
    assert held.path.is_file() and c.path.is_file()
    assert len(leftovers(tmp_path)) == 2  # b went instead of a
    held.release()
    (await cache.get(host.url("/d.safetensors"))).release()
    assert not held.path.exists() and c.path.is_file()  # a, now free and least recently used, went
    async with cache.use(host.url("/b.safetensors")) as again:
        assert not again.from_cache  # evicted entries are downloaded again


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
