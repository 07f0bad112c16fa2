#!/usr/bin/env bash
# End-to-end tests of the Nix integration, offline:
#   1. bootstrap the nixpkgs stand-in (tests/nix/bootstrap.sh),
#   2. build every test image of tests/nix/images.nix in ONE nix build, in
#      the sandbox, against the stand-in (and the flake's example),
#   3. build passthru.digests (in the sandbox) and the copyTo* scripts of
#      some images, check the digests against the images and rebuild them
#      with --check; push with copyToRegistry to a loopback docker-registry
#      started here (127.0.0.1, a free port, killed at exit) and load with
#      copyToPodman when podman answers,
#   4. load each into Docker and check it with docker run / inspect /
#      history / export; copyToDockerDaemon; docker pull what was pushed.
# Without a Docker daemon, step 4 prints `SKIPPED (no docker daemon)`.
#
# Usage: tests/nix/e2e.sh [--no-bootstrap]
# Prints one `ok NAME` / `FAIL NAME: why` line per check; exits 1 on any FAIL.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
standin="$repo/tests/nixpkgs-standin"
work=$(mktemp -d /tmp/sli-e2e.XXXXXX)
# Every reference `docker load` reported, one per line. A file, not an
# array: load() runs in $(…) subshells, whose assignments are lost.
loaded="$work/loaded"
# The tags Docker had before the run (`REPO:TAG FULL-ID`), so that cleanup
# gives back a tag the user had (the README example's hello:latest) instead
# of removing it, and removes only what this run added.
before="$work/before"
: >"$loaded"
: >"$before"
cleanup() {
    if [ -s "$loaded" ]; then
        local ref old id ids=()
        while read -r ref; do
            id=$(docker image inspect -f '{{.Id}}' "$ref" 2>/dev/null) && ids+=("$id")
            old=$(awk -v r="$ref" '$1 == r { print $2 }' "$before")
            if [ -n "$old" ]; then
                docker tag "$old" "$ref" >/dev/null 2>&1 || true
            else
                docker rmi "$ref" >/dev/null 2>&1 || true
            fi
        done < <(sort -u "$loaded")
        # Our images left without a tag; an image still tagged (the user's
        # own, byte-identical to ours) stays.
        for id in ${ids[@]+"${ids[@]}"}; do
            if [ "$(docker image inspect -f '{{len .RepoTags}}' "$id" 2>/dev/null)" = 0 ]; then
                docker rmi "$id" >/dev/null 2>&1 || true
            fi
        done
    fi
    docker rm -f sli-e2e-export >/dev/null 2>&1 || true
    if [ -n "${registry_pid:-}" ]; then kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true; fi
    if [ -n "${podman_loaded:-}" ]; then podman rmi -f "$podman_loaded" >/dev/null 2>&1 || true; fi
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
    -A index -A getexe -A sandboxed -A multi-arch -o "$work/result" >/dev/null 2>"$work/build.log"; then
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

echo "# passthru.digests (in the sandbox) and the copyTo* scripts of tests/nix/images.nix"
# pt NAME FIELD: a field of an image's entry in the passthru index.
pt() { python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))[sys.argv[2]].get(sys.argv[3]); print("" if v is None else v)' "$work/passthru" "$1" "$2"; }
if nix-build "${nix_opts[@]}" -I nixpkgs="$standin" "$repo/tests/nix/images.nix" \
        -A passthru-index -o "$work/passthru" >/dev/null 2>"$work/passthru.log"; then
    ok "nix build of passthru.digests and copyTo* of 8 images, in the sandbox"
    for name in example from-image many-paths no-store-paths compressed-gz created-now zstd-layers; do
        codec=gzip
        [ "$name" = zstd-layers ] && codec=zstd
        # The image as an OCI archive with the same layer codec: the
        # digests file must name exactly its layers' diff_ids and blobs, base
        # layers included (one stored compressed keeps its own codec).
        if ! "$(pt "$name" stream)" -q --no-cache --format oci --layer-compression "$codec" \
                -o "$work/$name.oci.tar" 2>"$work/$name.oci.err"; then
            fail "passthru.digests of $name: streaming the OCI archive" "$(tail -n 2 "$work/$name.oci.err")"
            continue
        fi
        got=$(python3 - "$(pt "$name" digests)" "$work/$name.oci.tar" "$codec" <<'PY'
import json, sys, tarfile
digests_path, oci, codec = sys.argv[1:]
d = json.load(open(digests_path))
t = tarfile.open(oci)
def blob(digest):
    return json.load(t.extractfile("blobs/sha256/" + digest.split(":")[1]))
manifest = blob(json.load(t.extractfile("index.json"))["manifests"][0]["digest"])
config = blob(manifest["config"]["digest"])
ours = manifest["layers"]
problems = []
if d.get("version") != 1:
    problems.append("version %r" % d.get("version"))
if len(d["layers"]) != len(ours):
    problems.append("%d entries for %d layers" % (len(d["layers"]), len(ours)))
if [l["diff_id"] for l in d["layers"]] != config["rootfs"]["diff_ids"]:
    problems.append("diff_ids differ from the image's")
used = [l.get("stored") or codec for l in d["layers"]]
# Blobs we compressed are keyed by our encoder; stored ones by their codec.
keys = [l.get("stored") or {"gzip": "gzip-blocks-4", "zstd": "zstd-frames-1"}.get(codec, codec) for l in d["layers"]]
if [(l["blobs"][k]["digest"], l["blobs"][k]["size"]) for l, k in zip(d["layers"], keys)] \
        != [(l["digest"], l["size"]) for l in ours]:
    problems.append("%s blobs differ from the OCI archive's" % codec)
if [l["mediaType"] for l in ours] != ["application/vnd.oci.image.layer.v1.tar+" + c for c in used]:
    problems.append("a stored codec differs from the layer's media type")
print("; ".join(problems) or "%d %s" % (len(ours), "entry" if len(ours) == 1 else "entries"))
PY
        ) || got="not valid JSON or not a digests file"
        case "$got" in
            *entries | *entry) ok "passthru.digests of $name: valid JSON, $got, one per layer (base layers too), the $codec blobs of the image" ;;
            *) fail "passthru.digests of $name" "$got" ;;
        esac
        rm -f "$work/$name.oci.tar"
    done
    expect 'mtime = "now": no passthru.digests (the layers change each time)' "" "$(pt times digests)"

    for name in example from-image compressed-gz times zstd-layers; do
        exe=$(pt "$name" exe)
        conf=$(pt "$name" conf)
        digests=$(pt "$name" digests)
        for kind in copyToRegistry:copy-to-registry copyToDockerDaemon:copy-to-docker-daemon copyToPodman:copy-to-podman; do
            attr=${kind%%:*}
            bin=${kind#*:}
            script="$(pt "$name" "$attr")/bin/$bin"
            case "$attr" in
                copyToRegistry) want="--push" ;;
                copyToDockerDaemon) want="--load docker" ;;
                copyToPodman) want="--load podman" ;;
            esac
            if [ -x "$script" ] && grep -qF "exec $exe $conf $want" "$script"; then
                ok "$name.$attr: bin/$bin runs $want with the executable and the conf"
            else
                fail "$name.$attr" "$script missing, not executable or not running '$exe $conf $want': $(cat "$script" 2>&1 | tail -n 2)"
            fi
        done
        script="$(pt "$name" copyToRegistry)/bin/copy-to-registry"
        if [ -n "$digests" ]; then
            grep -qF -- "--digests $digests" "$script" && ok "$name.copyToRegistry names blobs from passthru.digests" \
                || fail "$name.copyToRegistry --digests" "$(grep -- --push "$script")"
        else
            grep -qF -- "--digests" "$script" && fail "$name.copyToRegistry" "--digests without passthru.digests" \
                || ok "$name.copyToRegistry: no --digests without passthru.digests"
        fi
    done
    expect "meta.mainProgram of the copyTo* scripts (nix run)" \
        "copy-to-registry copy-to-docker-daemon copy-to-podman" "$(python3 -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["example"]["mainPrograms"]))' "$work/passthru")"
    grep -qF -- "--layer-compression zstd" "$(pt zstd-layers copyToRegistry)/bin/copy-to-registry" \
        && ok "layerCompression = zstd: copyToRegistry pushes zstd blobs" \
        || fail "layerCompression = zstd" "copyToRegistry does not pass --layer-compression zstd"

    if nix-build "${nix_opts[@]}" --check -I nixpkgs="$standin" "$repo/tests/nix/images.nix" \
        -A example.digests -A from-image.digests -A compressed-gz.digests -A zstd-layers.digests \
        --no-out-link >/dev/null 2>"$work/digests-check.log"; then
        ok "nix-build --check: passthru.digests is bit-for-bit reproducible"
    else
        fail "nix-build --check of passthru.digests" "$(grep -i 'differ\|error' "$work/digests-check.log" | head -n 3)"
    fi
else
    fail "passthru build" "$(tail -n 5 "$work/passthru.log")"
fi

echo "# copyToRegistry against a loopback registry (Debian's docker-registry, 127.0.0.1, plain HTTP)"
sli_exe=$(pt example exe 2>/dev/null || true)
if [ ! -s "$work/passthru" ]; then
    fail "copyToRegistry" "passthru.digests and the copyTo* scripts did not build"
elif ! "$sli_exe" --help 2>/dev/null | grep -q -- '--push'; then
    echo "SKIPPED copyToRegistry (the executable has no --push yet)"
elif [ ! -x /usr/bin/docker-registry ]; then
    echo "SKIPPED copyToRegistry (no /usr/bin/docker-registry: apt-get install docker-registry)"
else
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    registry="127.0.0.1:$port"
    cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: $registry
EOF
    /usr/bin/docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
    registry_pid=$!
    for _ in $(seq 100); do
        python3 -c "import urllib.request, sys; urllib.request.urlopen(\"http://$registry/v2/\", timeout=1)" 2>/dev/null && break
        sleep 0.1
    done
    # uploads: blob upload sessions the registry has opened so far.
    uploads() { grep -c '"POST /v2/[^ ]*/blobs/uploads/' "$work/registry.log" || true; }
    # manifest_check REPO TAG DIGESTS CODEC PRINTED: the pushed manifest,
    # fetched back, against what was printed and the digests file.
    manifest_check() {
        python3 - "$registry" "$@" <<'PY'
import hashlib, json, sys, urllib.request
registry, repo, tag, digests_path, codec, printed = sys.argv[1:]
accept = "application/vnd.oci.image.manifest.v1+json"
req = urllib.request.Request("http://%s/v2/%s/manifests/%s" % (registry, repo, tag), headers={"Accept": accept})
with urllib.request.urlopen(req) as r:
    body = r.read()
    header = r.headers["Docker-Content-Digest"]
m = json.loads(body)
digest = "sha256:" + hashlib.sha256(body).hexdigest()
problems = []
if printed != "%s/%s:%s@%s" % (registry, repo, tag, digest):
    problems.append("printed %s, manifest is %s" % (printed, digest))
if header != digest:
    problems.append("Docker-Content-Digest %s" % header)
if m.get("mediaType", accept) != accept:
    problems.append("mediaType %s" % m.get("mediaType"))
d = json.load(open(digests_path))["layers"]
ours = m["layers"]
if len(d) != len(ours):
    problems.append("%d layers, %d entries in passthru.digests" % (len(ours), len(d)))
used = [l.get("stored") or codec for l in d]
keys = [l.get("stored") or {"gzip": "gzip-blocks-4", "zstd": "zstd-frames-1"}.get(codec, codec) for l in d]
if [(l["blobs"][k]["digest"], l["blobs"][k]["size"]) for l, k in zip(d, keys)] != [(l["digest"], l["size"]) for l in ours]:
    problems.append("layer blobs differ from passthru.digests")
if [l["mediaType"] for l in ours] != ["application/vnd.oci.image.layer.v1.tar+" + c for c in used]:
    problems.append("layer media types %s" % sorted({l["mediaType"] for l in ours}))
req = urllib.request.Request("http://%s/v2/%s/blobs/%s" % (registry, repo, m["config"]["digest"]))
config = json.loads(urllib.request.urlopen(req).read())
if [l["diff_id"] for l in d] != config["rootfs"]["diff_ids"]:
    problems.append("config diff_ids differ from passthru.digests")
print("; ".join(problems) or "ok %s" % m["config"]["digest"])
PY
    }
    for name in example from-image zstd-layers; do
        codec=gzip
        [ "$name" = zstd-layers ] && codec=zstd
        pushed="sli-e2e-pushed/$name"
        ref="$registry/$pushed:latest"
        push="$(pt "$name" copyToRegistry)/bin/copy-to-registry"
        if ! out=$("$push" "$ref" -v 2>"$work/push-$name.err"); then
            fail "copyToRegistry of $name" "$(tail -n 3 "$work/push-$name.err")"
            continue
        fi
        got=$(manifest_check "$pushed" latest "$(pt "$name" digests)" "$codec" "$out" 2>&1 | tail -n 1)
        case "$got" in
            "ok sha256:"*) ok "copyToRegistry of $name: $ref@… printed, manifest, $codec layer blobs and config as passthru.digests says" ;;
            *) fail "copyToRegistry of $name" "$got" ;;
        esac
        # Again, with nothing known but passthru.digests (--no-cache): every
        # blob is already there, so nothing is uploaded and no store byte read.
        before=$(uploads)
        if out2=$("$push" "$ref" --no-cache -v 2>"$work/push-$name-again.err"); then
            expect "copyToRegistry of $name again: the same manifest" "$out" "$out2"
            expect "copyToRegistry of $name again (--no-cache, passthru.digests only): no upload, no store byte read" \
                "0 uploads, read 0 bytes from the store" \
                "$(($(uploads) - before)) uploads, $(grep -o 'read [0-9]* bytes from the store' "$work/push-$name-again.err")"
        else
            fail "copyToRegistry of $name again" "$(tail -n 3 "$work/push-$name-again.err")"
        fi
    done
    # From the outside: skopeo copies the image out, checking every blob's digest.
    if command -v skopeo >/dev/null 2>&1; then
        if skopeo copy --quiet --src-tls-verify=false "docker://$registry/sli-e2e-pushed/example:latest" \
                "oci:$work/pulled:latest" >"$work/skopeo.log" 2>&1; then
            ok "skopeo copies the pushed example out of the registry (every blob's digest verified)"
        else
            fail "skopeo copy of the pushed example" "$(tail -n 3 "$work/skopeo.log")"
        fi
    fi
    # Without REF (a flag first) it pushes to imageName:imageTag: here
    # --help stops it before any network access, showing the flags pass on.
    "$(pt example copyToRegistry)/bin/copy-to-registry" --help 2>&1 | grep -q -- '--digests-only' \
        && ok "copy-to-registry FLAGS (no REF) passes the flags to the executable" \
        || fail "copy-to-registry --help" "the executable's help did not show"
    if (cd "$repo" && nix run "${nix_opts[@]}" --no-write-lock-file --override-input nixpkgs "path:$standin" \
            .#example.copyToRegistry -- "$registry/sli-e2e-pushed/flake:latest" >"$work/nix-run.out" 2>"$work/nix-run.log"); then
        case "$(cat "$work/nix-run.out")" in
            "$registry/sli-e2e-pushed/flake:latest@sha256:"*) ok "nix run .#example.copyToRegistry -- REF pushes" ;;
            *) fail "nix run .#example.copyToRegistry" "printed [$(cat "$work/nix-run.out")]" ;;
        esac
    else
        fail "nix run .#example.copyToRegistry" "$(grep -v '^warning\|^•\|^    ' "$work/nix-run.log" | tail -n 3)"
    fi
fi

echo "# copyToPodman"
if [ ! -s "$work/passthru" ] || ! "$sli_exe" --help 2>/dev/null | grep -q -- '--load'; then
    echo "SKIPPED copyToPodman (the executable has no --load yet)"
elif ! podman info >/dev/null 2>&1; then
    echo "SKIPPED copyToPodman (podman does not answer)"
else
    podman_loaded=sli-e2e-podman:latest
    if out=$("$(pt example copyToPodman)/bin/copy-to-podman" -t "$podman_loaded" 2>"$work/podman.err"); then
        case "$out" in
            *"Loaded image"*"$podman_loaded"*) ok "copyToPodman prints the loaded image: $(echo "$out" | grep 'Loaded image' | tail -n 1)" ;;
            *) fail "copyToPodman output" "[$out]" ;;
        esac
        expect "copyToPodman: podman has the image, with its Cmd" '[/bin/hello]' \
            "$(podman image inspect -f '{{.Config.Cmd}}' "$podman_loaded" 2>&1)"
    else
        fail "copyToPodman" "$(tail -n 3 "$work/podman.err")"
    fi
fi

echo "# streamMultiArchImage: two platforms, one tag, into an OCI layout"
multi=$(readlink -f "$work/result-4" 2>/dev/null || true)
if [ -n "$multi" ] && "$multi" -q --oci-dir "$work/multi-layout" >"$work/multi.out" 2>"$work/multi.err"; then
    got=$(python3 - "$work/multi-layout" <<'PY'
import json, os, sys
d = sys.argv[1]
top = json.load(open(os.path.join(d, "index.json")))["manifests"][0]
index = json.load(open(os.path.join(d, "blobs/sha256", top["digest"][7:])))
platforms = ["/".join(filter(None, [m["platform"]["os"], m["platform"]["architecture"], m["platform"].get("variant")]))
             for m in index["manifests"]]
print(top["mediaType"], top["annotations"]["org.opencontainers.image.ref.name"], " ".join(platforms))
PY
    )
    expect "streamMultiArchImage: an index of linux/amd64 and linux/arm64/v8 tagged latest" \
        "application/vnd.oci.image.index.v1+json latest linux/amd64 linux/arm64/v8" "$got"
    expect "streamMultiArchImage: prints each platform's digest and the index's" \
        "linux/amd64 linux/arm64/v8 index" "$(cut -d ' ' -f 1 "$work/multi.out" | paste -sd ' ')"
    if command -v skopeo >/dev/null 2>&1; then
        skopeo copy -q --all "oci:$work/multi-layout:latest" "oci:$work/multi-copy:latest" >/dev/null 2>"$work/multi-copy.err" \
            && ok "streamMultiArchImage: skopeo copy --all reads the layout" \
            || fail "skopeo copy --all of the multi-platform layout" "$(tail -n 2 "$work/multi-copy.err")"
    fi
else
    fail "streamMultiArchImage into an OCI layout" "$(tail -n 3 "$work/multi.err" 2>/dev/null)"
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

docker images --no-trunc --format '{{.Repository}}:{{.Tag}} {{.ID}}' >"$before"

# load NAME [stream args...]: streams (or reads) the image into docker load;
# prints the loaded reference and records it for cleanup.
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
    echo "$ref" >>"$loaded"
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
    echo "$ref" >>"$loaded"
    echo "$ref=$(run "$ref")"
done | sort >"$work/consumer.out"
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

# --- copyToDockerDaemon: --load, only the layers Docker lacks -----------------
if [ ! -s "$work/passthru" ] || ! "$sli_exe" --help 2>/dev/null | grep -q -- '--load'; then
    echo "SKIPPED copyToDockerDaemon (the executable has no --load yet)"
else
    copy="$(pt example copyToDockerDaemon)/bin/copy-to-docker-daemon"
    # Its own digest cache, so the reload below knows the layers from the
    # first load alone.
    if out=$("$copy" -t sli-e2e-copy:latest --cache "$work/cache" 2>"$work/copy.err"); then
        echo sli-e2e-copy:latest >>"$loaded"
        expect "copyToDockerDaemon prints the loaded image" "Loaded image: sli-e2e-copy:latest" \
            "$(echo "$out" | grep '^Loaded image: ' | tail -n 1)"
        expect "copyToDockerDaemon: the image runs" "Hello, world!" "$(run sli-e2e-copy:latest)"
        expect "copyToDockerDaemon: the same image ID as ./result | docker load" \
            "$(docker image inspect -f '{{.Id}}' hello:latest)" "$(docker image inspect -f '{{.Id}}' sli-e2e-copy:latest)"
        if "$copy" -t sli-e2e-copy:latest --cache "$work/cache" -v >"$work/copy2.out" 2>"$work/copy2.err"; then
            expect "copyToDockerDaemon again: no store byte read (Docker has every layer)" \
                "read 0 bytes from the store" "$(grep -o 'read [0-9]* bytes from the store' "$work/copy2.err")"
        else
            fail "copyToDockerDaemon again" "$(tail -n 3 "$work/copy2.err")"
        fi
    else
        fail "copyToDockerDaemon" "$(tail -n 3 "$work/copy.err")"
    fi
fi

# --- what copyToRegistry pushed, pulled by Docker and run -------------------
if [ -n "${registry:-}" ] && [ -n "${registry_pid:-}" ]; then
    pulled="$registry/sli-e2e-pushed/example:latest"
    if docker pull -q "$pulled" >"$work/pull.log" 2>&1; then
        echo "$pulled" >>"$loaded"
        expect "docker pull of what copyToRegistry pushed runs" "Hello, world!" "$(run "$pulled")"
    else
        fail "docker pull from the loopback registry" "$(tail -n 2 "$work/pull.log")"
    fi
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
