# callPackage-able entry point: `pkgs.callPackage ./nix { }` is the
# streamLayeredImage function (call it with nixpkgs' arguments), and also
# carries buildLayeredImage, buildLayeredImageWithNixDb, streamMultiArchImage
# and the executable.
#
#   image = pkgs.callPackage ./nix { } { name = "app"; contents = [ app ]; };
#   tools = pkgs.callPackage ./nix { };  tools.buildLayeredImage { ... }
{ callPackage }:

let
  stream-layered-image = callPackage ./package.nix { };
  functions = callPackage ./stream-layered-image.nix { inherit stream-layered-image; };
  # streamMultiArchImage and the Nix system -> OCI platform table.
  multiArch = callPackage ./multi-arch.nix { inherit stream-layered-image; };
in
functions
// multiArch
// {
  inherit stream-layered-image;
  __functor = _: functions.streamLayeredImage;
}
