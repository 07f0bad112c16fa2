#!/usr/bin/env python3
"""Test oracle: writes the store layers of a conf the way nixpkgs' streamer
lays them out, using CPython's own tarfile (PAX format, surrogateescape
names), so the Rust tests can compare layer digests on inputs the vectors
do not cover (non-UTF-8 names, long names and targets, odd owners, huge
files). Usage: oracle.py CONF.json OUT_PREFIX -> OUT_PREFIX<N>.tar per layer.
"""
import itertools
import json
import pathlib
import sys
import tarfile
from datetime import datetime


def owner(conf):
    mtime = int(datetime.fromisoformat(conf["mtime"]).timestamp())

    def apply(ti):
        ti.mtime = mtime
        ti.uid = int(conf["uid"])
        ti.gid = int(conf["gid"])
        ti.uname = conf["uname"]
        ti.gname = conf["gname"]
        return ti

    return apply


def write_layer(out, paths, apply):
    with tarfile.open(fileobj=out, mode="w|") as tar:
        for top in ("/nix", "/nix/store"):
            ti = tarfile.TarInfo(top)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            tar.addfile(apply(ti))
        for p in map(pathlib.Path, paths):
            found = [p] if p.is_symlink() else itertools.chain([p], p.rglob("*"))
            for f in sorted(found):
                ti = tar.gettarinfo(f)
                ti.name = "/" + ti.name
                if ti.islnk():
                    ti.type, ti.linkname, ti.size = tarfile.REGTYPE, "", f.stat().st_size
                apply(ti)
                if ti.isfile():
                    with open(f, "rb") as data:
                        tar.addfile(ti, data)
                else:
                    tar.addfile(ti)


def main():
    conf = json.load(open(sys.argv[1]))
    apply = owner(conf)
    for n, paths in enumerate(conf["store_layers"]):
        with open(f"{sys.argv[2]}{n}.tar", "wb") as out:
            write_layer(out, paths, apply)


main()
