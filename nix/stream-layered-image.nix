# streamLayeredImage, buildLayeredImage and buildLayeredImageWithNixDb:
# nixpkgs' dockerTools functions of the same names (pkgs/build-support/docker/
# default.nix), with the same arguments, defaults and results, but the
# layers are decided and written by the Rust executable at stream time.
#
# At build time this file only
#   * builds the customisation layer (`contents` joined at the image root,
#     `extraCommands`, `fakeRootCommands`, the Nix database) as nixpkgs does:
#     a directory holding `layer.tar` (GNU tar under fakeroot, same flags as
#     nixpkgs, so the same bytes) and its sha256 in `checksum`;
#   * exports the reference graph of the image (closureInfo of nixpkgs'
#     closure roots: the image's base JSON and the customisation layer);
#   * writes conf.json (with the `meta` of `contents` for the SBOM) and a
#     wrapper that runs `stream-layered-image CONF "$@"`;
#   * on demand, `passthru.sbom`: the executable's SPDX / CycloneDX files;
#   * on demand, `passthru.digests`: every layer's digests (--digests-only),
#     computed once in the sandbox so a binary cache can carry them; and
#     nix2container's `copyToRegistry`, `copyToDockerDaemon` and
#     `copyToPodman` scripts (--push, --load docker, --load podman).
# No python, no jq: the popularity contest, the layeringPipeline and the
# fromImage layer count happen in the executable when the image streams.
{
  lib,
  stdenv,
  buildPackages,
  closureInfo,
  fakeroot,
  go,
  proot,
  runCommand,
  runtimeShell,
  symlinkJoin,
  writeText,
  writeShellScriptBin,
  stream-layered-image,
  storeDir ? builtins.storeDir,
}:

let
  inherit (lib) optionals optionalString;

  exe = lib.getExe stream-layered-image;

  # The OCI spec recommends Go's GOARCH names; like nixpkgs, take it from
  # the go package (only its attributes: go is never built).
  defaultArchitecture = go.GOARCH;

  # nixpkgs' mkDbExtraCommand: registers the closure of `contents` in a Nix
  # database inside the customisation layer, with registration times reset
  # so the layer stays reproducible.
  mkDbExtraCommand =
    contents:
    let
      contentsList = lib.toList contents;
    in
    ''
      echo "Generating the nix database..."
      export NIX_REMOTE="local?root=$PWD"
      # nix-store needs a user name.
      export USER=nobody
      ${lib.getExe' buildPackages.nix "nix-store"} --load-db < ${closureInfo { rootPaths = contentsList; }}/registration
      ${lib.getExe buildPackages.sqlite} nix/var/nix/db/db.sqlite "UPDATE ValidPaths SET registrationTime = ''${SOURCE_DATE_EPOCH}"
      mkdir -p nix/var/nix/gcroots/docker/
      for i in ${lib.concatStringsSep " " contentsList}; do
        ln -s $i nix/var/nix/gcroots/docker/$(basename $i)
      done
    '';

  # The file name endings of the SBOM formats in passthru.sbom.
  sbomExtensions = {
    spdx = "spdx.json";
    cyclonedx = "cdx.json";
  };

  # The layer codecs of --layer-compression (copyToRegistry, digests).
  layerCodecs = [
    "none"
    "gzip"
    "zstd"
  ];

  compressors = {
    none = "";
    gz = ".gz";
    zstd = ".zst";
  };

  streamLayeredImage = lib.makeOverridable (
    {
      # Image name; `lib.toLower name` is the repository it loads as.
      name,
      # Image tag; null means the hash of the conf's store path.
      tag ? null,
      # A base image tarball (docker save / dockerTools output).
      fromImage ? null,
      # Store paths joined at the image root (path or list).
      contents ? [ ],
      # The image's runtime config (Cmd, Env, ...).
      config ? { },
      architecture ? defaultArchitecture,
      # Not a nixpkgs argument (nixpkgs never records a variant): the OCI
      # `variant` ("v7", "v8"), recorded only when set, so that leaving it
      # out keeps base.json, and so the image, byte for byte nixpkgs'.
      variant ? null,
      # Image creation time; "now" is resolved when the image streams.
      created ? "1970-01-01T00:00:01Z",
      # Modification time of the store layers' entries.
      mtime ? "1970-01-01T00:00:01Z",
      uid ? 0,
      gid ? 0,
      uname ? "root",
      gname ? "root",
      # Layers in the image, counting fromImage's and the customisation layer.
      maxLayers ? 100,
      # Shell run in the customisation layer's root, as the build user.
      extraCommands ? "",
      # Shell run there under fakeroot: ownership changes persist.
      fakeRootCommands ? "",
      # Run fakeRootCommands under proot, rooted in the image's contents.
      enableFakechroot ? false,
      # Put the closure's store paths in the image.
      includeStorePaths ? true,
      # Register the closure of `contents` in /nix/var/nix/db.
      includeNixDB ? false,
      passthru ? { },
      meta ? { },
      # nixpkgs' flatten_references_graph pipeline (list, or a file holding
      # it); when set, maxLayers is left to the pipeline.
      layeringPipeline ? null,
      # Explain the layering on stderr when the image streams.
      debug ? false,
      # Not nixpkgs arguments (nixpkgs makes no SBOM): the formats of
      # `passthru.sbom` ("spdx", "cyclonedx"; [ ] for none), and
      # derivations whose `meta` the SBOM should carry besides `contents`'
      # and those in `config` (a store path interpolated into a string
      # keeps no `meta`, so list the package here).
      sbom ? [
        "spdx"
        "cyclonedx"
      ],
      sbomPackages ? [ ],
      # Not a nixpkgs argument: how `copyToRegistry` compresses each layer
      # blob ("gzip", "zstd" or "none"), and so whose blob digests
      # `passthru.digests` records (gzip: what registries and every client
      # accept; the executable's default for --push).
      layerCompression ? "gzip",
    }:
    assert lib.assertMsg (layeringPipeline == null -> maxLayers > 1)
      "the maxLayers argument of dockerTools.buildLayeredImage function must be greather than 1 (current value: ${toString maxLayers})";
    assert lib.assertMsg (builtins.all (f: sbomExtensions ? ${f}) (lib.toList sbom))
      "the sbom argument of streamLayeredImage takes a list of \"spdx\" and \"cyclonedx\" (current value: ${builtins.toJSON sbom})";
    assert lib.assertMsg (builtins.elem layerCompression layerCodecs)
      "the layerCompression argument of streamLayeredImage must be one of ${builtins.toJSON layerCodecs} (current value: ${builtins.toJSON layerCompression})";
    assert lib.assertMsg (enableFakechroot -> !stdenv.hostPlatform.isDarwin) ''
      cannot use `enableFakechroot` because `proot` is not portable to Darwin. Workarounds:
            - use `fakeRootCommands` with the restricted `fakeroot` environment
            - cross-compile your packages
            - run your packages in a virtual machine
            Discussion: https://github.com/NixOS/nixpkgs/issues/327311'';
    let
      baseName = baseNameOf name;

      # Byte for byte nixpkgs' base.json, so the reference graph (and so the
      # layering) is the one nixpkgs computes for the same arguments.
      baseJson = writeText "${baseName}-base.json" (
        builtins.toJSON (
          {
            inherit config architecture;
            os = "linux";
          }
          // lib.optionalAttrs (variant != null) { inherit variant; }
        )
      );

      contentsList = lib.toList contents;

      bindPaths = toString (
        map (path: "--bind=${path}:${path}!") [
          "/dev/"
          "/proc/"
          "/sys/"
          "${storeDir}/"
          "$NIX_BUILD_TOP"
          "$out/layer.tar"
        ]
      );

      # The fakeroot shell starts as nixpkgs' does: where symlinkJoin uses
      # structured attributes, the derivation's variables ($out,
      # $fakeRootCommands) are shell variables of the builder, not
      # environment variables, so it reads them; and it sources stdenv's
      # setup, so fakeRootCommands see the stdenv's PATH and functions
      # (substituteInPlace, patchShebangs, ...) as they do with nixpkgs.
      attrsForSubshell = ''
        if [ -e "''${NIX_ATTRS_SH_FILE:-}" ]; then . "$NIX_ATTRS_SH_FILE"; fi
        . "$stdenv/setup"
      '';

      # The layer is a tarball so that modes and owners set by the commands
      # survive Nix's store normalisation; its sha256 is precomputed.
      customisationLayer = symlinkJoin {
        name = "${baseName}-customisation-layer";
        paths = contentsList;
        extraCommands = (optionalString includeNixDB (mkDbExtraCommand contents)) + extraCommands;
        inherit fakeRootCommands;
        nativeBuildInputs = [ fakeroot ] ++ optionals enableFakechroot [ proot ];
        postBuild = ''
          mv $out old_out
          (cd old_out; eval "$extraCommands" )

          mkdir $out
          ${
            if enableFakechroot then
              ''
                proot -r $PWD/old_out ${bindPaths} --pwd=/ fakeroot ${stdenv.shell} -e -c '
                  ${attrsForSubshell}
                  eval "$fakeRootCommands"
                  tar \
                    --sort name \
                    --exclude=./dev \
                    --exclude=./proc \
                    --exclude=./sys \
                    --exclude=.${storeDir} \
                    --exclude=".$NIX_BUILD_TOP" \
                    --numeric-owner --mtime "@$SOURCE_DATE_EPOCH" \
                    --hard-dereference \
                    -cf $out/layer.tar .
                '
              ''
            else
              ''
                fakeroot ${stdenv.shell} -e -c '
                  ${attrsForSubshell}
                  cd old_out
                  eval "$fakeRootCommands"
                  tar \
                    --sort name \
                    --numeric-owner --mtime "@$SOURCE_DATE_EPOCH" \
                    --hard-dereference \
                    -cf $out/layer.tar .
                '
              ''
          }
          sha256sum $out/layer.tar | cut -f 1 -d ' ' > $out/checksum
        '';
      };

      # nixpkgs' closure roots and excluded paths: the helpers take part in
      # the graph (and so in the popularity counts) but get no layer.
      closureRoots = optionals includeStorePaths [
        baseJson
        customisationLayer
      ];
      excludePaths = [
        baseJson
        customisationLayer
      ];

      pipeline =
        if layeringPipeline == null || builtins.isList layeringPipeline then
          layeringPipeline
        else
          "${layeringPipeline}";

      # What Nix knows about the packages and the SBOM does not: pname,
      # version and meta of `contents`, of derivations in `config` and of
      # `sbomPackages`, by store path. They override what the executable
      # parses from store path names (builtins.parseDrvName).
      sbomDerivations =
        let
          inConfig =
            v:
            if lib.isDerivation v then
              [ v ]
            else if builtins.isList v then
              lib.concatMap inConfig v
            else if builtins.isAttrs v then
              lib.concatMap inConfig (builtins.attrValues v)
            else
              [ ];
        in
        builtins.filter lib.isDerivation (contentsList ++ inConfig config ++ lib.toList sbomPackages);
      # nixpkgs' meta.license: a licence set (lib.licenses.*), a string, or a list.
      sbomLicense =
        l:
        if builtins.isAttrs l then
          {
            spdxId = l.spdxId or null;
            fullName = l.fullName or null;
            shortName = l.shortName or null;
          }
        else
          toString l;
      sbomPackage =
        drv:
        let
          homepage = drv.meta.homepage or null;
        in
        {
          # A key, not a dependency: metadata of a package the image does
          # not hold must not pull it into the conf's closure.
          path = builtins.unsafeDiscardStringContext "${drv}";
          pname = drv.pname or null;
          version = drv.version or null;
          license = map sbomLicense (lib.toList (drv.meta.license or [ ]));
          # nixpkgs allows a list of homepages; the SBOM takes the first.
          homepage = if builtins.isList homepage then lib.head (homepage ++ [ null ]) else homepage;
          description = drv.meta.description or null;
        };

      # Everything but created, mtime and repo_tag, which the build computes.
      confHead = lib.removeSuffix "}" (
        builtins.toJSON {
          inherit
            architecture
            uid
            gid
            uname
            gname
            variant
            ;
          # `config = null` is allowed (the manual's type is "Attribute Set
          # or Null") and, as in nixpkgs, written as `"config": null`.
          inherit config;
          os = "linux";
          store_dir = storeDir;
          from_image = if fromImage == null then null else "${fromImage}";
          layering = {
            graph = "${closureInfo { rootPaths = closureRoots; }}";
            exclude_paths = map toString excludePaths;
            max_layers = maxLayers;
            inherit pipeline debug;
          };
          customisation_layer = "${customisationLayer}";
          sbom = {
            formats = lib.toList sbom;
            packages = map sbomPackage sbomDerivations;
          };
        }
      );

      imageName = lib.toLower name;

      conf =
        runCommand "${baseName}-conf.json"
          {
            inherit created mtime confHead;
            passAsFile = [ "confHead" ];
            # `"name:` as a JSON string without its closing quote.
            repoTagStart = lib.removeSuffix "\"" (builtins.toJSON "${imageName}:");
            repoTagJson = if tag == null then "" else builtins.toJSON "${imageName}:${toString tag}";
            inherit imageName;
            preferLocalBuild = true;
            allowSubstitutes = false;
            passthru.imageTag =
              if tag != null then
                toString tag
              else
                lib.head (lib.splitString "-" (baseNameOf (builtins.unsafeDiscardStringContext conf.outPath)));
          }
          ''
            repoTag=$repoTagJson
            if [ -z "$repoTag" ]; then
              # No tag: the hash part of this conf's own store path.
              imageTag=$(basename "$out" | cut -d - -f 1)
              repoTag="$repoTagStart$imageTag\""
            fi
            # nixpkgs normalises both times with GNU date; "now" is left
            # for the executable to resolve when the image streams.
            if [ "$created" != now ]; then created=$(date -Iseconds -d "$created"); fi
            if [ "$mtime" != now ]; then mtime=$(date -Iseconds -d "$mtime"); fi
            {
              cat "$confHeadPath"
              printf ',"created":"%s","mtime":"%s","repo_tag":%s}\n' "$created" "$mtime" "$repoTag"
            } > $out
          '';

      # The SBOMs of the image, made by the executable: the layers' diff_ids
      # and the image ID exist only once the image has streamed, so it
      # streams (to /dev/null) and writes only the SBOM files. With
      # `created = "now"` the image, and so its SBOM, differs on every run.
      sbomDrv = runCommand "${baseName}-sbom" { preferLocalBuild = true; allowSubstitutes = false; } ''
        mkdir $out
        ${exe} ${conf} --quiet --no-cache ${
          lib.concatMapStrings (
            f: " --sbom ${f} --sbom-out $out/${lib.escapeShellArg "${baseName}.${sbomExtensions.${f}}"}"
          ) (lib.toList sbom)
        } > /dev/null
      '';

      # Every non-base layer's digests (diff_id, size, and the digest and
      # size of its `layerCompression` blob), as `--digests-only` writes
      # them: a function of the store paths, owner and mtime, so computed
      # once, in the sandbox (the conf's closure holds the whole image),
      # and substitutable: a CI runner that fetches it from a binary cache
      # names every blob before reading the store, and an unchanged image
      # pushes with HEAD requests only. With `mtime = "now"` the layers
      # differ each time the image streams, so there are none to compute.
      # Written in the build directory, not straight to $out: the
      # executable writes atomically through a temporary file beside it.
      digests =
        if mtime == "now" then
          null
        else
          runCommand "${baseName}-digests.json" { } ''
            ${exe} ${conf} --quiet --no-cache --layer-compression ${layerCompression} --digests-only digests.json
            mv digests.json $out
          '';

      # nix2container's scripts, with its names: `nix run .#image.copyToRegistry
      # -- REF [FLAGS]`. Arguments pass through to the executable.
      copyToRegistry = writeShellScriptBin "copy-to-registry" ''
        # copy-to-registry [REF] [FLAGS...]: pushes the image to REF
        # ([HOST[:PORT]/]NAME[:TAG]); without REF (or when the first
        # argument is a flag) to ${imageName}:${conf.imageTag}, as nix2container does.
        case "''${1:-}" in
          "" | -*) ref=${lib.escapeShellArg "${imageName}:${conf.imageTag}"} ;;
          *)
            ref=$1
            shift
            ;;
        esac
        exec ${exe} ${conf} --push "$ref" --layer-compression ${layerCompression}${
          optionalString (digests != null) " --digests ${digests}"
        } "$@"
      '';
      copyToDockerDaemon = writeShellScriptBin "copy-to-docker-daemon" ''
        # Loads the image into Docker, sending only the layers it lacks.
        exec ${exe} ${conf} --load docker "$@"
      '';
      copyToPodman = writeShellScriptBin "copy-to-podman" ''
        # Loads the image into podman.
        exec ${exe} ${conf} --load podman "$@"
      '';

      script =
        runCommand "stream-${baseName}"
          {
            inherit conf imageName;
            preferLocalBuild = true;
            allowSubstitutes = false;
            passthru = passthru // {
              inherit (conf) imageTag;
              inherit conf customisationLayer;
              # SPDX and/or CycloneDX JSON of the image (null with sbom = [ ]).
              sbom = if lib.toList sbom == [ ] then null else sbomDrv;
              # Layer digests (null with mtime = "now") and nix2container's
              # copyTo* scripts (not in nixpkgs).
              inherit
                digests
                copyToRegistry
                copyToDockerDaemon
                copyToPodman
                ;
              streamScript = exe;
              # lib.getExe image runs the stream script (see `bin` below).
              bin = binDir;
              # Tells functions that take images that this one is an
              # executable, not a tarball (nixpkgs' convention).
              isExe = true;
            };
            meta = meta // {
              mainProgram = meta.mainProgram or "stream-${baseName}";
            };
          }
          ''
            {
              echo '#!${runtimeShell}'
              echo 'exec ${exe} ${conf} "$@"'
            } > $out
            chmod +x $out
          '';

      # `./result` must be the script itself (so `./result | docker load`
      # works), while lib.getExe looks in `<bin output>/bin/<mainProgram>`.
      binDir = runCommand "stream-${baseName}-bin" { preferLocalBuild = true; allowSubstitutes = false; } ''
        mkdir -p $out/bin
        ln -s ${script} $out/bin/${script.meta.mainProgram}
      '';
    in
    script
  );

  buildLayeredImage = lib.makeOverridable (
    {
      name,
      # none, gz (nixpkgs' default) or zstd, compressed by the executable.
      compressor ? "gz",
      meta ? { },
      ...
    }@args:
    let
      stream = streamLayeredImage (
        removeAttrs args [
          "compressor"
          "meta"
        ]
      );
      ext =
        compressors.${compressor}
          or (throw "in docker image ${name}: compressor must be one of: [${toString (builtins.attrNames compressors)}]");
      flags = optionalString (compressor != "none") "--compress ${compressor}";
    in
    runCommand "${baseNameOf name}.tar${ext}" {
      inherit (stream) imageName;
      # As nixpkgs: the stream's passthru (the user's, conf, ...) plus
      # imageTag and stream; but not isExe or bin, which nixpkgs carries
      # over by mistake: this result is a tarball, not an executable.
      passthru =
        removeAttrs stream.passthru [
          "isExe"
          "bin"
        ]
        // {
          inherit (stream) imageTag;
          inherit stream;
        };
      inherit meta;
    } "${stream} --no-cache ${flags} > $out"
  );

  buildLayeredImageWithNixDb = args: buildLayeredImage (args // { includeNixDB = true; });
in
{
  inherit streamLayeredImage buildLayeredImage buildLayeredImageWithNixDb;
}
