#!/bin/sh
# tritonserver with its admin APIs restricted, as `llm-stack triton` starts it
# (launcher/triton_server.py, RESTRICTED_APIS): changing log settings, loading and
# unloading models, tracing, shared memory and statistics answer only requests with the
# operator's key in the `admin-key` header (gRPC: `triton-grpc-protocol-admin-key`).
# The key is read from the file $LLM_STACK_TRITON_ADMIN_KEY_FILE (a compose or
# Kubernetes secret); without that variable each start makes a random key, which nobody
# is told. Triton takes the key on its command line only.
#   triton-entrypoint.sh --model-repository=/models [other tritonserver flags]
set -eu

apis="logging,model-repository,trace,shared-memory,statistics"

if [ -n "${LLM_STACK_TRITON_ADMIN_KEY_FILE:-}" ]; then
    # Leading and trailing blanks dropped; anything else must be the key.
    if ! key=$(sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' "$LLM_STACK_TRITON_ADMIN_KEY_FILE"); then
        echo "cannot read the Triton admin key file $LLM_STACK_TRITON_ADMIN_KEY_FILE" >&2
        exit 1
    fi
else
    key=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
fi

# What Triton's `<apis>:<key>=<value>` flag and an HTTP header can carry, as the launcher checks.
case "$key" in
    "" | *[!A-Za-z0-9._~-]*) valid=no ;;
    *) valid=yes ;;
esac
if [ "$valid" = no ] || [ "${#key}" -lt 16 ] || [ "${#key}" -gt 512 ]; then
    echo "the Triton admin key must be 16 to 512 characters of A-Z a-z 0-9 . _ ~ - (e.g. \`openssl rand -hex 32\`)" >&2
    exit 1
fi

exec tritonserver "$@" \
    "--http-restricted-api=$apis:admin-key=$key" \
    "--grpc-restricted-protocol=$apis:admin-key=$key"
