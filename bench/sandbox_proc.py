"""The built-in sandbox in its own OS process, driven over its HTTP control surface (``/_sandbox/``).

Benchmarks keep the simulators out of the measuring process: an in-process simulator would share the
GIL with the client under test and slow both down, which real APIs never do. The request logs the
figures are counted from are read back over HTTP.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from dataclasses import asdict
from typing import Any

import requests

from imocha_sandbox.runtime import Sandbox, SandboxConfig


def _serve(config: dict[str, Any], conn) -> None:
    box = Sandbox(SandboxConfig(**config))
    world = box.world
    try:
        box.start()
        conn.send({
            "env": box.env(),
            "learners": [{"email": x.email, "name": x.name, "in_degreed": x.in_degreed} for x in world.learners],
            "tests": [{"test_id": t.test_id, "name": t.name, "skills": [b.qb_name for b in t.banks]}
                      for t in world.tests],
            "attempts": [{"test_invitation_id": a.test_invitation_id, "attempted_on": a.attempted_on.isoformat(),
                          "status": a.status} for a in world.attempts],
        })
        conn.recv()  # until the parent says stop (or goes away)
    except EOFError:
        pass
    finally:
        box.stop()


class SandboxProcess:
    """``with SandboxProcess(SandboxConfig(...)) as box:`` — ``box.env`` holds the pipeline's settings."""

    def __init__(self, config: SandboxConfig | None = None):
        self.config = config or SandboxConfig()
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(asdict(self.config), child), daemon=True,
                                    name="bench-sandbox")
        self._http = requests.Session()
        self.info: dict[str, Any] = {}
        self._degreed_seq = 0

    def __enter__(self) -> SandboxProcess:
        self._process.start()
        if not self._conn.poll(120):
            self._process.kill()
            raise RuntimeError("the sandbox process did not start within 120 s")
        self.info = self._conn.recv()
        return self

    def __exit__(self, *_exc) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self._conn.send("stop")
        self._process.join(15)
        if self._process.is_alive():
            self._process.kill()
        self._http.close()

    @property
    def env(self) -> dict[str, str]:
        return dict(self.info["env"])

    @property
    def imocha_url(self) -> str:
        return self.info["env"]["IMOCHA_BASE_URL"]

    @property
    def degreed_url(self) -> str:
        return self.info["env"]["DEGREED_API_BASE_URL"]

    def learners(self, in_degreed: bool | None = True) -> list[dict[str, Any]]:
        return [x for x in self.info["learners"] if in_degreed is None or x["in_degreed"] == in_degreed]

    def tests(self) -> list[dict[str, Any]]:
        return list(self.info["tests"])

    # -- control surface ------------------------------------------------------------------------------

    def _call(self, base: str, method: str, path: str, body: Any = None) -> Any:
        response = self._http.request(method, f"{base}/_sandbox{path}", json=body, timeout=60)
        if response.status_code >= 400:
            raise RuntimeError(f"sandbox {method} {path} -> {response.status_code}: {response.text[:300]}")
        return response.json() if response.content else None

    def imocha(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(self.imocha_url, method, path, body)

    def degreed(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(self.degreed_url, method, path, body)

    def imocha_requests(self, since: int = 0) -> list[dict[str, Any]]:
        return self.imocha("GET", f"/requests?since={since}")["requests"]

    def degreed_requests(self, since: int = 0) -> list[dict[str, Any]]:
        return self.degreed("GET", f"/requests?since={since}")

    def last_seq(self) -> tuple[int, int]:
        """(iMocha, Degreed) request-log positions: count from here."""
        imocha = self.imocha("GET", "/requests?since=999999999")["lastSeq"]
        newer = self.degreed_requests(self._degreed_seq)
        if newer:
            self._degreed_seq = int(newer[-1]["seq"])
        return int(imocha), self._degreed_seq

    def degreed_state(self) -> dict[str, Any]:
        return self.degreed("GET", "/state")

    def complete_attempt(self, test_id: int, email: str, name: str, *, bank_scores: float | None = None,
                         callback_url: str | None = None) -> int:
        body = {"testId": test_id, "email": email, "name": name, "bankScores": bank_scores,
                "callbackUrl": callback_url}
        return int(self.imocha("POST", "/attempts", body)["testInvitationId"])
