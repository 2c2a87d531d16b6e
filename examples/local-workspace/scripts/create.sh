#!/bin/sh
# Prepare the workspace directory; the sleep stands in for cloning and installing dependencies.
set -eu
dir="$PREBUILDD_DATA_DIR"
mkdir -p "$dir/$PREBUILDD_PARAM_PROJECT"
echo "preparing $PREBUILDD_PARAM_PROJECT in $dir"
i=0
while [ "$i" -lt "${PREBUILDD_PARAM_SETUP_SECONDS%.*}" ]; do
  i=$((i + 1))
  echo "setup step $i/${PREBUILDD_PARAM_SETUP_SECONDS%.*}"
  sleep 1
done
echo "# $PREBUILDD_PARAM_PROJECT" > "$dir/$PREBUILDD_PARAM_PROJECT/README.md"
echo "running" > "$PREBUILDD_STATE_FILE"
printf '{"directory": "%s"}\n' "$dir/$PREBUILDD_PARAM_PROJECT" > "$PREBUILDD_OUTPUTS_FILE"
echo "workspace ready"
