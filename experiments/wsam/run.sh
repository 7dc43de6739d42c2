#!/bin/sh
# The scaled Fashion-MNIST CNN comparison of this folder (SGD, SAM, wsam) and its table.
# Usage: experiments/wsam/run.sh [SAMX] [THREADS]
exec "$(dirname "$0")/../common/scaled-cnn.sh" wsam wsam "$@"
