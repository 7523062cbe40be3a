#!/usr/bin/env bash
# Deploys a tested image with brine from a CI job, once the image is pushed: runs
# `brine-master deploy` with a request id, so that trying again never starts a second job, and
# tries again while the answer is "not now" (exit 3) or "connection lost, outcome unknown"
# (exit 4). The job's JSON report is written to deploy.json.
#
# Reads:
#   BRINE_IMAGE          the image to deploy, e.g. registry.example.com:5000/mynames/app:tested
#                        (required)
#   BRINE_ROLES          the roles that run it, space-separated, e.g. "web worker" (required)
#   BRINE_REQUEST_ID     an id for this deploy, the same on every try (1 to 128 letters,
#                        digits, - _ . :); default: GitLab's CI_PIPELINE_ID, or GitHub's
#                        GITHUB_RUN_ID-GITHUB_RUN_ATTEMPT. A pipeline that deploys more than
#                        once sets it for each deploy (e.g. "$CI_PIPELINE_ID-prod").
#   BRINE_WAIT_FOR_LOCK  how long the master waits while the fleet is locked (default 10m,
#                        at most 1h)
#   BRINE_ATTEMPTS       how many tries in all (default 5); pauses of 10 s, 20 s, 40 s, ...
#   BRINE_MASTER_ADDRESS, BRINE_CA, BRINE_CERT, BRINE_KEY, or BRINE_CONTEXT: which master to
#                        call and with which certificate (brine-master reads them itself).
# Arguments are passed on to `brine-master deploy`, e.g. `--batch 25% --auto-revert`.
#
# Exits as brine-master does: 0 every host runs the image; 1 the job ran and some host failed
# (see deploy.json); 2 refused: fix the command, the input or the setup; 3 or 4 if the last
# try still ended so.
set -euo pipefail

say() { echo "ci-deploy.sh: $*" >&2; }

if [[ -z ${BRINE_IMAGE:-} ]]; then
  say "set BRINE_IMAGE to the image to deploy"
  exit 2
fi
if [[ -z ${BRINE_ROLES:-} ]]; then
  say "set BRINE_ROLES to the roles to deploy, space-separated (e.g. \"web worker\")"
  exit 2
fi

if [[ -z ${BRINE_REQUEST_ID:-} ]]; then
  if [[ -n ${CI_PIPELINE_ID:-} ]]; then
    BRINE_REQUEST_ID=$CI_PIPELINE_ID
  elif [[ -n ${GITHUB_RUN_ID:-} ]]; then
    BRINE_REQUEST_ID=$GITHUB_RUN_ID-${GITHUB_RUN_ATTEMPT:-1}
  else
    say "no request id: set BRINE_REQUEST_ID to an id unique to this deploy (neither" \
      "CI_PIPELINE_ID nor GITHUB_RUN_ID is set to build one from)"
    exit 2
  fi
fi

attempts=${BRINE_ATTEMPTS:-5}
if ! [[ $attempts =~ ^[1-9][0-9]*$ ]]; then
  say "BRINE_ATTEMPTS must be a number of tries, at least 1 (it is '$attempts')"
  exit 2
fi

read -r -a roles <<<"$BRINE_ROLES"
role_args=()
for role in "${roles[@]}"; do
  role_args+=(--role "$role")
done
if [[ ${#role_args[@]} -eq 0 ]]; then
  say "BRINE_ROLES names no role"
  exit 2
fi

pause=10
attempt=1
while true; do
  code=0
  brine-master deploy "${role_args[@]}" --image "$BRINE_IMAGE" \
    --request-id "$BRINE_REQUEST_ID" --wait-for-lock "${BRINE_WAIT_FOR_LOCK:-10m}" \
    --output json "$@" >deploy.json || code=$?
  case $code in
    3) why="the deploy did not run but may later (fleet locked, master or registry unreachable, master busy or its disk full)" ;;
    4) why="the connection was lost while the deploy ran (the master carries on with the job)" ;;
    *) break ;;
  esac
  if ((attempt >= attempts)); then
    say "try $attempt of $attempts: $why; giving up (exit $code)"
    break
  fi
  say "try $attempt of $attempts: $why; trying again in ${pause}s with request id $BRINE_REQUEST_ID"
  sleep "$pause"
  pause=$((pause * 2))
  attempt=$((attempt + 1))
done

case $code in
  0) say "deployed $BRINE_IMAGE to ${roles[*]} (request id $BRINE_REQUEST_ID)" ;;
  1) say "the deploy ran and some host failed, was unreachable or timed out: see deploy.json" ;;
  2) say "the deploy was refused: fix the command, the input or the setup (see the error above)" ;;
esac
exit "$code"
