# streamMultiArchImage: several images, one per platform, under one tag as
# an OCI image index (issue 11). Each image is a streamLayeredImage (or
# buildLayeredImage) result, built from the package set of its platform;
# this function only writes a script that runs the executable over all
# their confs, so the index is made when the script runs, next to the
# images' layers:
#
#   $(nix-build -A app-multi) --push registry.example/app:1
#   $(nix-build -A app-multi) --oci-dir ./layout
#   $(nix-build -A app-multi) --format oci -o app.tar
#
# Platforms come from each image's conf (its `architecture`/`variant`), or
# from a Nix system (`{ system = "aarch64-linux"; image = …; }`), mapped by
# `systemPlatforms` (overridable), which re-records the image as that
# platform with `image.override`.
{
  lib,
  runCommand,
  runtimeShell,
  stream-layered-image,
}:

let
  exe = lib.getExe stream-layered-image;

  # Nix systems and the OCI platforms (Go's names) images built for them
  # run on. arm64 is recorded with its variant v8, as docker and
  # containerd normalise it.
  defaultSystemPlatforms = {
    "x86_64-linux" = "linux/amd64";
    "aarch64-linux" = "linux/arm64/v8";
    "armv7l-linux" = "linux/arm/v7";
    "armv6l-linux" = "linux/arm/v6";
    "i686-linux" = "linux/386";
    "riscv64-linux" = "linux/riscv64";
    "powerpc64le-linux" = "linux/ppc64le";
    "s390x-linux" = "linux/s390x";
  };

  # "os/architecture[/variant]" as streamLayeredImage's arguments.
  parsePlatform =
    s:
    let
      parts = builtins.filter builtins.isString (builtins.split "/" s);
      n = builtins.length parts;
    in
    if n < 2 || n > 3 then
      throw "streamMultiArchImage: platform \"${s}\" is not os/architecture[/variant]"
    else
      {
        os = builtins.elemAt parts 0;
        architecture = builtins.elemAt parts 1;
        variant = if n == 3 then builtins.elemAt parts 2 else null;
      };

  streamMultiArchImage = lib.makeOverridable (
    {
      # Image name; `lib.toLower name` is the repository.
      name,
      # The tag of the index; null means the hash of the list of confs.
      tag ? null,
      # One per platform: an image (recorded as its conf says), or
      # `{ image; system; }` (recorded as systemPlatforms.${system}), or
      # `{ image; platform = "linux/arm/v7"; }`.
      images,
      # Nix system -> "os/architecture[/variant]".
      systemPlatforms ? defaultSystemPlatforms,
      passthru ? { },
      meta ? { },
    }:
    assert lib.assertMsg (builtins.isList images && images != [ ])
      "streamMultiArchImage ${name}: `images` must be a non-empty list";
    let
      baseName = baseNameOf name;
      imageName = lib.toLower name;

      platformOfSystem =
        system:
        systemPlatforms.${system}
          or (throw "streamMultiArchImage ${name}: no OCI platform for the Nix system ${system}; add it to systemPlatforms");

      # An element of `images` as the image to stream.
      resolve =
        entry:
        let
          isWrapped = builtins.isAttrs entry && entry ? image && !(lib.isDerivation entry);
          image = if isWrapped then entry.image else entry;
          platform =
            if isWrapped && entry ? platform then
              entry.platform
            else if isWrapped && entry ? system then
              platformOfSystem entry.system
            else
              null;
          p = parsePlatform platform;
          # Only the arguments the image's own function takes: the conf
          # records them, and so do the image's config and manifest.
          recorded =
            if platform == null then
              image
            else if p.os != "linux" then
              throw "streamMultiArchImage ${name}: platform ${platform}: streamLayeredImage makes linux images"
            else if !(image ? override) then
              throw "streamMultiArchImage ${name}: to record an image as ${platform} it must come from streamLayeredImage (it has no `override`)"
            else
              image.override { inherit (p) architecture variant; };
        in
        if !(recorded ? conf) then
          throw "streamMultiArchImage ${name}: each of `images` must be a streamLayeredImage or buildLayeredImage result (it has no passthru.conf)"
        else
          recorded;

      resolved = map resolve images;
      confs = map (i: i.conf) resolved;

      # The list of confs: its hash is the tag when none is given, so the
      # tag changes whenever any platform's image does.
      confList = runCommand "${baseName}-confs" {
        confs = map toString confs;
        preferLocalBuild = true;
        allowSubstitutes = false;
        passthru.imageTag =
          if tag != null then
            toString tag
          else
            lib.head (lib.splitString "-" (baseNameOf (builtins.unsafeDiscardStringContext confList.outPath)));
      } "printf '%s\\n' $confs > $out";

      imageTag = confList.imageTag;
      repoTag = "${imageName}:${imageTag}";
      # Store paths and lower-case image names need no quoting.
      confArgs = builtins.concatStringsSep " " (map toString confs);

      # `REF [options]`: pushes the index (and every platform) to REF.
      copyToRegistry = runCommand "copy-${baseName}-to-registry" {
        preferLocalBuild = true;
        allowSubstitutes = false;
        meta.mainProgram = "copy-${baseName}-to-registry";
      } ''
        mkdir -p $out/bin
        {
          echo '#!${runtimeShell}'
          echo 'if [ $# -lt 1 ]; then echo "usage: $0 REF [stream-layered-image options]" >&2; exit 2; fi'
          echo 'ref=$1; shift'
          echo 'exec ${exe} ${confArgs} -t ${repoTag} --push "$ref" "$@"'
        } > $out/bin/copy-${baseName}-to-registry
        chmod +x $out/bin/copy-${baseName}-to-registry
      '';

      script =
        runCommand "stream-${baseName}"
          {
            inherit imageName;
            preferLocalBuild = true;
            allowSubstitutes = false;
            passthru = passthru // {
              inherit imageTag confs copyToRegistry;
              images = resolved;
              confList = confList;
              streamScript = exe;
              isExe = true;
              # Not a docker-archive: the script needs --oci-dir, --format
              # oci|dual or --push.
              isMultiArch = true;
            };
            meta = meta // {
              mainProgram = meta.mainProgram or "stream-${baseName}";
            };
          }
          ''
            {
              echo '#!${runtimeShell}'
              echo 'exec ${exe} ${confArgs} -t ${repoTag} "$@"'
            } > $out
            chmod +x $out
          '';
    in
    script
  );
in
{
  inherit streamMultiArchImage defaultSystemPlatforms;
}
