"""`rlaif label RUN_DIR`: a small local page for labelling a run's pairs by hand.

Standard library only (http.server). The page is three static files in rlaif/cli/static/. Labels go to
RUN_DIR/human_labels.jsonl (see rlaif.evaluation.labels). Model outputs are untrusted: the page renders them with
textContent under a strict Content-Security-Policy, every POST needs the server's random token, requests
for any other Host are refused (DNS rebinding), bodies are capped, and no route takes a path.
"""

from __future__ import annotations

import getpass
import hmac
import ipaddress
import json
import re
import secrets
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from rlaif.errors import RlaifError
from rlaif.evaluation.labels import FILE_NAME, LabelFile, agreement_count, judge_verdicts, sample_pairs, shown_order, to_label, to_screen

STATIC = Path(__file__).resolve().parent / "static"
FILES = {"/label.js": ("label.js", "text/javascript"), "/label.css": ("label.css", "text/css")}
MAX_BODY = 4096
TOKEN_HEADER = "X-RLAIF-Token"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class LabelApp:
    """What the page shows and records; one labeller, one sample of one run."""

    def __init__(self, root: Path, sample: int, seed: int, labeller: str):
        from rlaif.store.files import read_jsonl

        self.root, self.seed, self.labeller = Path(root), seed, labeller
        pairs_path = self.root / "pairs.jsonl"
        if not pairs_path.exists():
            raise RlaifError("no pairs.jsonl in this folder", str(self.root),
                             "pass a run folder made by `rlaif` (its generate stage writes pairs.jsonl)")
        pairs = read_jsonl(pairs_path)
        if not pairs:
            raise RlaifError("pairs.jsonl holds no pairs", str(pairs_path), "run the generate stage first")
        self.pairs = sample_pairs(pairs, sample, seed)
        self.file = LabelFile(self.root / FILE_NAME, labeller)
        self.verdicts = judge_verdicts(self.root)
        self.token = secrets.token_urlsafe(32)
        self.page = (STATIC / "label.html").read_text(encoding="utf-8").replace("{{TOKEN}}", self.token)
        self.changed = False
        self.lock = threading.Lock()  # the page's requests come from several server threads

    def state(self) -> dict:
        with self.lock:
            return self._state()

    def _state(self) -> dict:
        labelled = [p["pair_id"] in self.file.current for p in self.pairs]
        k, n = agreement_count(self.file.current, self.verdicts)
        return {"run": self.root.name, "labeller": self.labeller, "total": len(self.pairs), "done": sum(labelled),
                "labelled": labelled, "agree": k, "decided": n, "judged": bool(self.verdicts)}

    def _pair(self, index) -> dict:
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(self.pairs):
            raise ValueError(f"index must be an integer from 0 to {len(self.pairs) - 1}")
        return self.pairs[index]

    def pair(self, index) -> dict:
        with self.lock:
            return self._show(index)

    def _show(self, index) -> dict:
        pair = self._pair(index)
        shown = shown_order(self.seed, pair["pair_id"])
        row = self.file.current.get(pair["pair_id"])
        left, right = (pair["response_a"], pair["response_b"]) if shown == "ab" else (pair["response_b"], pair["response_a"])
        return {"index": index, "pair_id": pair["pair_id"], "prompt": pair["prompt"], "left": left, "right": right,
                "you": to_screen(row["label"], shown) if row else None,
                "judge": self._judge(pair, shown) if row else None}  # hidden until labelled

    def _judge(self, pair: dict, shown: str) -> str:
        if pair["pair_id"] not in self.verdicts:
            return "unjudged"
        return to_screen(self.verdicts[pair["pair_id"]], shown) or "unparsed"

    def label(self, body: dict) -> dict:
        with self.lock:
            return self._label(body)

    def _label(self, body: dict) -> dict:
        pair = self._pair(body.get("index"))
        if body.get("choice") not in ("left", "right", "tie"):
            raise ValueError("choice must be left, right or tie")
        shown = shown_order(self.seed, pair["pair_id"])
        self.file.label(pair, to_label(body["choice"], shown), shown)
        self.changed = True
        return {"state": self._state(), "index": body["index"], "you": body["choice"], "judge": self._judge(pair, shown)}

    def undo(self) -> dict:
        with self.lock:
            return self._undo()

    def _undo(self) -> dict:
        row = self.file.undo()
        self.changed |= row is not None
        ids = [p["pair_id"] for p in self.pairs]
        index = ids.index(row["pair_id"]) if row and row["pair_id"] in ids else None
        you = self._show(index)["you"] if index is not None else None  # the earlier label, back after a relabel
        return {"state": self._state(), "undone": row["pair_id"] if row else None, "index": index, "you": you}


def _name(host: str):
    """A host name as compared: an IP literal (brackets optional) as an address, whatever its spelling;
    any other name in lower case."""
    try:
        return ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
    except ValueError:
        return host.lower()


def host_ok(header: str, names: set[str], port: int) -> bool:
    """Whether a Host header names this server: one of `names` and `port`; without a port it means 80,
    which browsers leave out."""
    match = re.fullmatch(r"(\[[^\]]*\]|[^:\[\]]*)(?::(\d*))?", header)
    return bool(match) and _name(match[1]) in {_name(n) for n in names} and int(match[2] or 80) == port


def make_handler(app: LabelApp, names: set[str], port: int):
    class Handler(BaseHTTPRequestHandler):
        timeout = 30  # a client that stops sending mid-request does not hold a thread for ever
        def version_string(self) -> str:
            return "rlaif-label"

        def log_message(self, *args) -> None:  # quiet: the terminal shows the URL and errors only
            pass

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            for name, value in (("Content-Type", ctype), ("Content-Length", str(len(body))),
                                ("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"),
                                ("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer"),
                                ("Cache-Control", "no-store")):
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, obj: dict) -> None:
            self._send(status, json.dumps(obj, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")

        def _host_ok(self) -> bool:
            if host_ok(self.headers.get("Host") or "", names, port):
                return True
            self._json(421, {"error": "unknown Host header"})  # DNS rebinding: only the server's own address
            return False

        def do_GET(self) -> None:
            if not self._host_ok():
                return
            url = urlsplit(self.path)
            if url.path == "/":
                return self._send(200, app.page.encode("utf-8"), "text/html; charset=utf-8")
            if url.path in FILES:
                name, ctype = FILES[url.path]
                return self._send(200, (STATIC / name).read_bytes(), f"{ctype}; charset=utf-8")
            if url.path == "/api/state":
                return self._json(200, app.state())
            if url.path == "/api/pair":
                try:
                    return self._json(200, app.pair(int(parse_qs(url.query).get("index", [""])[0])))
                except ValueError as e:
                    return self._json(400, {"error": str(e)})
            self._json(404, {"error": "not found"})

        do_HEAD = do_GET

        def do_POST(self) -> None:
            if not self._host_ok():
                return
            if not hmac.compare_digest(self.headers.get(TOKEN_HEADER, "").encode(), app.token.encode()):
                return self._json(403, {"error": f"missing or wrong {TOKEN_HEADER}"})
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return self._json(411, {"error": "Content-Length required"})
            if not 0 <= length <= MAX_BODY:
                self.close_connection = True
                return self._json(413, {"error": f"body over {MAX_BODY} bytes"})
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
                path = urlsplit(self.path).path
                if path == "/api/label":
                    return self._json(200, app.label(body))
                if path == "/api/undo":
                    return self._json(200, app.undo())
            except ValueError as e:  # json.JSONDecodeError is a ValueError
                return self._json(400, {"error": str(e)})
            self._json(404, {"error": "not found"})

    return Handler


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def check_host(host: str, allow_remote: bool) -> None:
    address = _name(host)
    if address == "localhost":
        return
    if isinstance(address, str):
        raise RlaifError(f"--host {host!r} is not an IP address", "--host",
                         "pass 127.0.0.1 or an address of this machine")
    if address.is_unspecified:
        raise RlaifError(f"--host {host} would listen everywhere", "--host",
                         "pass the one address people will open (the Host header must match it)")
    if not (getattr(address, "ipv4_mapped", None) or address).is_loopback:  # ::ffff:127.0.0.1 is 127.0.0.1
        if not allow_remote:
            raise RlaifError(f"--host {host} is not a loopback address", "--host",
                             "keep the default 127.0.0.1, or add --allow-remote to serve the run's pairs to the network")
        print(f"rlaif: label: warning: serving on {host}: anyone who can reach it can read this run's pairs and "
              "add labels; there is no login", file=sys.stderr)


def serve(app: LabelApp, host: str = "127.0.0.1", port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Start the server in a background thread; returns (server, URL)."""
    host = str(_name(host))  # [::1] -> ::1, ::FFFF:7F00:1 -> ::ffff:7f00:1, LOCALHOST -> localhost
    server_class = type("Server", (ThreadingHTTPServer,), {"daemon_threads": True,
                                                          "address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
    try:
        server = server_class((host, port), None)
    except (OSError, OverflowError) as e:  # OverflowError: a port above 65535
        raise RlaifError(f"cannot listen on {host}:{port}: {getattr(e, 'strerror', None) or e}", "--port",
                         "pick another port, or leave --port out for a free one") from None
    port = server.server_address[1]
    loopback = {"127.0.0.1", "localhost", "::1"}
    server.RequestHandlerClass = make_handler(app, {host} | (loopback if host in loopback else set()), port)
    threading.Thread(target=server.serve_forever, name="rlaif-label", daemon=True).start()
    return server, f"http://{_url_host(host)}:{port}/"


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in the environment nor in the password database
        return ""


def _interrupt(*_) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the server like Ctrl-C: the report is still updated


def main(args) -> int:
    started = time.perf_counter()
    if args.sample < 1:
        raise RlaifError("--sample must be at least 1", "--sample", "pass how many pairs to label, e.g. 50")
    labeller = (args.labeller if args.labeller is not None else _user()).strip()
    if not labeller or len(labeller) > 64 or not labeller.isprintable():
        raise RlaifError(f"labeller name {labeller!r} must be 1 to 64 printable characters", "--labeller",
                         "pass a short name, e.g. --labeller alice")
    check_host(args.host, args.allow_remote)
    app = LabelApp(Path(args.run_dir), args.sample, args.seed, labeller)
    server, url = serve(app, args.host, args.port)
    state = app.state()
    print(f"rlaif: label: {state['done']} of {state['total']} pairs of {app.root} labelled by {labeller}; "
          f"labels go to {app.file.path}; Ctrl-C stops (ready in {time.perf_counter() - started:.2f}s)",
          file=sys.stderr)
    print(url, flush=True)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    if app.changed:
        from rlaif.evaluation import run_report
        from rlaif.store.folder import Run

        run_report.write(Run(app.root))
        print(f"rlaif: label: report updated: {Run(app.root).report}", file=sys.stderr)
    return 0
