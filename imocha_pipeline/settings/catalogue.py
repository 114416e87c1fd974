"""The catalogue: every environment setting of the pipeline, with its default, rules and meaning.

The README's settings tables are generated from it (``python -m imocha_pipeline.settings --write``). Each
setting is named exactly like its environment variable; read one with ``IMOCHA_PIPELINE_DRY_RUN.value()``.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from imocha_pipeline.settings.constants import (
    DEGREED_DEFAULT_RATE_LIMIT_PER_MINUTE,
    DEGREED_DEFAULT_REGION,
    DEGREED_REGIONS,
    IMOCHA_DEFAULT_BASE_URL,
    LAUNCH_URL_FIELDS,
    SSO_URL_FIELDS,
    SUMMARY_FIELDS,
)
from imocha_pipeline.settings.parsers import (
    Choice,
    CommaList,
    Cron,
    DatabaseUrl,
    Day,
    FilePath,
    Flag,
    Number,
    Numbers,
    Template,
    Text,
    Url,
    WholeNumber,
    share,
)
from imocha_pipeline.settings.setting import (
    CALLBACK_ENDPOINT,
    CONNECTIONS,
    DELIVERY,
    GUARDS,
    MAPPING,
    RATE_LIMITS,
    SCHEDULES,
    SENSORS,
    STAGING,
    Setting,
)


def _placeholders(fields: tuple[str, ...]) -> str:
    return ", ".join(f"`{{{name}}}`" for name in fields)


# ---------------------------------------------------------------------------------------------------------
# Connections

IMOCHA_API_KEY = Setting(
    "IMOCHA_API_KEY", Text(), None, "iMocha API key, sent as `X-API-KEY`", CONNECTIONS, required=True, secret=True)
IMOCHA_BASE_URL = Setting(
    "IMOCHA_BASE_URL", Url(), IMOCHA_DEFAULT_BASE_URL, "iMocha API host (paths start with `/v3/`)", CONNECTIONS)
DEGREED_CLIENT_ID = Setting(
    "DEGREED_CLIENT_ID", Text(), None, "Degreed API client id", CONNECTIONS, required=True)
DEGREED_CLIENT_SECRET = Setting(
    "DEGREED_CLIENT_SECRET", Text(), None, "Degreed API client secret", CONNECTIONS, required=True, secret=True)
DEGREED_REGION = Setting(
    "DEGREED_REGION",
    Choice(tuple(DEGREED_REGIONS), "or leave it unset and set DEGREED_TOKEN_URL and DEGREED_API_BASE_URL"),
    DEGREED_DEFAULT_REGION,
    f"Degreed data centre: {', '.join(f'`{region}`' for region in DEGREED_REGIONS)}; fills the two URLs below "
    "(explicit URLs win). The CA betatest API host is an assumption (not documented by Degreed)",
    CONNECTIONS)
DEGREED_API_BASE_URL = Setting(
    "DEGREED_API_BASE_URL", Url(), "", "Degreed API host", CONNECTIONS,
    shown_default="the region's (`https://api.degreed.com` for US)")
DEGREED_TOKEN_URL = Setting(
    "DEGREED_TOKEN_URL", Url(), "", "Degreed OAuth token URL", CONNECTIONS,
    shown_default="the region's (`https://degreed.com/oauth/token` for US)")
DEGREED_ORGANIZATION_CODE = Setting(
    "DEGREED_ORGANIZATION_CODE", Text(), "",
    "tenant organization, sent as `X-Degreed-Organization-Code`; works only with an organization API key",
    CONNECTIONS)
DEGREED_PROVIDER_CODE = Setting(
    "DEGREED_PROVIDER_CODE", Text(), "IMOCHA", "the Degreed provider `doctor` looks for", CONNECTIONS)
IMOCHA_PIPELINE_HTTP_READ_TIMEOUT_SECONDS = Setting(
    "IMOCHA_PIPELINE_HTTP_READ_TIMEOUT_SECONDS", Number(above=0.0), 30.0,
    "seconds a call to iMocha or Degreed waits for an answer (a sensor tick uses "
    "`IMOCHA_PIPELINE_POLL_READ_TIMEOUT_SECONDS`)", CONNECTIONS)

# ---------------------------------------------------------------------------------------------------------
# Rate limits

DEGREED_RATE_LIMIT_PER_MINUTE = Setting(
    "DEGREED_RATE_LIMIT_PER_MINUTE", WholeNumber(minimum=1), DEGREED_DEFAULT_RATE_LIMIT_PER_MINUTE,
    "requests per minute allowed for the client id", RATE_LIMITS)
DEGREED_TOKEN_REQUESTS_COUNT = Setting(
    "DEGREED_TOKEN_REQUESTS_COUNT", Flag(), False,
    "assumption (Degreed does not say whether its token endpoint counts against the limit): `1` makes a token "
    "request take a slot of the client's shared budget", RATE_LIMITS)
IMOCHA_RATE_LIMIT_PER_MINUTE = Setting(
    "IMOCHA_RATE_LIMIT_PER_MINUTE", WholeNumber(minimum=0), 0,
    "iMocha's limit is not published: set one to give iMocha calls their own budget (`0`: unlimited)",
    RATE_LIMITS, shown_default="unlimited")

# ---------------------------------------------------------------------------------------------------------
# Staging

DAGSTER_HOME = Setting(
    "DAGSTER_HOME", Text(), "", "Dagster's own home folder; the default staging database is a file in it",
    STAGING, shown_default="(none: the working directory)")


def default_staging_db_url() -> str:
    """SQLite file under $DAGSTER_HOME when set, else under the working directory."""
    home = DAGSTER_HOME.value()
    folder = Path(home) if home else Path.cwd()
    return f"sqlite:///{(folder / 'imocha_pipeline_staging.sqlite').resolve()}"


IMOCHA_PIPELINE_STAGING_DB_URL = Setting(
    "IMOCHA_PIPELINE_STAGING_DB_URL", DatabaseUrl(), None,
    "SQLAlchemy URL of the staging database; `postgresql://user@host/db` uses psycopg2. Treated as a secret (it "
    "may carry a password): read when used, never copied into Dagster's configuration", STAGING, secret=True,
    shown_default="SQLite file `imocha_pipeline_staging.sqlite` under `$DAGSTER_HOME` (or the working directory)",
    default_factory=default_staging_db_url)

IMOCHA_PIPELINE_DIFF_NATIVE = Setting(
    "IMOCHA_PIPELINE_DIFF_NATIVE", Flag(), True,
    "`0`: the diff engine hashes and compares text in Python, on one core, instead of in its compiled part on every "
    "core (the same plans; for checking a suspected fault in the compiled part). Without a C compiler at install "
    "time the compiled part is not built and Python is used whatever this says", STAGING)

IMOCHA_PIPELINE_RETENTION_DAYS = Setting(
    "IMOCHA_PIPELINE_RETENTION_DAYS", WholeNumber(minimum=1), None,
    "days `retention_job` keeps plans, closed quarantine rows, drift rows and callback bodies; the ledger and "
    "what is still to send are kept whatever their age", STAGING, shown_default="(none: keep everything)")
IMOCHA_PIPELINE_ERASURE_KEY = Setting(
    "IMOCHA_PIPELINE_ERASURE_KEY",
    Text(min_length=16, hint="e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"), None,
    "secret key of the HMAC-SHA256 that keeps an erased learner's email as a keyed hash (`imocha-pipeline "
    "forget`, `forget_job`); once a learner is erased every completion sync needs it too, to recognise them. Keep "
    "it stable: under another key an erased learner is no longer recognised",
    STAGING, required=True, secret=True,
    shown_default="(required by `forget`, then by the completion runs)")

# ---------------------------------------------------------------------------------------------------------
# Mapping

IMOCHA_PIPELINE_LAUNCH_URL_TEMPLATE = Setting(
    "IMOCHA_PIPELINE_LAUNCH_URL_TEMPLATE", Template(LAUNCH_URL_FIELDS), "https://test.imocha.io/{test_link}",
    f"launch link; placeholders {_placeholders(LAUNCH_URL_FIELDS)} (assumption: iMocha does not document the "
    "public URL of an open test link, only its key)", MAPPING)
IMOCHA_PIPELINE_SSO_URL_TEMPLATE = Setting(
    "IMOCHA_PIPELINE_SSO_URL_TEMPLATE", Template(SSO_URL_FIELDS), "",
    "wraps the launch link in your identity provider's login URL, e.g. "
    f"`https://idp.example.com/sso/saml?RelayState={{launch_url}}`; placeholders {_placeholders(SSO_URL_FIELDS)}",
    MAPPING)
IMOCHA_PIPELINE_SUMMARY_TEMPLATE = Setting(
    "IMOCHA_PIPELINE_SUMMARY_TEMPLATE", Template(SUMMARY_FIELDS),
    "iMocha assessment: {skills}. {questions} questions, {duration} minutes.",
    "the content summary; placeholders `{skills}`, `{sections}`, `{questions}`, `{duration}`, `{test_name}`",
    MAPPING)
IMOCHA_PIPELINE_CONTENT_LANGUAGE = Setting(
    "IMOCHA_PIPELINE_CONTENT_LANGUAGE", Text(), "en", "content language", MAPPING)
IMOCHA_PIPELINE_TITLE_MAX_LENGTH = Setting(
    "IMOCHA_PIPELINE_TITLE_MAX_LENGTH", WholeNumber(minimum=1), 255,
    "longest content title, kept with the mapping rules (the validation rule itself checks titles against 255 "
    "characters)", MAPPING)
IMOCHA_PIPELINE_SEND_STATUSES = Setting(
    "IMOCHA_PIPELINE_SEND_STATUSES", CommaList(), ("Complete",),
    "attempt statuses that become completions, comma-separated (`Test Left`, `Terminated` are staged, not sent)",
    MAPPING)
IMOCHA_PIPELINE_SKILL_LEVEL_BANDS = Setting(
    "IMOCHA_PIPELINE_SKILL_LEVEL_BANDS", Numbers(count=7, above=0.0, below=100.0),
    tuple(12.5 * i for i in range(1, 8)),
    "seven boundaries (percent) between Degreed levels 1–8 (level 1 below the first, level 8 from the last)",
    MAPPING)
IMOCHA_PIPELINE_RATING_TYPE = Setting(
    "IMOCHA_PIPELINE_RATING_TYPE", Text(), "Evaluation",
    "`rating-type` of the skill ratings (assumption: Degreed does not document the enum)", MAPPING)
IMOCHA_PIPELINE_LEARNER_MAP = Setting(
    "IMOCHA_PIPELINE_LEARNER_MAP", FilePath(), "",
    "CSV with columns `email,employee_id`: those learners are identified by `EmployeeId` instead of email", MAPPING)
IMOCHA_PIPELINE_SKILL_MAP = Setting(
    "IMOCHA_PIPELINE_SKILL_MAP", FilePath(), "",
    "CSV with columns `imocha_skill,degreed_skill`: skill names as Degreed knows them", MAPPING)
IMOCHA_PIPELINE_SKILL_MAP_STRICT = Setting(
    "IMOCHA_PIPELINE_SKILL_MAP_STRICT", Flag(), False,
    "`1`: skills without a mapping are not sent (listed in the plan with the reason)", MAPPING)

# ---------------------------------------------------------------------------------------------------------
# Guards and dry run

IMOCHA_PIPELINE_MAX_RETIRE_SHARE = Setting(
    "IMOCHA_PIPELINE_MAX_RETIRE_SHARE", share(), 0.2,
    "the guard blocks a plan that retires more than this share of our active Degreed assessments", GUARDS)
IMOCHA_PIPELINE_MAX_EXTRACT_SHRINK_SHARE = Setting(
    "IMOCHA_PIPELINE_MAX_EXTRACT_SHRINK_SHARE", share(), 0.2,
    "the guard blocks a plan when the iMocha extract shrank by more than this share since the last approved plan",
    GUARDS)
IMOCHA_PIPELINE_MAX_INVALID_SHARE = Setting(
    "IMOCHA_PIPELINE_MAX_INVALID_SHARE", share(), 0.5,
    "the validation check fails when more than this share of tests is quarantined", GUARDS)
IMOCHA_PIPELINE_DRY_RUN = Setting(
    "IMOCHA_PIPELINE_DRY_RUN", Flag(), False, "`1`: plan everything, send nothing", GUARDS)

# ---------------------------------------------------------------------------------------------------------
# Schedules

IMOCHA_PIPELINE_ASSESSMENT_SYNC_CRON = Setting(
    "IMOCHA_PIPELINE_ASSESSMENT_SYNC_CRON", Cron(), "0 * * * *", "schedule of `assessment_sync_job` (UTC)",
    SCHEDULES, read_at_load=True)
IMOCHA_PIPELINE_RECONCILE_CRON = Setting(
    "IMOCHA_PIPELINE_RECONCILE_CRON", Cron(), "30 2 * * *", "schedule of `reconcile_job` (UTC)",
    SCHEDULES, read_at_load=True)
IMOCHA_PIPELINE_CATCH_UP_CRON = Setting(
    "IMOCHA_PIPELINE_CATCH_UP_CRON", Cron(), "*/5 * * * *",
    "how often `catch_up_schedule` looks for outstanding records (UTC)", SCHEDULES, read_at_load=True)
IMOCHA_PIPELINE_RETENTION_CRON = Setting(
    "IMOCHA_PIPELINE_RETENTION_CRON", Cron(), "45 3 * * *",
    "schedule of `retention_job` (UTC; it removes nothing unless IMOCHA_PIPELINE_RETENTION_DAYS is set)",
    SCHEDULES, read_at_load=True)
IMOCHA_PIPELINE_RECONCILE_DAYS = Setting(
    "IMOCHA_PIPELINE_RECONCILE_DAYS", WholeNumber(minimum=1), 30,
    "how far back the reconcile reads Degreed completions", SCHEDULES)
IMOCHA_PIPELINE_HISTORY_START = Setting(
    "IMOCHA_PIPELINE_HISTORY_START", Day(), date(2024, 1, 1),
    "first daily partition of the completion assets", SCHEDULES, read_at_load=True)

# ---------------------------------------------------------------------------------------------------------
# Delivery and retries

IMOCHA_PIPELINE_PROGRESS_SECONDS = Setting(
    "IMOCHA_PIPELINE_PROGRESS_SECONDS", Number(minimum=0.0, noun="a number of seconds"), 30.0,
    "seconds between progress lines of the apply steps (done, remaining, rate, ETA); `0`: a line after every "
    "record", DELIVERY)
IMOCHA_PIPELINE_WAITING_RETRY_SECONDS = Setting(
    "IMOCHA_PIPELINE_WAITING_RETRY_SECONDS", WholeNumber(minimum=0), 300,
    "first retry interval of a record waiting for its learner, or rejected by Degreed (doubles each time, up to "
    "12 h); a record waiting for its assessment goes as soon as the assessment is in Degreed", DELIVERY)
IMOCHA_PIPELINE_CLAIM_LEASE_SECONDS = Setting(
    "IMOCHA_PIPELINE_CLAIM_LEASE_SECONDS", WholeNumber(minimum=1), 120,
    "how long a run's claim on a record lives without a heartbeat (the run renews it every quarter of that); the "
    "records of a run that died go out again, after a read of Degreed, once it has passed", DELIVERY)

IMOCHA_PIPELINE_BULK_GRACE_HOURS = Setting(
    "IMOCHA_PIPELINE_BULK_GRACE_HOURS", Number(minimum=0.0, noun="a number of hours"), 48.0,
    "how long a completion sent in a Completions Template file (`bulk-export`) waits for Degreed's overnight "
    "processing; the reconcile or catch-up sends it by API after that if Degreed does not show it", DELIVERY)
IMOCHA_PIPELINE_BULK_TARGET = Setting(
    "IMOCHA_PIPELINE_BULK_TARGET", Choice(("directory", "sftp")), "directory",
    "where `bulk-export` puts the Completions Template file: `directory` (IMOCHA_PIPELINE_BULK_DIRECTORY, for the "
    "admin's File Upload page) or `sftp` (the organisation's SFTP folder, DEGREED_SFTP_*)", DELIVERY)
IMOCHA_PIPELINE_BULK_DIRECTORY = Setting(
    "IMOCHA_PIPELINE_BULK_DIRECTORY", Text(), "degreed_files",
    "folder the Completions Template files are written to (created if missing; with `sftp` a copy stays here)",
    DELIVERY)
IMOCHA_PIPELINE_BULK_CLIENT_NAME = Setting(
    "IMOCHA_PIPELINE_BULK_CLIENT_NAME", Text(), "",
    "the `{Client}` part of the file name `{Client}_Completions_File_YYYYMMDDHHMMSS.csv`", DELIVERY,
    shown_default="DEGREED_ORGANIZATION_CODE, else `iMocha`")
DEGREED_SFTP_HOST = Setting(
    "DEGREED_SFTP_HOST", Text(), "", "host of the organisation's Degreed SFTP folder (`bulk-export` with `sftp`)",
    CONNECTIONS)
DEGREED_SFTP_PORT = Setting(
    "DEGREED_SFTP_PORT", WholeNumber(minimum=1, maximum=65535), 22, "port of the Degreed SFTP server", CONNECTIONS)
DEGREED_SFTP_USER = Setting(
    "DEGREED_SFTP_USER", Text(), "", "user name on the Degreed SFTP server", CONNECTIONS)
DEGREED_SFTP_KEY_PATH = Setting(
    "DEGREED_SFTP_KEY_PATH", Text(), "", "path of the private key (OpenSSH format) that logs in to the SFTP server",
    CONNECTIONS)
DEGREED_SFTP_KNOWN_HOSTS = Setting(
    "DEGREED_SFTP_KNOWN_HOSTS", Text(), "",
    "known_hosts file holding the SFTP server's host key (the upload refuses a server it cannot verify)",
    CONNECTIONS, shown_default="`~/.ssh/known_hosts`")
DEGREED_SFTP_FOLDER = Setting(
    "DEGREED_SFTP_FOLDER", Text(), "", "remote folder the files go to (Degreed's inbound folder for completions)",
    CONNECTIONS, shown_default="the login folder")

# ---------------------------------------------------------------------------------------------------------
# The callback endpoint (`imocha-pipeline callbacks`)

IMOCHA_PIPELINE_CALLBACK_TOKEN = Setting(
    "IMOCHA_PIPELINE_CALLBACK_TOKEN",
    Text(min_length=16, hint="e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"), None,
    "the secret path segment of the callback URL given to iMocha, at least 16 characters", CALLBACK_ENDPOINT,
    required=True, secret=True, shown_default="(required by `imocha-pipeline callbacks`)")
IMOCHA_PIPELINE_CALLBACK_HOST = Setting(
    "IMOCHA_PIPELINE_CALLBACK_HOST", Text(), "127.0.0.1", "interface the callback endpoint listens on",
    CALLBACK_ENDPOINT)
IMOCHA_PIPELINE_CALLBACK_PORT = Setting(
    "IMOCHA_PIPELINE_CALLBACK_PORT", WholeNumber(minimum=1, maximum=65535), 8790,
    "port the callback endpoint listens on", CALLBACK_ENDPOINT)
IMOCHA_PIPELINE_CALLBACK_MAX_BODY_BYTES = Setting(
    "IMOCHA_PIPELINE_CALLBACK_MAX_BODY_BYTES", WholeNumber(minimum=1024), 65536,
    "largest callback body accepted; a larger one is answered 413 and not read further", CALLBACK_ENDPOINT)
IMOCHA_PIPELINE_CALLBACK_READ_TIMEOUT_SECONDS = Setting(
    "IMOCHA_PIPELINE_CALLBACK_READ_TIMEOUT_SECONDS", Number(above=0.0), 10.0,
    "seconds a client has to send the whole body; a slower one is answered 408 and disconnected",
    CALLBACK_ENDPOINT)
IMOCHA_PIPELINE_CALLBACK_RATE_PER_SECOND = Setting(
    "IMOCHA_PIPELINE_CALLBACK_RATE_PER_SECOND", Number(above=0.0), 20.0,
    "requests per second one client address may make on average; more are answered 429 with Retry-After",
    CALLBACK_ENDPOINT)
IMOCHA_PIPELINE_CALLBACK_RATE_BURST = Setting(
    "IMOCHA_PIPELINE_CALLBACK_RATE_BURST", WholeNumber(minimum=1), 250,
    "requests one client address may make at once before the per-second rate applies (room for a "
    "`callbacks replay`: iMocha re-sends up to 100 callbacks per call at once)", CALLBACK_ENDPOINT)

# ---------------------------------------------------------------------------------------------------------
# Sensors and callbacks (the table under "### Sensors")

IMOCHA_PIPELINE_POLL_INTERVAL_SECONDS = Setting(
    "IMOCHA_PIPELINE_POLL_INTERVAL_SECONDS", WholeNumber(minimum=1), 30,
    "seconds between ticks of `imocha_completions_sensor`", SENSORS, read_at_load=True)
IMOCHA_PIPELINE_POLL_OVERLAP_MINUTES = Setting(
    "IMOCHA_PIPELINE_POLL_OVERLAP_MINUTES", Number(minimum=0.0), 15.0,
    "each tick reads again at least this much before its cursor, for attempts iMocha lists late", SENSORS)
IMOCHA_PIPELINE_POLL_LOOKBACK_HOURS = Setting(
    "IMOCHA_PIPELINE_POLL_LOOKBACK_HOURS", Number(minimum=1.0), 48.0,
    "a missing, corrupt, wrong-version or future cursor restarts this far back", SENSORS)
IMOCHA_PIPELINE_POLL_WINDOW_HOURS = Setting(
    "IMOCHA_PIPELINE_POLL_WINDOW_HOURS", Number(minimum=0.1), 6.0,
    "longest window of one Retrieve Invites call (windows never cross UTC midnight)", SENSORS)
IMOCHA_PIPELINE_POLL_MAX_ATTEMPTS = Setting(
    "IMOCHA_PIPELINE_POLL_MAX_ATTEMPTS", WholeNumber(minimum=1), 500,
    "attempts requested per tick at most (the rest come next tick)", SENSORS)
IMOCHA_PIPELINE_POLL_READ_TIMEOUT_SECONDS = Setting(
    "IMOCHA_PIPELINE_POLL_READ_TIMEOUT_SECONDS", Number(minimum=1.0), 10.0,
    "read timeout of a tick's iMocha calls (a tick stays well under Dagster's 60 s deadline)", SENSORS)
IMOCHA_PIPELINE_POLL_TIME_BUDGET_SECONDS = Setting(
    "IMOCHA_PIPELINE_POLL_TIME_BUDGET_SECONDS", Number(minimum=1.0), 20.0,
    "a tick stops reading after this long; the cursor advances only past the windows read", SENSORS)
IMOCHA_PIPELINE_POLL_MAX_ATTEMPT_MINUTES = Setting(
    "IMOCHA_PIPELINE_POLL_MAX_ATTEMPT_MINUTES", Number(minimum=0.0), 720.0,
    "the re-read span (see above): the longest attempt, start to finish; each tick reads again this much before "
    "its cursor", SENSORS)
IMOCHA_PIPELINE_POLL_RETRY_SECONDS = Setting(
    "IMOCHA_PIPELINE_POLL_RETRY_SECONDS", Number(minimum=1.0), 60.0,
    "first back-off before an attempt not staged is requested again; doubles", SENSORS)
IMOCHA_PIPELINE_POLL_RETRY_MAX_SECONDS = Setting(
    "IMOCHA_PIPELINE_POLL_RETRY_MAX_SECONDS", Number(minimum=1.0), 3600.0,
    "longest back-off between two requests of an attempt not staged", SENSORS)
IMOCHA_PIPELINE_CALLBACK_SENSOR_INTERVAL_SECONDS = Setting(
    "IMOCHA_PIPELINE_CALLBACK_SENSOR_INTERVAL_SECONDS", WholeNumber(minimum=1), 1,
    "seconds between ticks of `imocha_callbacks_sensor` (the daemon evaluates sensors about every 5 s)", SENSORS,
    read_at_load=True)
IMOCHA_PIPELINE_CALLBACK_MAX_ATTEMPT_HOURS = Setting(
    "IMOCHA_PIPELINE_CALLBACK_MAX_ATTEMPT_HOURS", Number(minimum=0.0), 12.0,
    "the longest attempt, start to finish: a callback's run covers each UTC day from the attempt's start to its "
    "delivery, at most this much later", SENSORS)
IMOCHA_PIPELINE_CALLBACK_MAX_PER_TICK = Setting(
    "IMOCHA_PIPELINE_CALLBACK_MAX_PER_TICK", WholeNumber(minimum=1), 1000,
    "final callbacks requested a tick; rows waiting for a queued run do not count (the tick reads on past them, at "
    "most 10 pages)", SENSORS)


CATALOGUE: tuple[Setting, ...] = tuple(value for value in list(globals().values()) if isinstance(value, Setting))
"""Every setting, in the order above (the README's order)."""

BY_NAME: dict[str, Setting] = {setting.name: setting for setting in CATALOGUE}

__all__ = [*BY_NAME, "BY_NAME", "CATALOGUE", "default_staging_db_url"]
