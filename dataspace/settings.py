"""Server settings, read from the environment (prefix ``DATASPACE_``); nothing is created at import time."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DATASPACE_", extra="ignore")

    data_dir: Path = Field(default=Path("var"), description="Directory for the embedded database and keys.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default: SQLite in data_dir.")
    key_file: Path | None = Field(default=None, description="Key material file; default: data_dir/keys.json.")
    bind: str = Field(default="127.0.0.1:8000", description="host:port the server listens on.")
    issuer: str | None = Field(default=None, description="OAuth issuer URL; default: http://<bind>.")
    log_level: str = "INFO"
    access_token_ttl: int = 900
    refresh_token_ttl: int = 14 * 24 * 3600
    # Irreversible actions (erasure, redemption, policy changes) need the person's sign-in (the token's
    # ``auth_time``) at most this many seconds ago; refreshing a token does not renew it (RFC 9470 step-up).
    reauth_seconds: int = Field(default=300, ge=30, le=3600)
    # How long a server remembers that a token is not revoked (0: ask the database on every request). A
    # revocation made through this server takes effect at once; one made through another replica within this.
    token_active_cache_seconds: float = Field(default=2.0, ge=0, le=30)
    # Group commit of consent changes and redemptions (dataspace.groupcommit): how many batches may run at once
    # (each on its own connection) and how many writes one batch takes at most.
    write_threads: int = Field(default=1, ge=1, le=32)
    write_batch_max: int = Field(default=64, ge=1, le=1000)
    # An external OIDC issuer the server also trusts (optional).
    external_issuer: str | None = None
    external_jwks_url: str | None = None
    external_audience: str | None = None
    external_role_claim: str = "roles"
    # Epoch keys (dataspace.vault): where they live, and how often erased subjects' buckets are retired (the
    # bound after which no earlier database backup can open an erased subject). Keep epoch_dir (and the HSM)
    # out of database backups. key_backend "pkcs11" keeps the epoch and signing keys in a PKCS#11 module.
    epoch_dir: Path | None = Field(default=None, description="Epoch keys + re-wrap journal (data_dir/epochs).")
    epoch_buckets: int = Field(default=4096, ge=1, description="Buckets of a NEW key store (fixed once created).")
    epoch_retire_seconds: float = Field(default=60.0, gt=0, description="Retirement pass interval of each server.")
    key_backend: str = Field(default="file", pattern="^(file|pkcs11)$")
    pkcs11_module: str = Field(default="", description="Path of the PKCS#11 module (e.g. libsofthsm2.so).")
    pkcs11_token_label: str = Field(default="dataspace")
    pkcs11_pin_env: str = Field(default="DATASPACE_PKCS11_PIN", description="Env variable holding the user PIN.")
    # Webhooks to http:// and private/loopback addresses (tests, single-host set-ups only).
    webhook_allow_private: bool = False
    # Jobs. Without a broker the server runs jobs itself (the embedded worker). With one (e.g.
    # amqp://guest:guest@127.0.0.1:5672/) jobs are planned into shards and run by ``dataspace worker``
    # processes on any machine that has the same database URL and key file.
    broker_url: str | None = Field(default=None, description="RabbitMQ URL for job dispatch (unset: embedded).")
    broker_queue: str = Field(default="dataspace-jobs", description="Queue name shared by servers and workers.")
    job_shard_subjects: int = Field(default=250_000, ge=1, description="Target eligible subjects per shard.")
    job_heartbeat_seconds: float = Field(default=5.0, gt=0)
    job_stale_seconds: float = Field(default=60.0, gt=0, description="A claim without a heartbeat this long is dead.")
    # Real-time decisions (dataspace.realtime): warm sandboxes per approved ONNX model, recycled after this many
    # decisions (and on any error, a timeout, a contract or catalog change); each answer within the time limit.
    realtime_pool_size: int = Field(default=2, ge=1, le=32, description="Warm sandboxes per served model.")
    realtime_max_decisions: int = Field(default=5000, ge=1, description="Decisions before a warm sandbox is recycled.")
    realtime_request_seconds: float = Field(default=1.0, gt=0, le=60, description="Per-decision sandbox time limit.")
    # What a partner sees of a job's timing (dataspace.jobs.outcomes): times are multiples of the tick, and a
    # job's outcome shows no earlier than ``hold`` after submission, so a model cannot signal by its run time.
    job_release_tick_seconds: int = Field(
        default=60, ge=0, le=3600, description="Partner-visible time granularity (0: exact times, tests only)."
    )
    job_release_hold_seconds: int = Field(
        default=300, ge=0, le=86_400, description="A job's outcome shows to the partner this long after submission."
    )
    # Operations (dataspace.observability). The metrics endpoint listens on its own address, never on the API's
    # (unset: no endpoint); traces go to an OTLP/HTTP collector (unset: tracing off).
    metrics_bind: str | None = Field(default=None, description="host:port of the Prometheus scrape endpoint.")
    # TLS for that endpoint (both files PEM); with a client CA, only scrapers holding a certificate it signed
    # get an answer (mutual TLS, as Prometheus' tls_config presents one).
    metrics_tls_cert: Path | None = None
    metrics_tls_key: Path | None = None
    metrics_client_ca: Path | None = None
    otlp_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP traces URL, e.g. http://otel:4318/v1/traces."
    )
    otlp_service_name: str = "dataspace"
    # Where the last signed checkpoint of each log is copied when it is published (outside the database, so a
    # restored backup can be checked against it); default: <data_dir>/checkpoints.
    checkpoint_dir: Path | None = None
    # Independent witnesses (C2SP tlog-witness) each new checkpoint is submitted to, and the cosignatures a
    # checkpoint needs before clients accept it (dataspace.tlog.cosigning). URLs and cosigner verifier keys
    # are comma-separated, in the same order; quorum 0 keeps the operator's signature alone sufficient.
    witness_urls: str = Field(default="", description="Comma-separated witness URLs (submission prefixes).")
    witness_keys: str = Field(default="", description="Comma-separated cosigner verifier keys, one per URL.")
    witness_quorum: int = Field(default=0, ge=0, le=64, description="Cosignatures a published checkpoint needs.")
    witness_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    # The controller: the organisation responsible for the processing, as receipts, the privacy notice and
    # the records of processing name it (dataspace.compliance.controller). Required: the server refuses to
    # start with a value missing or a placeholder (the demo sets its own, visibly-demo identity).
    controller_name: str = Field(default="", description="Legal name of the controller.")
    controller_address: str = Field(default="", description="Postal address of the controller.")
    controller_email: str = Field(default="", description="E-mail for privacy questions and requests.")
    controller_phone: str = Field(default="", description="Telephone number (international form, +86 ...).")
    controller_dpo: str = Field(default="", description="Data protection officer: 'Name <e-mail>' or an e-mail.")
    controller_jurisdiction: str = Field(default="", description="ISO 3166 code of the governing law, e.g. CN, DE.")
    controller_notice_url: str | None = Field(
        default=None, description="Public privacy-notice URL; default: <issuer>/privacy (served by the server)."
    )

    @property
    def resolved_checkpoint_dir(self) -> Path:
        return self.checkpoint_dir if self.checkpoint_dir is not None else self.data_dir / "checkpoints"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return normalize_database_url(self.database_url)
        return f"sqlite:///{(self.data_dir / 'dataspace.db').resolve()}"

    @property
    def resolved_key_file(self) -> Path:
        return self.key_file if self.key_file is not None else self.data_dir / "keys.json"

    @property
    def resolved_epoch_dir(self) -> Path:
        return self.epoch_dir if self.epoch_dir is not None else self.data_dir / "epochs"

    @property
    def resolved_issuer(self) -> str:
        return (self.issuer or f"http://{self.bind}").rstrip("/")


def normalize_database_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
