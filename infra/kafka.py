"""Apache Kafka 3.9.1 in KRaft mode from Maven Central: one node (the default), or a cluster of
several on loopback (`gridflow up --brokers 3`, the production shape), each node a combined
broker + controller and a voter of the quorum.

Guarantee: the jars are resolved once into the cache; each node's storage is formatted once,
every node of a cluster with the cluster's one id (kept in <state>/kafka-cluster.json); the
nodes listen on loopback only; a node is healthy when every node of the cluster is registered
as a broker and the quorum has a leader; the catalogue topics exist after provision, with
replication factor 3 and min.insync.replicas 2 on three brokers.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
import uuid
from importlib import resources
from pathlib import Path

from kafka.errors import InvalidReplicationFactorError, UnknownBrokerIdError

from gridflow.settings import Settings
from gridflow.topics import CATALOGUE, ensure_topics, fitting_replication, min_insync_replicas
from infra.procs import Echo, ServerError, file_lock, port_open, run_logged, split_host_port
from infra.server import Server, require_tool

KAFKA_VERSION = "3.9.1"
HEAP_OPTS = ["-Xms256m", "-Xmx768m"]
JVM_OPTS = [
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
]
MIN_JAVA = 11


def cluster_record_path(settings: Settings) -> Path:
    return settings.state_dir / "kafka-cluster.json"


def read_cluster_record(settings: Settings) -> dict[str, object]:
    """{"brokers": N, "cluster_id": ...} of the multi-node cluster in this state dir, or {}."""
    try:
        record = json.loads(cluster_record_path(settings).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def write_cluster_record(settings: Settings, record: dict[str, object]) -> None:
    path = cluster_record_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def recorded_brokers(settings: Settings) -> int:
    """How many nodes the Kafka of this state dir has: 1 unless `up --brokers N` made more."""
    brokers = read_cluster_record(settings).get("brokers", 1)
    return brokers if isinstance(brokers, int) and brokers > 1 else 1


class Kafka(Server):
    """One node. A single node (the default) is the server `kafka` exactly as ever; node i of a
    cluster of N is `kafka-<i>`, with its own ports, data dir, log and pid file."""

    name = "kafka"
    title = "Apache Kafka (KRaft)"
    start_timeout_s = 60.0
    # Kafka logs every partition it loads; after a hard stop it recovers each one, and a
    # broker with thousands of partitions (test topics never deleted) took over a minute.
    start_cap_s = 900.0
    stop_timeout_s = 30.0
    _java_path: str | None = None

    def __init__(self, settings: Settings, node: int = 1) -> None:
        super().__init__(settings)
        self.node = node
        self.nodes = settings.kafka_nodes()
        if not 1 <= node <= len(self.nodes):
            raise ValueError(f"Kafka node {node} of {len(self.nodes)}")
        if self.clustered:
            self.name = f"kafka-{node}"
            self.title = f"Apache Kafka (KRaft node {node} of {len(self.nodes)})"
            # Every node waits for the others to register, and a JVM each on a small machine
            self.start_timeout_s = 90.0 + 15.0 * len(self.nodes)

    @property
    def clustered(self) -> bool:
        return len(self.nodes) > 1

    # --- paths ---------------------------------------------------------------
    @property
    def dist_dir(self) -> Path:
        return self.settings.cache_dir / f"kafka-{KAFKA_VERSION}"

    @property
    def libs_dir(self) -> Path:
        return self.dist_dir / "libs"

    @property
    def config_path(self) -> Path:
        return self.home / "server.properties"

    @property
    def log4j_path(self) -> Path:
        return self.home / "log4j.properties"

    # --- addresses -----------------------------------------------------------
    @property
    def address(self) -> str:
        if not self.clustered:
            return self.settings.kafka_bootstrap
        return self.nodes[self.node - 1][0]

    @property
    def controller_address(self) -> str:
        if self.clustered:
            return self.nodes[self.node - 1][1]
        host, _ = split_host_port(self.address)
        return f"{host}:{self.settings.kafka_controller_port}"

    @property
    def bootstrap(self) -> str:
        """Every node's broker address: what the cluster's clients bootstrap from."""
        return ",".join(broker for broker, _ in self.nodes) if self.clustered else self.address

    def listen_addresses(self) -> list[tuple[str, int]]:
        return [split_host_port(self.address), split_host_port(self.controller_address)]

    # --- install -------------------------------------------------------------
    def installed(self) -> bool:
        return (self.libs_dir / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file()

    def install(self, echo: Echo) -> None:
        self._java()
        if self.installed():
            return
        mvn = require_tool(self.name, "mvn", "install Maven 3.8+ (apt-get install -y maven)")
        with file_lock(self.settings.cache_dir / ".kafka-install.lock", "Kafka download", echo):
            if self.installed():
                return
            echo(f"{self.name}: downloading Kafka {KAFKA_VERSION} jars from Maven Central "
                 f"into {self.libs_dir} (first time only) ...")
            self.dist_dir.mkdir(parents=True, exist_ok=True)
            pom = self.dist_dir / "pom.xml"
            pom.write_bytes(resources.files("infra").joinpath("kafka-pom.xml").read_bytes())
            staging = self.dist_dir / "libs.partial"
            shutil.rmtree(staging, ignore_errors=True)
            run_logged(
                self.name,
                [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
                 f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
                self.install_log, "downloading Kafka jars", echo, cwd=self.dist_dir,
                timeout_s=900,
            )
            shutil.rmtree(self.libs_dir, ignore_errors=True)
            staging.replace(self.libs_dir)
            echo(f"{self.name}: {len(list(self.libs_dir.glob('*.jar')))} jars cached")

    def _java(self) -> str:
        if self._java_path is not None:
            return self._java_path
        java = require_tool(self.name, "java", f"install a JDK {MIN_JAVA}+ "
                            "(apt-get install -y openjdk-17-jre-headless)")
        major = java_major_version(java)
        if major is not None and major < MIN_JAVA:
            raise ServerError(self.name, f"{java} is Java {major}; Kafka {KAFKA_VERSION} needs "
                              f"Java {MIN_JAVA}+")
        self._java_path = java
        return java

    # --- configure -----------------------------------------------------------
    def prepare(self, echo: Echo) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.server_properties())
        self.log4j_path.write_bytes(
            resources.files("infra").joinpath("kafka-log4j.properties").read_bytes()
        )
        if not (self.data_dir / "meta.properties").exists():
            cluster_id = self._cluster_id()
            echo(f"{self.name}: formatting storage in {self.data_dir} (cluster id {cluster_id})")
            run_logged(
                self.name,
                [self._java(), *self._jvm_base(), "kafka.tools.StorageTool", "format",
                 f"--cluster-id={cluster_id}", "-c", str(self.config_path)],
                self.log_path, "formatting Kafka storage", echo, timeout_s=120,
            )

    def _cluster_id(self) -> str:
        """A new id for a single node; a cluster's nodes share the one in the cluster record
        (made by the first node formatted)."""
        if not self.clustered:
            return new_cluster_id()
        record = read_cluster_record(self.settings)
        cluster_id = record.get("cluster_id")
        if not isinstance(cluster_id, str) or not cluster_id:
            cluster_id = new_cluster_id()
            write_cluster_record(self.settings, {**record, "brokers": len(self.nodes),
                                                 "cluster_id": cluster_id})
        return cluster_id

    def server_properties(self) -> str:
        size = len(self.nodes)
        replicas = fitting_replication(size)
        min_isr = min_insync_replicas(replicas)
        voters = ",".join(f"{i}@{controller}"
                          for i, (_, controller) in enumerate(self.nodes, start=1))
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{self.address},CONTROLLER://{self.controller_address}",
            "advertised.listeners": f"PLAINTEXT://{self.address}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "default.replication.factor": str(replicas),
            "min.insync.replicas": str(min_isr),
            "offsets.topic.replication.factor": str(replicas),
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": str(replicas),
            "transaction.state.log.min.isr": str(min_isr),
            "transaction.state.log.num.partitions": "8",
            "group.initial.rebalance.delay.ms": "0",
            # Every topic is created explicitly: the catalogue's before any worker starts,
            # faust's changelogs through the admin API. Auto-creation stays on all the same:
            # with it off, a worker that asks for a changelog faust has just created, before
            # the broker's metadata has it, is told "unknown topic" rather than "not ready",
            # counts 0 partitions and crashes (PartitionsMismatch; seen on a fresh start).
            # Its cost, a deleted test topic brought back by a client that outlived its test,
            # is swept at the next test session's start (tests/conftest.py).
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
            "num.network.threads": "3",
            "num.io.threads": "4",
            # Partitions are loaded (and after a hard stop, recovered) this many at a time
            "num.recovery.threads.per.data.dir": "2",
        }
        if self.clustered:
            # A replica that was out of sync never becomes leader (no acknowledged write is
            # given up for availability); this is Kafka's default, said here on purpose.
            props["unclean.leader.election.enable"] = "false"
        lines = ["# Written by gridflow infra/kafka.py on every start; edits are overwritten."]
        lines += [f"{key}={value}" for key, value in props.items()]
        return "\n".join(lines) + "\n"

    def _jvm_base(self) -> list[str]:
        return [
            *HEAP_OPTS, *JVM_OPTS,
            f"-Dlog4j.configuration=file:{self.log4j_path}",
            f"-Dkafka.logs.dir={self.log_path.parent}",
            "-cp", f"{self.libs_dir}/*",
        ]

    # --- run -----------------------------------------------------------------
    def command(self) -> list[str]:
        return [self._java(), *self._jvm_base(), "kafka.Kafka", str(self.config_path)]

    def healthy(self) -> bool:
        host, port = split_host_port(self.address)
        if not port_open(host, port):
            return False
        try:
            admin = _admin(self.address, timeout_ms=3000)
        except Exception:
            return False
        try:
            if not self.clustered:
                admin.list_topics()
                return True
            # Asked of this node alone: every node registered as a broker (registering goes
            # through the active controller), and this node knows the quorum's leader.
            brokers = {b["broker_id"] for b in admin.describe_cluster()["brokers"]}
            return brokers == set(range(1, len(self.nodes) + 1)) and self.quorum_leader() is not None
        except Exception:
            return False
        finally:
            admin.close()

    def quorum_leader(self) -> int | None:
        """The quorum leader this node last recorded (its quorum-state file), or None."""
        try:
            state = json.loads((self.data_dir / "__cluster_metadata-0" / "quorum-state").read_text())
        except (OSError, ValueError):
            return None
        leader = state.get("leaderId", -1) if isinstance(state, dict) else -1
        return leader if isinstance(leader, int) and leader > 0 else None

    def provision(self, echo: Echo) -> None:
        if self.node != 1:
            return  # a cluster's catalogue is created once, through node 1 (to every node)
        # The factor fits the cluster as configured, not as a broker's metadata shows it at
        # this moment: a node registered a moment ago can still be fenced, and left out of the
        # brokers a DescribeCluster lists (the topics were once created with 2 replicas of 3).
        created = ensure_catalogue(self.bootstrap, self.settings.topic_prefix,
                                   replication=self.settings.kafka_replication
                                   or fitting_replication(len(self.nodes)))
        prefix = self.settings.topic_prefix
        if created:
            echo(f"{self.name}: created topics {', '.join(created)}")
        else:
            echo(f"{self.name}: catalogue topics under prefix '{prefix}' present")

    def version(self) -> str:
        return KAFKA_VERSION if self.installed() else f"{KAFKA_VERSION} (not downloaded)"


def ensure_catalogue(bootstrap: str, prefix: str, timeout_s: float = 30.0,
                     replication: int = 0) -> list[str]:
    """Create the catalogue topics under `prefix` (gridflow.topics.ensure_topics; `replication`
    0: what fits the cluster) and return only when every partition has a leader, so producers
    and workers can use them at once."""
    names = [spec.name(prefix) for spec in CATALOGUE]
    deadline = time.monotonic() + timeout_s
    admin = _admin(bootstrap, timeout_ms=int(timeout_s * 1000))
    try:
        before = set(admin.list_topics())
        while True:
            try:
                ensure_topics(bootstrap, prefix, timeout_s, replication=replication)
                break
            except RuntimeError as exc:
                # KRaft publishes a new topic to the broker's metadata asynchronously: describing
                # it right after CreateTopics may show 0 partitions. The topics exist; look again.
                if "has 0 partitions" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
            except (InvalidReplicationFactorError, UnknownBrokerIdError):
                # fewer brokers unfenced than the factor asks (a node still catching up with
                # the metadata log after registering), or a request for a node the client's
                # metadata does not list yet (a fresh 3-node cluster once failed its start on
                # UnknownBrokerIdError(3)): ask again until the deadline
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        admin.wait_for_topics(names, timeout_ms=max(1000, int((deadline - time.monotonic()) * 1000)))
    finally:
        admin.close()
    return [name for name in names if name not in before]


def _admin(bootstrap: str, timeout_ms: int):  # type: ignore[no-untyped-def]
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="gridflow-infra",
        request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms,
    )


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (like kafka-storage
    random-uuid). Like Kafka's own Uuid.randomUuid it never starts with "-": one id in 64 would,
    and a command line reads such an id as an option (CI once failed on "-XF058OiRFCZ03bQvpy9FQ")."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def java_major_version(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major
