# The end-to-end test images, ported from nixpkgs' dockerTools examples and
# nixos/tests/docker-tools.nix. `index` (a JSON file naming every image,
# its imageName and imageTag) depends on all of them, so one
# `nix-build tests/nix/images.nix -A index` builds everything;
# tests/nix/e2e.sh then loads each image into Docker and checks it.
{ pkgs ? import <nixpkgs> { } }:

let
  inherit (pkgs) lib runCommand writeText;
  tools = pkgs.callPackage ../../nix { };
  inherit (tools) streamLayeredImage buildLayeredImage buildLayeredImageWithNixDb;

  # Small store paths that reference each other: a chain a -> b -> c -> d
  # -> e plus busybox, so the closure has more paths than the layer budget.
  chain = builtins.foldl' (
    prev: n:
    runCommand "chain-${n}" { } ''
      mkdir -p $out/share
      echo "${n} ${if prev == null then "end" else prev}" > $out/share/${n}
    ''
  ) null [ "e" "d" "c" "b" "a" ];

  # A store path that is itself a symlink (nixpkgs' symlink-store-path test).
  storeSymlink = runCommand "store-symlink" { } "ln -s ${pkgs.hello} $out";

  base = buildLayeredImage {
    name = "sli-e2e-base";
    tag = "latest";
    compressor = "none";
    contents = [ pkgs.busybox ];
    config.Env = [
      "FROM_BASE=1"
      "SHARED=base"
    ];
    maxLayers = 2;
  };

  images = {
    example = import ../../examples/hello.nix { inherit pkgs; };

    # More store paths than maxLayers = 2: every path still arrives.
    many-paths = streamLayeredImage {
      name = "sli-e2e-many-paths";
      tag = "latest";
      contents = [ pkgs.busybox chain ];
      maxLayers = 2;
      config.Cmd = [ "/bin/sh" "-c" "cat ${chain}/share/a && ls /nix/store" ];
    };

    # fromImage with maxLayers = 4: the base's layers count against it;
    # Env merges with the child winning.
    from-image = streamLayeredImage {
      name = "sli-e2e-from-image";
      tag = "latest";
      fromImage = base;
      contents = [ chain pkgs.hello ];
      maxLayers = 4;
      config.Env = [
        "SHARED=child"
        "CHILD=1"
      ];
      config.Cmd = [ "/bin/hello" ];
    };

    # The usual nixpkgs pattern: a gzip'd buildLayeredImage as the base.
    from-gz-image = streamLayeredImage {
      name = "sli-e2e-from-gz-image";
      tag = "latest";
      fromImage = buildLayeredImage {
        name = "sli-e2e-base-gz";
        contents = [ pkgs.busybox ];
        config.Env = [ "FROM_BASE=1" ];
      };
      contents = [ pkgs.hello ];
      config.Cmd = [ "/bin/sh" "-c" "hello && echo $FROM_BASE" ];
    };

    symlink-store-path = streamLayeredImage {
      name = "sli-e2e-symlink";
      tag = "latest";
      contents = [ pkgs.busybox ];
      config.Cmd = [ "/bin/sh" "-c" "test -L ${storeSymlink} && readlink ${storeSymlink}" ];
    };

    bare-path = streamLayeredImage {
      name = "sli-e2e-bare-path";
      tag = "latest";
      contents = [ pkgs.busybox ./bare-dir ];
      config.Cmd = [ "/bin/cat" "/hello.txt" ];
    };

    arm64 = streamLayeredImage {
      name = "sli-e2e-arm64";
      tag = "latest";
      architecture = "arm64";
      # Our extension (nixpkgs has no variant argument).
      variant = "v8";
      contents = [ pkgs.hello ];
    };

    # No tag: the tag is the hash of the build (passthru.imageTag).
    no-tag = streamLayeredImage {
      name = "sli-e2e-no-tag";
      contents = [ pkgs.hello ];
    };

    created-now = streamLayeredImage {
      name = "sli-e2e-created-now";
      tag = "latest";
      created = "now";
      contents = [ pkgs.hello ];
    };

    extra-commands = streamLayeredImage {
      name = "sli-e2e-extra-commands";
      tag = "latest";
      contents = [ pkgs.busybox ];
      extraCommands = ''
        mkdir -p tmp
        echo "made by extraCommands" > extra.txt
      '';
      config.Cmd = [ "/bin/cat" "/extra.txt" ];
    };

    fake-root = streamLayeredImage {
      name = "sli-e2e-fake-root";
      tag = "latest";
      contents = [ pkgs.busybox ];
      fakeRootCommands = ''
        mkdir -p home/user
        chown 12345:12345 home/user
      '';
      config.Cmd = [ "/bin/stat" "-c" "%u:%g" "/home/user" ];
    };

    # enableFakechroot: fakeRootCommands see the image's root as /.
    fakechroot = streamLayeredImage {
      name = "sli-e2e-fakechroot";
      tag = "latest";
      contents = [ pkgs.busybox ];
      enableFakechroot = true;
      fakeRootCommands = ''
        mkdir -p /data
        chown 4242:4343 /data
        test -e /bin/sh && echo "saw the image root" > /data/seen
      '';
      config.Cmd = [ "/bin/sh" "-c" "stat -c %u:%g /data; cat /data/seen" ];
    };

    # Owner and mtime of the store layers' entries.
    owner-mtime = streamLayeredImage {
      name = "sli-e2e-owner-mtime";
      tag = "latest";
      contents = [ pkgs.busybox ];
      uid = 1000;
      gid = 100;
      uname = "user";
      gname = "users";
      mtime = "2024-01-02T03:04:05Z";
      config.Cmd = [ "/bin/stat" "-c" "%u:%g %Y" "${pkgs.hello}/bin/hello" ];
    };

    # created is normalised at build time as nixpkgs does (GNU date
    # -Iseconds: to UTC); mtime = "now" is resolved when the image streams.
    times = streamLayeredImage {
      name = "sli-e2e-times";
      tag = "latest";
      created = "2024-01-02T03:04:05+02:00";
      mtime = "now";
      contents = [ pkgs.busybox ];
      config.Cmd = [ "/bin/stat" "-c" "%Y" "${pkgs.hello}/bin/hello" ];
    };

    # nixpkgs' manual types config as "Attribute Set or Null".
    config-null = streamLayeredImage {
      name = "sli-e2e-config-null";
      tag = "latest";
      config = null;
      contents = [ pkgs.hello ];
    };

    no-store-paths = streamLayeredImage {
      name = "sli-e2e-no-store-paths";
      tag = "latest";
      contents = [ pkgs.hello ];
      includeStorePaths = false;
    };

    nix-db = buildLayeredImageWithNixDb {
      name = "sli-e2e-nix-db";
      tag = "latest";
      compressor = "none";
      contents = [ pkgs.hello ];
    };

    registry-prefix = streamLayeredImage {
      name = "registry.example.com/team/sli-e2e-prefixed";
      tag = "v1";
      contents = [ pkgs.hello ];
    };

    compressed-gz = buildLayeredImage {
      name = "sli-e2e-gz";
      tag = "latest";
      contents = [ pkgs.hello ];
      config.Cmd = [ "/bin/hello" ];
    };

    # layeringPipeline (nixpkgs' flatten_references_graph language): one
    # store layer per path by popularity, the rest merged into the second.
    pipeline = streamLayeredImage {
      name = "sli-e2e-pipeline";
      tag = "latest";
      contents = [ pkgs.busybox chain ];
      layeringPipeline = [
        [ "popularity_contest" ]
        [ "limit_layers" 2 ]
      ];
      debug = true;
      config.Cmd = [ "/bin/cat" "${chain}/share/a" ];
    };

    # The same pipeline from a file (a derivation producing the JSON).
    pipeline-file = streamLayeredImage {
      name = "sli-e2e-pipeline-file";
      tag = "latest";
      contents = [ pkgs.busybox chain ];
      layeringPipeline = writeText "pipeline.json" (
        builtins.toJSON [
          [ "popularity_contest" ]
          [ "limit_layers" 2 ]
        ]
      );
      config.Cmd = [ "/bin/cat" "${chain}/share/a" ];
    };

    # fromImage's two layers plus the customisation layer leave nothing
    # of maxLayers = 3: streaming must fail with a clear error.
    too-few-layers = streamLayeredImage {
      name = "sli-e2e-too-few-layers";
      tag = "latest";
      fromImage = base;
      contents = [ pkgs.hello ];
      maxLayers = 3;
    };

    # layerCompression (our extension): copyToRegistry pushes zstd blobs,
    # and passthru.digests records their digests.
    zstd-layers = streamLayeredImage {
      name = "sli-e2e-zstd-layers";
      tag = "latest";
      layerCompression = "zstd";
      contents = [ pkgs.hello ];
      config.Cmd = [ "/bin/hello" ];
    };

    compressed-zstd = buildLayeredImage {
      name = "sli-e2e-zstd";
      tag = "latest";
      compressor = "zstd";
      contents = [ pkgs.hello ];
    };
  };

  index = writeText "sli-e2e-index.json" (
    builtins.toJSON (
      lib.mapAttrs (_: image: {
        path = "${image}";
        inherit (image) imageName imageTag;
        isExe = image.isExe or false;
        conf = if image ? conf then "${image.conf}" else null;
      }) (images // { inherit base; })
      // {
        # What the e2e script checks paths against.
        chain = {
          path = "${chain}";
        };
        storeSymlink = {
          path = "${storeSymlink}";
          target = "${pkgs.hello}";
        };
      }
    )
  );

  # passthru.digests and the copyTo* scripts (issues 8 and 9) of images of
  # every shape that matters to them: plain, fromImage (base layers get no
  # entry), more paths than layers, no store paths, a buildLayeredImage
  # (passthru carried over), created = "now" (digests still hold), mtime =
  # "now" (no digests) and zstd blobs. One JSON index names them all, so
  # one build makes every digests file, in the sandbox.
  passthruImages = lib.genAttrs [
    "example"
    "from-image"
    "many-paths"
    "no-store-paths"
    "compressed-gz"
    "created-now"
    "times"
    "zstd-layers"
  ] (n: images.${n});
  passthru-index = writeText "sli-e2e-passthru.json" (
    builtins.toJSON (
      lib.mapAttrs (_: image: {
        digests = if image.digests == null then null else "${image.digests}";
        copyToRegistry = "${image.copyToRegistry}";
        copyToDockerDaemon = "${image.copyToDockerDaemon}";
        copyToPodman = "${image.copyToPodman}";
        mainPrograms = map (s: image.${s}.meta.mainProgram) [
          "copyToRegistry"
          "copyToDockerDaemon"
          "copyToPodman"
        ];
        conf = "${image.conf}";
        # The stream script (a buildLayeredImage's is passthru.stream).
        stream = "${image.stream or image}";
        exe = image.streamScript;
        inherit (image) imageName imageTag;
      }) passthruImages
    )
  );

  # Two platforms under one tag (issue 11): a busybox image as built, and
  # the same closure re-recorded as aarch64-linux's platform (linux/arm64/v8;
  # its binaries need not run). Not in `images`: it streams no
  # docker-archive, so e2e.sh writes it into an OCI layout instead.
  multiPlatformImage = streamLayeredImage {
    name = "sli-e2e-multi";
    tag = "own";
    contents = [ pkgs.busybox ];
    config.Cmd = [ "/bin/echo" "multi-ok" ];
  };
  multi-arch = tools.streamMultiArchImage {
    name = "sli-e2e-multi";
    tag = "latest";
    images = [
      multiPlatformImage
      { system = "aarch64-linux"; image = multiPlatformImage; }
    ];
  };

  # lib.getExe on an image runs its stream script: here inside the sandbox,
  # which also proves the executable needs nothing outside its closure.
  getexe = runCommand "sli-e2e-getexe" { } "${lib.getExe images.example} > $out";

  # Builds only inside the sandbox: the tests claim every image above was
  # built there (Nix falls back to no sandbox silently when it cannot).
  # Not /bin/sh: NixOS puts one in the sandbox (sandbox-paths), and this
  # file is also the flake's `checks` with real nixpkgs.
  sandboxed = runCommand "sli-e2e-sandboxed" { } ''
    for p in /usr /etc/nix /root; do
      if [ -e "$p" ]; then
        echo "not sandboxed: the build sees $p" >&2
        exit 1
      fi
    done
    touch $out
  '';
in
images // { inherit index base getexe sandboxed passthru-index multi-arch; }
