# Non-flake entry point:
#   nix-build -A example && ./result | docker load
#   (import ./. { inherit pkgs; }).streamLayeredImage { name = ...; ... }
{ pkgs ? import <nixpkgs> { } }:

let
  sli = pkgs.callPackage ./nix { };
in
{
  inherit (sli)
    streamLayeredImage
    buildLayeredImage
    buildLayeredImageWithNixDb
    stream-layered-image
    ;
  example = import ./examples/hello.nix { inherit pkgs; };
}
