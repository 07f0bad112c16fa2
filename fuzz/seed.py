#!/usr/bin/env python3
"""Writes the seed corpora (fuzz/seeds/TARGET/) from the test data, so a
fresh clone starts fuzzing from realistic inputs. Rerun after the test
vectors change; the seeds are committed."""
import gzip, io, json, os, pathlib, tarfile

repo = pathlib.Path(__file__).resolve().parent.parent
vec = repo / "tests/vectors"
out = repo / "fuzz/seeds"

def put(target, name, data):
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())

# conf: the reference vectors' confs and a layering conf.
for v in ["basic", "owner", "from-image"]:
    put("conf", v, json.dumps(json.load(open(vec / f"{v}.json"))["conf"], indent=1))
conf = json.load(open(vec / "basic.json"))["conf"]
conf.pop("store_layers")
conf["layering"] = {"graph": "/g", "max_layers": 100, "exclude_paths": [], "pipeline": [["popularity_contest"]]}
put("conf", "layering", json.dumps(conf))

# graph and pipeline: the small layering vectors.
for f in sorted((vec / "layering").glob("*.json")):
    v = json.load(open(f))
    if not isinstance(v, dict) or "graph" not in v or len(json.dumps(v["graph"])) > 20000:
        continue
    graph = v["graph"]
    put("graph", f.stem + ".json", json.dumps(graph))
    reg = "".join(
        f"{e['path']}\n{e.get('narHash','')}\n{e['narSize']}\n\n{len(e['references'])}\n"
        + "".join(r + "\n" for r in e["references"])
        for e in graph
    )
    put("graph", f.stem + ".registration", reg)
    if v.get("pipeline") is not None:
        put("pipeline", f.stem, json.dumps(v["pipeline"]))
for i, p in enumerate([
    [["popularity_contest"], ["limit_layers", 2]],
    [["split_paths", ["/nix/store/cccccccccccccccccccccccccccccccc-c"]], ["over", "rest", ["pipe", [["popularity_contest"], ["reverse"]]]]],
    [["subcomponent_out", ["/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b"]], ["map", ["split_every", 1]], ["flatten"]],
    [["remove_paths", ["/nix/store/dddddddddddddddddddddddddddddddd-d"]], ["subcomponent_in", ["/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a"]], ["split_every", 2]],
]):
    put("pipeline", f"handmade-{i}", json.dumps(p))

# base_image: byte 0 picks plain (0), gzip (1) or zstd (2); then a small
# docker-archive, the fixture's from-image shape.
def archive(long_name=False):
    buf = io.BytesIO()
    t = tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT if long_name else tarfile.USTAR_FORMAT)
    def add(name, data):
        ti = tarfile.TarInfo(name); ti.size = len(data); t.addfile(ti, io.BytesIO(data))
    lbuf = io.BytesIO()
    lt = tarfile.open(fileobj=lbuf, mode="w", format=tarfile.USTAR_FORMAT)
    ti = tarfile.TarInfo("etc/hello"); ti.size = 3; lt.addfile(ti, io.BytesIO(b"hi\n")); lt.close()
    layer = lbuf.getvalue()
    import hashlib
    diff = "sha256:" + hashlib.sha256(layer).hexdigest()
    lname = ("x" * 120 + "/layer.tar") if long_name else "abc/layer.tar"
    add(lname, layer)
    cfg = json.dumps({"config": {"Env": ["A=1"]}, "rootfs": {"type": "layers", "diff_ids": [diff]}}).encode()
    add("cfg.json", cfg)
    add("manifest.json", json.dumps([{"Config": "cfg.json", "RepoTags": ["a:b"], "Layers": [lname]}]).encode())
    t.close()
    return buf.getvalue()
for mode in range(3):
    put("base_image", f"docker-archive-{mode}", bytes([mode]) + archive())
    put("base_image", f"pax-names-{mode}", bytes([mode]) + archive(True))

# tar_names: byte 0 picks regular (0), directory (1) or symlink (2); NUL
# separates the name from the link target.
for i, (k, name, link) in enumerate([
    (0, b"/nix/store/abc-hello/bin/hello", b""),
    (1, b"/nix/store/" + b"d" * 120, b""),
    (2, b"/nix/store/abc-x/lib/libfoo.so", b"libfoo.so.1.2.3"),
    (2, "/nix/store/abc-x/été".encode(), b"\xff\xfe" + b"l" * 150),
    (0, b"/nix/store/abc-x/\xe9t\xe9", b""),
]):
    put("tar_names", f"seed-{i}", bytes([k]) + name + b"\0" + link)

# gzip_layers: recipes (tag, length) of random units, byte runs, text,
# copies and raw bytes, including ones that cross the 256 KiB block edge.
put("gzip_layers", "headers-between-random", bytes([0, 2, 1, 20, 0, 1, 2, 50, 3, 5, 0, 200, 4, 9]))
put("gzip_layers", "across-blocks", bytes([0, 255, 2, 3, 0, 255, 1, 1, 0, 40, 3, 200, 2, 255]))
put("gzip_layers", "text", bytes([2, 255, 3, 7, 1, 255, 2, 9]))
