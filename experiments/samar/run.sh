#!/bin/sh
# The scaled Fashion-MNIST CNN comparison of this folder (SGD, SAM, samar) and its table.
# Usage: experiments/samar/run.sh [SAMX] [THREADS]
exec "$(dirname "$0")/../common/scaled-cnn.sh" samar samar "$@"
