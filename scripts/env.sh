# Offline, no-telemetry defaults shared by every script. Sourced, not executed.
# The same list as rag_core/common/offline.py (OFFLINE_ENVIRONMENT), for shells and the
# tools they start before any Python of ours runs.
# A user may override any of these in their own environment.
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}"
export HF_HUB_DISABLE_TELEMETRY=1
export DO_NOT_TRACK=1
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-90}"
export DBT_SEND_ANONYMOUS_USAGE_STATS=false
export GX_ANALYTICS_ENABLED=false
export RAGAS_DO_NOT_TRACK=true
if [ "${CI:-}" = "true" ]; then export TQDM_DISABLE=1; fi
