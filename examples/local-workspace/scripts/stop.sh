#!/bin/sh
set -eu
echo "stopped" > "$PREBUILDD_STATE_FILE"
echo "stopped"
