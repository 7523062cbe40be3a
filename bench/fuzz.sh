#!/usr/bin/env bash
# Fuzzes every parser of untrusted input, coverage-guided: libFuzzer through cargo-bolero, on the
# nightly toolchain, one target after the other, each for SECONDS.
#
#   bench/fuzz.sh [SECONDS_PER_TARGET]     # default 120
#
# The targets are the tests of common/tests/fuzz_parsers.rs and proto/tests/fuzz_conversions.rs,
# one per directory of common/tests/corpus/ and proto/tests/corpus/. Each starts from its corpus
# directory; what it finds interesting on the way stays in a scratch directory. Prints per target
# the executions and any failure. A failing input is written to the target's corpus directory
# (as bolero shrank it, or as libFuzzer found it for a crash without a panic, such as a time-out),
# where the suite replays it from then on
# (`cargo nextest run -p brine-common -p brine-proto --test fuzz_parsers --test fuzz_conversions`).
# Exits non-zero if any target failed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-120}

command -v cargo-bolero >/dev/null ||
  cargo install cargo-bolero --version 0.13.5 --locked --no-default-features --features libfuzzer
rustup run nightly rustc --version >/dev/null 2>&1 || rustup toolchain install nightly --profile minimal

target_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
scratch=$(mktemp -d /tmp/brine-fuzz.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

# save_shrunk_input LOG CORPUS: bolero prints the failing input shrunk, as a hex dump after
# `Input:`; it is saved as `shrunk-SHA1` in the target's corpus directory. Prints the file's
# name, or nothing for a failure without one (a stack overflow, a time-out, a dump cut short).
save_shrunk_input() {
  python3 - "$1" "$2" <<'PY'
import hashlib, pathlib, re, sys
log, corpus = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
dumps = re.findall(r"Input: \nLength: (\d+) \(0x[0-9a-f]+\) bytes\n((?:[0-9a-f]+:[^\n]*\n)*)",
                   log.read_text(errors="replace"))
if dumps:
    length, lines = int(dumps[-1][0]), dumps[-1][1].splitlines()
    data = bytearray()
    for line in lines:
        # 16 bytes a line in hex, then the same as text, which is not read.
        hex_bytes = re.findall(r"[0-9a-f]{2}", line.split(":", 1)[1])[: min(16, length - len(data))]
        data += bytes(int(b, 16) for b in hex_bytes)
    if len(data) == length:
        path = corpus / f"shrunk-{hashlib.sha1(data).hexdigest()}"
        path.write_bytes(data)
        print(path)
PY
}

failed=0
printf '%-20s %-14s %12s %10s  %s\n' target package executions exec/s result
for suite in common:brine-common proto:brine-proto; do
  dir=${suite%%:*}
  package=${suite##*:}
  for corpus in "$dir"/tests/corpus/*/; do
    corpus=${corpus%/}
    target=$(basename "$corpus")
    log="$scratch/$target.log"
    mkdir -p "$scratch/$target"
    before=$(ls "$corpus")
    result=ok
    # With its default sanitizer, AddressSanitizer: cargo-bolero instruments every test binary of
    # the package, and the unit tests, which link no libFuzzer, take their coverage hooks from
    # the sanitizer's runtime (without one they do not link).
    if ! cargo bolero test "$target" --package "$package" --toolchain nightly \
      --target-dir "$target_dir" -T "${seconds}s" --max-input-length 65536 \
      --corpus-dir "$scratch/$target" --crashes-dir "$corpus" >"$log" 2>&1; then
      failed=1
      # libFuzzer wrote the input as it was (crash-, timeout-, oom-SHA1); keep it unless bolero
      # shrank it.
      artifacts=$(comm -13 <(echo "$before") <(ls "$corpus") | sed "s|^|$corpus/|")
      shrunk=$(save_shrunk_input "$log" "$corpus")
      if [ -n "$shrunk" ] && [ -n "$artifacts" ]; then
        echo "$artifacts" | xargs rm -f
      fi
      result="FAILED: ${shrunk:-$artifacts}; log kept in $log"
      trap - EXIT
    fi
    # "Done N runs in S second(s)" when the time was up; the last status line after a failure.
    runs=$(grep -oE '^Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' ||
      grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
    rate=$(grep -oE 'exec/s: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$' || true)
    printf '%-20s %-14s %12s %10s  %s\n' "$target" "$package" "${runs:-0}" "${rate:-0}" "$result"
    if [ "$result" != ok ]; then
      grep -m1 -A12 'Test Failure\|ERROR: libFuzzer\|overflowed its stack' "$log" | sed 's/^/    /' || true
    fi
  done
done
exit "$failed"
