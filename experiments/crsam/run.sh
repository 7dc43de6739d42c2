#!/bin/sh
# The scaled Fashion-MNIST CNN comparison of this folder (SGD, SAM, crsam) and its table.
# Usage: experiments/crsam/run.sh [SAMX] [THREADS]
exec "$(dirname "$0")/../common/scaled-cnn.sh" crsam crsam "$@"
