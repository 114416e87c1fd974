"""The built-in sandbox: both simulators, seeded from one world, served over HTTP on 127.0.0.1."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from imocha_sandbox.degreed import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DegreedSimulator
from imocha_sandbox.imocha import ImochaSimulator
from imocha_sandbox.seed import World, generate_world
from imocha_sandbox.server import ServerThread

SANDBOX_IMOCHA_API_KEY = "sandbox-imocha-key"
DEFAULT_IMOCHA_PORT = 8701
DEFAULT_DEGREED_PORT = 8702


@dataclass(frozen=True)
class SandboxConfig:
    """Sizes and behaviour of the sandbox. The defaults sync fully in about two minutes at 70 requests/min."""

    seed: int = 7
    tests: int = 10
    learners: int = 30
    attempts: int = 40
    missing_in_degreed: int | None = None
    """Learners with no Degreed account (None: about 5%, at least one)."""
    history_days: int = 14
    """How many days back the seeded attempts reach."""
    degreed_rate_limit: int = 70
    imocha_port: int = 0
    degreed_port: int = 0
    completion_duplicates: str = "409"
    token_ttl_seconds: int = 3600
    imocha_rate_limit_per_second: float | None = None

    def describe(self) -> str:
        return f"{self.tests} tests, {self.learners} learners, {self.attempts} attempts"


class Sandbox:
    """Start with ``start()`` (or ``with Sandbox(...) as sandbox``); ``env()`` gives the pipeline's settings."""

    def __init__(self, config: SandboxConfig | None = None, world: World | None = None):
        self.config = config or SandboxConfig()
        cfg = self.config
        self.world = world or generate_world(seed=cfg.seed, tests=cfg.tests, learners=cfg.learners,
                                             attempts=cfg.attempts, missing_in_degreed=cfg.missing_in_degreed,
                                             history_days=cfg.history_days)
        self.imocha = ImochaSimulator(self.world, SANDBOX_IMOCHA_API_KEY,
                                      rate_limit_per_second=cfg.imocha_rate_limit_per_second)
        self.degreed = DegreedSimulator(self.world, rate_limit_per_minute=cfg.degreed_rate_limit,
                                        completion_duplicates=cfg.completion_duplicates,
                                        token_ttl_seconds=cfg.token_ttl_seconds)
        self._imocha_server = ServerThread(self.imocha.app, port=cfg.imocha_port)
        self._degreed_server = ServerThread(self.degreed.app, port=cfg.degreed_port)
        self.started = False

    def start(self) -> Sandbox:
        self._imocha_server.start()
        try:
            self._degreed_server.start()
        except Exception:
            self._imocha_server.stop()
            raise
        self.started = True
        return self

    def stop(self) -> None:
        if self.started:
            self._degreed_server.stop()
            self._imocha_server.stop()
            self.started = False
        close = getattr(self.imocha, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

    @property
    def imocha_url(self) -> str:
        return self._imocha_server.url

    @property
    def degreed_url(self) -> str:
        return self._degreed_server.url

    def env(self) -> dict[str, str]:
        """Every setting the pipeline needs to use this sandbox (DESIGN.md §3 names)."""
        return {
            "IMOCHA_API_KEY": SANDBOX_IMOCHA_API_KEY,
            "IMOCHA_BASE_URL": self.imocha_url,
            "DEGREED_CLIENT_ID": DEFAULT_CLIENT_ID,
            "DEGREED_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
            "DEGREED_API_BASE_URL": self.degreed_url,
            "DEGREED_TOKEN_URL": f"{self.degreed_url}/oauth/token",
            "DEGREED_RATE_LIMIT_PER_MINUTE": str(self.config.degreed_rate_limit),
        }

    def export_lines(self) -> list[str]:
        return [f"export {name}={shlex.quote(value)}" for name, value in self.env().items()]
