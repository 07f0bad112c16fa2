# An offline stand-in for nixpkgs: exactly the part of nixpkgs' interface
# that this project's nix/ files, examples and tests use, with nixpkgs'
# names, arguments and output layouts, built from a few prebuilt binaries
# that tests/nix/bootstrap.sh puts in ./bootstrap (git-ignored):
#
#   bootstrap/busybox               Debian's busybox-static: shell + coreutils
#   bootstrap/stream-layered-image  a static build of our executable
#   bootstrap/host                  Debian's GNU tar, date, chown, chgrp,
#                                   chmod, mknod, sha256sum, fakeroot,
#                                   nix-store and sqlite3 with their
#                                   libraries and ELF loader (like nixpkgs'
#                                   bootstrap tools, a bundle of binaries)
#
# Every derivation builds with the sandbox on. Use it as
#   nix build .#example --override-input nixpkgs path:./tests/nixpkgs-standin
# or  nix-build -I nixpkgs=./tests/nixpkgs-standin ...
{
  system ? builtins.currentSystem or "x86_64-linux",
  overlays ? [ ],
  config ? { },
  ...
}:
let
  lib = import ./lib.nix;
  inherit (lib) makeBinPath optionalString;

  bootFile =
    p:
    let
      path = ./. + "/bootstrap/${p}";
    in
    if builtins.pathExists path then
      path
    else
      throw "nixpkgs stand-in: bootstrap/${p} is missing; run tests/nix/bootstrap.sh first";

  busyboxDir = bootFile "busybox";
  bb = "${busyboxDir}/bin/busybox";
  host = bootFile "host";
  hasProot = builtins.pathExists (./. + "/bootstrap/host/libexec/proot");

  hostPlatform = {
    inherit system;
    isLinux = true;
    isDarwin = false;
    # nixpkgs' lib.systems gives every platform its Go names.
    go = {
      GOARCH = "amd64";
      GOOS = "linux";
      GOARM = "";
    };
  };

  # Runs a program from the host bundle through the bundled loader.
  hostExec = tool: ''exec ${host}/lib/ld-linux-x86-64.so.2 --argv0 ${tool} --library-path ${host}/lib ${host}/libexec/${tool} "$@"'';

  # The stand-in's coreutils: every busybox applet, with Debian's GNU tools
  # in place of the applets where GNU behaviour or fakeroot (which only
  # reaches dynamically linked programs) matters.
  gnuTools = [ "tar" "date" "chown" "chgrp" "chmod" "mknod" "sha256sum" ];

  # busybox with one symlink per applet: the shell of scripts that end up
  # in images (runtimeShell), so images do not carry the GNU bundle.
  busybox = derivation {
    name = "busybox-standin";
    inherit system;
    builder = bb;
    args = [
      "sh"
      "-euc"
      ''
        bb=${bb}
        $bb mkdir -p $out/bin
        for a in $($bb --list); do $bb ln -s $bb $out/bin/$a; done
      ''
    ];
  };

  coreutils = derivation {
    name = "coreutils-standin";
    inherit system;
    builder = bb;
    args = [
      "sh"
      "-euc"
      ''
        bb=${bb}
        $bb mkdir -p $out/bin
        # busybox's applet links, then the GNU tools over some of them.
        $bb cp -P ${busybox}/bin/* $out/bin/
        for t in ${toString gnuTools}; do
          $bb rm -f $out/bin/$t
          $bb printf '#!%s\n%s\n' "${busybox}/bin/sh" "$($bb echo '${hostExec "@T@"}' | $bb sed "s/@T@/$t/g")" > $out/bin/$t
          $bb chmod 0555 $out/bin/$t
        done
      ''
    ];
  };

  runtimeShell = "${busybox}/bin/sh";

  # The build shell (nixpkgs: bash): Debian's dash, because busybox-static's
  # ash runs its own applets even when PATH names the GNU tools.
  dash = derivation {
    name = "dash-standin";
    inherit system;
    builder = bb;
    args = [
      "sh"
      "-euc"
      ''
        $bb mkdir -p $out/bin
        $bb printf '#!%s\n%s\n' "${busybox}/bin/sh" '${hostExec "dash"}' > $out/bin/sh
        $bb chmod 0555 $out/bin/sh
      ''
    ];
    bb = bb;
  };

  # The stdenv's store path, holding `setup` as nixpkgs' does: each
  # derivation's `$stdenv`, sourced by the builder (and by nix/'s fakeroot
  # shell, as nixpkgs' streamLayeredImage does).
  stdenvSetup = derivation {
    name = "stdenv-standin";
    inherit system;
    builder = bb;
    args = [
      "sh"
      "-euc"
      "$bb mkdir $out && $bb cp ${./setup.sh} $out/setup"
    ];
    inherit bb;
  };

  # nixpkgs' stdenv.mkDerivation, reduced to what runCommand needs: the
  # builder sources `$stdenv/setup` (`set -eu -o pipefail`, the inputs'
  # bin/ directories and coreutils on PATH) and runs `buildCommand`, with
  # SOURCE_DATE_EPOCH set as in nixpkgs (1980-01-01).
  mkDerivation =
    args@{
      nativeBuildInputs ? [ ],
      buildInputs ? [ ],
      passthru ? { },
      meta ? { },
      ...
    }:
    let
      name = args.name or "${args.pname}-${args.version}";
      drv = derivation (
        removeAttrs args [
          "nativeBuildInputs"
          "buildInputs"
          "passthru"
          "meta"
          "pname"
          "version"
        ]
        // {
          inherit name system;
          builder = "${dash}/bin/sh";
          args = [ ./default-builder.sh ];
          stdenv = stdenvSetup;
          stdenvPath = makeBinPath (nativeBuildInputs ++ buildInputs ++ [ coreutils ]);
          SOURCE_DATE_EPOCH = "315532800";
          shell = "${dash}/bin/sh";
        }
      );
    in
    drv // passthru // { inherit meta passthru; };

  stdenv = {
    inherit mkDerivation hostPlatform system;
    buildPlatform = hostPlatform;
    targetPlatform = hostPlatform;
    shell = "${dash}/bin/sh";
    isDarwin = false;
    isLinux = true;
  };
  # runCommandWith's `stdenv` argument shadows the name in its default.
  stdenvAttrs = stdenv;

  # nixpkgs' runCommandWith / runCommand / runCommandLocal signatures.
  runCommandWith =
    {
      stdenv ? stdenvAttrs,
      runLocal ? false,
      name,
      derivationArgs ? { },
    }:
    buildCommand:
    stdenv.mkDerivation (
      {
        inherit name buildCommand;
        passAsFile = [ "buildCommand" ] ++ (derivationArgs.passAsFile or [ ]);
      }
      // lib.optionalAttrs runLocal {
        preferLocalBuild = true;
        allowSubstitutes = false;
      }
      // removeAttrs derivationArgs [ "passAsFile" ]
    );
  runCommand =
    name: env:
    runCommandWith {
      inherit name;
      derivationArgs = env;
    };
  runCommandLocal =
    name: env:
    runCommandWith {
      inherit name;
      runLocal = true;
      derivationArgs = env;
    };

  writeTextFile =
    {
      name,
      text,
      executable ? false,
      destination ? "",
      checkPhase ? "",
      meta ? { },
      passthru ? { },
      ...
    }:
    runCommand name
      {
        inherit text executable meta passthru;
        passAsFile = [ "text" ];
        preferLocalBuild = true;
        allowSubstitutes = false;
      }
      ''
        target=$out${destination}
        mkdir -p "$(dirname "$target")"
        cp "$textPath" "$target"
        ${checkPhase}
        if [ -n "$executable" ]; then chmod +x "$target"; fi
      '';
  writeText = name: text: writeTextFile { inherit name text; };
  writeTextDir = path: text: writeTextFile { inherit text; name = baseNameOf path; destination = "/${path}"; };
  writeScript = name: text: writeTextFile { inherit name text; executable = true; };
  writeScriptBin = name: text: writeTextFile { inherit name text; executable = true; destination = "/bin/${name}"; };
  writeShellScript = name: text: writeTextFile {
    inherit name;
    executable = true;
    text = "#!${runtimeShell}\n${text}\n";
  };
  writeShellScriptBin = name: text: writeTextFile {
    inherit name;
    executable = true;
    destination = "/bin/${name}";
    text = "#!${runtimeShell}\n${text}\n";
    meta.mainProgram = name;
  };

  # nixpkgs' symlinkJoin: the union of `paths` as a tree of symlinks
  # (lndir -silent), then `postBuild`; other attributes reach the derivation.
  symlinkJoin =
    args_@{
      name,
      paths,
      preferLocalBuild ? true,
      allowSubstitutes ? false,
      postBuild ? "",
      ...
    }:
    let
      args = removeAttrs args_ [ "name" "postBuild" ] // {
        inherit preferLocalBuild allowSubstitutes;
        passAsFile = [ "paths" ];
      };
    in
    runCommand name args ''
      mkdir -p $out
      for i in $(cat $pathsPath); do
        ${lndir}/bin/lndir -silent $i $out
      done
      ${postBuild}
    '';

  # xorg.lndir's behaviour: mirror FROM's directories, symlink its other
  # entries (symlinks to directories stay symlinks); existing entries win.
  lndir = writeShellScriptBin "lndir" ''
    set -eu
    [ "$1" = -silent ] && shift
    from=$1 to=$2
    [ -d "$from" ] || { echo "lndir: $from: Not a directory" >&2; exit 1; }
    cd "$from"
    find . -mindepth 1 -type d | while read -r d; do mkdir -p "$to/$d"; done
    find . -mindepth 1 ! -type d | while read -r f; do
      f=''${f#./}
      [ -e "$to/$f" ] || [ -L "$to/$f" ] || ln -s "$from/$f" "$to/$f"
    done
  '';

  # nixpkgs' closureInfo: `registration` (nix-store --load-db format),
  # `store-paths` and `total-nar-size` for the closure of rootPaths, from
  # the structured exportReferencesGraph JSON (awk instead of jq).
  closureInfo =
    { rootPaths }:
    derivation {
      name = "closure-info";
      inherit system;
      builder = bb;
      __structuredAttrs = true;
      exportReferencesGraph.closure = rootPaths;
      preferLocalBuild = true;
      empty = rootPaths == [ ];
      args = [
        "sh"
        "-euc"
        ''
          PATH=${coreutils}/bin
          json=$NIX_BUILD_TOP/.attrs.json
          out=$(awk -f ${./attrs-out.awk} "$json")
          mkdir $out
          awk -v out=$out -f ${./closure-info.awk} "$json"
        ''
      ];
    };

  makeWrapper = throw "nixpkgs stand-in: makeWrapper is not offered; nix/ uses runtimeShell scripts";

  # Debian's fakeroot: faked plus libfakeroot preloaded into the
  # (dynamically linked) GNU tools of the stand-in's coreutils.
  fakeroot = writeTextFile {
    name = "fakeroot-standin";
    executable = true;
    destination = "/bin/fakeroot";
    meta.mainProgram = "fakeroot";
    text = ''
      #!${runtimeShell}
      [ "''${1:-}" = -- ] && shift
      keypid=$(${host}/lib/ld-linux-x86-64.so.2 --library-path ${host}/lib ${host}/libexec/faked-sysv)
      FAKEROOTKEY=''${keypid%%:*}
      LD_PRELOAD=${host}/lib/libfakeroot-sysv.so
      FAKED_MODE=unknown-is-root
      # nixpkgs patches fakeroot to ignore EINVAL from the real chown (what
      # a user namespace returns for unmapped ids); Debian's only ignores
      # EPERM, so skip the real chown as fakeroot's own switch allows.
      FAKEROOTDONTTRYCHOWN=1
      export FAKEROOTKEY LD_PRELOAD FAKED_MODE FAKEROOTDONTTRYCHOWN
      "$@"
      rc=$?
      kill ''${keypid##*:} 2>/dev/null || true
      exit $rc
    '';
  };

  # mainProgram: nixpkgs' (nix's is `nix`, which the stand-in lacks: only
  # getExe' nix "nix-store" works, as nix/ calls it).
  hostToolPackage =
    pname: tool: mainProgram:
    writeTextFile {
      name = "${pname}-standin";
      executable = true;
      destination = "/bin/${tool}";
      meta.mainProgram = mainProgram;
      text = "#!${runtimeShell}\n${hostExec tool}\n";
    };

  base = self: {
    pkgs = self;
    inherit
      lib
      stdenv
      coreutils
      runtimeShell
      runCommand
      runCommandLocal
      runCommandWith
      writeTextFile
      writeText
      writeTextDir
      writeScript
      writeScriptBin
      writeShellScript
      writeShellScriptBin
      symlinkJoin
      lndir
      closureInfo
      makeWrapper
      fakeroot
      ;
    buildPackages = self;
    inherit busybox;
    stdenvNoCC = stdenv;
    nix = hostToolPackage "nix" "nix-store" "nix";
    sqlite = hostToolPackage "sqlite" "sqlite3" "sqlite3";
    proot =
      if hasProot then hostToolPackage "proot" "proot" "proot" else throw "nixpkgs stand-in: proot not bootstrapped (apt-get install proot)";
    go = {
      inherit (hostPlatform.go) GOARCH GOOS GOARM;
    };
    callPackage = fn: args: lib.makeOverridable (callPackageWith self fn) args;

    # rustPlatform.buildRustPackage, reduced to installing the static
    # executable that tests/nix/bootstrap.sh built with cargo.
    rustPlatform.buildRustPackage =
      args@{
        pname,
        version,
        meta ? { },
        passthru ? { },
        ...
      }:
      runCommand "${pname}-${version}"
        {
          inherit meta passthru;
          prebuilt = bootFile pname;
        }
        ''
          mkdir -p $out/bin
          cp $prebuilt/bin/* $out/bin/
        '';

    # GNU hello's observable behaviour, as a busybox shell script.
    hello = writeTextFile {
      name = "hello-2.12.1";
      executable = true;
      destination = "/bin/hello";
      text = ''
        #!${runtimeShell}
        echo "Hello, world!"
      '';
      # nixpkgs' hello's meta, for the SBOM (lib.licenses.gpl3Plus).
      meta = {
        mainProgram = "hello";
        description = "Program that produces a familiar, friendly greeting";
        homepage = "https://www.gnu.org/software/hello/manual/";
        license = {
          spdxId = "GPL-3.0-or-later";
          shortName = "gpl3Plus";
          fullName = "GNU General Public License v3.0 or later";
        };
      };
    };
  };

  callPackageWith =
    autoArgs: fn: args:
    let
      f = if builtins.isFunction fn then fn else import fn;
      fargs = builtins.functionArgs f;
    in
    f (builtins.intersectAttrs fargs autoArgs // args);

  # nixpkgs' overlay fixpoint: each overlay sees the final set and the one before it.
  withOverlays = self: builtins.foldl' (super: overlay: super // overlay self super) (base self) overlays;
in
lib.fix withOverlays
