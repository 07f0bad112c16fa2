# The end-to-end test images, built together by one `nix build`.
{ pkgs ? import <nixpkgs> { } }:
{
  example = import ../../examples/hello.nix { inherit pkgs; };
}
