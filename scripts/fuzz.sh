#!/usr/bin/env bash
# Fuzz the device protocol with cargo-fuzz (libFuzzer).
#
# Usage: scripts/fuzz.sh [TARGET...]
#
# Targets live in hub/fuzz/fuzz_targets/ (default: all of them):
#   decode_uplink     schema's frame decoders on any bytes; what decodes must
#                     re-encode and decode to the same value
#   hello_validation  the hub's session state machine: a Hello, then frames;
#                     every accept/reject/close must be the documented one
#   downlink_decode   the firmware client's session fed a hostile hub's frames
#
# Each target runs for ${FUZZ_SECONDS:-300} seconds, one process
# (-jobs=1 -workers=1), niced. Inputs are read from the committed corpus
# hub/fuzz/corpus/<target>/ plus a scratch directory that receives what the
# fuzzer finds; with FUZZ_MERGE=1 (the default) the findings are merged into
# the committed corpus and the result minimised (libFuzzer's
# -set_cover_merge=1, a tighter `cargo fuzz cmin`), so it only grows by
# inputs that add coverage.
# FUZZ_MERGE=0 leaves it untouched.
# A crash leaves its input in hub/fuzz/artifacts/<target>/ and the script
# exits non-zero: add the input to the corpus (the replay test
# hub/tests/fuzz_corpus.rs then runs it in the normal suite) and fix the bug.
#
# Other settings: FUZZ_SANITIZER (default address; none is faster),
# FUZZ_MAX_LEN (default 4096 bytes per input).
#
# cargo-fuzz is installed with `cargo install cargo-fuzz --locked` when
# missing. It passes nightly-only flags to rustc; on a stable toolchain this
# script sets RUSTC_BOOTSTRAP=1 so stable accepts them (the address
# sanitizer's runtime ships with stable's rust-std for x86_64 Linux).
# libfuzzer-sys builds libFuzzer with the system C++ compiler (g++ or clang++).
# The first build compiles the hub's dependencies with coverage
# instrumentation into hub/fuzz/target (about 15 minutes on 2 cores).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
fuzz_dir="$root/hub/fuzz"
seconds=${FUZZ_SECONDS:-300}
sanitizer=${FUZZ_SANITIZER:-address}
max_len=${FUZZ_MAX_LEN:-4096}
merge=${FUZZ_MERGE:-1}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for file in "$fuzz_dir"/fuzz_targets/*.rs; do
        targets+=("$(basename "$file" .rs)")
    done
fi

cd "$root/hub"
# Build once, then run the binaries: the tree may change while fuzzing.
nice -n 10 cargo fuzz build --fuzz-dir "$fuzz_dir" -s "$sanitizer" -a >&2
bin_dir="$fuzz_dir/target/x86_64-unknown-linux-gnu/release"
failed=0
for target in "${targets[@]}"; do
    corpus="$fuzz_dir/corpus/$target"
    artifacts="$fuzz_dir/artifacts/$target"
    scratch=$(mktemp -d)
    logs=$(mktemp -d)
    mkdir -p "$corpus" "$artifacts"
    before=$(find "$artifacts" -type f | wc -l)
    echo "fuzz.sh: $target for ${seconds}s (corpus: $(find "$corpus" -type f | wc -l) files)" >&2
    # -jobs=1 runs the fuzzer in a child whose output goes to fuzz-0.log.
    (
        cd "$logs"
        nice -n 10 "$bin_dir/$target" -artifact_prefix="$artifacts/" \
            -max_total_time="$seconds" -jobs=1 -workers=1 -max_len="$max_len" \
            -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$scratch" "$corpus"
    ) || true
    tail -n 25 "$logs"/fuzz-0.log 2>/dev/null || true
    after=$(find "$artifacts" -type f | wc -l)
    if [ "$after" -gt "$before" ]; then
        echo "fuzz.sh: $target found $((after - before)) failing input(s) in $artifacts" >&2
        failed=1
    fi
    if [ "$merge" = 1 ] && [ -n "$(ls -A "$scratch")" ]; then
        # Like `cargo fuzz cmin`, but with libFuzzer's set-cover merge,
        # which keeps fewer inputs for the same features.
        minimal=$(mktemp -d)
        nice -n 10 "$bin_dir/$target" -set_cover_merge=1 -max_len="$max_len" \
            "$minimal" "$corpus" "$scratch" >/dev/null 2>&1
        if [ -n "$(ls -A "$minimal")" ]; then
            find "$corpus" -type f -delete
            cp "$minimal"/* "$corpus"/
        fi
        rm -rf "$minimal"
        echo "fuzz.sh: $target corpus now $(find "$corpus" -type f | wc -l) files" >&2
    fi
    rm -rf "$scratch" "$logs"
done
exit "$failed"
