#!/usr/bin/env bash
# Test services for streamsift: a single-node KRaft Kafka broker, the Pub/Sub emulator,
# Beam's Flink job server, a Java expansion service with KafkaIO, and the Prism runner.
#
#   scripts/services.sh install        download/build everything into the cache (idempotent)
#   scripts/services.sh start          start Kafka + the Pub/Sub emulator (no-op if healthy)
#   scripts/services.sh stop           stop both (SIGTERM, wait, SIGKILL fallback)
#   scripts/services.sh status         show install state and health; exit 1 if a service is down
#   scripts/services.sh env            print `export` lines: eval "$(scripts/services.sh env)"
#   scripts/services.sh restart-kafka  stop + start the broker, keeping its data
#   scripts/services.sh start-kafka|stop-kafka|start-pubsub|stop-pubsub
#   scripts/services.sh check-flink    start the Flink job server jar with the Java 17 flags,
#                                      wait until its job service listens, stop it
#   scripts/services.sh clean          stop everything and delete the run dir (broker data, logs)
#
# Everything installs from package registries only: Maven Central through `mvn`, the Go module
# proxy through `go install`, PyPI through pip. Non-interactive (CI=true, no stdin is fine).
#
# Settings (environment):
#   STREAMSIFT_SERVICES_DIR      cache root   (default ${XDG_CACHE_HOME:-$HOME/.cache}/streamsift)
#   STREAMSIFT_SERVICES_RUN_DIR  pids/logs/data (default $STREAMSIFT_SERVICES_DIR/run)
#   STREAMSIFT_KAFKA_PORT / STREAMSIFT_KAFKA_CONTROLLER_PORT / STREAMSIFT_PUBSUB_PORT
#                                (defaults 19092 / 19093 / 18085, all on 127.0.0.1)
#   STREAMSIFT_SERVICES_TIMEOUT  seconds to wait for a service to answer (default 120)
#   STREAMSIFT_PYTHON            python used for probes and the confluent-kafka install
#                                (default: $VIRTUAL_ENV/bin/python, else python3)
#   STREAMSIFT_TRY_OFFICIAL_JARS 1 (default) = first try Beam's shaded jars at the Python SDK's
#                                version; 0 = go straight to the assembled classpath jars
#
# Versions: Kafka 3.9.1 (KRaft), Prism built at the Python SDK's tag (v2.77.0). Beam's shaded
# job-server / expansion-service jars for 2.77.0 are not on the Maven Central reachable here, so
# install falls back to "launcher" jars (manifest Class-Path over the resolved artifacts):
# Flink job server = beam-runners-flink-1.19 2.62.0 (newest whose whole tree resolves),
# expansion service = beam-sdks-java-expansion-service + io-kafka + harness 2.73.0.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HELPERS="$SCRIPT_DIR/services"
SCRIPT_PATH="$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")"

CACHE_DIR="${STREAMSIFT_SERVICES_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/streamsift}"
RUN_DIR="${STREAMSIFT_SERVICES_RUN_DIR:-$CACHE_DIR/run}"
LOG_DIR="$CACHE_DIR/logs"
TIMEOUT="${STREAMSIFT_SERVICES_TIMEOUT:-120}"
STOP_TIMEOUT="${STREAMSIFT_SERVICES_STOP_TIMEOUT:-30}"

HOST=127.0.0.1
KAFKA_PORT="${STREAMSIFT_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${STREAMSIFT_KAFKA_CONTROLLER_PORT:-19093}"
PUBSUB_PORT="${STREAMSIFT_PUBSUB_PORT:-18085}"
PUBSUB_PROJECT="${STREAMSIFT_PUBSUB_PROJECT:-streamsift-test}"

# --- pinned versions -------------------------------------------------------------------------
DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1
KAFKA_VERSION=3.9.1            # KRaft, Java 17, still speaks the old client protocol versions
SCALA_BINARY=2.13
BEAM_PY_VERSION=2.77.0         # the Python SDK in the venv; Prism is built at the same tag
PRISM_VERSION="v$BEAM_PY_VERSION"
# Official shaded jars tried first (not on the Maven Central reachable here as of writing).
OFFICIAL_FLINK_JOB_SERVER="org.apache.beam:beam-runners-flink-1.20-job-server:$BEAM_PY_VERSION"
OFFICIAL_EXPANSION_SERVICE="org.apache.beam:beam-sdks-java-io-expansion-service:$BEAM_PY_VERSION"
# Fallbacks assembled from individual artifacts: the newest versions whose whole dependency
# tree resolves from the registry.
FLINK_MINOR=1.19
BEAM_FLINK_VERSION=2.62.0      # beam-runners-flink-1.19 + beam-runners-java-job-service
BEAM_IO_VERSION=2.73.0         # beam-sdks-java-expansion-service + io-kafka + harness
KAFKA_CLIENTS_VERSION=3.9.1

# Java 17 flags Flink 1.19/1.20 needs (Flink's own env.java.opts.all list).
FLINK_JAVA_OPTS="-XX:+IgnoreUnrecognizedVMOptions \
--add-exports=java.base/sun.net.util=ALL-UNNAMED \
--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED \
--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED \
--add-opens=java.base/java.lang=ALL-UNNAMED \
--add-opens=java.base/java.net=ALL-UNNAMED \
--add-opens=java.base/java.io=ALL-UNNAMED \
--add-opens=java.base/java.nio=ALL-UNNAMED \
--add-opens=java.base/sun.nio.ch=ALL-UNNAMED \
--add-opens=java.base/java.lang.reflect=ALL-UNNAMED \
--add-opens=java.base/java.text=ALL-UNNAMED \
--add-opens=java.base/java.time=ALL-UNNAMED \
--add-opens=java.base/java.util=ALL-UNNAMED \
--add-opens=java.base/java.util.concurrent=ALL-UNNAMED \
--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED \
--add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED"

KAFKA_HOME="$CACHE_DIR/kafka-$KAFKA_VERSION"
FLINK_DIR="$CACHE_DIR/beam/flink-job-server"
EXPANSION_DIR="$CACHE_DIR/beam/io-expansion-service"
PRISM_BIN="$CACHE_DIR/bin/prism"
M2_REPO="$CACHE_DIR/m2"

export CI="${CI:-}"
export CLOUDSDK_CORE_DISABLE_PROMPTS=1
export MAVEN_OPTS="${MAVEN_OPTS:-} -Djava.awt.headless=true"

# --- small helpers ---------------------------------------------------------------------------
log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

java_bin() {
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then echo "$JAVA_HOME/bin/java"
  elif command -v java >/dev/null 2>&1; then command -v java
  else die "java not found (need a JDK 17+ on PATH or JAVA_HOME)"; fi
}

python_bin() {
  if [[ -n "${STREAMSIFT_PYTHON:-}" ]]; then echo "$STREAMSIFT_PYTHON"
  elif [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then echo "$VIRTUAL_ENV/bin/python"
  elif command -v python3 >/dev/null 2>&1; then command -v python3
  else die "python3 not found (set STREAMSIFT_PYTHON)"; fi
}

tail_log() {  # tail_log FILE [LINES]
  local file="$1" lines="${2:-40}"
  if [[ -f "$file" ]]; then
    printf '[services] ---- last %s lines of %s ----\n' "$lines" "$file" >&2
    tail -n "$lines" "$file" >&2 || true
    printf '[services] ----\n' >&2
  else
    log "(no log file at $file)"
  fi
}

rotate_log() {  # keep the previous run's log as FILE.prev so failures show only this run
  if [[ -f "$1" ]]; then mv -f "$1" "$1.prev"; fi
}

valid_jar() {  # a readable zip with a central directory
  [[ -s "$1" ]] && python3 - "$1" <<'PY' >/dev/null 2>&1
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.getinfo("META-INF/MANIFEST.MF")
PY
}

stamp_get() {  # stamp_get FILE KEY -> value (empty if absent)
  local file="$1" key="$2" k v
  [[ -f "$file" ]] || return 0
  while IFS='=' read -r k v; do
    if [[ "$k" == "$key" ]]; then printf '%s' "$v"; return 0; fi
  done < "$file"
}

with_lock() {  # serialise concurrent invocations on the same cache
  mkdir -p "$CACHE_DIR"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE_DIR/.lock"
    flock -w 900 9 || die "could not lock $CACHE_DIR/.lock within 900 s (another services.sh running?)"
  fi
}

mvn_run() {  # mvn_run LOGFILE ARGS...  (batch mode, dedicated local repo, output to LOGFILE)
  local logfile="$1"; shift
  command -v mvn >/dev/null 2>&1 || die "mvn not found (apt-get install maven)"
  mkdir -p "$(dirname "$logfile")" "$M2_REPO"
  mvn -B -ntp -Dmaven.repo.local="$M2_REPO" -Dstyle.color=never "$@" >"$logfile" 2>&1 </dev/null
}

mvn_copy_dependencies() {  # mvn_copy_dependencies POM OUTDIR LOGFILE
  local pom="$1" out="$2" logfile="$3"
  rm -rf "$out.tmp"
  if ! mvn_run "$logfile" -f "$pom" "$DEP_PLUGIN:copy-dependencies" \
      -DincludeScope=runtime -DoutputDirectory="$out.tmp"; then
    grep -E '\[ERROR\]' "$logfile" | head -n 5 >&2 || true
    die "Maven could not resolve $pom (full log: $logfile)"
  fi
  rm -rf "$out"
  mv "$out.tmp" "$out"
}

pom_header() {  # pom_header ARTIFACT_ID
  cat <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- generated by scripts/services.sh; only used to resolve jars with maven-dependency-plugin -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>streamsift.services</groupId>
  <artifactId>$1</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
EOF
}

pom_footer() { printf '  </dependencies>\n</project>\n'; }

dep() {  # dep G A V [EXCLUDED_GROUP...]
  local g="$1" a="$2" v="$3"; shift 3
  printf '    <dependency><groupId>%s</groupId><artifactId>%s</artifactId><version>%s</version>' "$g" "$a" "$v"
  if (($#)); then
    printf '<exclusions>'
    local x
    for x in "$@"; do printf '<exclusion><groupId>%s</groupId><artifactId>*</artifactId></exclusion>' "$x"; done
    printf '</exclusions>'
  fi
  printf '</dependency>\n'
}

spec_hash() { sha256sum | cut -c1-16; }

# --- install: Kafka --------------------------------------------------------------------------
kafka_pom() {
  pom_header kafka-broker
  dep org.apache.kafka "kafka_$SCALA_BINARY" "$KAFKA_VERSION"
  dep org.slf4j slf4j-reload4j 1.7.36
  pom_footer
}

install_kafka() {
  local stamp="$KAFKA_HOME/.installed" spec
  spec="$(kafka_pom | spec_hash)"
  if [[ "$(stamp_get "$stamp" spec)" == "$spec" ]] && valid_jar "$KAFKA_HOME/libs/kafka_$SCALA_BINARY-$KAFKA_VERSION.jar"; then
    log "kafka $KAFKA_VERSION: cached in $KAFKA_HOME"
    return 0
  fi
  log "kafka $KAFKA_VERSION: resolving broker jars from Maven Central"
  mkdir -p "$KAFKA_HOME"
  kafka_pom >"$KAFKA_HOME/pom.xml"
  mvn_copy_dependencies "$KAFKA_HOME/pom.xml" "$KAFKA_HOME/libs" "$LOG_DIR/install-kafka.log"
  valid_jar "$KAFKA_HOME/libs/kafka_$SCALA_BINARY-$KAFKA_VERSION.jar" \
    || die "kafka_$SCALA_BINARY-$KAFKA_VERSION.jar missing after download (log: $LOG_DIR/install-kafka.log)"
  printf 'spec=%s\nversion=%s\n' "$spec" "$KAFKA_VERSION" >"$stamp"
  log "kafka $KAFKA_VERSION: $(find "$KAFKA_HOME/libs" -name '*.jar' | wc -l) jars in $KAFKA_HOME/libs"
}

# --- install: Beam jars (official shaded jar, else assembled classpath + launcher jar) --------
flink_pom() {
  pom_header flink-job-server
  dep org.apache.beam "beam-runners-flink-$FLINK_MINOR" "$BEAM_FLINK_VERSION"
  dep org.slf4j slf4j-simple 1.7.36
  pom_footer
}

expansion_pom() {
  pom_header io-expansion-service
  dep org.apache.beam beam-sdks-java-expansion-service "$BEAM_IO_VERSION"
  dep org.apache.beam beam-sdks-java-io-kafka "$BEAM_IO_VERSION" io.confluent
  dep org.apache.beam beam-sdks-java-harness "$BEAM_IO_VERSION"
  dep com.github.jbellis jamm 0.4.0  # "provided" in the harness pom, needed by FnHarness at runtime
  dep org.apache.kafka kafka-clients "$KAFKA_CLIENTS_VERSION"
  dep org.slf4j slf4j-api 2.0.16
  dep org.slf4j slf4j-simple 2.0.16
  pom_footer
}

# install_beam_jar NAME DIR OFFICIAL_COORD POM_FUNC MAIN_CLASS FALLBACK_BEAM_VERSION
install_beam_jar() {
  local name="$1" dir="$2" official="$3" pom_func="$4" main_class="$5" fallback_version="$6"
  local stamp="$dir/.installed" spec jar
  spec="$({ echo "$official"; "$pom_func"; echo "$main_class"; } | spec_hash)"
  jar="$(stamp_get "$stamp" jar)"
  if [[ "$(stamp_get "$stamp" spec)" == "$spec" && -n "$jar" ]] && valid_jar "$jar" \
      && { [[ "$(stamp_get "$stamp" variant)" == official ]] || [[ -f "$dir/libs/.complete" ]]; }; then
    log "$name: cached ($(stamp_get "$stamp" variant), Beam $(stamp_get "$stamp" beam_version)) $jar"
    return 0
  fi
  mkdir -p "$dir"
  if [[ "${STREAMSIFT_TRY_OFFICIAL_JARS:-1}" == 1 ]]; then
    local g a v
    IFS=: read -r g a v <<<"$official"
    log "$name: trying the shaded jar $official"
    if (cd "$dir" && mvn_run "$LOG_DIR/install-$name-official.log" "$DEP_PLUGIN:copy" \
        -Dartifact="$official" -DoutputDirectory="$dir/official" -Dmdep.overWriteReleases=false) \
        && valid_jar "$dir/official/$a-$v.jar"; then
      printf 'spec=%s\nvariant=official\nbeam_version=%s\njar=%s\n' "$spec" "$v" "$dir/official/$a-$v.jar" >"$stamp"
      log "$name: using $dir/official/$a-$v.jar"
      return 0
    fi
    log "$name: $official is not available from the registry; assembling Beam $fallback_version instead"
  fi
  "$pom_func" >"$dir/pom.xml"
  rm -f "$dir/libs/.complete"
  mvn_copy_dependencies "$dir/pom.xml" "$dir/libs" "$LOG_DIR/install-$name.log"
  touch "$dir/libs/.complete"
  jar="$dir/$name-launcher.jar"
  python3 "$HELPERS/launcher_jar.py" "$jar" "$main_class" "$dir/libs" >&2
  printf 'spec=%s\nvariant=assembled\nbeam_version=%s\njar=%s\n' "$spec" "$fallback_version" "$jar" >"$stamp"
  log "$name: using $jar (Beam $fallback_version, $(find "$dir/libs" -name '*.jar' | wc -l) jars)"
}

install_flink_job_server() {
  install_beam_jar flink-job-server "$FLINK_DIR" "$OFFICIAL_FLINK_JOB_SERVER" flink_pom \
    org.apache.beam.runners.flink.FlinkJobServerDriver "$BEAM_FLINK_VERSION"
}

install_expansion_service() {
  install_beam_jar io-expansion-service "$EXPANSION_DIR" "$OFFICIAL_EXPANSION_SERVICE" expansion_pom \
    org.apache.beam.sdk.expansion.service.ExpansionService "$BEAM_IO_VERSION"
}

# --- install: Prism (Go module proxy) ---------------------------------------------------------
prism_cached() {
  [[ -x "$PRISM_BIN" && "$(cat "$CACHE_DIR/bin/.prism-version" 2>/dev/null || true)" == "$PRISM_VERSION" ]]
}

build_prism() {  # runs in the background during install; output goes to its own log
  command -v go >/dev/null 2>&1 || { echo "go not found (need Go 1.24+)"; return 1; }
  mkdir -p "$CACHE_DIR/bin" "$CACHE_DIR/go/mod" "$CACHE_DIR/go/build"
  GOBIN="$CACHE_DIR/bin" GOMODCACHE="$CACHE_DIR/go/mod" GOCACHE="$CACHE_DIR/go/build" \
    GOFLAGS="${GOFLAGS:-} -modcacherw" \
    go install "github.com/apache/beam/sdks/v2/go/cmd/prism@$PRISM_VERSION" || return 1
  "$PRISM_BIN" --help >/dev/null 2>&1 || { echo "built prism does not run"; return 1; }
  echo "$PRISM_VERSION" >"$CACHE_DIR/bin/.prism-version"
  rm -rf "$CACHE_DIR/go/build"  # compiled objects are only needed to rebuild; keep the sources
}

# --- install: Python client ------------------------------------------------------------------
install_confluent_kafka() {
  local py
  py="$(python_bin)"
  if "$py" -c 'import confluent_kafka' >/dev/null 2>&1; then
    log "confluent-kafka: present in $py ($("$py" -c 'import confluent_kafka; print(confluent_kafka.__version__)'))"
    return 0
  fi
  if ! "$py" -c 'import sys; sys.exit(0 if sys.prefix != sys.base_prefix else 1)' && [[ -z "${STREAMSIFT_PYTHON:-}" ]]; then
    log "confluent-kafka: WARNING $py is not a virtualenv; not installing into it (activate the venv or set STREAMSIFT_PYTHON)"
    return 0
  fi
  log "confluent-kafka: installing into $py"
  "$py" -m pip install --quiet --no-input 'confluent-kafka>=2.6,<3' </dev/null \
    || die "pip could not install confluent-kafka into $py"
}

cmd_install() {
  with_lock
  mkdir -p "$LOG_DIR"
  local started=$SECONDS prism_pid=""
  if prism_cached; then
    log "prism $PRISM_VERSION: cached at $PRISM_BIN"
  else
    log "prism $PRISM_VERSION: building with go install (background, log $LOG_DIR/install-prism.log)"
    build_prism >"$LOG_DIR/install-prism.log" 2>&1 </dev/null 9>&- &
    prism_pid=$!
  fi
  # The three Maven resolutions run in parallel, each with its own local repository (Maven
  # 3.8 collects POMs one at a time and its local repo is not safe for concurrent writers).
  local jobs=() names=(kafka io-expansion-service flink-job-server) i failed=0
  (M2_REPO="$CACHE_DIR/m2/kafka"; install_kafka) 9>&- &
  jobs+=($!)
  (M2_REPO="$CACHE_DIR/m2/io-expansion-service"; install_expansion_service) 9>&- &
  jobs+=($!)
  (M2_REPO="$CACHE_DIR/m2/flink-job-server"; install_flink_job_server) 9>&- &
  jobs+=($!)
  for i in "${!jobs[@]}"; do
    wait "${jobs[$i]}" || { log "install of ${names[$i]} failed (see above)"; failed=1; }
  done
  install_confluent_kafka
  if ! command -v gcloud >/dev/null 2>&1; then
    log "WARNING: gcloud not found; the Pub/Sub emulator cannot start (install the Google Cloud CLI with the pubsub-emulator component)"
  fi
  if [[ -n "$prism_pid" ]]; then
    if ! wait "$prism_pid"; then
      tail_log "$LOG_DIR/install-prism.log" 30
      die "building prism $PRISM_VERSION failed"
    fi
    log "prism $PRISM_VERSION: built $PRISM_BIN"
  fi
  ((failed == 0)) || die "install failed"
  log "install complete in $((SECONDS - started)) s (cache: $CACHE_DIR)"
}

# --- process management ----------------------------------------------------------------------
cmdline_of() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true; }

pid_alive() {  # alive and not a zombie
  local state
  [[ -n "${1:-}" && -r "/proc/$1/stat" ]] || return 1
  state="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null || true)"
  [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

# pid of our running service: from its pidfile if the process still matches the marker,
# else any process whose command line contains the (run-dir specific) marker.
service_pid() {  # service_pid PIDFILE MARKER
  local pidfile="$1" marker="$2" pid p
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  if [[ -n "$pid" ]] && pid_alive "$pid" && [[ "$(cmdline_of "$pid")" == *"$marker"* ]]; then
    echo "$pid"; return 0
  fi
  for p in /proc/[0-9]*; do
    p="${p#/proc/}"
    [[ "$p" == "$$" ]] && continue
    if [[ "$(cmdline_of "$p")" == *"$marker"* ]] && pid_alive "$p"; then echo "$p"; return 0; fi
  done
  return 0
}

descendants() {  # all descendant pids of $1
  local parent="$1" child
  for child in $(ps -o pid= --ppid "$parent" 2>/dev/null || true); do
    echo "$child"
    descendants "$child"
  done
}

stop_tree() {  # stop_tree NAME PID : SIGTERM the process group + descendants, wait, SIGKILL
  local name="$1" pid="$2" pids p deadline
  pids="$pid $(descendants "$pid" | tr '\n' ' ')"
  log "$name: stopping (pids $pids)"
  kill -TERM -- "-$pid" 2>/dev/null || true
  for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
  deadline=$((SECONDS + STOP_TIMEOUT))
  while ((SECONDS < deadline)); do
    local alive=""
    for p in $pids; do pid_alive "$p" && alive="$alive $p"; done
    [[ -z "$alive" ]] && { log "$name: stopped"; return 0; }
    sleep 0.5
  done
  log "$name: still running after ${STOP_TIMEOUT}s, sending SIGKILL"
  kill -KILL -- "-$pid" 2>/dev/null || true
  for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
  sleep 1
  for p in $pids; do pid_alive "$p" && die "$name: pid $p survived SIGKILL"; done
  log "$name: killed"
}

port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

probe() {  # probe SERVICE ADDRESS TIMEOUT [PID]
  local args=("$HELPERS/probe.py" "$1" "$2" --timeout "$3")
  [[ -n "${4:-}" ]] && args+=(--pid "$4")
  "$(python_bin)" "${args[@]}"
}

# wait_ready NAME SERVICE ADDRESS PID LOGFILE [MORE_LOGFILES...]
wait_ready() {
  local name="$1" service="$2" address="$3" pid="$4" logfile="$5" rc=0 f
  shift 5
  probe "$service" "$address" "$TIMEOUT" "$pid" || rc=$?
  ((rc == 0)) && { log "$name: ready on $address (pid $pid)"; return 0; }
  tail_log "$logfile"
  for f in "$@"; do [[ -s "$f" ]] && tail_log "$f" 20; done
  if ((rc == 2)); then die "$name exited during startup (see $logfile)"; fi
  die "$name did not answer on $address within ${TIMEOUT}s (see $logfile)"
}

# --- Kafka -----------------------------------------------------------------------------------
KAFKA_RUN="$RUN_DIR/kafka"
KAFKA_PIDFILE="$KAFKA_RUN/kafka.pid"
KAFKA_CONFIG="$KAFKA_RUN/server.properties"
KAFKA_OUT="$KAFKA_RUN/logs/kafka.out"

kafka_pid() { service_pid "$KAFKA_PIDFILE" "kafka.Kafka $KAFKA_CONFIG"; }

write_kafka_config() {
  mkdir -p "$KAFKA_RUN/data" "$KAFKA_RUN/logs"
  cat >"$KAFKA_CONFIG" <<EOF
# generated by scripts/services.sh - single-node KRaft broker for tests
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_RUN/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
log.retention.hours=24
log.segment.bytes=67108864
EOF
}

kafka_java_cmd() {  # sets KAFKA_CMD to the java command line (without main class)
  local heap="${STREAMSIFT_KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}"
  # shellcheck disable=SC2206
  KAFKA_CMD=("$(java_bin)" $heap -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
    -Dlog4j.configuration="file:$HELPERS/kafka-log4j.properties" -Dkafka.logs.dir="$KAFKA_RUN/logs"
    -cp "$KAFKA_HOME/libs/*")
}

cmd_start_kafka() {
  local pid
  [[ -f "$KAFKA_HOME/.installed" ]] || die "Kafka is not installed; run: $SCRIPT_PATH install"
  pid="$(kafka_pid)"
  if [[ -n "$pid" ]] && ! grep -qx "listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT" "$KAFKA_CONFIG"; then
    die "kafka: already running (pid $pid) with other ports ($(grep '^listeners=' "$KAFKA_CONFIG")); run '$SCRIPT_PATH stop-kafka' first"
  fi
  if [[ -n "$pid" ]]; then
    if probe kafka "$HOST:$KAFKA_PORT" 0 "$pid"; then
      log "kafka: already running and healthy on $HOST:$KAFKA_PORT (pid $pid)"
      return 0
    fi
    log "kafka: pid $pid is running but not answering yet; waiting"
    wait_ready kafka kafka "$HOST:$KAFKA_PORT" "$pid" "$KAFKA_RUN/logs/server.log" "$KAFKA_OUT"
    return 0
  fi
  for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    port_busy "$port" && die "kafka: port $HOST:$port is already in use by another process (set STREAMSIFT_KAFKA_PORT / STREAMSIFT_KAFKA_CONTROLLER_PORT)"
  done
  write_kafka_config
  kafka_java_cmd
  if [[ ! -f "$KAFKA_RUN/data/meta.properties" ]]; then
    [[ -s "$KAFKA_RUN/cluster.id" ]] || python3 -c \
      'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))' \
      >"$KAFKA_RUN/cluster.id"
    log "kafka: formatting storage in $KAFKA_RUN/data (cluster id $(cat "$KAFKA_RUN/cluster.id"))"
    "${KAFKA_CMD[@]}" kafka.tools.StorageTool format -t "$(cat "$KAFKA_RUN/cluster.id")" -c "$KAFKA_CONFIG" \
      --ignore-formatted >"$KAFKA_RUN/logs/format.log" 2>&1 </dev/null 9>&- \
      || { tail_log "$KAFKA_RUN/logs/format.log"; die "kafka: formatting storage failed"; }
  fi
  log "kafka: starting broker on $HOST:$KAFKA_PORT (controller $HOST:$KAFKA_CONTROLLER_PORT)"
  rotate_log "$KAFKA_RUN/logs/server.log"
  rotate_log "$KAFKA_OUT"
  # setsid: own process group, so stop can signal the whole tree; 9>&- drops the cache lock
  setsid "${KAFKA_CMD[@]}" kafka.Kafka "$KAFKA_CONFIG" >>"$KAFKA_OUT" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" >"$KAFKA_PIDFILE"
  wait_ready kafka kafka "$HOST:$KAFKA_PORT" "$pid" "$KAFKA_RUN/logs/server.log" "$KAFKA_OUT"
}

cmd_stop_kafka() {
  local pid
  pid="$(kafka_pid)"
  if [[ -z "$pid" ]]; then log "kafka: not running"; rm -f "$KAFKA_PIDFILE"; return 0; fi
  stop_tree kafka "$pid"
  rm -f "$KAFKA_PIDFILE"
}

# --- Pub/Sub emulator ------------------------------------------------------------------------
PUBSUB_RUN="$RUN_DIR/pubsub"
PUBSUB_PIDFILE="$PUBSUB_RUN/pubsub.pid"
PUBSUB_LOG="$PUBSUB_RUN/pubsub.log"

pubsub_pid() { service_pid "$PUBSUB_PIDFILE" "--data-dir=$PUBSUB_RUN/data"; }

cmd_start_pubsub() {
  local pid
  command -v gcloud >/dev/null 2>&1 || die "gcloud not found: the Pub/Sub emulator needs the Google Cloud CLI"
  pid="$(pubsub_pid)"
  if [[ -n "$pid" && "$(cmdline_of "$pid")" != *"--host-port=$HOST:$PUBSUB_PORT "* ]]; then
    die "pubsub emulator: already running (pid $pid) on another port; run '$SCRIPT_PATH stop-pubsub' first"
  fi
  if [[ -n "$pid" ]]; then
    if probe pubsub "$HOST:$PUBSUB_PORT" 0 "$pid"; then
      log "pubsub emulator: already running and healthy on $HOST:$PUBSUB_PORT (pid $pid)"
      return 0
    fi
    log "pubsub emulator: pid $pid is running but not answering yet; waiting"
    wait_ready "pubsub emulator" pubsub "$HOST:$PUBSUB_PORT" "$pid" "$PUBSUB_LOG"
    return 0
  fi
  port_busy "$PUBSUB_PORT" && die "pubsub emulator: port $HOST:$PUBSUB_PORT is already in use by another process (set STREAMSIFT_PUBSUB_PORT)"
  mkdir -p "$PUBSUB_RUN/data"
  log "pubsub emulator: starting on $HOST:$PUBSUB_PORT"
  rotate_log "$PUBSUB_LOG"
  setsid gcloud beta emulators pubsub start --host-port="$HOST:$PUBSUB_PORT" \
    --data-dir="$PUBSUB_RUN/data" --quiet >>"$PUBSUB_LOG" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" >"$PUBSUB_PIDFILE"
  wait_ready "pubsub emulator" pubsub "$HOST:$PUBSUB_PORT" "$pid" "$PUBSUB_LOG"
}

cmd_stop_pubsub() {
  local pid
  pid="$(pubsub_pid)"
  if [[ -z "$pid" ]]; then log "pubsub emulator: not running"; rm -f "$PUBSUB_PIDFILE"; return 0; fi
  stop_tree "pubsub emulator" "$pid"  # also stops the emulator's java child process
  rm -f "$PUBSUB_PIDFILE"
}

# --- Flink job server check ------------------------------------------------------------------
cmd_check_flink() {
  local jar job_port artifact_port expansion_port pid logfile deadline
  jar="$(stamp_get "$FLINK_DIR/.installed" jar)"
  if [[ -z "$jar" ]] || ! valid_jar "$jar"; then
    die "Flink job server is not installed; run: $SCRIPT_PATH install"
  fi
  job_port="$(probe free-port x 0)"; artifact_port="$(probe free-port x 0)"; expansion_port="$(probe free-port x 0)"
  logfile="$LOG_DIR/check-flink.log"
  mkdir -p "$LOG_DIR"
  log "flink job server: starting $jar (job port $job_port)"
  # shellcheck disable=SC2086
  setsid "$(java_bin)" $FLINK_JAVA_OPTS -jar "$jar" --job-host="$HOST" --job-port="$job_port" \
    --artifact-port="$artifact_port" --expansion-port="$expansion_port" >"$logfile" 2>&1 </dev/null 9>&- &
  pid=$!
  deadline=$((SECONDS + TIMEOUT))
  while ! grep -q "JobService started on" "$logfile" 2>/dev/null; do
    if ! pid_alive "$pid"; then tail_log "$logfile"; die "flink job server exited during startup"; fi
    if ((SECONDS >= deadline)); then
      tail_log "$logfile"; stop_tree "flink job server" "$pid"
      die "flink job server did not start within ${TIMEOUT}s"
    fi
    sleep 0.5
  done
  port_busy "$job_port" || { tail_log "$logfile"; stop_tree "flink job server" "$pid"; die "flink job server logged a start but port $job_port is closed"; }
  log "flink job server: started OK ($(grep -m1 -o 'JobService started on .*' "$logfile"))"
  stop_tree "flink job server" "$pid"
}

# --- status / env ----------------------------------------------------------------------------
cmd_status() {
  local ok=0 pid v
  for v in kafka:"$KAFKA_HOME/.installed" flink-job-server:"$FLINK_DIR/.installed" io-expansion-service:"$EXPANSION_DIR/.installed"; do
    if [[ -f "${v#*:}" ]]; then
      printf '%-22s installed %s\n' "${v%%:*}" "$(stamp_get "${v#*:}" jar)$(stamp_get "${v#*:}" version)"
    else
      printf '%-22s NOT installed\n' "${v%%:*}"
    fi
  done
  if prism_cached; then printf '%-22s installed %s (%s)\n' prism "$PRISM_BIN" "$PRISM_VERSION"
  else printf '%-22s NOT installed\n' prism; fi
  pid="$(kafka_pid)"
  if [[ -z "$pid" ]]; then printf '%-22s stopped\n' kafka; ok=1
  elif probe kafka "$HOST:$KAFKA_PORT" 0 "$pid"; then printf '%-22s running, healthy on %s (pid %s)\n' kafka "$HOST:$KAFKA_PORT" "$pid"
  else printf '%-22s running but NOT answering on %s (pid %s)\n' kafka "$HOST:$KAFKA_PORT" "$pid"; ok=1; fi
  pid="$(pubsub_pid)"
  if [[ -z "$pid" ]]; then printf '%-22s stopped\n' pubsub-emulator; ok=1
  elif probe pubsub "$HOST:$PUBSUB_PORT" 0 "$pid"; then printf '%-22s running, healthy on %s (pid %s)\n' pubsub-emulator "$HOST:$PUBSUB_PORT" "$pid"
  else printf '%-22s running but NOT answering on %s (pid %s)\n' pubsub-emulator "$HOST:$PUBSUB_PORT" "$pid"; ok=1; fi
  return "$ok"
}

cmd_env() {
  local jar
  emit() { printf 'export %s=%q\n' "$1" "$2"; }
  emit STREAMSIFT_SERVICES_DIR "$CACHE_DIR"
  emit STREAMSIFT_SERVICES_SCRIPT "$SCRIPT_PATH"
  emit STREAMSIFT_KAFKA_BOOTSTRAP "$HOST:$KAFKA_PORT"
  emit PUBSUB_EMULATOR_HOST "$HOST:$PUBSUB_PORT"
  emit STREAMSIFT_PUBSUB_PROJECT "$PUBSUB_PROJECT"
  emit STREAMSIFT_FLINK_JAVA_OPTS "$FLINK_JAVA_OPTS"
  if [[ -f "$KAFKA_HOME/.installed" ]]; then
    emit STREAMSIFT_KAFKA_HOME "$KAFKA_HOME"
    emit STREAMSIFT_KAFKA_VERSION "$KAFKA_VERSION"
  else
    echo "# Kafka not installed: run $SCRIPT_PATH install"
  fi
  jar="$(stamp_get "$FLINK_DIR/.installed" jar)"
  if [[ -n "$jar" ]]; then
    emit STREAMSIFT_FLINK_JOB_SERVER_JAR "$jar"
    emit STREAMSIFT_FLINK_JOB_SERVER_BEAM_VERSION "$(stamp_get "$FLINK_DIR/.installed" beam_version)"
  else
    echo "# Flink job server not installed: run $SCRIPT_PATH install"
  fi
  jar="$(stamp_get "$EXPANSION_DIR/.installed" jar)"
  if [[ -n "$jar" ]]; then
    emit STREAMSIFT_EXPANSION_SERVICE_JAR "$jar"
    emit STREAMSIFT_EXPANSION_SERVICE_BEAM_VERSION "$(stamp_get "$EXPANSION_DIR/.installed" beam_version)"
  else
    echo "# expansion service not installed: run $SCRIPT_PATH install"
  fi
  if prism_cached; then emit STREAMSIFT_PRISM_BIN "$PRISM_BIN"
  else echo "# prism not installed: run $SCRIPT_PATH install"; fi
}

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SCRIPT_PATH"; }

main() {
  local cmd="${1:-}"
  case "$cmd" in
    install) cmd_install ;;
    start) with_lock; cmd_start_kafka; cmd_start_pubsub ;;
    stop) with_lock; local rc=0; cmd_stop_pubsub || rc=1; cmd_stop_kafka || rc=1; return "$rc" ;;
    status) cmd_status ;;
    env) cmd_env ;;
    restart-kafka) with_lock; cmd_stop_kafka; cmd_start_kafka ;;
    start-kafka) with_lock; cmd_start_kafka ;;
    stop-kafka) with_lock; cmd_stop_kafka ;;
    start-pubsub) with_lock; cmd_start_pubsub ;;
    stop-pubsub) with_lock; cmd_stop_pubsub ;;
    check-flink) cmd_check_flink ;;
    clean) with_lock; cmd_stop_pubsub; cmd_stop_kafka; rm -rf "$RUN_DIR"; log "removed $RUN_DIR" ;;
    -h|--help|help) usage ;;
    *) usage >&2; die "unknown command '${cmd}'" ;;
  esac
}

main "$@"
