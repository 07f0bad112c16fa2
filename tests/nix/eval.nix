# Evaluation-level checks of the Nix interface (no builds): arguments,
# passthru, meta, errors, the flake's outputs and the overlay.
#   nix-instantiate --eval --strict -I nixpkgs=tests/nixpkgs-standin tests/nix/eval.nix
# evaluates to "ok: N checks" or fails naming every check that did not hold.
{ pkgs ? import <nixpkgs> { } }:

let
  inherit (pkgs) lib;
  sli = pkgs.callPackage ../../nix { };
  fails = e: !(builtins.tryEval (builtins.deepSeq e e)).success;

  img = sli {
    name = "Registry.Example/Team/Eval-App";
    tag = "t1";
    contents = [ pkgs.hello ];
    passthru.extra = 42;
    meta.description = "an eval test";
  };
  untagged = sli { name = "eval-untagged"; };
  multi = sli.streamMultiArchImage {
    name = "eval-multi";
    tag = "m1";
    images = [
      img
      { system = "aarch64-linux"; image = img; }
    ];
  };
  layered = sli.buildLayeredImage {
    name = "eval-layered";
    tag = "t2";
    passthru.extra = 43;
    meta.description = "a layered eval test";
  };

  # The flake, evaluated without flake machinery, with the stand-in (or
  # whatever <nixpkgs> is) as its nixpkgs input.
  nixpkgsFlake = {
    lib = pkgs.lib;
    legacyPackages.${pkgs.stdenv.hostPlatform.system} = pkgs;
  };
  flake = (import ../../flake.nix).outputs {
    self = flake;
    nixpkgs = nixpkgsFlake;
  };
  system = pkgs.stdenv.hostPlatform.system;
  overlaid = lib.fix (self: pkgs // flake.overlays.default self pkgs);

  checks = {
    "callPackage ./nix {} is the function" = img ? drvPath;
    "imageName is the lower-cased name" = img.imageName == "registry.example/team/eval-app";
    "derivation name uses baseNameOf name" = img.name == "stream-Eval-App";
    "passthru.imageTag is the tag" = img.imageTag == "t1";
    "no tag: imageTag is a 32-char hash" = builtins.stringLength untagged.imageTag == 32;
    "passthru.isExe" = img.isExe;
    "passthru.conf is a derivation" = img.conf ? drvPath;
    "user passthru is kept" = img.extra == 42;
    "user meta is kept" = img.meta.description == "an eval test";
    "lib.getExe finds the stream script" = lib.getExe img == "${img.bin}/bin/stream-Eval-App";
    "override changes an argument" = (img.override { tag = "t3"; }).imageTag == "t3";
    "maxLayers = 1 is refused" = fails (sli { name = "x"; maxLayers = 1; }).drvPath;
    "maxLayers = 1 is fine with a layeringPipeline" =
      (sli { name = "x"; maxLayers = 1; layeringPipeline = [ [ "popularity_contest" ] ]; }) ? drvPath;
    "buildLayeredImage: .tar.gz by default" = layered.name == "eval-layered.tar.gz";
    "buildLayeredImage: passthru imageTag and stream" = layered.imageTag == "t2" && layered.stream.isExe;
    "buildLayeredImage: imageName" = layered.imageName == "eval-layered";
    "buildLayeredImage: user passthru and meta are kept" =
      layered.extra == 43 && layered.meta.description == "a layered eval test";
    "buildLayeredImage: a tarball, not an executable" = !(layered.isExe or false);
    "variant is accepted (an extension; nixpkgs has none)" =
      (sli { name = "v"; architecture = "arm"; variant = "v7"; }) ? drvPath;
    "buildLayeredImage: zstd is .tar.zst" =
      (sli.buildLayeredImage { name = "z"; compressor = "zstd"; }).name == "z.tar.zst";
    "buildLayeredImage: none is .tar" = (sli.buildLayeredImage { name = "n"; compressor = "none"; }).name == "n.tar";
    "buildLayeredImage: unknown compressor is refused" =
      fails (sli.buildLayeredImage { name = "x"; compressor = "xz"; }).drvPath;
    "buildLayeredImageWithNixDb builds a tarball" =
      (sli.buildLayeredImageWithNixDb { name = "db"; }).name == "db.tar.gz";
    "flake: packages default, stream-layered-image, example" =
      builtins.attrNames flake.packages.${system} == [ "default" "example" "stream-layered-image" ];
    "flake: the example is an image" = flake.packages.${system}.example.isExe;
    "flake: lib.streamLayeredImage takes pkgs" = (flake.lib.streamLayeredImage pkgs { name = "f"; tag = "x"; }).imageTag == "x";
    "flake: lib.buildLayeredImage takes pkgs" = (flake.lib.buildLayeredImage pkgs { name = "f"; }).name == "f.tar.gz";
    "flake: overlays.default adds the executable and the functions" =
      overlaid.stream-layered-image ? drvPath
      && (overlaid.streamLayeredImageTools.streamLayeredImage { name = "o"; tag = "y"; }).imageTag == "y";
    "flake: checks hold the e2e images" = flake.checks.${system} ? index;
    "streamMultiArchImage: a script with imageTag, confs, copyToRegistry" =
      multi.imageTag == "m1" && multi.isExe && multi.isMultiArch
      && builtins.length multi.confs == 2 && multi.copyToRegistry ? drvPath;
    "streamMultiArchImage: { system; image; } records the system's platform" =
      let c = confOf (builtins.elemAt multi.images 1); in c.architecture == "arm64" && c.variant == "v8";
    "streamMultiArchImage: { platform; image; } records that platform" =
      let
        m = sli.streamMultiArchImage { name = "m"; images = [ { platform = "linux/arm/v7"; image = img; } ]; };
        c = confOf (builtins.head m.images);
      in
      c.architecture == "arm" && c.variant == "v7";
    "streamMultiArchImage: the system table is overridable" =
      let
        m = sli.streamMultiArchImage {
          name = "m";
          images = [ { system = "x86_64-linux"; image = img; } ];
          systemPlatforms = { "x86_64-linux" = "linux/amd64/v3"; };
        };
      in
      (confOf (builtins.head m.images)).variant == "v3";
    "streamMultiArchImage: no tag: imageTag is a 32-char hash" =
      builtins.stringLength (sli.streamMultiArchImage { name = "m"; images = [ img ]; }).imageTag == 32;
    "streamMultiArchImage: an unknown system is refused" =
      fails (sli.streamMultiArchImage { name = "m"; images = [ { system = "mips-plan9"; image = img; } ]; }).drvPath;
    "streamMultiArchImage: an empty list is refused" =
      fails (sli.streamMultiArchImage { name = "m"; images = [ ]; }).drvPath;
    "streamMultiArchImage: a non-image is refused" =
      fails (sli.streamMultiArchImage { name = "m"; images = [ pkgs.hello ]; }).drvPath;
    "examples/hello-multi.nix: amd64 and arm64/v8 under hello:latest" =
      let
        m = import ../../examples/hello-multi.nix { pkgsFor = _: pkgs; };
      in
      m.imageTag == "latest" && map (i: (confOf i).architecture) m.images == [ "amd64" "arm64" ];
    "flake: lib.streamMultiArchImage takes pkgs" =
      (flake.lib.streamMultiArchImage pkgs { name = "f"; tag = "x"; images = [ img ]; }).imageTag == "x";
    "passthru.sbom is a derivation" = img.sbom ? drvPath;
    "buildLayeredImage keeps passthru.sbom" = layered.sbom ? drvPath;
    "sbom = [ ] gives no passthru.sbom" = (sli { name = "x"; sbom = [ ]; }).sbom == null;
    "an unknown sbom format is refused" = fails (sli { name = "x"; sbom = [ "xml" ]; }).drvPath;
    "the conf lists the SBOM formats" = imgConf.sbom.formats == [ "spdx" "cyclonedx" ];
    "the conf carries meta of contents for the SBOM" =
      builtins.any (
        p: p.path == "${pkgs.hello}" && (builtins.head p.license).spdxId == "GPL-3.0-or-later"
          && p.homepage != null && p.description != null
      ) imgConf.sbom.packages;
    "the conf carries meta of derivations in config and sbomPackages" =
      let
        withMeta = name: pkgs.writeTextFile { inherit name; text = ""; meta.description = name; };
        conf = confOf (sli {
          name = "x";
          config.Entrypoint = [ (withMeta "in-config") ];
          sbomPackages = [ (withMeta "listed") ];
        });
      in
      map (p: p.description) conf.sbom.packages == [ "in-config" "listed" ];
    "sbomPackages are keys, not dependencies of the conf" =
      let
        notInImage = pkgs.writeTextFile { name = "not-in-image"; text = ""; };
        confHead = (sli { name = "x"; sbomPackages = [ notInImage ]; }).conf.confHead;
      in
      !(builtins.getContext confHead ? ${builtins.unsafeDiscardStringContext notInImage.drvPath});
    "passthru.digests is a derivation" = img.digests ? drvPath;
    "mtime = \"now\" gives no passthru.digests" = (sli { name = "x"; mtime = "now"; }).digests == null;
    "created = \"now\" keeps passthru.digests (layers do not depend on it)" =
      (sli { name = "x"; created = "now"; }).digests ? drvPath;
    "copyTo* scripts run with nix run (meta.mainProgram)" =
      map (s: lib.getExe img.${s}) [ "copyToRegistry" "copyToDockerDaemon" "copyToPodman" ] == [
        "${img.copyToRegistry}/bin/copy-to-registry"
        "${img.copyToDockerDaemon}/bin/copy-to-docker-daemon"
        "${img.copyToPodman}/bin/copy-to-podman"
      ];
    "buildLayeredImage keeps digests and the copyTo* scripts" =
      layered.digests ? drvPath && layered.copyToRegistry ? drvPath
      && layered.copyToDockerDaemon ? drvPath && layered.copyToPodman ? drvPath;
    "passthru.digests is substitutable (a binary cache carries it)" =
      (img.digests.allowSubstitutes or true) && !(img.digests.preferLocalBuild or false);
    "an unknown layerCompression is refused" = fails (sli { name = "x"; layerCompression = "xz"; }).drvPath;
  };
  # The conf's JSON as the build writes it, minus the fields computed at build time.
  confOf = image: builtins.fromJSON (builtins.unsafeDiscardStringContext image.conf.confHead + "}");
  imgConf = confOf img;
  failed = builtins.filter (n: !checks.${n}) (builtins.attrNames checks);
in
if failed == [ ] then
  "ok: ${toString (builtins.length (builtins.attrNames checks))} checks"
else
  throw "FAILED: ${lib.concatStringsSep "; " failed}"
