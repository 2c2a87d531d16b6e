#!/bin/sh
set -eu
echo "running" > "$PREBUILDD_STATE_FILE"
printf '{"directory": "%s"}\n' "$PREBUILDD_DATA_DIR/$PREBUILDD_PARAM_PROJECT" > "$PREBUILDD_OUTPUTS_FILE"
echo "started"
