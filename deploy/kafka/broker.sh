#!/usr/bin/env bash
# deploy/kafka/broker.sh — a real, local, single-node Apache Kafka broker (KRaft, broker+controller
# in one JVM) for development, tests and CI. No Docker: the broker's jars come from Maven Central
# (deploy/kafka/pom.xml) and run on the local Java 17.
#
#   broker.sh fetch     resolve the Kafka jars into the cache (skipped when already cached)
#   broker.sh start     start the broker in the background and wait until it accepts clients;
#                       a broker already answering on the port is reused (exit 0)
#   broker.sh stop      SIGTERM, wait up to 30 s, then SIGKILL
#   broker.sh status    exit 0 when a broker is answering on the port
#   broker.sh restart   stop + start (the data directory is kept)
#   broker.sh logs [N]  tail the broker log (N lines, default 100)
#   broker.sh <command> --secure   the same for the SECURED broker (or KAFKA_SECURE=1), see below
#
# Environment (all optional):
#   DISTILLWATCH_CACHE     cache root                    (default ~/.cache/distillwatch)
#   KAFKA_PORT             client port                   (default 9092)
#   KAFKA_CONTROLLER_PORT  KRaft controller port         (default 9093)
#   KAFKA_HOST             listen/advertised address     (default 127.0.0.1)
#   KAFKA_DATA_DIR         log/metadata dir              (default $DISTILLWATCH_CACHE/kafka-data-<port>)
#   KAFKA_HEAP_OPTS        JVM heap                      (default -Xms256m -Xmx512m)
#   KAFKA_START_TIMEOUT    seconds to wait for readiness (default 90)
#   KAFKA_CLUSTER_ID       cluster id used when formatting a new data dir
#   DISTILLWATCH_PYTHON    python with confluent-kafka used for the readiness probe
#                          (default: the repo's .venv/bin/python if present, else python3;
#                          falls back to Kafka's own BrokerApiVersionsCommand)
#   KAFKA_RUN_DIR          run files (properties, pid, logs) (default $DISTILLWATCH_CACHE/kafka-run-<port>)
#
# Secured broker (--secure or KAFKA_SECURE=1): a second broker that runs beside the plain one,
# client listener SASL_SSL on 127.0.0.1:9094 (SCRAM-SHA-512 over TLS), controller listener SSL
# with mutual TLS on 127.0.0.1:9095, data in kafka-data-secure-<port>, run files in
# kafka-run-secure-<port>. At format time it generates, in <run dir>/secrets/ (mode 700):
#   ca.pem                 a local CA (the PEM file librdkafka clients use as ssl.ca.location)
#   broker.p12             the broker's key + certificate (SAN 127.0.0.1, localhost, $KAFKA_HOST)
#   credentials.env        random passwords of the SCRAM users (admin, detector, subscriber),
#                          created with `kafka-storage format --add-scram`; never printed
#   admin.properties       client config of the admin user for Kafka's own tools
# and once the broker is ready it sets StandardAuthorizer ACLs (deny by default):
#   admin (super user)     everything (also the broker's own TLS identity on the controller)
#   detector               Read+Describe the requests topic; Write+Describe+Create the flags and
#                          DLQ topics; Read+Write+Create+Describe the internal topics (prefix);
#                          Read+Describe its consumer groups (prefix = its group id, which also
#                          covers the per-stage groups and the changelog restore groups);
#                          Write+Describe its transactional ids (same prefix)
#   subscriber             Read+Describe the flags topic; Read+Describe its group (prefix)
# Variables (secure mode): KAFKA_SECURE_ADMIN_USER (admin), KAFKA_SECURE_DETECTOR_USER
# (distillwatch-detector), KAFKA_SECURE_SUBSCRIBER_USER (distillwatch-enforce),
# KAFKA_ACL_REQUESTS_TOPIC (llm.requests), KAFKA_ACL_FLAGS_TOPIC (distillation.flags),
# KAFKA_ACL_DLQ_TOPIC (llm.requests.dlq), KAFKA_ACL_INTERNAL_PREFIX (distillwatch.),
# KAFKA_ACL_DETECTOR_GROUP (distillwatch-detector: groups + transactional ids prefix),
# KAFKA_ACL_SUBSCRIBER_GROUP (distillwatch-enforce).
set -euo pipefail

# `--secure` anywhere on the command line selects the secured broker.
_args=()
for _a in "$@"; do
  if [[ "$_a" == "--secure" ]]; then KAFKA_SECURE=1; else _args+=("$_a"); fi
done
set -- "${_args[@]+"${_args[@]}"}"
SECURE="${KAFKA_SECURE:-0}"
[[ "$SECURE" == "1" || "$SECURE" == "true" ]] && SECURE=1 || SECURE=0

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"
POM="$SCRIPT_DIR/pom.xml"
LOG4J2_CONFIG="$SCRIPT_DIR/log4j2.yaml"

KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n1)"
CACHE_ROOT="${DISTILLWATCH_CACHE:-$HOME/.cache/distillwatch}"
KAFKA_HOME="$CACHE_ROOT/kafka-$KAFKA_VERSION"
LIBS="$KAFKA_HOME/libs"
FETCH_MARKER="$KAFKA_HOME/.fetched"

HOST="${KAFKA_HOST:-127.0.0.1}"
if ((SECURE)); then
  PORT="${KAFKA_PORT:-9094}"
  CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9095}"
  DATA_DIR="${KAFKA_DATA_DIR:-$CACHE_ROOT/kafka-data-secure-$PORT}"
  RUN_DIR="${KAFKA_RUN_DIR:-$CACHE_ROOT/kafka-run-secure-$PORT}"
else
  PORT="${KAFKA_PORT:-9092}"
  CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
  DATA_DIR="${KAFKA_DATA_DIR:-$CACHE_ROOT/kafka-data-$PORT}"
  RUN_DIR="${KAFKA_RUN_DIR:-$CACHE_ROOT/kafka-run-$PORT}"
fi
SECRETS_DIR="$RUN_DIR/secrets"
CREDENTIALS="$SECRETS_DIR/credentials.env"
ADMIN_USER="${KAFKA_SECURE_ADMIN_USER:-admin}"
DETECTOR_USER="${KAFKA_SECURE_DETECTOR_USER:-distillwatch-detector}"
SUBSCRIBER_USER="${KAFKA_SECURE_SUBSCRIBER_USER:-distillwatch-enforce}"
BROKER_DN="CN=distillwatch-local-broker"
PID_FILE="$RUN_DIR/kafka.pid"
SERVER_PROPERTIES="$RUN_DIR/server.properties"
SERVER_LOG="$RUN_DIR/server.log"
CONSOLE_LOG="$RUN_DIR/console.log"
LOCK_FILE="$CACHE_ROOT/kafka-$PORT.lock"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT=30
# Fixed so a data dir is always formatted the same way; any 16-byte base64url id works.
CLUSTER_ID="${KAFKA_CLUSTER_ID:-ZGlzdGlsbHdhdGNoLWtmaw}"
BOOTSTRAP="$HOST:$PORT"

log() { printf '[broker] %s\n' "$*"; }
err() { printf '[broker] ERROR: %s\n' "$*" >&2; }

# --- helpers -----------------------------------------------------------------------------------

pom_digest() { sha256sum "$POM" | cut -d" " -f1; }

port_open() { # true when something accepts TCP connections on $1
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

pick_python() {
  local candidates=()
  [[ -n "${DISTILLWATCH_PYTHON:-}" ]] && candidates+=("$DISTILLWATCH_PYTHON")
  [[ -x "$REPO_DIR/.venv/bin/python" ]] && candidates+=("$REPO_DIR/.venv/bin/python")
  candidates+=(python3 python)
  local py
  for py in "${candidates[@]}"; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import confluent_kafka' >/dev/null 2>&1; then
      echo "$py"
      return 0
    fi
  done
  return 1
}

# probe TIMEOUT_S: exit 0 when a Kafka broker answers a metadata request on $BOOTSTRAP.
probe() {
  local timeout="${1:-5}"
  port_open "$PORT" || return 1
  local py
  if ((SECURE)); then
    # the secured broker answers only authenticated clients: probe as the admin user
    [[ -f "$CREDENTIALS" ]] || return 1
    py="$(pick_python)" || return 1
    (
      # shellcheck disable=SC1090
      source "$CREDENTIALS"
      DW_PROBE_USER="$KAFKA_ADMIN_USER" DW_PROBE_PASSWORD="$KAFKA_ADMIN_PASSWORD" \
        DW_PROBE_CA="$SECRETS_DIR/ca.pem" "$py" - "$BOOTSTRAP" "$timeout" >/dev/null 2>&1 <<'PY'
import os, sys
from confluent_kafka.admin import AdminClient
try:
    admin = AdminClient({"bootstrap.servers": sys.argv[1], "log_level": 0,
                         "socket.connection.setup.timeout.ms": 2000,
                         "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                         "sasl.username": os.environ["DW_PROBE_USER"],
                         "sasl.password": os.environ["DW_PROBE_PASSWORD"],
                         "ssl.ca.location": os.environ["DW_PROBE_CA"]})
    md = admin.list_topics(timeout=float(sys.argv[2]))
    sys.exit(0 if md.brokers else 1)
except Exception:
    sys.exit(1)
PY
    )
    return $?
  fi
  if py="$(pick_python)"; then
    "$py" - "$BOOTSTRAP" "$timeout" >/dev/null 2>&1 <<'PY'
import sys
from confluent_kafka.admin import AdminClient
try:
    admin = AdminClient({"bootstrap.servers": sys.argv[1], "log_level": 0,
                         "socket.connection.setup.timeout.ms": 2000})
    md = admin.list_topics(timeout=float(sys.argv[2]))
    sys.exit(0 if md.brokers else 1)
except Exception:
    sys.exit(1)
PY
  elif [[ -f "$FETCH_MARKER" ]]; then
    timeout "$((timeout + 10))" java -Xmx128m -cp "$LIBS/*" \
      -Dlog4j2.configurationFile="$LOG4J2_CONFIG" -Dkafka.logs.dir="$RUN_DIR" \
      org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server "$BOOTSTRAP" \
      >/dev/null 2>&1
  else
    return 1
  fi
}

running_pid() { # prints the pid of the broker this script started, if it is alive
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against pid reuse: the process must be our kafka.Kafka JVM.
  # no pipe into grep -q here: under pipefail an early exit of grep can fail the pipeline
  [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" == *kafka.Kafka* ]] || return 1
  echo "$pid"
}

show_log_tail() {
  local n="${1:-60}"
  if [[ -s "$SERVER_LOG" ]]; then
    echo "----- last $n lines of $SERVER_LOG -----" >&2
    tail -n "$n" "$SERVER_LOG" >&2
  fi
  if [[ -s "$CONSOLE_LOG" ]]; then
    echo "----- last $n lines of $CONSOLE_LOG -----" >&2
    tail -n "$n" "$CONSOLE_LOG" >&2
  fi
  echo "-----" >&2
}

with_lock() { # serialise start/stop between concurrent callers (several test sessions)
  mkdir -p "$CACHE_ROOT"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$LOCK_FILE"
    if ! flock -w 180 9; then
      err "could not take $LOCK_FILE within 180 s"
      exit 1
    fi
  fi
  "$@"
}

# --- commands ----------------------------------------------------------------------------------

cmd_fetch() {
  local digest
  digest="$(pom_digest)"
  if [[ -f "$FETCH_MARKER" && "$(cat "$FETCH_MARKER")" == "$digest" ]]; then
    log "Kafka $KAFKA_VERSION jars already cached in $LIBS"
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || { err "mvn (Apache Maven) is not installed"; exit 1; }
  mkdir -p "$KAFKA_HOME"
  local tmp="$KAFKA_HOME/libs.tmp.$$"
  rm -rf "$tmp"
  log "fetching Kafka $KAFKA_VERSION jars with Maven into $LIBS ..."
  if ! mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp" >"$tmp.log" 2>&1; then
    cat "$tmp.log" >&2
    rm -rf "$tmp" "$tmp.log"
    err "Maven could not resolve Kafka $KAFKA_VERSION (Maven's output above)"
    exit 1
  fi
  rm -f "$tmp.log"
  if ! ls "$tmp"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null 2>&1; then
    rm -rf "$tmp"
    err "Maven finished but kafka_2.13-$KAFKA_VERSION.jar is missing"
    exit 1
  fi
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
  echo "$digest" >"$FETCH_MARKER"
  log "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars"
}

write_server_properties() {
  mkdir -p "$RUN_DIR" "$DATA_DIR"
  cat >"$SERVER_PROPERTIES" <<EOF
# Generated by deploy/kafka/broker.sh — single-node KRaft broker+controller for local use.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA_DIR

$(single_node_properties)
EOF
}

single_node_properties() { # what both the plain and the secured broker need on one small machine
  cat <<EOF
# One node: every internal topic has replication factor 1.
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

# Our code creates its topics explicitly.
auto.create.topics.enable=false
num.partitions=1
delete.topic.enable=true
group.initial.rebalance.delay.ms=0

# Small machine (2 cores).
num.network.threads=2
num.io.threads=4
background.threads=4
log.cleaner.threads=1
num.recovery.threads.per.data.dir=1
EOF
}

# --- secured broker: certificates, SCRAM users, ACLs ------------------------------------------

gen_secrets() { # a local CA, the broker's PKCS#12 keystore, random SCRAM passwords (never printed)
  command -v openssl >/dev/null 2>&1 || { err "openssl is not installed"; exit 1; }
  rm -rf "$SECRETS_DIR"
  mkdir -p "$SECRETS_DIR"
  chmod 700 "$SECRETS_DIR"
  local d="$SECRETS_DIR"
  (
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=distillwatch-local-ca" \
      -keyout "$d/ca.key" -out "$d/ca.pem" >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -subj "/${BROKER_DN}" \
      -keyout "$d/broker.key" -out "$d/broker.csr" >/dev/null 2>&1
    san="subjectAltName=IP:127.0.0.1,DNS:localhost"
    if [[ "$HOST" =~ ^[0-9.]+$ ]]; then
      [[ "$HOST" != 127.0.0.1 ]] && san="$san,IP:$HOST"
    elif [[ "$HOST" != localhost ]]; then
      san="$san,DNS:$HOST"
    fi
    printf '%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$san" >"$d/broker.ext"
    openssl x509 -req -in "$d/broker.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
      -days 825 -sha256 -extfile "$d/broker.ext" -out "$d/broker.pem" >/dev/null 2>&1
    store_pw="$(openssl rand -hex 24)"
    openssl pkcs12 -export -name broker -inkey "$d/broker.key" -in "$d/broker.pem" \
      -certfile "$d/ca.pem" -passout "pass:$store_pw" -out "$d/broker.p12" >/dev/null 2>&1
    rm -f "$d/broker.csr" "$d/broker.ext" "$d/ca.srl" "$d/broker.key" "$d/ca.key"
    {
      echo "# generated by deploy/kafka/broker.sh --secure; secrets: never print or commit"
      echo "KAFKA_STORE_PASSWORD=$store_pw"
      echo "KAFKA_ADMIN_USER=$ADMIN_USER"
      echo "KAFKA_ADMIN_PASSWORD=$(openssl rand -hex 24)"
      echo "KAFKA_DETECTOR_USER=$DETECTOR_USER"
      echo "KAFKA_DETECTOR_PASSWORD=$(openssl rand -hex 24)"
      echo "KAFKA_SUBSCRIBER_USER=$SUBSCRIBER_USER"
      echo "KAFKA_SUBSCRIBER_PASSWORD=$(openssl rand -hex 24)"
    } >"$CREDENTIALS"
  ) || { err "could not generate the TLS material in $SECRETS_DIR"; exit 1; }
  chmod 644 "$d/ca.pem"
  log "generated a local CA ($d/ca.pem), the broker keystore and SCRAM credentials ($CREDENTIALS)"
}

write_secure_server_properties() {
  mkdir -p "$RUN_DIR" "$DATA_DIR"
  # shellcheck disable=SC1090
  source "$CREDENTIALS"
  local d="$SECRETS_DIR"
  (
    umask 077
    cat >"$SERVER_PROPERTIES" <<EOF
# Generated by deploy/kafka/broker.sh --secure — single-node KRaft broker+controller, SASL_SSL.
# Contains the keystore password and the inter-broker SCRAM password: mode 600, never commit.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=SASL_SSL://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=SASL_SSL://$HOST:$PORT
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
log.dirs=$DATA_DIR

# TLS: one keystore (the broker's key + certificate signed by the local CA), the CA as truststore.
ssl.keystore.type=PKCS12
ssl.keystore.location=$d/broker.p12
ssl.keystore.password=$KAFKA_STORE_PASSWORD
ssl.truststore.type=PEM
ssl.truststore.location=$d/ca.pem
ssl.endpoint.identification.algorithm=https
# The controller listener takes only clients with a certificate of the local CA (mutual TLS):
# the broker itself. Its principal is User:$BROKER_DN.
listener.name.controller.ssl.client.auth=required

# SASL/SCRAM-SHA-512 for clients and between brokers (users created at format time).
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$KAFKA_ADMIN_USER" password="$KAFKA_ADMIN_PASSWORD";

# Authorization: deny unless an ACL allows it.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:$KAFKA_ADMIN_USER;User:$BROKER_DN

$(single_node_properties)
EOF
    cat >"$d/admin.properties" <<EOF
# Admin client config for Kafka's own tools (kafka-acls, kafka-topics ...): --command-config
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$KAFKA_ADMIN_USER" password="$KAFKA_ADMIN_PASSWORD";
ssl.truststore.type=PEM
ssl.truststore.location=$d/ca.pem
EOF
  )
}

scram_args() { # --add-scram arguments of the format command (from the credentials file)
  # shellcheck disable=SC1090
  source "$CREDENTIALS"
  printf '%s\n' --add-scram "SCRAM-SHA-512=[name=$KAFKA_ADMIN_USER,password=$KAFKA_ADMIN_PASSWORD]"
  printf '%s\n' --add-scram "SCRAM-SHA-512=[name=$KAFKA_DETECTOR_USER,password=$KAFKA_DETECTOR_PASSWORD]"
  printf '%s\n' --add-scram "SCRAM-SHA-512=[name=$KAFKA_SUBSCRIBER_USER,password=$KAFKA_SUBSCRIBER_PASSWORD]"
}

set_acls() { # StandardAuthorizer ACLs of the detector and subscriber users (idempotent)
  local py n
  py="$(pick_python)" || { err "the ACLs need a python with confluent-kafka (DISTILLWATCH_PYTHON)"; exit 1; }
  n="$(
    # shellcheck disable=SC1090
    source "$CREDENTIALS"
    DW_ADMIN_USER="$KAFKA_ADMIN_USER" DW_ADMIN_PASSWORD="$KAFKA_ADMIN_PASSWORD" DW_CA="$SECRETS_DIR/ca.pem" \
    DW_DETECTOR="$KAFKA_DETECTOR_USER" DW_SUBSCRIBER="$KAFKA_SUBSCRIBER_USER" \
    DW_REQUESTS="${KAFKA_ACL_REQUESTS_TOPIC:-llm.requests}" DW_FLAGS="${KAFKA_ACL_FLAGS_TOPIC:-distillation.flags}" \
    DW_DLQ="${KAFKA_ACL_DLQ_TOPIC:-llm.requests.dlq}" DW_INTERNAL="${KAFKA_ACL_INTERNAL_PREFIX:-distillwatch.}" \
    DW_DGROUP="${KAFKA_ACL_DETECTOR_GROUP:-distillwatch-detector}" \
    DW_SGROUP="${KAFKA_ACL_SUBSCRIBER_GROUP:-distillwatch-enforce}" \
      "$py" - "$BOOTSTRAP" <<'PY'
import os, sys
from confluent_kafka.admin import (AclBinding, AclOperation as Op, AclPermissionType, AdminClient,
                                   ResourcePatternType as Pat, ResourceType as Res)
e = os.environ
admin = AdminClient({"bootstrap.servers": sys.argv[1], "security.protocol": "SASL_SSL",
                     "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": e["DW_ADMIN_USER"],
                     "sasl.password": e["DW_ADMIN_PASSWORD"], "ssl.ca.location": e["DW_CA"]})
det, sub = "User:" + e["DW_DETECTOR"], "User:" + e["DW_SUBSCRIBER"]
rules = [
    (det, Res.TOPIC, e["DW_REQUESTS"], Pat.LITERAL, [Op.READ, Op.DESCRIBE]),
    (det, Res.TOPIC, e["DW_FLAGS"], Pat.LITERAL, [Op.WRITE, Op.DESCRIBE, Op.CREATE]),
    (det, Res.TOPIC, e["DW_DLQ"], Pat.LITERAL, [Op.WRITE, Op.DESCRIBE, Op.CREATE]),
    (det, Res.TOPIC, e["DW_INTERNAL"], Pat.PREFIXED, [Op.READ, Op.WRITE, Op.CREATE, Op.DESCRIBE]),
    (det, Res.GROUP, e["DW_DGROUP"], Pat.PREFIXED, [Op.READ, Op.DESCRIBE]),
    (det, Res.TRANSACTIONAL_ID, e["DW_DGROUP"], Pat.PREFIXED, [Op.WRITE, Op.DESCRIBE]),
    (sub, Res.TOPIC, e["DW_FLAGS"], Pat.LITERAL, [Op.READ, Op.DESCRIBE]),
    (sub, Res.GROUP, e["DW_SGROUP"], Pat.PREFIXED, [Op.READ, Op.DESCRIBE]),
]
bindings = [AclBinding(rt, name, pat, principal, "*", op, AclPermissionType.ALLOW)
            for principal, rt, name, pat, ops in rules for op in ops]
for fut in admin.create_acls(bindings, request_timeout=30).values():
    fut.result()
print(len(bindings))
PY
  )" || { err "could not set the ACLs"; exit 1; }
  log "ACLs set: $n bindings for $DETECTOR_USER and $SUBSCRIBER_USER"
}

cmd_start() {
  if pid="$(running_pid)"; then
    if probe 5; then
      log "broker already running (pid $pid) and answering on $BOOTSTRAP — reusing it"
      return 0
    fi
    log "broker process $pid exists but does not answer yet; waiting for it"
    wait_ready "$pid"
    return $?
  fi
  if probe 5; then
    log "a Kafka broker already answers on $BOOTSTRAP (not started by this script) — reusing it"
    return 0
  fi
  if port_open "$PORT"; then
    err "port $PORT is in use by something that is not an answering Kafka broker"
    exit 1
  fi
  command -v java >/dev/null 2>&1 || { err "java (17+) is not installed"; exit 1; }

  cmd_fetch
  local format_extra=()
  if ((SECURE)); then
    if [[ ! -f "$DATA_DIR/meta.properties" ]]; then
      gen_secrets # new data dir: new CA, keystore and SCRAM users
    elif [[ ! -f "$CREDENTIALS" ]]; then
      err "$DATA_DIR is formatted but $CREDENTIALS is missing (delete the data dir to start over)"
      exit 1
    fi
    write_secure_server_properties
    mapfile -t format_extra < <(scram_args)
  else
    write_server_properties
  fi
  log "config: $SERVER_PROPERTIES"

  if [[ ! -f "$DATA_DIR/meta.properties" ]]; then
    log "formatting storage in $DATA_DIR (cluster id $CLUSTER_ID)"
    if ! java -Xmx256m -cp "$LIBS/*" -Dlog4j2.configurationFile="$LOG4J2_CONFIG" \
        -Dkafka.logs.dir="$RUN_DIR" kafka.tools.StorageTool format \
        -t "$CLUSTER_ID" -c "$SERVER_PROPERTIES" --ignore-formatted \
        "${format_extra[@]+"${format_extra[@]}"}" >"$RUN_DIR/format.log" 2>&1; then
      err "storage format failed:"
      cat "$RUN_DIR/format.log" >&2
      exit 1
    fi
  else
    log "data dir $DATA_DIR already formatted (data is kept)"
  fi

  : >"$CONSOLE_LOG"
  log "starting Kafka $KAFKA_VERSION on $BOOTSTRAP (controller $HOST:$CONTROLLER_PORT)"
  # shellcheck disable=SC2086
  nohup java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} \
    -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$LOG4J2_CONFIG" -Dkafka.logs.dir="$RUN_DIR" \
    -cp "$LIBS/*" kafka.Kafka "$SERVER_PROPERTIES" \
    >>"$CONSOLE_LOG" 2>&1 </dev/null 9>&- &
  local pid=$!
  echo "$pid" >"$PID_FILE"
  log "pid $pid, log $SERVER_LOG"
  wait_ready "$pid"
  if ((SECURE)); then
    set_acls
    log "secured broker: SASL_SSL (SCRAM-SHA-512) on $BOOTSTRAP, CA $SECRETS_DIR/ca.pem, users in $CREDENTIALS"
  fi
}

wait_ready() {
  local pid="$1" start now
  start="$(date +%s)"
  log "waiting up to ${START_TIMEOUT}s for the broker to accept clients ..."
  while true; do
    if ! kill -0 "$pid" 2>/dev/null; then
      err "broker process $pid exited during start-up"
      rm -f "$PID_FILE"
      show_log_tail 80
      exit 1
    fi
    if probe 3; then
      now="$(date +%s)"
      log "broker ready on $BOOTSTRAP after $((now - start))s"
      return 0
    fi
    now="$(date +%s)"
    if ((now - start >= START_TIMEOUT)); then
      err "broker did not accept clients within ${START_TIMEOUT}s (pid $pid still running)"
      show_log_tail 80
      exit 1
    fi
    sleep 1
  done
}

cmd_stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE"
    if probe 3; then
      log "a broker answers on $BOOTSTRAP but was not started by this script; not stopping it"
    else
      log "broker not running"
    fi
    return 0
  fi
  log "stopping broker (pid $pid) ..."
  kill -TERM "$pid" 2>/dev/null || true
  local waited=0
  while kill -0 "$pid" 2>/dev/null && ((waited < STOP_TIMEOUT)); do
    sleep 1
    waited=$((waited + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "broker did not stop within ${STOP_TIMEOUT}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  fi
  rm -f "$PID_FILE"
  log "broker stopped after ${waited}s"
}

cmd_restart() {
  cmd_stop
  cmd_start
}

cmd_status() {
  local pid=""
  pid="$(running_pid)" || pid=""
  if probe 5; then
    if [[ -n "$pid" ]]; then
      log "running (pid $pid) and answering on $BOOTSTRAP"
    else
      log "a broker answers on $BOOTSTRAP (not started by this script)"
    fi
    return 0
  fi
  if [[ -n "$pid" ]]; then
    log "process $pid is running but not answering on $BOOTSTRAP"
  else
    log "not running"
  fi
  return 1
}

cmd_logs() {
  local n="${1:-100}"
  if [[ ! -f "$SERVER_LOG" && ! -f "$CONSOLE_LOG" ]]; then
    log "no log yet in $RUN_DIR"
    return 0
  fi
  [[ -f "$SERVER_LOG" ]] && tail -n "$n" "$SERVER_LOG"
  if [[ -s "$CONSOLE_LOG" ]]; then
    echo "----- $CONSOLE_LOG -----"
    tail -n "$n" "$CONSOLE_LOG"
  fi
}

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

case "${1:-}" in
  fetch) with_lock cmd_fetch ;;
  start) with_lock cmd_start ;;
  stop) with_lock cmd_stop ;;
  status) cmd_status ;;
  restart) with_lock cmd_restart ;;
  logs) cmd_logs "${2:-100}" ;;
  -h | --help | help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
esac
