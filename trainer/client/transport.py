"""HTTP to the daemon: one keep-alive httpx client, and answers sorted into "try again later" and "never"."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from trainer.client.environment import daemon_token

from trainer.client.payload import Scalar, encode_list

USER_AGENT = "joulemeter-client/0.1"
# Statuses that say "not now" (daemon overloaded, restarting behind a proxy): the request is retried.
TRANSIENT_STATUSES = {408, 425, 429}
# Stopping a run makes the daemon wait for the counter update after the run's end (a few seconds).
STOP_TIMEOUT_S = 30.0


class Unreachable(Exception):
    """The daemon did not answer, or answered that it cannot take the request now."""


class Rejected(Exception):
    """The daemon answered that the request is wrong; sending it again will not help."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class UnknownRun(Rejected):
    """404 for a run: the daemon has not seen its registration (a fresh ledger, or a run registered offline)."""


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    return detail if isinstance(detail, str) else str(detail)


class Transport:
    def __init__(self, url: str, timeout: float = 5.0, connect_timeout: float = 2.0) -> None:
        self.url = url.rstrip("/")
        headers = {"user-agent": USER_AGENT}
        token = daemon_token()
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout, connect=connect_timeout),
                                  headers=headers)

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, *, json: Any = None, content: str | None = None,
                 timeout: float | None = None, run_path: bool = False) -> Any:
        kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        if content is not None:
            kwargs.update(content=content.encode(), headers={"content-type": "application/json"})
        try:
            response = self._http.request(method, path, json=json, **kwargs)
        except httpx.TransportError as exc:  # refused, reset, timed out, DNS
            raise Unreachable(f"{type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status < 300:
            return response.json() if response.content else None
        if status >= 500 or status in TRANSIENT_STATUSES:
            raise Unreachable(f"HTTP {status}: {_detail(response)}")
        if status == 404 and run_path:
            raise UnknownRun(status, _detail(response))
        raise Rejected(status, _detail(response))

    @staticmethod
    def _run(run_id: str) -> str:
        return f"/api/v1/runs/{quote(run_id, safe='')}"

    def healthz(self) -> dict[str, Any]:
        return self._request("GET", "/healthz")

    def register(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/api/v1/runs", json=body)

    def get_run(self, run_id: str) -> dict[str, Any]:
        return self._request("GET", self._run(run_id), run_path=True)

    def post_phases(self, run_id: str, phases: list[dict[str, Any]], pid: int | None = None) -> int:
        # The sender's pid tells the daemon which member is alive, and until when.
        query = "" if pid is None else f"?pid={pid}"
        answer = self._request("POST", f"{self._run(run_id)}/phases{query}", content=encode_list(phases),
                               run_path=True)
        return int(answer["accepted"])

    def list_phases(self, run_id: str, limit: int = 100_000) -> list[dict[str, Any]]:
        answer = self._request("GET", f"{self._run(run_id)}/phases?limit={limit}", run_path=True)
        return list(answer["phases"])

    def stop(self, run_id: str, status: str, end: float, metrics: dict[str, Scalar],
             pid: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"status": status, "end": end, "metrics": metrics}
        if pid is not None:  # this member stops; the run ends with its last member
            body["pid"] = pid
        return self._request("POST", f"{self._run(run_id)}/stop", json=body, timeout=STOP_TIMEOUT_S, run_path=True)

    def energy(self, run_id: str) -> dict[str, Any]:
        return self._request("GET", f"{self._run(run_id)}/energy", timeout=STOP_TIMEOUT_S, run_path=True)
