#!/bin/sh
set -eu
rm -rf "$PREBUILDD_DATA_DIR"
echo "removed $PREBUILDD_DATA_DIR"
