# The example image: GNU hello at /bin/hello, run by default.
#   nix build .#example && ./result | docker load && docker run --rm hello:latest
{ pkgs ? import <nixpkgs> { } }:

let
  streamLayeredImage = pkgs.callPackage ../nix { };
in
streamLayeredImage {
  name = "hello";
  tag = "latest";
  contents = [ pkgs.hello ];
  config.Cmd = [ "/bin/hello" ];
}
