#!/usr/bin/env bash
# End-to-end tests of the Nix integration, offline:
#   1. bootstrap the nixpkgs stand-in (tests/nix/bootstrap.sh),
#   2. build every test image of tests/nix/images.nix in ONE nix build, in
#      the sandbox, against the stand-in (and the flake's example),
#   3. load each into Docker and check it with docker run / inspect /
#      history / export.
# Without a Docker daemon, step 3 prints `SKIPPED (no docker daemon)`.
#
# Usage: tests/nix/e2e.sh [--no-bootstrap]
# Prints one `ok NAME` / `FAIL NAME: why` line per check; exits 1 on any FAIL.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
standin="$repo/tests/nixpkgs-standin"
work=$(mktemp -d /tmp/sli-e2e.XXXXXX)
loaded=()
cleanup() {
    if [ ${#loaded[@]} -gt 0 ]; then docker rmi -f "${loaded[@]}" >/dev/null 2>&1 || true; fi
    docker rm -f sli-e2e-export >/dev/null 2>&1 || true
    chmod -R u+w "$work" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

nix_opts=(--option sandbox true --option substituters ''
          --extra-experimental-features 'nix-command flakes')

failures=0
ok() { echo "ok $1"; }
fail() { echo "FAIL $1: $2"; failures=$((failures + 1)); }
# expect NAME WANT GOT
expect() { if [ "$2" = "$3" ]; then ok "$1"; else fail "$1" "expected [$2], got [$3]"; fi; }

if [ "${1:-}" != "--no-bootstrap" ]; then
    "$repo/tests/nix/bootstrap.sh"
fi

echo "# evaluating the interface (tests/nix/eval.nix)"
if out=$(nix-instantiate --eval --strict -I nixpkgs="$standin" "$repo/tests/nix/eval.nix" \
        --arg pkgs 'import <nixpkgs> { }' 2>&1); then
    ok "nix interface: $out"
else
    fail "nix interface" "$(echo "$out" | tail -n 3)"
fi

echo "# nix/package.nix's source filter keeps everything cargo needs"
# The stand-in's buildRustPackage installs a prebuilt binary, so check the
# filtered source (what real nixpkgs' buildRustPackage gets) here: cargo
# parses the whole manifest (a [[bench]] whose file is missing fails) and
# resolves Cargo.lock offline, then stops at the unknown --bin, compiling nothing.
if src=$(nix-instantiate --eval --read-write-mode -I nixpkgs="$standin" -E \
        '"${(import '"$repo"'/nix/package.nix { lib = (import <nixpkgs> { }).lib; rustPlatform.buildRustPackage = a: a; }).src}"' \
        2>"$work/src.log" | tr -d '"') \
    && out=$(cargo build --offline --frozen --release --manifest-path "$src/Cargo.toml" \
        --target-dir "$work/cargo-src" --bin sli-no-such-bin 2>&1); \
    echo "$out" | grep -q "no bin target named \`sli-no-such-bin\`"; then
    ok "package.nix: the filtered source is a complete cargo package ($(ls "$src" | tr '\n' ' '))"
else
    fail "package.nix source filter" "$(cat "$work/src.log"; echo "${out:-}" | head -n 4)"
fi

echo "# building the test images (one nix-build, sandbox on, stand-in nixpkgs)"
if ! nix-build "${nix_opts[@]}" -I nixpkgs="$standin" "$repo/tests/nix/images.nix" \
    -A index -A getexe -A sandboxed -o "$work/result" >/dev/null 2>"$work/build.log"; then
    cat "$work/build.log" >&2
    echo "FAIL nix build of the test images"
    exit 1
fi
index="$work/result"
ok "nix build of every test image, in the sandbox"

echo "# rebuilding with --check: the customisation layers (extraCommands,"
echo "# fakeRootCommands, the Nix database), the conf and the compressed tarballs"
if nix-build "${nix_opts[@]}" --check -I nixpkgs="$standin" "$repo/tests/nix/images.nix" \
    -A nix-db.stream.customisationLayer -A fake-root.customisationLayer \
    -A extra-commands.customisationLayer -A example.conf \
    -A compressed-gz -A compressed-zstd --no-out-link >/dev/null 2>"$work/check.log"; then
    ok "nix-build --check: bit-for-bit reproducible"
else
    fail "nix-build --check" "$(grep -i 'differ\|error' "$work/check.log" | head -n 3)"
fi

echo "# building the flake's example with the stand-in as the nixpkgs input"
(cd "$repo" && nix build "${nix_opts[@]}" .#example --no-write-lock-file \
    --override-input nixpkgs "path:$standin" -o "$work/flake-example" 2>"$work/flake.log") \
    && ok "nix build .#example --override-input nixpkgs path:tests/nixpkgs-standin" \
    || fail "flake example" "$(tail -n 5 "$work/flake.log")"

echo "# a user's flake (tests/nix/consumer) taking this one as an input: lib and overlay"
(cd "$repo" && nix build "${nix_opts[@]}" ./tests/nix/consumer#default ./tests/nix/consumer#overlay \
    --no-write-lock-file --override-input nixpkgs "path:$standin" \
    --override-input stream-layered-image "git+file://$repo" \
    -o "$work/consumer" 2>"$work/consumer.log") \
    && ok "a consumer flake builds images through lib and overlays.default" \
    || fail "consumer flake" "$(grep -v '^warning\|^•\|^    ' "$work/consumer.log" | tail -n 5)"

(cd "$repo" && nix flake check --no-build "${nix_opts[@]}" --no-write-lock-file \
    --override-input nixpkgs "path:$standin" 2>"$work/flake-check.log") \
    && ok "nix flake check (evaluation of packages, overlay, checks)" \
    || fail "nix flake check" "$(grep -v '^warning\|^•\|^    ' "$work/flake-check.log" | tail -n 5)"

echo "# passthru.sbom of the example: SPDX and CycloneDX of the image as it streams"
if nix-build "${nix_opts[@]}" -I nixpkgs="$standin" "$repo/examples/hello.nix" -A sbom \
        -o "$work/sbom" >/dev/null 2>"$work/sbom.log"; then
    image_id=$(nix-build "${nix_opts[@]}" -I nixpkgs="$standin" "$repo/examples/hello.nix" \
        -o "$work/sbom-image" >/dev/null 2>&1 && "$work/sbom-image" -q -o "$work/example.tar" \
        && tar -xOf "$work/example.tar" manifest.json | python3 -c \
        'import json,sys; print("sha256:" + json.load(sys.stdin)[0]["Config"].split(".")[0].split("/")[-1])')
    got=$(python3 - "$work/sbom/hello.spdx.json" "$work/sbom/hello.cdx.json" <<'PY'
import json, sys
spdx, cdx = (json.load(open(f)) for f in sys.argv[1:])
hello = [p for p in spdx["packages"] if p.get("packageFileName", "").endswith("-hello-2.12.1")][0]
image = {p["name"]: p["value"] for p in cdx["metadata"]["component"]["properties"]}
print(hello["name"], hello["versionInfo"], hello["licenseDeclared"],
      image["stream-layered-image:image:id"], image["stream-layered-image:image:tag"])
PY
    )
    expect "passthru.sbom: hello with its meta, the streamed image's ID and tag" \
        "hello 2.12.1 GPL-3.0-or-later $image_id hello:latest" "$got"
    rm -f "$work/example.tar"
else
    fail "passthru.sbom build" "$(tail -n 5 "$work/sbom.log")"
fi

# q NAME FIELD: a field of an image's index entry.
q() { python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))[sys.argv[2]].get(sys.argv[3]); print("" if v is None else v)' "$index" "$1" "$2"; }

if ! docker info >/dev/null 2>&1; then
    echo "SKIPPED (no docker daemon): the images built; nothing loaded into Docker"
    if [ "$failures" -gt 0 ]; then
        echo "$failures check(s) FAILED"
        exit 1
    fi
    exit 0
fi

# load NAME [stream args...]: streams (or reads) the image into docker load;
# prints the loaded reference.
load() {
    local name=$1 path ref
    shift
    path=$(q "$name" path)
    if [ "$(q "$name" isExe)" = True ]; then
        "$path" "$@" 2>"$work/$name.stderr" | docker load >"$work/$name.load"
    else
        docker load -i "$path" >"$work/$name.load"
    fi
    ref=$(sed -n 's/^Loaded image: //p' "$work/$name.load" | tail -n 1)
    loaded+=("$ref")
    echo "$ref"
}
layers() { docker image inspect -f '{{len .RootFS.Layers}}' "$1"; }
run() { docker run --rm "$@" 2>&1; }

# --- the example, and retagging at stream time ---------------------------
ref=$(load example)
expect "example loads as hello:latest" "hello:latest" "$ref"
expect "example prints its greeting" "Hello, world!" "$(run "$ref")"
expect "no variant recorded unless asked (nixpkgs records none)" "" \
    "$(docker image inspect -f '{{.Variant}}' "$ref")"
ref=$(load example -t sli-e2e-retagged:other)
expect "-t other:tag retags at stream time" "sli-e2e-retagged:other" "$ref"
a=$("$(q example path)" 2>/dev/null | sha256sum)
b=$("$(q example path)" 2>/dev/null | sha256sum)
expect "streaming twice gives the same bytes" "$a" "$b"
[ "$a" != "$(printf '' | sha256sum)" ] || fail "streaming twice" "the example streamed nothing"

# --- the consumer flake's images -------------------------------------------
for r in "$work/consumer" "$work/consumer-1"; do
    ref=$("$r" 2>/dev/null | docker load | sed -n 's/^Loaded image: //p')
    echo "$ref=$(run "$ref")"
done | sort >"$work/consumer.out"
loaded+=(sli-e2e-consumer:lib sli-e2e-consumer:overlay) # the loop ran in a subshell
expect "consumer flake images load and run" \
    "sli-e2e-consumer:lib=Hello, world!;sli-e2e-consumer:overlay=Hello, world!" \
    "$(paste -sd ';' "$work/consumer.out")"

# --- more store paths than maxLayers = 2 ---------------------------------
ref=$(load many-paths)
expect "maxLayers = 2 gives 2 layers" 2 "$(layers "$ref")"
expect "docker image history has one entry per layer" 2 \
    "$(docker image history --format '{{.CreatedBy}}' "$ref" | wc -l | tr -d ' ')"
conf=$(q many-paths conf)
want=$(python3 - "$conf" <<'EOF'
import json, os, sys
c = json.load(open(sys.argv[1]))["layering"]
paths = open(os.path.join(c["graph"], "store-paths")).read().split()
print("\n".join(sorted(os.path.basename(p) for p in paths if p not in c["exclude_paths"])))
EOF
)
got=$(run "$ref" ls /nix/store | sort)
expect "no store path lost when paths outnumber layers" "$want" "$got"

# --- layeringPipeline, inline and from a file; debug -----------------------
ref=$(load pipeline)
expect "layeringPipeline limit_layers 2 gives 2 store layers + customisation" 3 "$(layers "$ref")"
expect "layeringPipeline image runs" "$(cat "$(q chain path)/share/a")" "$(run "$ref")"
ref=$(load pipeline-file)
expect "layeringPipeline from a file" 3 "$(layers "$ref")"
quiet=$(wc -l <"$work/pipeline-file.stderr")
loud=$(wc -l <"$work/pipeline.stderr")
[ "$loud" -gt "$quiet" ] && ok "debug = true explains the layering on stderr" \
    || fail "debug = true" "stderr has $loud lines with debug, $quiet without"

# --- fromImage with maxLayers = 4; Env merged, child wins ------------------
base_ref=$(load base)
ref=$(load from-image)
expect "fromImage + maxLayers = 4 gives exactly 4 layers" 4 "$(layers "$ref")"
base_ids=$(docker image inspect -f '{{range .RootFS.Layers}}{{println .}}{{end}}' "$base_ref" | sed '/^$/d')
child_ids=$(docker image inspect -f '{{range .RootFS.Layers}}{{println .}}{{end}}' "$ref" | sed '/^$/d' | head -n 2)
expect "base image layers pass through first" "$base_ids" "$child_ids"
env=$(docker image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$ref" | sed '/^$/d' | sort | tr '\n' ' ')
expect "Env inherited from fromImage, the child winning" "CHILD=1 FROM_BASE=1 SHARED=child " "$env"
expect "fromImage child runs" "Hello, world!" "$(run "$ref")"

ref=$(load from-gz-image)
expect "a gzip'd buildLayeredImage works as fromImage" "Hello, world! 1" "$(run "$ref" | tr '\n' ' ' | sed 's/ $//')"

# --- a store path that is a symlink stays a symlink ------------------------
ref=$(load symlink-store-path)
expect "a symlinked store path stays a symlink" "$(q storeSymlink target)" "$(run "$ref")"

# --- a bare path in contents -----------------------------------------------
ref=$(load bare-path)
expect "a bare path in contents is joined at the root" "hello from a bare path" "$(run "$ref")"

# --- architecture ------------------------------------------------------------
ref=$(load arm64)
expect "architecture = arm64 is recorded" arm64 "$(docker image inspect -f '{{.Architecture}}' "$ref")"
expect "variant = v8 is recorded" v8 "$(docker image inspect -f '{{.Variant}}' "$ref")"

# --- no tag: imageTag is the loaded tag -------------------------------------
ref=$(load no-tag)
tag=$(q no-tag imageTag)
expect "no tag: passthru.imageTag is the loaded tag" "$(q no-tag imageName):$tag" "$ref"
[ ${#tag} -eq 32 ] && ok "no tag: the tag is a store hash" || fail "no tag: the tag is a store hash" "$tag"

# --- created = "now" ---------------------------------------------------------
ref=$(load created-now)
created=$(docker image inspect -f '{{.Created}}' "$ref")
year=$(date -u +%Y)
case "$created" in "$year"-* | "$((year - 1))"-*) ok 'created = "now" is the time of streaming, not the epoch' ;;
    *) fail 'created = "now" is not the epoch' "[$created]" ;; esac
ref=$(load example)
created=$(docker image inspect -f '{{.Created}}' "$ref")
case "$created" in 1970-01-01T00:00:01*) ok "created defaults to 1970-01-01T00:00:01Z" ;; *) fail "created default" "$created" ;; esac

expect "created is normalised at build time like nixpkgs (date -Iseconds)" "2024-01-02T01:04:05+00:00 now" \
    "$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(c["created"], c["mtime"])' "$(q times conf)")"
ref=$(load times)
created=$(docker image inspect -f '{{.Created}}' "$ref")
case "$created" in 2024-01-02T01:04:05Z | 2024-01-02T01:04:05+00:00) ok "created in another time zone is normalised to UTC" ;;
    *) fail "created normalised to UTC" "[$created]" ;; esac
age=$(( $(date +%s) - $(run "$ref") ))
[ "$age" -ge 0 ] && [ "$age" -lt 86400 ] && ok 'mtime = "now" is the time of streaming' \
    || fail 'mtime = "now"' "the store files are $age seconds old"

# --- extraCommands, fakeRootCommands ---------------------------------------
ref=$(load extra-commands)
expect "extraCommands creates a file" "made by extraCommands" "$(run "$ref")"
ref=$(load fake-root)
expect "fakeRootCommands chown shows in stat" "12345:12345" "$(run "$ref")"

ref=$(load fakechroot)
expect "enableFakechroot: fakeRootCommands run in the image root, chown kept" \
    "4242:4343 saw the image root" "$(run "$ref" | tr '\n' ' ' | sed 's/ $//')"

ref=$(load owner-mtime)
expect "uid/gid and mtime apply to the store layers" "1000:100 1704164645" "$(run "$ref")"

# --- config = null (nixpkgs allows it) ---------------------------------------
ref=$(load config-null)
expect "config = null loads" "sli-e2e-config-null:latest" "$ref"
expect "config = null runs a command given at docker run" "Hello, world!" "$(run "$ref" /bin/hello)"

# --- includeStorePaths = false ---------------------------------------------
ref=$(load no-store-paths)
docker create --name sli-e2e-export "$ref" /bin/hello >/dev/null
docker export sli-e2e-export | tar -t >"$work/no-store-paths.list"
docker rm -f sli-e2e-export >/dev/null
expect "includeStorePaths = false keeps the links of contents" 1 "$(grep -c '^bin/hello$' "$work/no-store-paths.list" || true)"
expect "includeStorePaths = false has no /nix/store paths" 0 "$(grep -c '^nix/store/.' "$work/no-store-paths.list" || true)"
expect "includeStorePaths = false has 1 layer" 1 "$(layers "$ref")"

# --- includeNixDB: Debian's nix accepts the database -----------------------
ref=$(load nix-db)
docker create --name sli-e2e-export "$ref" /bin/hello >/dev/null
mkdir "$work/root"
docker export sli-e2e-export | tar -x -C "$work/root"
docker rm -f sli-e2e-export >/dev/null
hello=$(readlink "$work/root/bin/hello")
hello=${hello%/bin/hello}
if NIX_REMOTE= nix-store --store "local?root=$work/root" --verify --check-contents >"$work/verify.log" 2>&1 \
    && ! grep -qiE 'error|invalid|disappeared|modified' "$work/verify.log"; then
    ok "includeNixDB: nix-store --verify --check-contents accepts the image's database"
else
    fail "includeNixDB: nix-store --verify" "$(tail -n 5 "$work/verify.log")"
fi
got=$(nix-store --store "local?root=$work/root" -q --requisites "$hello" 2>&1 | sort | tr '\n' ' ')
want=$(nix-store -q --requisites "$hello" | sort | tr '\n' ' ')
expect "includeNixDB registers the closure of contents" "$want" "$got"

# --- names ---------------------------------------------------------------------
ref=$(load registry-prefix)
expect "a registry-prefixed name loads under that name" "registry.example.com/team/sli-e2e-prefixed:v1" "$ref"

# --- buildLayeredImage compressors -----------------------------------------
ref=$(load compressed-gz)
expect "buildLayeredImage (gz) loads and runs" "Hello, world!" "$(run "$ref")"
magic=$(head -c 2 "$(q compressed-gz path)" | od -An -tx1 | tr -d ' \n')
expect "buildLayeredImage default compressor is gzip" 1f8b "$magic"
magic=$(head -c 4 "$(q compressed-zstd path)" | od -An -tx1 | tr -d ' \n')
expect "buildLayeredImage compressor = zstd writes zstd" 28b52ffd "$magic"
magic=$(head -c 262 "$(q nix-db path)" | tail -c 5)
expect "buildLayeredImage compressor = none writes a plain tar" ustar "$magic"

# --- lib.getExe runs the stream script (inside the sandbox) -----------------
getexe=$(readlink -f "$work/result-2" 2>/dev/null || true)
if [ -n "$getexe" ] && tar -tf "$getexe" 2>/dev/null | grep -qx manifest.json \
    && cmp -s "$getexe" <("$(q example path)" 2>/dev/null); then
    ok "lib.getExe image streams the image inside the sandbox"
else
    fail "lib.getExe" "the getexe derivation's output is not the example's docker-archive"
fi

# --- maxLayers too small: a clear error, no image --------------------------
if "$(q too-few-layers path)" >/dev/null 2>"$work/few.err"; then
    fail "maxLayers leaving no store layer fails" "streaming succeeded"
elif [ "$(wc -l <"$work/few.err")" -ge 1 ] && grep -qi 'layer' "$work/few.err"; then
    ok "maxLayers leaving no store layer fails with: $(tail -n 1 "$work/few.err")"
else
    fail "maxLayers error message" "$(cat "$work/few.err")"
fi

if [ "$failures" -gt 0 ]; then
    echo "$failures check(s) FAILED"
    exit 1
fi
echo "all end-to-end checks passed"
