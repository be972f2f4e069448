#!/usr/bin/env sh
# Builds the bare gRPC-core echo server (the speed reference) next to this script.
# Needs Debian's libgrpc-dev (pulled in by libgrpc++-dev). Usage: ./build.sh [extra cc flags]
set -eu
cd "$(dirname "$0")"
${CC:-cc} -O2 -Wall -Wextra -std=c11 -D_GNU_SOURCE "$@" -o echo_server echo_server.c -lgrpc -lgpr -lpthread
echo "built $(pwd)/echo_server"
