"""A real Apache Kafka broker (KRaft: broker and controller in one JVM) on 127.0.0.1, no Docker.

The jars come from Maven (infra/kafka_jars.py). `stop()` then `start()` brings the
broker back on the same ports with the same data, which the fault tests use.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient

from infra import _process, kafka_config
from infra._process import LOCALHOST
from infra._server import LocalServer
from infra.kafka_class_archive import (
    class_archive_options,
    publish_class_archive,
    shared_class_archive_option,
)
from infra.kafka_jars import KAFKA_VERSION, kafka_libs, require_tool
from infra.kafka_tls import (
    ClientIdentity,
    client_identity_in,
    ensure_client_identity,
    ensure_tls_identity,
)

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
FORMAT_TIMEOUT_S = 60.0
HEAP = "512m"


class KafkaBroker(LocalServer):
    """One single-node Kafka cluster: its folder (config, data, logs), its ports, its JVM."""

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        sasl_port: int | None = None,
        ssl_port: int | None = None,
        version: str = KAFKA_VERSION,
    ) -> None:
        self._owns_base_dir = base_dir is None
        self.base_dir = base_dir.resolve() if base_dir else None
        self.port = port
        self.controller_port = controller_port
        self.sasl_port = sasl_port
        self.ssl_port = ssl_port
        self.version = version
        self._child: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._libs: Path | None = None
        self._class_archive_being_written: Path | None = None
        if self.base_dir is not None:
            self._adopt_running_broker()

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise RuntimeError("the broker has no port yet: call start() first")
        return f"{LOCALHOST}:{self.port}"

    @property
    def sasl_bootstrap_servers(self) -> str:
        """The listener that takes kafka_config.SASL_USERNAME's PLAIN login, and no other,
        over TLS with a certificate `ca_location` signs."""
        if self.sasl_port is None:
            raise RuntimeError("the broker has no SASL port yet: call start() first")
        return f"{LOCALHOST}:{self.sasl_port}"

    @property
    def ssl_bootstrap_servers(self) -> str:
        """The listener that takes any client showing a certificate `ca_location` signs,
        such as `client_identity`'s, over TLS with a certificate that CA signs too."""
        if self.ssl_port is None:
            raise RuntimeError("the broker has no SSL port yet: call start() first")
        return f"{LOCALHOST}:{self.ssl_port}"

    @property
    def ca_location(self) -> Path:
        """The PEM file a client of the SASL_SSL and SSL listeners trusts (infra/kafka_tls.py)."""
        return self._tls_dir / "ca.pem"

    @property
    def client_identity(self) -> ClientIdentity:
        """A client certificate and key the SSL listener takes, made at start()."""
        return client_identity_in(self._tls_dir)

    @property
    def _tls_dir(self) -> Path:
        return self._require_base_dir() / "tls"

    @property
    def data_dir(self) -> Path:
        """Kafka's log.dirs: the topics' partitions and the KRaft metadata log."""
        return self._require_base_dir() / "data"

    @property
    def log_path(self) -> Path:
        return self._require_base_dir() / "logs" / "server.log"

    @property
    def config_path(self) -> Path:
        return self._require_base_dir() / "server.properties"

    @property
    def pid(self) -> int | None:
        return self._pid if self.is_running() else None

    def is_running(self) -> bool:
        if self._child is not None:
            # Our own child: its command line reads as Python's until exec() runs.
            return self._child.poll() is None
        return self._pid is not None and _process.is_alive(self._pid, str(self.config_path))

    def cluster_id(self) -> str | None:
        """The id the storage was formatted with (meta.properties), None before the first start."""
        properties = _read_properties(self.data_dir / "meta.properties")
        return properties.get("cluster.id")

    def start(self, *, wait: bool = True) -> None:
        """Start the broker, formatting its storage the first time; a no-op if it runs."""
        if self.is_running():
            return
        java = require_tool("java", "to run the Apache Kafka broker (Java 17 or newer)")
        libs = self._libs = kafka_libs(self.version)
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="kafka-")).resolve()
        self.port = self.port or _process.free_port()
        while self.controller_port in (None, self.port):
            self.controller_port = _process.free_port()
        while self.sasl_port in (None, self.port, self.controller_port):
            self.sasl_port = _process.free_port()
        while self.ssl_port in (None, self.port, self.controller_port, self.sasl_port):
            self.ssl_port = _process.free_port()
        self._write_config_files(java)
        if not (self.data_dir / "meta.properties").exists():
            self._format_storage(java, libs)
        archive_options, self._class_archive_being_written = class_archive_options(libs)
        self._child = _process.spawn(
            [
                *self._java_command(java, libs),
                *archive_options,
                "kafka.Kafka",
                str(self.config_path),
            ],
            log_path=self.log_path.with_name("stdout.log"),
            cwd=self.base_dir,
        )
        self._pid = self._child.pid
        self._write_state()
        if wait:
            self.wait_until_ready()

    def wait_until_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Block until the broker serves metadata and consumer groups, or fail with its log."""
        deadline = time.monotonic() + timeout_s
        port = self.port or 0
        while not _process.port_accepts(port):
            self._check_still_running(deadline, timeout_s)
            time.sleep(0.05)
        # Created only now: librdkafka logs every refused connection to stderr.
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 4})
        self._wait_until_registered(admin, deadline, timeout_s)
        _create_consumer_offsets_topic(admin)

    def _wait_until_registered(self, admin: AdminClient, deadline: float, timeout_s: float) -> None:
        while True:
            self._check_still_running(deadline, timeout_s)
            future = admin.describe_cluster(request_timeout=2)
            # exception(), not result(): a raised error would tie this frame and the
            # client into a reference cycle, keeping the client's threads alive.
            with contextlib.suppress(TimeoutError):
                if future.exception(timeout=3) is None and future.result().nodes:
                    # Another broker taking the port first answers too, while ours is still
                    # on its way to failing to bind it: only our cluster id makes it ours.
                    if future.result().cluster_id != self.cluster_id():
                        self._fail(f"found port {self.port} taken by another broker")
                    # An unfenced broker lists itself; before that, creating topics fails.
                    return
            time.sleep(0.1)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Controlled shutdown (SIGTERM, SIGKILL after the deadline); the data stays."""
        if self._pid is not None:
            stopped_in_time = _process.stop_process(
                self._pid,
                marker=str(self.config_path),
                stop_signal=signal.SIGTERM,
                timeout_s=timeout_s,
                child=self._child,
            )
            if self._libs is not None:
                publish_class_archive(
                    self._class_archive_being_written, self._libs, stopped_cleanly=stopped_in_time
                )
        self._forget_process()

    def kill(self) -> None:
        """SIGKILL the JVM, as a crash would; the next start() recovers the logs."""
        if self._pid is not None:
            _process.kill_process(self._pid, marker=str(self.config_path), child=self._child)
        self._forget_process()

    def _java_command(self, java: str, libs: Path) -> list[str]:
        return [
            java,
            f"-Xmx{HEAP}",
            # The GC settings of Kafka's own start script (kafka-run-class.sh).
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.config_path.with_name('log4j2.properties')}",
            "-cp",
            f"{libs}/*",
        ]

    def _write_config_files(self, java: str) -> None:
        base_dir = self._require_base_dir()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        keystore, ca_certificate = ensure_tls_identity(self._tls_dir, java)
        ensure_client_identity(self._tls_dir, keystore)
        self.config_path.write_text(
            kafka_config.server_properties(
                port=self.port or 0,
                controller_port=self.controller_port or 0,
                sasl_port=self.sasl_port or 0,
                ssl_port=self.ssl_port or 0,
                keystore=keystore,
                ca_certificate=ca_certificate,
                log_dir=self.data_dir,
            )
        )
        (base_dir / "log4j2.properties").write_text(kafka_config.log4j2_properties(self.log_path))

    def _format_storage(self, java: str, libs: Path) -> None:
        _process.run_to_completion(
            [
                *self._java_command(java, libs),
                # The broker's archive holds most classes the tool needs; without one
                # the tool writes none (it would hold only the tool's classes).
                *shared_class_archive_option(libs),
                # A one-shot tool: the JIT's top tier would cost more than it saves.
                "-XX:TieredStopAtLevel=1",
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                kafka_config.new_cluster_id(),
                "--config",
                str(self.config_path),
            ],
            what="kafka-storage format",
            timeout_s=FORMAT_TIMEOUT_S,
            cwd=self._require_base_dir(),
        )

    def _check_still_running(self, deadline: float, timeout_s: float) -> None:
        if not self.is_running():
            self._fail("exited during start-up")
        if time.monotonic() > deadline:
            self._fail(f"did not become ready within {timeout_s:.0f} s")

    def _fail(self, what: str) -> None:
        log, stdout = self.log_path, self.log_path.with_name("stdout.log")
        # The port may belong to whoever made the start-up fail; report the start-up.
        with contextlib.suppress(RuntimeError):
            self.kill()
        raise RuntimeError(
            f"Kafka {self.version} {what}; last lines of {log}:\n{_process.tail(log)}\n"
            f"last lines of {stdout}:\n{_process.tail(stdout, 15)}"
        )

    def _forget_process(self) -> None:
        for port in (self.port, self.controller_port, self.sasl_port, self.ssl_port):
            if port is not None:
                _process.wait_for_port_release(port)
        self._child = None
        self._pid = None
        self._class_archive_being_written = None
        if self.base_dir is not None:
            self._state_path().unlink(missing_ok=True)

    def _state_path(self) -> Path:
        return self._require_base_dir() / "broker.json"

    def _write_state(self) -> None:
        being_written = self._class_archive_being_written
        state = {
            "pid": self._pid,
            "port": self.port,
            "controller_port": self.controller_port,
            "sasl_port": self.sasl_port,
            "ssl_port": self.ssl_port,
            "libs": str(self._libs),
            "class_archive_being_written": str(being_written) if being_written else None,
        }
        # Whole or not at all: a file cut short by a kill reads as no broker, and its
        # clean-up would leave the JVM running.
        partial = self._state_path().with_suffix(f".json.{os.getpid()}.partial")
        partial.write_text(json.dumps(state) + "\n")
        partial.replace(self._state_path())

    def _adopt_running_broker(self) -> None:
        """Take over a broker a previous process started in this folder (`infra up`)."""
        try:
            state = json.loads(self._state_path().read_text())
            pid = int(state["pid"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return
        if _process.is_alive(pid, str(self.config_path)):
            self._pid = pid
            self.port, self.controller_port = state["port"], state["controller_port"]
            # None from a broker started before it had these listeners.
            self.sasl_port = state.get("sasl_port")
            self.ssl_port = state.get("ssl_port")
            self._libs = Path(state["libs"])
            being_written = state.get("class_archive_being_written")
            self._class_archive_being_written = Path(being_written) if being_written else None

    def _require_base_dir(self) -> Path:
        if self.base_dir is None:
            raise RuntimeError("the broker has no folder yet: call start() first")
        return self.base_dir


def _create_consumer_offsets_topic(admin: AdminClient) -> None:
    """Have the broker create __consumer_offsets now rather than for the first consumer group.

    The broker creates it in milliseconds, but librdkafka's coordinator lookup
    backs off meanwhile: the first group of a session would wait about 3 s.
    Any group lookup makes the broker create it; the answer itself does not matter.
    """
    future = admin.describe_consumer_groups(["infra-warm-up"], request_timeout=5)["infra-warm-up"]
    # NOT_COORDINATOR is the expected answer while the topic is being created.
    with contextlib.suppress(TimeoutError):
        future.exception(timeout=6)


def _read_properties(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}
