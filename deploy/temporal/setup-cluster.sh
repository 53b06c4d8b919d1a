#!/bin/sh
# One-shot (temporalio/admin-tools), after the Temporal server answers: the namespace and the
# project's custom search attributes, each only if missing (safe to re-run).
#   TEMPORAL_ADDRESS     host:port of the frontend (temporal:7233)
#   TEMPORAL_NAMESPACE   namespace the API and the workers use
#   NAMESPACE_RETENTION  how long closed cases stay visible (e.g. 30d)
#   SEARCH_ATTRIBUTES    "Name=Type ..." as workflows/search_attributes.py cli_definitions() gives
#                        (tests/test_compose.py keeps the two identical)
set -eu

: "${TEMPORAL_ADDRESS:=temporal:7233}" "${TEMPORAL_NAMESPACE:=default}" "${NAMESPACE_RETENTION:=30d}"
: "${SEARCH_ATTRIBUTES:?SEARCH_ATTRIBUTES is required}"

host=${TEMPORAL_ADDRESS%:*}; port=${TEMPORAL_ADDRESS##*:}
until nc -z -w 5 "$host" "$port"; do echo "waiting for $TEMPORAL_ADDRESS"; sleep 2; done
# Use the IPv4 address: the CLI may otherwise try an IPv6 address the server does not bind.
ip=$(getent ahosts "$host" | awk '/STREAM/ && $1 ~ /\./ {print $1; exit}')
export TEMPORAL_ADDRESS="${ip:-$host}:$port"

attempt=0
until temporal operator cluster health; do
  attempt=$((attempt + 1))
  [ "$attempt" -lt 60 ] || { echo "Temporal is not healthy after $attempt tries" >&2; exit 1; }
  sleep 2
done

if temporal operator namespace describe -n "$TEMPORAL_NAMESPACE" >/dev/null 2>&1; then
  echo "namespace $TEMPORAL_NAMESPACE exists"
else
  temporal operator namespace create -n "$TEMPORAL_NAMESPACE" --retention "$NAMESPACE_RETENTION"
fi
# A namespace just created takes a moment to reach every frontend cache.
attempt=0
until temporal operator search-attribute list -n "$TEMPORAL_NAMESPACE" >/dev/null 2>&1; do
  attempt=$((attempt + 1))
  [ "$attempt" -lt 60 ] || { echo "namespace $TEMPORAL_NAMESPACE not usable after $attempt tries" >&2; exit 1; }
  sleep 1
done

existing=$(temporal operator search-attribute list -n "$TEMPORAL_NAMESPACE")
for def in $SEARCH_ATTRIBUTES; do
  name=${def%%=*}; type=${def#*=}
  if printf '%s\n' "$existing" | grep -qw -- "$name"; then
    echo "search attribute $name exists"
  else
    temporal operator search-attribute create -n "$TEMPORAL_NAMESPACE" --name "$name" --type "$type"
  fi
done

# Ready when a visibility query on a custom attribute is accepted (the API filters by them).
first=${SEARCH_ATTRIBUTES%%=*}
attempt=0
until temporal workflow list -n "$TEMPORAL_NAMESPACE" --query "$first = 'readiness-probe'" --limit 1 >/dev/null; do
  attempt=$((attempt + 1))
  [ "$attempt" -lt 30 ] || { echo "search attributes not queryable after $attempt tries" >&2; exit 1; }
  sleep 2
done
echo "namespace $TEMPORAL_NAMESPACE ready with: $SEARCH_ATTRIBUTES"
