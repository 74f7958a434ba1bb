#!/usr/bin/env bash
# Build and run the streamsift Dataflow flex template.
#
#   templates/build.sh wheel                      build dist/streamsift-*.whl (the worker package)
#   templates/build.sh image IMAGE                wheel + docker build + docker push of the launcher
#   templates/build.sh spec IMAGE                 print the template spec offline (gcloud --print-only)
#   templates/build.sh build IMAGE GCS_SPEC_PATH  image + write the template spec to GCS
#   templates/build.sh run GCS_SPEC_PATH REGION JOB_NAME [--parameters=k=v,...]
#                                                 launch a job from the template
#
# IMAGE is e.g. europe-west1-docker.pkg.dev/PROJECT/REPO/streamsift:0.1.0. `spec` needs
# neither docker nor credentials; `image`, `build` and `run` need both.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PY="${PYTHON:-python3}"
export CLOUDSDK_CORE_DISABLE_PROMPTS=1

die() { printf 'templates/build.sh: %s\n' "$*" >&2; exit 2; }

wheel() {
  rm -f "$ROOT"/dist/streamsift-*.whl
  "$PY" -m pip wheel --no-deps -q -w "$ROOT/dist" "$ROOT" >&2
  local whl
  whl="$(cd "$ROOT/dist" && ls streamsift-*.whl)"
  printf '%s\n' "$whl"
}

expansion_service() {  # the KafkaIO expansion service (jar + libs) into dist/
  local jar="${STREAMSIFT_EXPANSION_SERVICE_JAR:-}"
  [[ -n "$jar" && -f "$jar" ]] || die "STREAMSIFT_EXPANSION_SERVICE_JAR must name the expansion service jar (scripts/services.sh install; eval \"\$(scripts/services.sh env)\"); got '${jar}'"
  rm -rf "$ROOT/dist/io-expansion-service"
  mkdir -p "$ROOT/dist"
  cp -r "$(dirname "$jar")" "$ROOT/dist/io-expansion-service"
  printf '%s\n' "$(dirname "$jar")"
}

image() {
  local image="$1" whl dir
  whl="$(wheel)"
  dir="$(expansion_service)"
  docker build -f "$HERE/Dockerfile" --build-arg "WHEEL=$whl" --build-arg "EXPANSION_DIR=$dir" \
    -t "$image" "$ROOT"
  docker push "$image"
}

spec() {  # spec IMAGE [GCS_SPEC_PATH]
  local image="$1" target="${2:-gs://streamsift-templates/streamsift.json}" extra=()
  [[ -n "${2:-}" ]] || extra=(--print-only)
  gcloud dataflow flex-template build "$target" \
    --image="$image" \
    --sdk-language=PYTHON \
    --metadata-file="$HERE/metadata.json" \
    "${extra[@]}"
}

run() {
  local spec_path="$1" region="$2" name="$3"
  shift 3
  gcloud dataflow flex-template run "$name" --template-file-gcs-location="$spec_path" \
    --region="$region" "$@"
}

cmd="${1:-}"; shift || true
case "$cmd" in
  wheel) wheel ;;
  image) [[ $# -eq 1 ]] || die "usage: image IMAGE"; image "$1" ;;
  spec) [[ $# -eq 1 ]] || die "usage: spec IMAGE"; spec "$1" ;;
  build) [[ $# -eq 2 ]] || die "usage: build IMAGE GCS_SPEC_PATH"; image "$1"; spec "$1" "$2" ;;
  run) [[ $# -ge 3 ]] || die "usage: run GCS_SPEC_PATH REGION JOB_NAME [gcloud flags]"; run "$@" ;;
  *) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; die "unknown command '${cmd}'" ;;
esac
