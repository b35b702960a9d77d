"""OpenAI-compatible engine (vLLM serve, OpenAI, llama.cpp server, ...): standard library only.

POST {base_url}/chat/completions, up to `concurrency` requests in flight, results in input order.
HTTP 429, 5xx and connection errors are retried with exponential backoff plus jitter (honouring
Retry-After); any other 4xx fails at once with an RlaifError. The API key is sent as a Bearer header
and appears nowhere else: not in identity, stats, repr or error messages.

Log-probs: `label_logprobs` reads the first reply token's top_logprobs (20 at most), so a label outside
them is absent and the judge records a parse failure, never a guess. Not every server returns
log-probs; `supports_logprobs` is probed once, lazily (`probe_logprobs()` sends one tiny request), or
set with `logprobs=True/False`. rlaif.judging.jobs.judge_mode reads it before judging and, when it is False,
judges in chain-of-thought mode: `complete()` text whose last line is parsed by rlaif.judging.jobs.parse_verdict.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import math
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from rlaif.engines.base import Engine, row_seeds
from rlaif.errors import RlaifError

REJECTED = (400, 422)  # how servers refuse a parameter they do not support (here: logprobs)
PROBE = [{"role": "user", "content": "Reply with the single letter A."}]


class _Secret:
    """Holds the API key; its repr never shows it."""
    def __init__(self, value: str | None):
        self.value = value or None

    def __repr__(self) -> str:
        return "<hidden>" if self.value else "None"


class HTTPStatusError(RlaifError):
    """A non-retried HTTP error status; `status` is the code."""
    def __init__(self, status: int, what: str, where: str, fix: str):
        self.status = status
        super().__init__(what, where, fix)


class OpenAIEngine(Engine):
    """stats (summed over the engine's life, thread-safe): requests = HTTP requests sent (retries included),
    retries = of those, re-sends after a 429/5xx/connection error, failures = calls given up on (error raised),
    prompt_tokens/completion_tokens = sums of the responses' `usage`, seconds = wall time spent in engine calls."""

    def __init__(self, model_name: str, base_url: str, *, api_key: str | None = None, concurrency: int = 8,
                 timeout: float = 120.0, logprobs: bool | None = None, max_attempts: int = 6,
                 backoff_base: float = 0.5, max_sleep: float = 20.0):
        self.model_name = model_name
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.identity = f"openai:{model_name}@{self.base_url}"
        self._key = _Secret(api_key)
        self.concurrency = max(1, int(concurrency))
        self.timeout, self.max_attempts = float(timeout), max(1, int(max_attempts))
        self.backoff_base, self.max_sleep = float(backoff_base), float(max_sleep)
        self._logprobs = logprobs
        self._lock = threading.Lock()
        self._stats = {"requests": 0, "retries": 0, "failures": 0, "prompt_tokens": 0, "completion_tokens": 0,
                       "seconds": 0.0}
        self._opener = urllib.request.build_opener()  # honours http(s)_proxy / no_proxy from the environment

    def __repr__(self) -> str:
        return f"OpenAIEngine(model={self.model_name!r}, base_url={self.base_url!r}, concurrency={self.concurrency})"

    @property
    def stats(self) -> dict:
        with self._lock:
            return {**self._stats, "seconds": round(self._stats["seconds"], 3)}

    def _add(self, **counts) -> None:
        with self._lock:
            for k, v in counts.items():
                self._stats[k] += v

    def _scrub(self, text: str) -> str:
        key = self._key.value
        return text.replace(key, "<hidden>") if key else text

    def _server_message(self, err: urllib.error.HTTPError) -> str:
        try:
            raw = err.read().decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - a body we cannot read is no message
            raw = ""
        try:
            data = json.loads(raw)
            msg = data.get("error", data) if isinstance(data, dict) else data
            msg = msg.get("message", msg) if isinstance(msg, dict) else msg
            raw = msg if isinstance(msg, str) else json.dumps(msg)
        except ValueError:
            pass
        return self._scrub(" ".join(raw.split())[:300]) or (err.reason or "")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(max(float(retry_after), 0.0), self.max_sleep)
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(retry_after).timestamp()
                    return min(max(when - time.time(), 0.0), self.max_sleep)
                except (TypeError, ValueError):
                    pass
        delay = self.backoff_base * 2 ** (attempt - 1)
        return min(delay + random.uniform(0, self.backoff_base), self.max_sleep)

    def _post(self, body: dict, expected: tuple = ()) -> dict:
        """One chat completion, retried; statuses in `expected` raise without counting as failures."""
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   **({"Authorization": f"Bearer {self._key.value}"} if self._key.value else {})}
        last = ""
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                self._add(retries=1)
            self._add(requests=1)
            retry_after = None
            try:
                req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with self._opener.open(req, timeout=self.timeout) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as e:
                message = self._server_message(e)
                if e.code != 429 and e.code < 500:
                    self._add(failures=int(e.code not in expected))
                    raise self._status_error(e.code, message) from None
                last, retry_after = f"HTTP {e.code}: {message}", e.headers.get("Retry-After")
            except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
                last = self._scrub(str(getattr(e, "reason", None) or e) or type(e).__name__)
            else:
                try:
                    payload = json.loads(raw)
                    payload["choices"][0]
                except (ValueError, KeyError, IndexError, TypeError):
                    self._add(failures=1)
                    raise RlaifError("the answer is not a chat completion: "
                                     f"{self._scrub(raw[:200].decode('utf-8', 'replace'))!r}", self.url,
                                     "point the base URL at an OpenAI-compatible server (ending in /v1)") from None
                usage = payload.get("usage") or {}
                self._add(prompt_tokens=int(usage.get("prompt_tokens") or 0),
                          completion_tokens=int(usage.get("completion_tokens") or 0))
                return payload
            if attempt < self.max_attempts:
                time.sleep(self._delay(attempt, retry_after))
        self._add(failures=1)
        raise RlaifError(f"request failed {self.max_attempts} times (last: {last})", self.url,
                         "check that the server is running and reachable at this base URL (e.g. vllm serve ... "
                         "--port 8000 -> http://127.0.0.1:8000/v1), or lower --concurrency if it is overloaded")

    def _status_error(self, status: int, message: str) -> HTTPStatusError:
        fix = {401: "set OPENAI_API_KEY to a key this endpoint accepts",
               403: "set OPENAI_API_KEY to a key with access to this model",
               404: f"check the base URL (usually ends in /v1) and the model name {self.model_name!r}"}.get(
            status, "check the request options this server accepts")
        return HTTPStatusError(status, f"HTTP {status}: {message}", self.url, fix)

    def _map(self, fn: Callable[[int, list[dict]], object], conversations: Sequence[list[dict]]) -> list:
        """fn(index, conversation) for each, `concurrency` at most in flight, results in input order."""
        if not conversations:
            return []
        start = time.monotonic()
        try:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(conversations))) as pool:
                futures = [pool.submit(fn, i, c) for i, c in enumerate(conversations)]
                try:
                    return [f.result() for f in futures]
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
        finally:
            self._add(seconds=time.monotonic() - start)

    def _body(self, conv: list[dict], max_tokens: int, temperature: float, **extra) -> dict:
        return {"model": self.model_name, "messages": conv, "max_tokens": int(max_tokens),
                "temperature": float(temperature), **extra}

    @staticmethod
    def _text(payload: dict) -> str:
        return ((payload["choices"][0].get("message") or {}).get("content") or "").strip()

    @staticmethod
    def _first_token_logprobs(payload: dict) -> list[dict] | None:
        """The first reply token and its alternatives, or None when the response carries no log-probs."""
        content = ((payload["choices"][0].get("logprobs") or {}).get("content")) or []
        return [content[0]] + list(content[0].get("top_logprobs") or []) if content else None

    def generate(self, conversations: Sequence[list[dict]], *, seed, max_new_tokens: int,
                 temperature: float, top_p: float) -> list[str]:
        seeds = row_seeds(seed, len(conversations))

        def one(i: int, conv: list[dict]) -> str:
            return self._text(self._post(self._body(conv, max_new_tokens, temperature, top_p=float(top_p),
                                                    seed=seeds[i])))
        return self._map(one, conversations)

    def complete(self, conversations: Sequence[list[dict]], *, max_new_tokens: int) -> list[str]:
        return self._map(lambda i, conv: self._text(self._post(self._body(conv, max_new_tokens, 0.0))),
                         conversations)

    def probe_logprobs(self) -> bool:
        """Send one tiny log-prob request; remember and return whether the server gives log-probs.
        A refusal (HTTP 400/422) or a reply without them means False; other errors raise."""
        start = time.monotonic()
        try:
            payload = self._post(self._body(PROBE, 1, 0.0, logprobs=True, top_logprobs=20), REJECTED)
            self._logprobs = self._first_token_logprobs(payload) is not None
        except HTTPStatusError as e:
            if e.status not in REJECTED:
                raise
            self._logprobs = False
        finally:
            self._add(seconds=time.monotonic() - start)
        return self._logprobs

    @property
    def supports_logprobs(self) -> bool:
        if self._logprobs is None:
            self.probe_logprobs()
        return bool(self._logprobs)

    @supports_logprobs.setter
    def supports_logprobs(self, value: bool | None) -> None:
        self._logprobs = value

    def label_logprobs(self, conversations: Sequence[list[dict]], labels: Sequence[str]) -> list[dict]:
        if not self.supports_logprobs:
            raise RlaifError(f"{self.identity} does not return log-probs", self.url,
                             "judge in chain-of-thought mode (label_mode: cot), or serve a model with logprobs")
        wanted = set(labels)

        def one(i: int, conv: list[dict]) -> dict:
            tokens = self._first_token_logprobs(self._post(self._body(conv, 1, 0.0, logprobs=True, top_logprobs=20)))
            # A label's token variants (" A", "A", ...) are different tokens for the same answer: their
            # probabilities add. The first entry repeats one of the top_logprobs: count each token once.
            prob: dict = {}
            for t in {str(t.get("token", "")): t for t in tokens or []}.values():
                label = str(t.get("token", "")).strip()
                if label in wanted and t.get("logprob") is not None:
                    prob[label] = prob.get(label, 0.0) + math.exp(float(t["logprob"]))
            return {label: math.log(p) for label, p in prob.items()}
        return self._map(one, conversations)
